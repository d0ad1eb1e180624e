//! wasmpod's isolation policy: what a container is allowed, decided from its OCI runtime spec.
//!
//! # Core concepts
//!
//! - [`RunPolicy::from_spec`] reads an [`oci_spec::runtime::Spec`] (the `config.json` that
//!   containerd hands a shim, or the one `wasmpod run` builds the same way) and a bundle
//!   directory, and decides: which wasm file runs (`process.args[0]`, looked up inside the
//!   root filesystem and mounts), its arguments, environment and working directory, which
//!   host directories the guest sees (the root filesystem at `/`, bind mounts at their
//!   destinations, read-only where the spec says `ro` or `root.readonly`), and its limits
//!   (`linux.resources.memory.limit`).
//! - [`ContainerSpec`] (with [`Volume`]) builds that spec from plain terms — argv,
//!   environment, working directory, volumes, a memory limit, a root filesystem — as
//!   `wasmpod run` and embedders without containerd do (docs/embedding.md).
//! - [`Warning`]: every part of the spec that a WebAssembly guest cannot be given is named
//!   in one, never silently dropped. Restrictions that a guest cannot reach through the
//!   engine — capabilities, AppArmor, SELinux, masked and read-only kernel paths, device
//!   rules — need no warning while the engine holds. That is true only while wasmtime has
//!   no bug, so the `process` level also confines the process itself (below), seccomp
//!   included; the `shared` level does not yet (docs/security.md).
//! - Isolation levels ([`Selection`]): `shared` (the default) runs a container inside the
//!   shim's process beside its neighbours, isolated by the wasm runtime; `process` gives it a
//!   process of its own in a [`Cgroup`] (memory, CPU, pids from `linux.resources`) under a
//!   [`Confinement`] (the pod's network namespace, its own mount namespace, an unprivileged
//!   user with no capabilities, `no_new_privs`) and a [`Hardening`] (a seccomp allow list,
//!   the spec's seccomp profile over it, a Landlock ruleset). Chosen by the
//!   `wasmpod.io/isolation` annotation or the runtime handler's options.
//! - Confinement: the guest sees only its preopened directories. Paths are resolved with
//!   `cap-std`, so `..`, absolute paths and symlinks cannot lead out of them; the same
//!   holds for the entrypoint lookup done here.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! let bundle = Path::new("/run/containerd/io.containerd.runtime.v2.task/default/hello");
//! let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))?;
//! let policy = sandbox::RunPolicy::from_spec(&spec, bundle)?;
//! for warning in policy.warnings() {
//!     eprintln!("warning: {warning}");
//! }
//! let wasm = policy.read_entrypoint(wasm_engine::ProgramLimits::DEFAULT_MAX_SIZE)?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod cgroup;
mod confine;
mod error;
pub mod harden;
mod isolation;
mod netns;
mod network;
mod paths;
mod policy;
mod spec;
#[allow(
    unsafe_code,
    reason = "the system calls std has no API for, behind safe functions"
)]
mod sys;
mod systemd;
mod units;

pub use cgroup::{cgroup_path, remove_pod_cgroup, Cgroup, CgroupStats};
pub use confine::{Confinement, Network};
pub use error::{Error, Result};
pub use harden::Hardening;
pub use isolation::{
    Grouping, GuestUser, HandlerOptions, Isolation, Selection, GROUPING_ANNOTATION,
    ISOLATION_ANNOTATION,
};
pub use netns::NetnsRuntime;
pub use network::{
    exposed_tcp_ports, NetworkPlan, ALLOWED_OUTBOUND_ANNOTATION, DEFAULT_PORT, PORT_ANNOTATION,
};
pub use policy::{read_file_limited, EntrypointKind, RunPolicy, Warning};
pub use spec::{ContainerSpec, Volume};
pub use systemd::{resource_properties, Scope, Systemd};
pub use units::parse_bytes;
