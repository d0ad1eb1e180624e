//! A connection to containerd's gRPC socket, and requests scoped to a namespace.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::containerd::services;

/// A channel to one containerd, from which each service's client is made.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
}

/// The metadata key containerd reads a call's namespace from.
const NAMESPACE_KEY: &str = "containerd-namespace";

/// `message` as a request in containerd namespace `namespace`.
///
/// A namespace that is not a valid metadata value (containerd's own names never are
/// anything but letters, digits, `.`, `_` and `-`) is sent without one, and containerd
/// then refuses the call for its missing namespace, naming it.
pub fn namespaced<T>(message: T, namespace: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = namespace.parse() {
        request.metadata_mut().insert(NAMESPACE_KEY, value);
    }
    request
}

impl Client {
    /// Connects to containerd's socket at `path` (its `grpc.address`).
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, tonic::transport::Error> {
        let path: PathBuf = path.as_ref().to_path_buf();
        // The URI is required by the endpoint but never resolved: every connection is the
        // socket's.
        let channel = Endpoint::from_static("http://containerd.sock")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await?;
        Ok(Self { channel })
    }

    /// The channel itself, for a service this type has no method for.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The containers service.
    pub fn containers(
        &self,
    ) -> services::containers::v1::containers_client::ContainersClient<Channel> {
        services::containers::v1::containers_client::ContainersClient::new(self.channel())
    }

    /// The content store.
    pub fn content(&self) -> services::content::v1::content_client::ContentClient<Channel> {
        services::content::v1::content_client::ContentClient::new(self.channel())
    }

    /// The events service.
    pub fn events(&self) -> services::events::v1::events_client::EventsClient<Channel> {
        services::events::v1::events_client::EventsClient::new(self.channel())
    }

    /// The images service.
    pub fn images(&self) -> services::images::v1::images_client::ImagesClient<Channel> {
        services::images::v1::images_client::ImagesClient::new(self.channel())
    }

    /// The namespaces service.
    pub fn namespaces(
        &self,
    ) -> services::namespaces::v1::namespaces_client::NamespacesClient<Channel> {
        services::namespaces::v1::namespaces_client::NamespacesClient::new(self.channel())
    }

    /// The snapshots service.
    pub fn snapshots(&self) -> services::snapshots::v1::snapshots_client::SnapshotsClient<Channel> {
        services::snapshots::v1::snapshots_client::SnapshotsClient::new(self.channel())
    }

    /// The tasks service.
    pub fn tasks(&self) -> services::tasks::v1::tasks_client::TasksClient<Channel> {
        services::tasks::v1::tasks_client::TasksClient::new(self.channel())
    }

    /// The version service.
    pub fn version(&self) -> services::version::v1::version_client::VersionClient<Channel> {
        services::version::v1::version_client::VersionClient::new(self.channel())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespaced_request_carries_its_namespace() {
        let request = namespaced((), "k8s.io");
        assert_eq!(
            request
                .metadata()
                .get(NAMESPACE_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("k8s.io")
        );
        let refused = namespaced((), "bad\nname");
        assert!(refused.metadata().get(NAMESPACE_KEY).is_none());
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_fails() {
        let dir = std::env::temp_dir().join(format!("grpc-api-{}", std::process::id()));
        assert!(Client::connect(dir.join("none.sock")).await.is_err());
    }
}
