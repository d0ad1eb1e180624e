//! wasmpod's Kubernetes side: a CRI v1 client, and for one Pod manifest what the kubelet
//! does to a node — so a Pod with `runtimeClassName: wasm` runs through containerd's CRI
//! plugin and our shim where no kubelet runs — plus the node installer.
//!
//! # Core concepts
//!
//! - [`Cri`]: the runtime and image services of a CRI endpoint (containerd's socket), over
//!   tonic with the `k8s-cri` messages. Every failed call becomes an [`Error`] naming the
//!   call, mapped once in [`Error`]'s `from_status`.
//! - [`Manifests`]: `kubectl apply -f`-style YAML files, decoded strictly into k8s-openapi
//!   types (Pods, RuntimeClasses, ConfigMaps, Secrets).
//! - [`PodPlan`]: a Pod turned into the RunPodSandbox and CreateContainer configs the
//!   kubelet would send (labels, log paths, resources, env, mounts) and the volumes to make
//!   on the node. Pure: no I/O.
//! - [`run_pod`]: the plan executed — volumes, sandbox, pulls, init containers, containers,
//!   restarts by `restartPolicy`, logs followed from the CRI log files ([`LogReader`]).
//! - [`install()`]: the shim copied onto the node and the `wasm` handler added to
//!   containerd's config (versions 2 and 3), idempotently, with a backup.
//!
//! **Boundary.** Never depends on the shim: the two meet only at containerd.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod error;
pub mod install;
mod logs;
mod manifest;
mod plan;
mod quantity;
mod runner;
pub mod stream;
mod volumes;

pub use client::{Cri, DEFAULT_ENDPOINT, DEFAULT_TIMEOUT};
pub use error::{Error, Result};
pub use grpc_api::cri::v1 as api;
pub use install::{install, InstallOptions, InstallReport};
pub use k8s_openapi::api::core::v1::Pod;
pub use logs::{Entry, LogReader, Stream};
pub use manifest::{decode, documents, Manifests};
pub use plan::{
    CgroupDriver, ContainerPlan, PlanOptions, PodPlan, PullPolicy, QosClass, RestartPolicy,
    VolumeSetup, CGROUP_PARENT_ANNOTATION, CONTAINER_NAME_LABEL, POD_NAMESPACE_LABEL,
    POD_NAME_LABEL, POD_UID_LABEL,
};
pub use runner::{
    find_container, find_pods, remove_pods, run_pod, short, Credentials, LogSink, PodOutcome,
};

/// This machine's name as the kubelet names its node by default: the hostname (empty when
/// it cannot be read). For [`PlanOptions::new`].
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
