//! The error type of the cri crate, and the one place runtime (gRPC) errors become messages.

use std::path::PathBuf;

/// What went wrong talking to a CRI runtime or preparing what it is asked to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime endpoint cannot be reached.
    #[error("cannot reach the container runtime at {endpoint}: {reason}")]
    Connect {
        /// The endpoint as given (`unix:///run/containerd/containerd.sock`).
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A CRI call failed; the message says which call and what the runtime answered.
    #[error("{call}: {message}")]
    Runtime {
        /// The CRI call and its subject (`RunPodSandbox default/hello`).
        call: String,
        /// The runtime's answer, with a hint where one is known.
        message: String,
        /// The gRPC status code.
        code: tonic::Code,
    },
    /// A streaming session (Exec, Attach) with the runtime's streaming server failed.
    #[error("{what}: {reason}")]
    Stream {
        /// The session (`exec CONTAINER`).
        what: String,
        /// Why.
        reason: String,
    },
    /// A manifest cannot be read or does not describe what is needed.
    #[error("{source_name}: {reason}")]
    Manifest {
        /// The file (and document) at fault.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field of a Pod cannot be turned into a CRI request.
    #[error("pod {pod}: {field}: {reason}")]
    Pod {
        /// `namespace/name`.
        pod: String,
        /// The field at fault, as a path (`spec.containers[0].resources.limits.memory`).
        field: String,
        /// Why.
        reason: String,
    },
    /// No pod sandbox or container matches what was asked for.
    #[error("no {kind} matches {what:?}")]
    NotFound {
        /// `pod sandbox`, `container` or `pod sandbox or container`.
        kind: &'static str,
        /// The name or ID prefix asked for.
        what: String,
    },
    /// A name or ID prefix matches more than one object.
    #[error("{what:?} is ambiguous: it matches {matches}")]
    Ambiguous {
        /// The name or ID prefix asked for.
        what: String,
        /// The IDs it matches.
        matches: String,
    },
    /// A containerd config file cannot be used by the node installer.
    #[error("containerd config {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error mapper for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// A manifest error.
    pub(crate) fn manifest(source_name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Manifest {
            source_name: source_name.into(),
            reason: reason.into(),
        }
    }

    /// The one mapping from a gRPC status to a message: what the runtime said, plus what
    /// to do about the failures users meet first.
    pub(crate) fn from_status(call: impl Into<String>, status: &tonic::Status) -> Self {
        let said = status.message().trim();
        let hint = match status.code() {
            tonic::Code::Unimplemented => {
                " (the runtime does not serve CRI v1 here: is containerd's CRI plugin enabled, \
                 or listed in disabled_plugins?)"
            }
            tonic::Code::Unavailable => " (is the runtime running?)",
            _ if said.contains("no runtime for") || said.contains("unknown runtime handler") => {
                " (containerd has no such runtime handler: run `wasmpod install \
                 --containerd-config /etc/containerd/config.toml`, see docs/kubernetes.md)"
            }
            _ if said.contains("failed to setup network") || said.contains("cni") => {
                " (the pod network failed: check containerd's CNI config, or use hostNetwork)"
            }
            _ => "",
        };
        let said = if said.is_empty() {
            status.code().description()
        } else {
            said
        };
        Self::Runtime {
            call: call.into(),
            message: format!("{said}{hint}"),
            code: status.code(),
        }
    }

    /// Whether this is the runtime saying that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. }
                | Self::Runtime {
                    code: tonic::Code::NotFound,
                    ..
                }
        ) || matches!(self, Self::Runtime { message, .. } if message.contains("not found"))
    }
}

/// The cri crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn message(status: tonic::Status) -> String {
        Error::from_status("RunPodSandbox default/hello", &status).to_string()
    }

    #[test]
    fn unknown_handler_says_how_to_install_it() {
        let m = message(tonic::Status::unknown(
            "failed to get sandbox runtime: no runtime for \"wasm\" is configured",
        ));
        assert!(m.starts_with("RunPodSandbox default/hello: failed to get sandbox runtime"));
        assert!(m.contains("wasmpod install"), "{m}");
    }

    #[test]
    fn disabled_plugin_is_named() {
        let m = message(tonic::Status::unimplemented(""));
        assert!(m.contains("CRI plugin"), "{m}");
        assert!(m.contains("Operation is not implemented"), "{m}");
    }

    #[test]
    fn not_found_is_recognised() {
        let e = Error::from_status(
            "ContainerStatus abc",
            &tonic::Status::not_found("an error occurred when try to find container \"abc\""),
        );
        assert!(e.is_not_found());
        let e = Error::from_status("X", &tonic::Status::unknown("boom"));
        assert!(!e.is_not_found());
    }
}
