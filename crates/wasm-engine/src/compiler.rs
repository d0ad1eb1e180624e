//! Compiling in a child process, under a deadline and a memory cap.
//!
//! Native code generation costs time and memory that grow faster than the program (a 1 MB
//! module of three functions with 30,000 live locals took 70 s of CPU), and a compile
//! inside the caller cannot be stopped: a shim holding other tenants' guests would pay it
//! in its own threads, memory and cgroup for as long as it lasts. With a
//! [`CompilerProcess`] in the [`EngineConfig`](crate::EngineConfig), a cache miss runs
//! the compile in a child — the same executable, which calls [`run_child_if_asked`]
//! first thing in `main` — at a lower CPU priority, with `RLIMIT_DATA` at the program's
//! [`compile_memory`](crate::ProgramLimits::compile_memory), killed at its
//! [`compile_timeout`](crate::ProgramLimits::compile_timeout). The child reads the
//! binary on stdin and writes wasmtime's serialized code on stdout; the parent
//! deserializes it with an engine of the same settings (wasmtime refuses code compiled
//! for other settings).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::engine::Pooling;
use crate::error::{Error, Result};
use crate::program::{ProgramKind, ProgramLimits};

/// Set in a compile child's environment: what it compiles (`module` or `component`).
const CHILD_ENV: &str = "WASMPOD_COMPILE_CHILD";
/// Its memory cap in bytes.
const MEMORY_ENV: &str = "WASMPOD_COMPILE_MEMORY";
/// The parent's pid: the child ends with it.
const PARENT_ENV: &str = "WASMPOD_COMPILE_PARENT";
/// The parent engine's pooling settings (`instances,max_memory`), which compiled code
/// must match.
const POOLING_ENV: &str = "WASMPOD_COMPILE_POOLING";

/// What the child writes before the code: the parent skips anything before it (whatever
/// the executable printed before compile mode took over, a test harness's banner say).
const MARKER: &[u8] = b"\0wasmpod compiled code\0";

/// The most of a child's stderr kept for the error.
const MAX_STDERR: u64 = 16 << 10;

/// How a compile child is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompilerProcess {
    /// The executable; it must call [`run_child_if_asked`] before anything else.
    pub program: PathBuf,
    /// Its arguments (a test harness's filter, say); the request itself travels in the
    /// environment and on stdin.
    pub args: Vec<OsString>,
}

impl CompilerProcess {
    /// This very executable: its path, or `/proc/self/exe` once an upgrade replaced the
    /// file (which still starts the same code).
    pub fn this_executable() -> Self {
        let program = std::env::current_exe()
            .ok()
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        Self {
            program,
            args: Vec::new(),
        }
    }
}

/// If this process was started as a compile child, compiles the binary on stdin, writes
/// the code to stdout and exits (0, or 1 with the compiler's error on stderr). Returns at
/// once otherwise. Call it first thing in `main` of any executable named in a
/// [`CompilerProcess`].
pub fn run_child_if_asked() {
    let Some(kind) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let code = match child(&kind) {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "{message}");
            1
        }
    };
    std::process::exit(code);
}

fn child(kind: &std::ffi::OsStr) -> std::result::Result<(), String> {
    // Dies with its parent (a SIGKILLed shim leaves no compile running), including a
    // parent that died before this line.
    // Cannot fail for this option and signal; a failure would only lose the tie.
    let _ = crate::sys::die_with_parent();
    let parent = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok());
    if parent != Some(crate::sys::parent_pid()) {
        return Err("the process that asked for this compile is gone".to_owned());
    }
    // Behind whatever else runs on the node, and under its own memory cap: an allocation
    // past it fails and ends this process, not the one that asked.
    crate::sys::nice(10);
    if let Some(cap) = std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
    {
        crate::sys::limit_data(cap)
            .map_err(|e| format!("setting the compile memory limit: {e}"))?;
    }
    let pooling = std::env::var(POOLING_ENV).ok().and_then(|p| {
        let (instances, max_memory) = p.split_once(',')?;
        Some(Pooling {
            instances: instances.parse().ok()?,
            max_memory: max_memory.parse().ok()?,
        })
    });
    let engine = crate::Engine::new(crate::EngineConfig {
        pooling,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let mut binary = Vec::new();
    std::io::stdin()
        .read_to_end(&mut binary)
        .map_err(|e| format!("reading the program: {e}"))?;
    let kind = match kind.to_str() {
        Some("component") => ProgramKind::Component,
        _ => ProgramKind::Module,
    };
    let code = engine
        .compile_here(&binary, kind)
        .map_err(|e| e.to_string())?;
    let bytes = code.serialize().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    out.write_all(MARKER)
        .and_then(|()| out.write_all(&bytes))
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the code: {e}"))
}

/// Compiles `binary` in a child started by `process`; returns the serialized code.
pub(crate) fn compile(
    process: &CompilerProcess,
    pooling: Option<Pooling>,
    binary: &[u8],
    kind: ProgramKind,
    name: &Path,
    limits: &ProgramLimits,
) -> Result<Vec<u8>> {
    let io = |context: &str| {
        let context = format!("{}: {context}", name.display());
        move |source| Error::Io { context, source }
    };
    let mut cmd = Command::new(&process.program);
    // Nothing of the caller's environment (a shim's containerd addresses, say): the
    // child needs only the request, and is not mistaken for a shim.
    cmd.args(&process.args)
        .env_clear()
        .env(PARENT_ENV, std::process::id().to_string())
        .env(
            CHILD_ENV,
            match kind {
                ProgramKind::Module => "module",
                ProgramKind::Component => "component",
            },
        )
        .env(MEMORY_ENV, limits.compile_memory.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match pooling {
        Some(p) => cmd.env(POOLING_ENV, format!("{},{}", p.instances, p.max_memory)),
        None => &mut cmd,
    };
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().map_err(io("starting the compiler process"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        // The child reads all of the program before it writes: feed it from a thread.
        scope.spawn(move || {
            let _ = stdin.write_all(binary);
        });
        let errors = scope.spawn(move || {
            let mut stderr = stderr;
            let mut kept = Vec::new();
            let _ = (&mut stderr).take(MAX_STDERR).read_to_end(&mut kept);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            String::from_utf8_lossy(&kept).into_owned()
        });
        let tx = done_tx.clone();
        scope.spawn(move || {
            let mut code = Vec::new();
            let read = stdout.read_to_end(&mut code);
            let _ = tx.send(read.map(|_| code));
        });
        let deadline = limits.compile_timeout.unwrap_or(Duration::MAX);
        let code = match done_rx.recv_timeout(deadline) {
            Ok(read) => read.map_err(io("reading the compiled code")),
            Err(_) => {
                // Killing the child closes its stdout, which ends the reader.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::LimitExceeded {
                    name: name.display().to_string(),
                    detail: format!(
                        "compiling took longer than the deadline of {}",
                        show_duration(deadline)
                    ),
                });
            }
        };
        // The outcome is read from the pipes, not the exit status: a process that reaps
        // every child (a shim is a subreaper) may have taken the status already.
        let status = child.wait().ok();
        let errors = errors.join().unwrap_or_default();
        let code = code?;
        tracing::debug!(?kind, elapsed = ?started.elapsed(), ?status, "compiled in a child process");
        if let Some(start) = code.windows(MARKER.len()).position(|w| w == MARKER) {
            // Cut short, it fails to deserialize and is reported so.
            return Ok(code[start + MARKER.len()..].to_vec());
        }
        let errors = errors.trim();
        if let Some(message) = errors.strip_prefix("invalid WebAssembly: ") {
            // The compiler's own verdict: the program is invalid.
            return Err(Error::Invalid(message.to_owned()));
        }
        // Rust reports an allocation that failed and aborts: under RLIMIT_DATA, that is
        // the cap.
        let detail = if errors.contains("memory allocation of") {
            format!(
                "the compiler process ran out of memory (its limit is {} bytes)",
                limits.compile_memory
            )
        } else {
            use std::os::unix::process::ExitStatusExt as _;
            let how = match status {
                Some(s) => match s.signal() {
                    Some(signal) => format!("was killed by signal {signal}"),
                    None => format!("exited with {s}"),
                },
                None => "ended".to_owned(),
            };
            match errors.lines().next() {
                Some(first) => format!("the compiler process {how} without code: {first}"),
                None => format!("the compiler process {how} without code"),
            }
        };
        Err(Error::Compiler {
            name: name.display().to_string(),
            detail,
        })
    })
}

/// `90s` as `1m 30s`, `200ms` as `200ms`.
fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        return format!("{d:?}");
    }
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    }
}

#[cfg(test)]
mod tests;
