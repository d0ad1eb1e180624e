//! The engine under every wasmpod container: compiles, caches, instantiates and runs
//! WebAssembly workloads under limits.
//!
//! # Core concepts
//!
//! - [`Engine`]: one per process. It owns the compiler, the on-disk precompile
//!   [cache](EngineConfig::cache_dir) and the epoch ticker that lets a running guest be
//!   stopped promptly. Cloning an `Engine` is cheap and shares all of that.
//! - [`Program`]: compiled code, either a WASI preview 1 core module (entry point `_start`)
//!   or a preview 2 component exporting `wasi:cli/run`. [`Engine::load`] tells the two
//!   apart from the binary header and accepts `.wat` text too.
//! - [`RunConfig`]: everything a single run is given — arguments, environment, preopened
//!   directories, [`Stdio`], [`Limits`] and a [`KillHandle`]. Plain data: no wasmtime type
//!   appears in this crate's API.
//! - [`ExitStatus`]: how a run ended: the guest's own `proc_exit` code, a trap (134), a
//!   kill (137 by default) or a deadline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wasm_engine::Error> {
//! use wasm_engine::{Engine, EngineConfig, RunConfig};
//!
//! let engine = Engine::new(EngineConfig::default())?;
//! let program = engine.load(br#"(module (func (export "_start")))"#)?;
//! let status = engine.run(&program, RunConfig::default()).await?;
//! assert_eq!(status.code(), 0);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod cache;
mod compiler;
mod engine;
mod error;
mod limits;
mod net;
mod program;
mod run;
mod serve;
mod stdio;
#[allow(
    unsafe_code,
    reason = "the system calls std has no API for, and loading our own compiled code"
)]
mod sys;

pub use cache::{clear_cache, CacheCleared};
pub use compiler::{run_child_if_asked, CompilerProcess};
pub use engine::{guest_runtime, Engine, EngineConfig, Pooling};
pub use error::{Error, Result};
pub use net::{Destination, HostPattern, NetworkPolicy};
pub use program::{Program, ProgramKind, ProgramLimits};
pub use run::{
    CpuMeter, ExitReason, ExitStatus, KillHandle, Limits, MemoryGauge, Preopen, RunConfig,
};
pub use serve::{HttpLimits, ServeConfig, ServeStats};
pub use stdio::{Stdio, StdioStream};
#[cfg(feature = "escape-simulator")]
pub use sys::escape;

/// The wasmtime release the engine is built on (the workspace pins it), for version output.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Exit status of a guest stopped by a kill (128 + SIGKILL), as a container runtime reports it.
pub const EXIT_KILLED: i32 = 137;
/// Exit status of a guest stopped by a polite termination (128 + SIGTERM).
pub const EXIT_TERMINATED: i32 = 143;
/// Exit status of a guest that trapped, as wasmtime's CLI reports it (128 + SIGABRT).
pub const EXIT_TRAP: i32 = 134;
/// Exit status of a workload that could not start: not wasm, invalid, or missing imports.
pub const EXIT_CANNOT_START: i32 = 126;
