//! The tokio runtimes whose threads are in a network namespace: a pod's (shared by its
//! containers while one uses it) or a container's own; and binding a served container's
//! listener inside its namespace.

use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::runtime::Spec;
use sandbox::NetnsRuntime;

use super::{lock, TaskService};
use crate::error::{Error, Result};

/// Starts a [`NetnsRuntime`] (threads and a setns each: off the async threads).
pub(super) async fn new_netns_runtime(
    network: sandbox::Network,
    owner: &str,
) -> Result<NetnsRuntime> {
    let what = format!("{network:?}");
    tokio::task::spawn_blocking(move || NetnsRuntime::new(&network, 1))
        .await
        .map_err(|e| Error::Internal {
            context: format!("{owner}: network runtime"),
            reason: e.to_string(),
        })?
        .map_err(|source| Error::Network {
            context: format!("{owner}: threads in network namespace {what}"),
            source,
        })
}

/// The listener of a served container: port `port` on every address of its network
/// namespace, bound on a thread inside that namespace (or here, in the host's).
pub(super) fn bind(
    id: &str,
    port: u16,
    net: Option<&NetnsRuntime>,
) -> Result<std::net::TcpListener> {
    let bind = move || std::net::TcpListener::bind(("0.0.0.0", port));
    let bound = match net {
        Some(net) => {
            // A plain thread would be in the host's namespace: ask one of the runtime's.
            let (tx, rx) = std::sync::mpsc::channel();
            net.handle().spawn_blocking(move || {
                let _ = tx.send(bind());
            });
            rx.recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("the network runtime stopped")))
        }
        None => bind(),
    };
    bound.map_err(|source| Error::Io {
        context: format!("container {id}: listening on port {port} for its wasi:http handler"),
        source,
    })
}

impl TaskService {
    /// The runtime of network namespace `path`, shared by the containers in it (a pod's).
    pub(super) async fn netns_runtime(&self, path: PathBuf) -> Result<Arc<NetnsRuntime>> {
        let found = {
            let map = lock(&self.netns_runtimes);
            map.get(&path).and_then(std::sync::Weak::upgrade)
        };
        if let Some(runtime) = found {
            return Ok(runtime);
        }
        let runtime =
            Arc::new(new_netns_runtime(sandbox::Network::Join(path.clone()), "pod").await?);
        let mut map = lock(&self.netns_runtimes);
        map.retain(|_, weak| weak.strong_count() > 0);
        // Two Creates may race; the first one kept wins.
        if let Some(existing) = map.get(&path).and_then(std::sync::Weak::upgrade) {
            return Ok(existing);
        }
        map.insert(path, Arc::downgrade(&runtime));
        Ok(runtime)
    }

    /// The pod's network namespace of a container whose spec is `spec`, when the spec
    /// names it through the sandbox's pid (this shim): the sandbox's own path.
    pub(super) fn pod_netns_of(&self, spec: &Spec) -> Result<Option<PathBuf>> {
        let sandbox_id = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(crate::SANDBOX_ID_ANNOTATION))
            .cloned();
        crate::process::pod_netns(spec, || {
            let map = self.containers();
            Some(map.get(sandbox_id.as_deref()?)?.pod_netns())
        })
    }

    /// The threads a component of container `id` (spec `spec`) runs on, so that its
    /// sockets are its pod's: those of `netns` (from [`pod_netns_of`](Self::pod_netns_of)),
    /// else of the namespace the spec names; `None` on the host's network.
    pub(super) async fn component_net(
        &self,
        id: &str,
        spec: &Spec,
        netns: Option<PathBuf>,
    ) -> Result<Option<Arc<NetnsRuntime>>> {
        if let Some(path) = netns {
            return Ok(Some(self.netns_runtime(path).await?));
        }
        let confinement =
            sandbox::Confinement::from_spec(spec).map_err(|source| Error::Policy {
                id: id.to_owned(),
                source,
            })?;
        Ok(match confinement.network().clone() {
            sandbox::Network::Host => None,
            sandbox::Network::Join(path) => Some(self.netns_runtime(path).await?),
            network @ sandbox::Network::New => {
                Some(Arc::new(new_netns_runtime(network, id).await?))
            }
        })
    }
}
