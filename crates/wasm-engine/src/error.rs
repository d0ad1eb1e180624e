//! The error type of the engine crate.

use std::path::PathBuf;

/// What can go wrong while loading or starting a workload.
///
/// A guest that runs and then fails (a trap, a kill, a non-zero exit) is not an error: it
/// is an [`ExitStatus`](crate::ExitStatus).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are neither a WebAssembly binary nor WebAssembly text.
    #[error("not a WebAssembly module or component: {reason}")]
    NotWasm {
        /// What was found instead.
        reason: String,
    },
    /// The bytes look like WebAssembly but do not validate or compile.
    #[error("invalid WebAssembly: {0}")]
    Invalid(String),
    /// The program is larger, or defines more functions, than the [`ProgramLimits`](crate::ProgramLimits) allow.
    #[error("{name}: {detail}")]
    LimitExceeded {
        /// The program's name (its file, or its image's layer).
        name: String,
        /// Its size or function count and the limit.
        detail: String,
    },
    /// The compiler process failed without a verdict on the program: killed (its memory
    /// cap, say), or its code did not load.
    #[error("{name}: compiling failed: {detail}")]
    Compiler {
        /// The program's name.
        name: String,
        /// How it failed.
        detail: String,
    },
    /// The program imports something the host does not provide, or lacks its entry point.
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    /// A preopened directory could not be opened.
    #[error("cannot open directory {path} for the guest: {reason}")]
    Preopen {
        /// The host path at fault.
        path: PathBuf,
        /// Why it could not be opened.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The engine itself could not be configured.
    #[error("engine configuration: {0}")]
    Config(String),
    /// An I/O error while setting up stdio or the runtime.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The engine crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats a wasmtime error with its whole cause chain on one line.
pub(crate) fn chain(err: &wasmtime::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}
