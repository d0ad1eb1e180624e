//! The shim's own tracing: to the `log` FIFO containerd reads from the bundle (which it
//! copies into its own log), or to stderr for the short-lived `start` and `delete` calls.

use std::fs::OpenOptions;
use std::sync::Mutex;

use containerd_shim::Flags;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber. `WASMPOD_LOG` overrides the level (`info`, or `debug` when
/// containerd runs with debug logging).
pub(crate) fn init(flags: &Flags) {
    let default = if flags.debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("WASMPOD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let serving = !matches!(flags.action.as_str(), "start" | "delete");
    // The serving shim runs in the first container's bundle, where containerd made `log`.
    let fifo = serving
        .then(|| OpenOptions::new().write(true).open("log").ok())
        .flatten();
    let _ = match fifo {
        Some(f) => builder.with_writer(Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}
