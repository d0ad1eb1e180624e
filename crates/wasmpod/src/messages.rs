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

/// An error and its causes on one line, `outer: cause: cause`, each cause once: the
/// libraries' errors name their source in their own message and also keep it as their
/// `source()` (for callers that walk the chain), so a cause already in the text so far is
/// not repeated.
pub(crate) fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

/// [`error_line`], prefixed with `subject` unless the line already names it.
pub(crate) fn error_about(subject: &str, error: &anyhow::Error) -> String {
    let line = error_line(error);
    if subject.is_empty() || line.contains(subject) {
        line
    } else {
        format!("{subject}: {line}")
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Inner {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let inner = Inner {
            path: "app.wasm".into(),
            source: io,
        };
        let e = anyhow::Error::new(inner).context("app.wasm");
        assert_eq!(
            error_line(&e),
            "app.wasm: cannot read app.wasm: entity not found"
        );
        assert_eq!(
            error_about("app.wasm", &e),
            "app.wasm: cannot read app.wasm: entity not found"
        );
        let e = anyhow::anyhow!("not a WebAssembly binary").context("notwasm.wasm");
        assert_eq!(
            error_about("notwasm.wasm", &e),
            "notwasm.wasm: not a WebAssembly binary"
        );
        assert_eq!(error_about("x", &anyhow::anyhow!("boom")), "x: boom");
    }
}
