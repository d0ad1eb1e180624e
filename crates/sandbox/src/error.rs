//! The error type of the sandbox crate.

use std::path::PathBuf;

/// Why a spec cannot become a run policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required part of the spec is missing or malformed.
    #[error("invalid runtime spec: {0}")]
    Spec(String),
    /// The entrypoint (`process.args[0]`) cannot be found or read inside the container.
    #[error("entrypoint {path}: {reason}")]
    Entrypoint {
        /// The path as the spec gives it.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A mount cannot be given to the guest.
    #[error("mount {destination}: {reason}")]
    Mount {
        /// The mount's destination inside the container.
        destination: String,
        /// What went wrong.
        reason: String,
    },
    /// The root filesystem cannot be used.
    #[error("root filesystem {path}: {reason}")]
    Root {
        /// The host path of the root filesystem.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A process-level container's cgroup cannot be made or changed.
    #[error("cgroup {path}: {reason}")]
    Cgroup {
        /// The cgroup's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A volume (`HOST:GUEST[:ro|rw]`) cannot be given to the guest.
    #[error("volume {volume:?}: {reason}")]
    Volume {
        /// The volume as given.
        volume: String,
        /// What went wrong.
        reason: String,
    },
    /// A process-level container's process cannot be confined.
    #[error("confining the container's process: {0}")]
    Confine(String),
}

/// The sandbox crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
