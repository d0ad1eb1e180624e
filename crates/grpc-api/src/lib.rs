//! The gRPC APIs wasmpod speaks: the Kubernetes CRI v1 (`runtime.v1`: the runtime and image
//! services, as a kubelet calls them) and containerd's own services (content, containers,
//! images, events, namespaces, snapshots, tasks, version), with a [`Client`] for
//! containerd's socket.
//!
//! The messages and clients are generated when this crate builds, by protox and
//! tonic-prost-build, from the `.proto` files inside the crates.io packages `k8s-cri` and
//! `containerd-client` (build.rs). Building needs no protoc, and the tree holds no copy of
//! the protos.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;

pub use client::{namespaced, Client};
pub use tonic;

#[allow(
    missing_docs,
    unused_qualifications,
    clippy::all,
    clippy::allow_attributes_without_reason,
    rustdoc::all,
    reason = "generated from the protos: their comments are the documentation there is"
)]
mod generated {
    pub(crate) mod cri {
        include!(concat!(env!("OUT_DIR"), "/cri.rs"));
    }
    pub(crate) mod containerd {
        include!(concat!(env!("OUT_DIR"), "/containerd.rs"));
    }
}

/// The Kubernetes Container Runtime Interface.
pub mod cri {
    /// CRI v1 (protobuf package `runtime.v1`), the version every kubelet since 1.26 speaks.
    pub use crate::generated::cri::runtime::v1;
}

/// containerd's API (protobuf packages `containerd.*`), as its modules nest.
pub use generated::containerd::containerd;
