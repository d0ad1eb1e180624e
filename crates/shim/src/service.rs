//! The shim process: which serving shim a container joins, `delete` (clean up after a shim
//! that died) and the task service a serving shim answers with (`bootstrap` drives them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::Flags;
use oci_spec::runtime::Spec;
use sandbox::{Grouping, HandlerOptions, Selection};
use wasm_engine::{Engine, EngineConfig, EXIT_KILLED};

use crate::content::ContentStore;
use crate::events::{timestamp, Events};
use crate::task::TaskService;
use crate::{rootfs, SANDBOX_ID_ANNOTATION};

/// The shim as containerd's `delete` and serve calls see it.
#[derive(Clone)]
pub(crate) struct Service {
    exit: Arc<ExitSignal>,
    namespace: String,
    id: String,
    /// containerd's gRPC socket, for its content store.
    address: String,
    /// The ttrpc socket this serving shim listens on (`unix:///run/containerd/s/…`).
    socket: String,
}

/// Removes the shim socket `address` (`unix://PATH`) unless a shim still answers on it:
/// a shim that dies, or outlives the bundle that holds its `address` file (the first
/// container of a node-grouped shim), would otherwise leave the file behind for good.
pub(crate) fn remove_dead_socket(address: &str) {
    use std::os::unix::fs::FileTypeExt;
    let path = Path::new(address.trim_start_matches("unix://"));
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket || std::os::unix::net::UnixStream::connect(path).is_ok() {
        return;
    }
    if let Err(error) = std::fs::remove_file(path) {
        tracing::warn!(socket = %path.display(), %error, "removing a dead shim's socket");
    }
}

/// The address of the shim that served the container of `bundle`: the `address` file
/// `start` wrote, or the `bootstrap.json` containerd 2.x writes for a container it gives
/// to its pod's shim without a `start`.
fn shim_address(bundle: &Path) -> Option<String> {
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        return Some(address.trim().to_owned());
    }
    let text = std::fs::read_to_string(bundle.join("bootstrap.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("address")?.as_str().map(str::to_owned)
}

/// Whether a shim answers on `address`.
fn socket_alive(address: &str) -> bool {
    std::os::unix::net::UnixStream::connect(address.trim_start_matches("unix://")).is_ok()
}

/// The other bundles of the namespace whose containers the shim at `address` served
/// (their `address` files name it): `(container id, bundle)`.
fn group_bundles(bundle: &Path, address: &str) -> Vec<(String, PathBuf)> {
    let Ok(here) = bundle.canonicalize() else {
        return Vec::new();
    };
    let Some(namespace_dir) = here.parent() else {
        return Vec::new();
    };
    std::fs::read_dir(namespace_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| *p != here)
        .filter(|p| shim_address(p).is_some_and(|a| a.trim() == address))
        .filter_map(|p| Some((p.file_name()?.to_str()?.to_owned(), p)))
        .collect()
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("namespace", &self.namespace)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The serving shim every container of a namespace joins under `grouping = "node"`.
pub(crate) const NODE_GROUP: &str = "wasmpod-node";

/// Which serving shim a container joins: with node grouping (annotation or handler option),
/// the one of its namespace; else the containers of one pod (same
/// `io.kubernetes.cri.sandbox-id`) share one, and any other container gets its own.
pub(crate) fn grouping(id: &str, spec: Option<&Spec>, handler: &HandlerOptions) -> String {
    let selection = spec.map_or_else(
        || Ok(Selection::decide(&Spec::default(), handler).unwrap_or_default()),
        |s| Selection::decide(s, handler),
    );
    match selection {
        Ok(s) if s.grouping == Grouping::Node => return NODE_GROUP.to_owned(),
        Ok(_) => {}
        // Create names the bad value to the user; the container gets a shim of its own.
        Err(e) => tracing::warn!(error = %e, "choosing a shim"),
    }
    spec.and_then(|s| s.annotations().as_ref())
        .and_then(|a| a.get(SANDBOX_ID_ANNOTATION))
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| id.to_owned())
}

/// The directory of the precompile cache: `$WASMPOD_ROOT/cache`, else
/// `/var/lib/wasmpod/cache` (the shim runs as root, as containerd does).
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("WASMPOD_ROOT")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/var/lib/wasmpod"))
        .join("cache")
}

impl Service {
    /// The shim of container `flags.id` in `flags.namespace`, as containerd named it.
    pub(crate) fn new(flags: &Flags) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            namespace: flags.namespace.clone(),
            id: flags.id.clone(),
            address: flags.address.clone(),
            socket: flags.socket.clone(),
        }
    }

    /// `delete`: the serving shim died, and its guests with it. Detaches what it had
    /// mounted, and its socket, which nobody else removes.
    pub(crate) fn delete(&self) -> DeleteResponse {
        let bundle = Path::new(".");
        crate::native::clean_up_after_dead_shim(&self.id, bundle);
        crate::pod::clean_up_after_dead_shim(bundle);
        crate::process::clean_up_after_dead_shim(&self.id, bundle);
        if let Some(address) = shim_address(bundle) {
            // containerd may ask this for one task of the group alone (2.x does): a pod
            // holder recorded in another bundle of the group goes now too (runc's
            // containers are swept by `native` above).
            if !socket_alive(address.trim()) {
                for (_, other) in group_bundles(bundle, address.trim()) {
                    crate::pod::clean_up_after_dead_shim(&other);
                }
            }
            remove_dead_socket(address.trim());
        }
        if rootfs::is_mounted(bundle) {
            if let Err(error) = rootfs::unmount(&self.id, bundle) {
                tracing::warn!(id = %self.id, %error, "cleaning up after a dead shim");
            }
        }
        DeleteResponse {
            pid: 0,
            exit_status: u32::try_from(EXIT_KILLED).unwrap_or(137),
            exited_at: Some(timestamp(SystemTime::now())).into(),
            ..Default::default()
        }
    }

    /// Waits until the last container is gone and Shutdown was called.
    pub(crate) async fn wait(&self) {
        self.exit.wait().await;
        // Its server is still up, so unlink the socket file directly (the first
        // container's bundle, which names it too, may be gone by now).
        let path = Path::new(self.socket.trim_start_matches("unix://"));
        if !self.socket.is_empty() && path.starts_with("/") {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The task service of this serving shim, publishing events to containerd's ttrpc
    /// socket `ttrpc_address`.
    pub(crate) fn task_service(&self, ttrpc_address: &str) -> TaskService {
        // Tenants' programs compile in children of this shim, under the handler's
        // deadline and memory cap: never in the threads serving everyone's tasks.
        let engine = Engine::new(
            EngineConfig::default()
                .cache_dir(cache_dir())
                .compiler(wasm_engine::CompilerProcess::this_executable()),
        )
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot start the wasm engine");
            std::process::exit(1)
        });
        let content = ContentStore {
            address: PathBuf::from(self.address.trim_start_matches("unix://")),
            namespace: self.namespace.clone(),
        };
        let seams = crate::task::Seams {
            events: Arc::new(Events::new(
                ttrpc_address.to_owned(),
                self.namespace.clone(),
            )),
            images: Arc::new(content),
            processes: Arc::new(crate::process::Children),
        };
        TaskService::new(engine, seams, self.exit.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_shims_group_is_found_by_address_file_or_bootstrap_json() {
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("k8s.io");
        let at = |id: &str, file: &str, text: &str| {
            std::fs::create_dir_all(ns.join(id)).unwrap();
            std::fs::write(ns.join(id).join(file), text).unwrap();
        };
        at("sandbox", "address", "unix:///run/containerd/s/aaa\n");
        at("app", "address", "unix:///run/containerd/s/aaa");
        at(
            "sidecar",
            "bootstrap.json",
            r#"{"version":2,"address":"unix:///run/containerd/s/aaa","protocol":"ttrpc"}"#,
        );
        at("other-pod", "address", "unix:///run/containerd/s/bbb");
        std::fs::create_dir_all(ns.join("empty")).unwrap();
        let address = shim_address(&ns.join("sandbox")).unwrap();
        let mut ids: Vec<String> = group_bundles(&ns.join("sandbox"), &address)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["app", "sidecar"]);
        assert!(!socket_alive("unix:///nonexistent/socket"));
    }

    #[test]
    fn only_a_dead_shims_socket_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let address = format!("unix://{}", path.display());
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        remove_dead_socket(&address);
        assert!(path.exists(), "a live shim's socket was removed");
        drop(listener);
        remove_dead_socket(&address);
        assert!(!path.exists(), "a dead shim's socket was left");
        std::fs::write(&path, "not a socket").unwrap();
        remove_dead_socket(&address);
        assert!(path.exists(), "a file that is not a socket was removed");
    }

    fn spec_with(annotations: &[(&str, &str)]) -> Spec {
        let mut spec = Spec::default();
        spec.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        spec
    }

    #[test]
    fn containers_of_one_pod_share_a_shim() {
        let sandbox = spec_with(&[
            ("io.kubernetes.cri.container-type", "sandbox"),
            (SANDBOX_ID_ANNOTATION, "pod1"),
        ]);
        let app = spec_with(&[
            ("io.kubernetes.cri.container-type", "container"),
            (SANDBOX_ID_ANNOTATION, "pod1"),
        ]);
        let none = HandlerOptions::default();
        assert_eq!(grouping("pod1", Some(&sandbox), &none), "pod1");
        assert_eq!(grouping("app", Some(&app), &none), "pod1");
    }

    #[test]
    fn other_containers_get_their_own_shim() {
        let none = HandlerOptions::default();
        assert_eq!(grouping("c1", Some(&spec_with(&[])), &none), "c1");
        assert_eq!(grouping("c1", None, &none), "c1");
        assert_eq!(
            grouping(
                "c1",
                Some(&spec_with(&[(SANDBOX_ID_ANNOTATION, "")])),
                &none
            ),
            "c1"
        );
    }

    #[test]
    fn node_grouping_puts_every_container_in_one_shim() {
        let node = HandlerOptions {
            grouping: Some(Grouping::Node),
            ..Default::default()
        };
        let app = spec_with(&[(SANDBOX_ID_ANNOTATION, "pod1")]);
        assert_eq!(grouping("app", Some(&app), &node), NODE_GROUP);
        assert_eq!(grouping("c1", None, &node), NODE_GROUP);
        let annotated = spec_with(&[("wasmpod.io/grouping", "node")]);
        assert_eq!(
            grouping("c2", Some(&annotated), &HandlerOptions::default()),
            NODE_GROUP
        );
        let bad = spec_with(&[("wasmpod.io/grouping", "rack")]);
        assert_eq!(grouping("c3", Some(&bad), &HandlerOptions::default()), "c3");
    }
}
