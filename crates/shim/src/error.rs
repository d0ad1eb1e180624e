//! The shim's error type, mapped once to ttrpc status codes at the edge: what the request
//! got wrong is INVALID_ARGUMENT (a spec that cannot become a policy, an entrypoint that is
//! not wasm), a missing container NOT_FOUND, a call out of turn FAILED_PRECONDITION, and
//! what failed on the node (mounts, cgroups, I/O, the shim itself) INTERNAL.

use containerd_shim::protos::ttrpc;

/// What can go wrong in a task call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container or process with that id in this shim.
    #[error("container {0}: not found")]
    NotFound(String),
    /// A container with that id already exists in this shim.
    #[error("container {0}: already exists")]
    AlreadyExists(String),
    /// The call does not fit the container's state (`Start` of a running task, say).
    #[error("container {id}: {call} is not possible while the task is {state}")]
    FailedPrecondition {
        /// The container.
        id: String,
        /// The task call refused.
        call: &'static str,
        /// The state the container is in.
        state: &'static str,
    },
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The call is not implemented for wasm containers.
    #[error("{0} is not supported by the wasm shim (io.containerd.wasm.v1)")]
    Unimplemented(&'static str),
    /// The spec cannot become a run policy (entrypoint, mounts, root filesystem).
    #[error("container {id}: {source}")]
    Policy {
        /// The container.
        id: String,
        /// The sandbox's reason.
        source: sandbox::Error,
    },
    /// The entrypoint could not be loaded as wasm.
    #[error("container {id}: {what}: {source}")]
    Engine {
        /// The container.
        id: String,
        /// What was being loaded (the image and entrypoint).
        what: String,
        /// The engine's reason.
        source: wasm_engine::Error,
    },
    /// The container's cgroup could not be made, changed or removed.
    #[error("container {id}: {source}")]
    Cgroup {
        /// The container.
        id: String,
        /// The sandbox's reason.
        source: sandbox::Error,
    },
    /// Threads in a network namespace could not be started.
    #[error("{context}: {source}")]
    Network {
        /// Whose network, and what was being done.
        context: String,
        /// The sandbox's reason.
        source: sandbox::Error,
    },
    /// Something in the shim itself failed (a task of its own panicked, an encoding): not
    /// the request's fault.
    #[error("{context}: internal error: {reason}")]
    Internal {
        /// What was being done.
        context: String,
        /// What went wrong.
        reason: String,
    },
    /// Mounting or unmounting the root filesystem failed.
    #[error("container {id}: root filesystem: {reason}")]
    Rootfs {
        /// The container.
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// runc failed a native container's call.
    #[error("container {id}: {what}: {reason}")]
    Native {
        /// The container.
        id: String,
        /// What runc was asked (`runc create`).
        what: String,
        /// runc's own message.
        reason: String,
    },
    /// The image's wasm layer could not be read from containerd's content store.
    #[error("content store: {0}")]
    Content(String),
    /// An I/O error (opening containerd's FIFOs, reading the bundle).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The shim's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound(_) => ttrpc::Code::NOT_FOUND,
            Error::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            Error::FailedPrecondition { .. } => ttrpc::Code::FAILED_PRECONDITION,
            Error::InvalidArgument(_) | Error::Policy { .. } | Error::Engine { .. } => {
                ttrpc::Code::INVALID_ARGUMENT
            }
            Error::Unimplemented(_) => ttrpc::Code::UNIMPLEMENTED,
            Error::Rootfs { .. }
            | Error::Io { .. }
            | Error::Content(_)
            | Error::Cgroup { .. }
            | Error::Network { .. }
            | Error::Native { .. }
            | Error::Internal { .. } => ttrpc::Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

/// An I/O error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: Error) -> ttrpc::Code {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(status) => status.code(),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn each_error_maps_to_one_grpc_code() {
        assert_eq!(code(Error::NotFound("c".into())), ttrpc::Code::NOT_FOUND);
        assert_eq!(
            code(Error::InvalidArgument("bad".into())),
            ttrpc::Code::INVALID_ARGUMENT
        );
        let cgroup = Error::Cgroup {
            id: "c".into(),
            source: sandbox::Error::Cgroup {
                path: "/wasmpod/c".into(),
                reason: "mkdir: permission denied".into(),
            },
        };
        assert_eq!(
            cgroup.to_string(),
            "container c: cgroup /wasmpod/c: mkdir: permission denied"
        );
        assert_eq!(code(cgroup), ttrpc::Code::INTERNAL);
        let internal = Error::Internal {
            context: "container c: compiling".into(),
            reason: "task panicked".into(),
        };
        assert_eq!(code(internal), ttrpc::Code::INTERNAL);
        assert_eq!(
            code(Error::Unimplemented("Pause")),
            ttrpc::Code::UNIMPLEMENTED
        );
    }
}
