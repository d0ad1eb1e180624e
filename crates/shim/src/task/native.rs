//! Create of a native container (its entrypoint is an ELF file or a `#!` script, not wasm):
//! the pod's namespaces found (CNI's network namespace, the pod holder's IPC, UTS and
//! PID), containerd's spec rewritten to name them, and the container created by runc on
//! the root filesystem containerd mounted, its init waiting for Start.

use std::path::Path;
use std::sync::Arc;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use sandbox::HandlerOptions;

use super::create::Prepared;
use super::instance::Native;
use super::TaskService;
use crate::container::StdioPaths;
use crate::error::{Error, Result};
use crate::native::{self, PodNamespaces, Runc};
use crate::pod::Holder;
use crate::stdio;

impl TaskService {
    /// Creates native container `id` through runc; nothing of it is left when this fails.
    pub(super) async fn prepare_native(
        &self,
        id: &str,
        bundle: &Path,
        spec: Spec,
        paths: &StdioPaths,
        handler: &HandlerOptions,
    ) -> Result<Prepared> {
        let shared = native::through_shim(&spec);
        let sandbox_id = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(crate::SANDBOX_ID_ANNOTATION))
            .cloned();
        let mut pod = PodNamespaces::default();
        if shared.contains(&LinuxNamespaceType::Network) {
            pod.net = sandbox_id
                .as_deref()
                .and_then(|s| Some(self.containers().get(s)?.pod_netns()));
        }
        let needs_holder = shared.iter().any(|k| {
            matches!(
                k,
                LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts | LinuxNamespaceType::Pid
            )
        });
        if needs_holder {
            if let Some(sandbox) = &sandbox_id {
                pod.holder = Some(self.pod_holder(sandbox).await?.pid());
            }
        }
        let runc_spec = native::runc_spec(spec.clone(), bundle, &pod)?;
        let runc = Arc::new(Runc::new(id, bundle, handler.runc.as_deref(), &spec)?);
        // With a terminal, containerd's FIFOs are relayed to and from the one runc makes.
        let fifos = StdioPaths {
            terminal: false,
            ..paths.clone()
        };
        let streams = stdio::open(&fifos).await?;
        tracing::info!(
            holder = ?pod.holder,
            netns = ?pod.net,
            "a native container: created by runc"
        );
        let (pid, terminal) = match runc.create(&runc_spec, streams.stdio).await {
            Ok(created) => created,
            Err(e) => {
                if let Err(error) = runc.delete().await {
                    tracing::warn!(%error, "after a failed runc create");
                }
                return Err(e);
            }
        };
        // runc made the cgroup; Stats and the OOM check read it.
        let cgroup = sandbox::Cgroup::open_for(&spec, id)
            .map(|c| Arc::new(c) as super::SharedGroup)
            .inspect_err(
                |error| tracing::warn!(%error, "no cgroup to read the container's figures from"),
            )
            .ok();
        let mut prepared = Prepared::new(Native::new(runc, pid, cgroup, terminal));
        prepared.stdin_close = streams.stdin_close;
        Ok(prepared)
    }

    /// The holder of sandbox `sandbox`'s namespaces, started with the pod's first native
    /// container.
    async fn pod_holder(&self, sandbox: &str) -> Result<Arc<Holder>> {
        let mut holders = self.holders.lock().await;
        if let Some(holder) = holders.get(sandbox) {
            return Ok(holder.clone());
        }
        let (bundle, hostname) = self
            .containers()
            .get(sandbox)
            .map(|c| (c.bundle.clone(), c.hostname.clone().unwrap_or_default()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the spec joins the namespaces of pod sandbox {sandbox}, which this shim \
                     does not hold"
                ))
            })?;
        let holder = Arc::new(Holder::start(sandbox, &bundle, &hostname).await?);
        holders.insert(sandbox.to_owned(), holder.clone());
        Ok(holder)
    }

    /// Ends the holder of sandbox `sandbox`'s namespaces, if it has one.
    pub(super) async fn stop_pod_holder(&self, sandbox: &str) {
        if let Some(holder) = self.holders.lock().await.remove(sandbox) {
            holder.stop();
            tracing::info!(pid = holder.pid(), "pod holder stopped");
        }
    }
}
