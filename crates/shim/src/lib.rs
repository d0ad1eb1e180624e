//! The containerd shim v2 for WebAssembly: `containerd-shim-wasm-v1`, runtime type
//! `io.containerd.wasm.v1`.
//!
//! # Core concepts
//!
//! - `Service`: the shim process as containerd starts it. `start` spawns (or, for the
//!   containers of one pod, reuses) a serving shim and prints its ttrpc address in the form
//!   the calling containerd reads (1.6 to 2.3: see `bootstrap`); `delete` cleans up after
//!   a serving shim that died; serving answers the task API as v2 and as v3; `-info` and
//!   `-v` describe the shim.
//! - [`TaskService`]: the task API over the containers of one serving shim. Each container
//!   walks `Created → Running → Stopped` and is removed on Delete. Create mounts the
//!   snapshot containerd sends at `bundle/rootfs`, turns `config.json` into a
//!   [`sandbox::RunPolicy`] and compiles the entrypoint (through the precompile cache), so
//!   a workload that cannot run fails Create and leaves nothing behind; Start runs it on
//!   the shared [`wasm_engine::Engine`]; Kill stops it through its kill handle (SIGTERM
//!   143, SIGKILL 137), even while it spins.
//! - A container without snapshot mounts (a Wasm OCI artifact: config
//!   `application/vnd.wasm.config.v0+json`, layer `application/wasm`) runs the wasm layer
//!   of its image, read from containerd's content store over gRPC and checked against its
//!   digest; the precompile cache compiles each digest once.
//! - Isolation levels (`wasmpod.io/isolation`, or the runtime handler's `isolation`
//!   option): `shared` guests run inside the serving shim's process and report its pid;
//!   `process` guests each run in a child of the shim (this binary re-executed with a
//!   hidden first argument), in a cgroup made from `linux.resources`, confined by
//!   [`sandbox::Confinement`]; Kill signals the child, Stats reads its cgroup, Update
//!   changes it, and a kill by the cgroup's OOM killer is reported as an OOM event.
//! - Grouping (`wasmpod.io/grouping`, or the handler's `grouping` option): the containers of
//!   a pod share one serving shim; with `node`, every container of the namespace does.
//! - `containerd-shim-wasm-v1 precompile` is the node's precompile agent: it watches
//!   containerd's image events and compiles each wasm image into the cache as it arrives,
//!   so Create finds it compiled (`precompile`).
//! - A CRI pod's sandbox (pause) container runs nothing: it is held until killed, so a pod
//!   with `runtimeClassName: wasm` needs no native runtime.
//! - A container whose entrypoint is a Linux program (ELF, or a `#!` script) is run by runc
//!   (`native`): created on containerd's rootfs mount with containerd's spec, its init a
//!   child of the shim once runc is gone; Exec runs `runc exec` in it. The pod's IPC, UTS
//!   and PID namespaces, which containerd names through the sandbox task's pid (the
//!   shim's), are a pod holder's (`pod`), started with the pod's first native container.

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod bootstrap;
mod container;
mod content;
mod error;
mod events;
mod logging;
mod native;
mod options;
mod pod;
mod precompile;
mod process;
mod rootfs;
mod service;
mod stdio;
#[allow(
    unsafe_code,
    reason = "the system calls std has no API for, behind safe functions"
)]
mod sys;
mod task;
mod telemetry;

pub use error::{Error, Result};
pub use task::TaskService;

/// The runtime type containerd knows this shim by.
pub const RUNTIME_TYPE: &str = "io.containerd.wasm.v1";

/// CRI's annotation naming a container's pod sandbox.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// CRI's annotation telling a pod's sandbox container (`sandbox`) from the others.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming a container's image.
pub const IMAGE_NAME_ANNOTATION: &str = "io.kubernetes.cri.image-name";

/// Runs the shim as containerd invoked it (`start`, `delete`, serving, `-info`, `-v`);
/// never returns, exiting with status 1 and the reason on stderr on failure.
pub fn main() {
    // A compile child of this shim (the engine's `compiler`): compiles and exits.
    wasm_engine::run_child_if_asked();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(process::GUEST_COMMAND) {
        process::guest_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some(pod::HOLDER_COMMAND) {
        pod::holder_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some(precompile::COMMAND) {
        precompile::main(&args[1..]);
    }
    bootstrap::main(&args)
}
