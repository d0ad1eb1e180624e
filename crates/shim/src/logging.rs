//! The shim's own tracing: to the `log` FIFO containerd reads from the bundle (which it
//! copies into its own log), or to stderr for the short-lived `start` and `delete` calls;
//! when `WASMPOD_TIMINGS` names a file, the start path's phases ([`phase`]) timed; and when
//! the `OTEL_*` variables ask for it, the spans exported over OTLP (`telemetry`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use containerd_shim::Flags;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where the timings go: `cargo xtask bench` sets it on its private containerd, whose
/// shims inherit it.
pub(crate) const TIMINGS_ENV: &str = "WASMPOD_TIMINGS";

/// A span of one phase of a container's life (`create.spec`, `start`, `guest.run`…): a
/// `debug` span, so at the default log level it is disabled — not even created — unless
/// `WASMPOD_TIMINGS` is set, and then it writes one line when it closes.
pub(crate) fn phase(name: &'static str) -> tracing::Span {
    tracing::debug_span!("phase", phase = name, otel.name = name)
}

/// What the timings layer sees: the phase spans and the spans that carry a container's
/// `id` (a phase's container comes from them); each callsite is decided once.
fn timed(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && (meta.name() == "phase" || meta.fields().field("id").is_some())
}

/// Installs a subscriber that logs to stderr (the precompile agent's), at `WASMPOD_LOG`'s
/// level or `info`, and exports its compiles' spans when the `OTEL_*` variables ask for it
/// (in the async runtime it is called in).
pub(crate) fn init_stderr() {
    let filter = EnvFilter::try_from_env("WASMPOD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr);
    let (otel, trouble) = otel(true);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    report(trouble);
}

/// The layer exporting spans, when `wanted` and the environment asks for it, and what
/// kept it from being made.
fn otel<S>(wanted: bool) -> (Option<Box<dyn Layer<S> + Send + Sync>>, Option<String>)
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    if !wanted {
        return (None, None);
    }
    let settings = crate::telemetry::Settings::from_env(
        |name| std::env::var(name).ok(),
        "containerd-shim-wasm-v1",
    );
    match settings.and_then(crate::telemetry::layer) {
        Ok(layer) => (layer, None),
        Err(e) => (None, Some(e)),
    }
}

fn report(trouble: Option<String>) {
    match trouble {
        Some(error) => tracing::warn!(%error, "traces are not exported"),
        None if crate::telemetry::enabled() => tracing::info!("exporting traces over OTLP"),
        None => {}
    }
}

/// Installs the subscriber. `WASMPOD_LOG` overrides the level (`info`, or `debug` when
/// containerd runs with debug logging). A serving shim also exports its spans when the
/// `OTEL_*` variables ask for it.
pub(crate) fn init(flags: &Flags) {
    let default = if flags.debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("WASMPOD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let serving = !matches!(flags.action.as_str(), "start" | "delete");
    // The serving shim runs in the first container's bundle, where containerd made `log`.
    let fifo = serving
        .then(|| OpenOptions::new().write(true).open("log").ok())
        .flatten();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false);
    let fmt = match fifo {
        Some(f) => fmt.with_writer(Mutex::new(f)).boxed(),
        None => fmt.with_writer(std::io::stderr).boxed(),
    };
    let timings = std::env::var_os(TIMINGS_ENV)
        .and_then(|path| OpenOptions::new().create(true).append(true).open(path).ok())
        .map(|file| {
            Timings {
                file: Mutex::new(file),
            }
            .with_filter(tracing_subscriber::filter::filter_fn(timed))
        });
    let (otel, trouble) = otel(serving);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(timings)
        .with(otel)
        .try_init();
    report(trouble);
}

/// Writes `<unix µs at start> <µs> <phase> <container id> <pid>` for every closed span
/// with a `phase` field (its container id from an `id` field, its own or an ancestor's).
struct Timings {
    file: Mutex<File>,
}

/// What a timed span remembers from its opening.
struct Opened {
    phase: String,
    id: String,
    wall_us: u128,
    at: Instant,
}

#[derive(Default)]
struct Fields {
    phase: Option<String>,
    id: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "phase" => self.phase = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// The container id a span of the guest's task or of a call carries (`%id`, displayed).
#[derive(Clone)]
struct ContainerId(String);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Timings {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let container = fields.id.clone().or_else(|| {
            span.scope()
                .skip(1)
                .find_map(|s| s.extensions().get::<ContainerId>().map(|c| c.0.clone()))
        });
        let mut ext = span.extensions_mut();
        if let Some(c) = &container {
            ext.insert(ContainerId(c.clone()));
        }
        if let Some(phase) = fields.phase {
            ext.insert(Opened {
                phase,
                id: container.unwrap_or_else(|| "-".to_owned()),
                wall_us: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros()),
                at: Instant::now(),
            });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        let Some(o) = ext.get::<Opened>() else { return };
        let line = format!(
            "{} {} {} {} {}\n",
            o.wall_us,
            o.at.elapsed().as_micros(),
            o.phase,
            o.id,
            std::process::id()
        );
        // One write per line, appended: lines of concurrent shims do not interleave.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.write_all(line.as_bytes());
    }
}
