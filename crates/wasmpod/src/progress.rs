//! Compiling made visible: a spinner with the elapsed time and the program's size while a
//! compile runs longer than a moment on a terminal, and one line with its duration.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use wasm_engine::{Engine, Program, ProgramLimits};

/// How long a compile runs before the spinner shows: most finish sooner.
const SPINNER_AFTER: Duration = Duration::from_millis(300);
/// A compile at least this long gets its line on stderr (shorter ones are logged at info).
const LINE_AFTER: Duration = Duration::from_secs(1);

/// `1.2 MB`, `340 kB`, `12 B` (decimal units, as file managers print sizes).
pub(crate) fn show_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{} kB", b / 1_000),
        b => format!("{b} B"),
    }
}

/// What [`load`] did: compiled (how long, how big) or found in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loaded {
    Cached,
    Compiled { size: u64, took: Duration },
}

/// Loads `bytes` through `engine`, showing a compile as this module says; `tell` prints
/// the compile's line however short it was (`wasmpod compile`).
pub(crate) fn load(
    engine: &Engine,
    bytes: &[u8],
    name: &Path,
    limits: &ProgramLimits,
    tell: bool,
) -> wasm_engine::Result<(Program, Loaded)> {
    let terminal = std::io::stderr().is_terminal();
    let mut spinner: Option<Spinner> = None;
    let mut started: Option<(Instant, u64)> = None;
    let result = engine.load_reporting(bytes, name, limits, |size| {
        started = Some((Instant::now(), size));
        if terminal {
            spinner = Some(Spinner::start(name, size));
        }
    });
    if let Some(spinner) = spinner {
        spinner.stop();
    }
    let program = result?;
    let loaded = match started {
        Some((at, size)) => Loaded::Compiled {
            size,
            took: at.elapsed(),
        },
        None => Loaded::Cached,
    };
    if let Loaded::Compiled { size, took } = loaded {
        let line = format!(
            "wasmpod: compiled {} ({}) in {:.1}s; cached for the next run",
            name.display(),
            show_size(size),
            took.as_secs_f64()
        );
        if tell || took >= LINE_AFTER || (terminal && took >= SPINNER_AFTER) {
            eprintln!("{line}");
        } else {
            tracing::info!("{line}");
        }
    }
    Ok((program, loaded))
}

/// The spinner: `⠙ compiling app.wasm (9.8 MB) 3.2s`, redrawn every 100 ms from
/// [`SPINNER_AFTER`] on (indicatif, as `wasmpod pull`'s bars), cleared when stopped.
struct Spinner {
    bar: indicatif::ProgressBar,
    /// Set when stopped; the shower looks at it under the same lock.
    stopped: std::sync::Arc<std::sync::Mutex<bool>>,
}

impl Spinner {
    fn start(name: &Path, size: u64) -> Spinner {
        let bar = indicatif::ProgressBar::hidden();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed_secs}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
                .with_key(
                    "elapsed_secs",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
                    },
                ),
        );
        bar.set_message(format!(
            "compiling {} ({})",
            name.display(),
            show_size(size)
        ));
        // Shown only once the compile has lasted a moment: most end sooner.
        let stopped = std::sync::Arc::new(std::sync::Mutex::new(false));
        let (shown, seen) = (bar.clone(), stopped.clone());
        std::thread::spawn(move || {
            std::thread::sleep(SPINNER_AFTER);
            let stopped = seen.lock().unwrap_or_else(|p| p.into_inner());
            if !*stopped {
                shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                shown.enable_steady_tick(Duration::from_millis(100));
            }
        });
        Spinner { bar, stopped }
    }

    fn stop(self) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        *stopped = true;
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(show_size(12), "12 B");
        assert_eq!(show_size(340_512), "340 kB");
        assert_eq!(show_size(9_812_345), "9.8 MB");
        assert_eq!(show_size(2_500_000_000), "2.5 GB");
    }

    #[test]
    fn a_compile_is_told_apart_from_a_cache_hit() {
        let cache = tempfile::tempdir().unwrap();
        let engine =
            Engine::new(wasm_engine::EngineConfig::default().cache_dir(cache.path())).unwrap();
        let wat = br#"(module (func (export "_start")))"#;
        let name = Path::new("tiny.wat");
        let limits = ProgramLimits::default();
        let (_, first) = load(&engine, wat, name, &limits, false).unwrap();
        let Loaded::Compiled { size, .. } = first else {
            panic!("the first load compiles: {first:?}");
        };
        // The binary's size (36 bytes), not the text's (33).
        assert_eq!((size, wat.len()), (36, 33));
        let (_, second) = load(&engine, wat, name, &limits, false).unwrap();
        assert_eq!(second, Loaded::Cached);
    }
}
