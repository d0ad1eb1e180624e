//! The format of wasmpod's own messages on standard error.

use tracing_subscriber::fmt::FormatFields as _;

/// How wasmpod's own messages look: a warning or an error as one line a person reads
/// (`wasmpod: warning: process.env: ...`), as other command-line tools print them; with
/// `--log-level` or `WASMPOD_LOG` asked for, everything as timestamped log lines.
pub(crate) struct CliFormat {
    logged: bool,
    log: tracing_subscriber::fmt::format::Format,
}

impl CliFormat {
    pub(crate) fn new(logged: bool, ansi: bool) -> Self {
        Self {
            logged,
            log: tracing_subscriber::fmt::format()
                .with_target(false)
                .with_ansi(ansi),
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for CliFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        if self.logged || level > tracing::Level::WARN {
            return self.log.format_event(ctx, writer, event);
        }
        let kind = if level == tracing::Level::ERROR {
            "error"
        } else {
            "warning"
        };
        write!(writer, "wasmpod: {kind}: ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
