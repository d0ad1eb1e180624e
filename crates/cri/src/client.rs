//! `Cri`: a CRI v1 client (runtime and image services) over a unix socket, each call's
//! failure mapped once to an [`Error`] that names the call.

use std::collections::HashMap;

use grpc_api::cri::v1 as api;
use grpc_api::cri::v1::image_service_client::ImageServiceClient;
use grpc_api::cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// containerd's socket, where the kubelet finds the CRI by default.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// How long [`Cri::connect`] waits for the runtime to answer, as crictl's default.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection to a CRI runtime: its runtime and image services.
#[derive(Debug, Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    endpoint: String,
}

/// The endpoint as tonic takes it: `unix:///path` (a bare absolute path is a socket too).
fn endpoint_uri(endpoint: &str) -> Result<String> {
    if endpoint.starts_with("unix://") {
        Ok(endpoint.to_owned())
    } else if endpoint.starts_with('/') {
        Ok(format!("unix://{endpoint}"))
    } else {
        Err(Error::Connect {
            endpoint: endpoint.to_owned(),
            reason: "only unix sockets are supported (unix:///path/to.sock)".into(),
        })
    }
}

impl Cri {
    /// Connects to `endpoint` (`unix:///run/containerd/containerd.sock`, or a socket path)
    /// and checks that it answers CRI v1 `Version`, within [`DEFAULT_TIMEOUT`].
    pub async fn connect(endpoint: &str) -> Result<Self> {
        Self::connect_within(endpoint, DEFAULT_TIMEOUT).await
    }

    /// [`Cri::connect`], giving up after `timeout` (crictl's `--timeout`): a socket whose
    /// owner accepts but never answers is an error, not a hang.
    pub async fn connect_within(endpoint: &str, timeout: std::time::Duration) -> Result<Self> {
        match tokio::time::timeout(timeout, Self::connect_now(endpoint)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Connect {
                endpoint: endpoint.to_owned(),
                reason: format!(
                    "no answer to Version within {timeout:?} (is it a CRI runtime? --timeout sets the wait)"
                ),
            }),
        }
    }

    async fn connect_now(endpoint: &str) -> Result<Self> {
        let uri = endpoint_uri(endpoint)?;
        let fail = |reason: String| Error::Connect {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let path = uri.trim_start_matches("unix://");
        if !std::path::Path::new(path).exists() {
            return Err(fail(format!(
                "{path} does not exist (is the runtime running?)"
            )));
        }
        let channel = Endpoint::from_shared(uri.clone())
            .map_err(|e| fail(e.to_string()))?
            .connect()
            .await
            .map_err(|e| {
                fail(std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string()))
            })?;
        let cri = Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            image: ImageServiceClient::new(channel),
            endpoint: endpoint.to_owned(),
        };
        cri.version().await?;
        Ok(cri)
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `Version`: the runtime's name and version.
    pub async fn version(&self) -> Result<api::VersionResponse> {
        let call = "Version";
        self.runtime
            .clone()
            .version(api::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::from_status(call, &s))
    }

    /// `RunPodSandbox` under `handler`; returns the sandbox ID.
    pub async fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        handler: &str,
    ) -> Result<String> {
        let call = format!(
            "RunPodSandbox {} (runtime handler {handler:?})",
            pod_name(config)
        );
        self.runtime
            .clone()
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.to_owned(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(|s| Error::from_status(call, &s))
    }

    /// `StopPodSandbox`.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .map(drop)
            .map_err(|s| Error::from_status(format!("StopPodSandbox {id}"), &s))
    }

    /// `RemovePodSandbox` (its containers go with it).
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .map(drop)
            .map_err(|s| Error::from_status(format!("RemovePodSandbox {id}"), &s))
    }

    /// `PodSandboxStatus`, verbose: the status and the runtime's info map.
    pub async fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> Result<(api::PodSandboxStatus, HashMap<String, String>)> {
        let call = format!("PodSandboxStatus {id}");
        let r = self
            .runtime
            .clone()
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            })
            .await
            .map_err(|s| Error::from_status(&call, &s))?
            .into_inner();
        Ok((r.status.ok_or_else(|| no_status(call))?, r.info))
    }

    /// `ListPodSandbox` with an optional filter.
    pub async fn list_pod_sandboxes(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>> {
        self.runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest { filter })
            .await
            .map(|r| r.into_inner().items)
            .map_err(|s| Error::from_status("ListPodSandbox", &s))
    }

    /// `CreateContainer` in a sandbox; returns the container ID.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: &api::ContainerConfig,
        sandbox: &api::PodSandboxConfig,
    ) -> Result<String> {
        let name = config.metadata.as_ref().map_or("", |m| m.name.as_str());
        let call = format!("CreateContainer {name} in {}", pod_name(sandbox));
        self.runtime
            .clone()
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_owned(),
                config: Some(config.clone()),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
            .map_err(|s| Error::from_status(call, &s))
    }

    /// `StartContainer`.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .start_container(api::StartContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .map(drop)
            .map_err(|s| Error::from_status(format!("StartContainer {id}"), &s))
    }

    /// `StopContainer`, killing it after `timeout` seconds.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        self.runtime
            .clone()
            .stop_container(api::StopContainerRequest {
                container_id: id.to_owned(),
                timeout,
            })
            .await
            .map(drop)
            .map_err(|s| Error::from_status(format!("StopContainer {id}"), &s))
    }

    /// `RemoveContainer`.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_container(api::RemoveContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .map(drop)
            .map_err(|s| Error::from_status(format!("RemoveContainer {id}"), &s))
    }

    /// `ContainerStatus`, verbose: the status and the runtime's info map.
    pub async fn container_status(
        &self,
        id: &str,
    ) -> Result<(api::ContainerStatus, HashMap<String, String>)> {
        let call = format!("ContainerStatus {id}");
        let r = self
            .runtime
            .clone()
            .container_status(api::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: true,
            })
            .await
            .map_err(|s| Error::from_status(&call, &s))?
            .into_inner();
        Ok((r.status.ok_or_else(|| no_status(call))?, r.info))
    }

    /// `ListContainers` with an optional filter.
    pub async fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>> {
        self.runtime
            .clone()
            .list_containers(api::ListContainersRequest { filter })
            .await
            .map(|r| r.into_inner().containers)
            .map_err(|s| Error::from_status("ListContainers", &s))
    }

    /// `UpdateContainerResources` of a container's Linux resources.
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: api::LinuxContainerResources,
    ) -> Result<()> {
        self.runtime
            .clone()
            .update_container_resources(api::UpdateContainerResourcesRequest {
                container_id: id.to_owned(),
                linux: Some(resources),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|s| Error::from_status(format!("UpdateContainerResources {id}"), &s))
    }

    /// `ExecSync`: `cmd` run in container `id` to its end (or `timeout`, when not zero);
    /// its exit code and output.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: std::time::Duration,
    ) -> Result<api::ExecSyncResponse> {
        self.runtime
            .clone()
            .exec_sync(api::ExecSyncRequest {
                container_id: id.to_owned(),
                cmd: cmd.to_vec(),
                timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::from_status(format!("ExecSync {id}"), &s))
    }

    /// `Exec`: the streaming URL of `cmd` in container `id`, with a stdin when `stdin`,
    /// on a terminal when `tty` ([`crate::stream::run`] connects to it).
    pub async fn exec(&self, id: &str, cmd: &[String], stdin: bool, tty: bool) -> Result<String> {
        self.runtime
            .clone()
            .exec(api::ExecRequest {
                container_id: id.to_owned(),
                cmd: cmd.to_vec(),
                tty,
                stdin,
                stdout: true,
                // With a terminal, stderr is the terminal too.
                stderr: !tty,
            })
            .await
            .map(|r| r.into_inner().url)
            .map_err(|s| Error::from_status(format!("Exec {id}"), &s))
    }

    /// `Attach`: the streaming URL of container `id`'s own process (its stdin when
    /// `stdin`; `tty` as the container was created).
    pub async fn attach(&self, id: &str, stdin: bool, tty: bool) -> Result<String> {
        self.runtime
            .clone()
            .attach(api::AttachRequest {
                container_id: id.to_owned(),
                stdin,
                tty,
                stdout: true,
                stderr: !tty,
            })
            .await
            .map(|r| r.into_inner().url)
            .map_err(|s| Error::from_status(format!("Attach {id}"), &s))
    }

    /// `ListContainerStats` with an optional filter: the memory and CPU the runtime
    /// reports per container (what the kubelet feeds `kubectl top` and autoscalers).
    pub async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        self.runtime
            .clone()
            .list_container_stats(api::ListContainerStatsRequest { filter })
            .await
            .map(|r| r.into_inner().stats)
            .map_err(|s| Error::from_status("ListContainerStats", &s))
    }

    /// `ImageStatus`: the image when the runtime has it.
    pub async fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        self.image
            .clone()
            .image_status(api::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image)
            .map_err(|s| Error::from_status(format!("ImageStatus {image}"), &s))
    }

    /// `PullImage` (with credentials, for the pod `sandbox`); returns the image reference
    /// the runtime resolved.
    pub async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox: Option<&api::PodSandboxConfig>,
    ) -> Result<String> {
        self.image
            .clone()
            .pull_image(api::PullImageRequest {
                image: Some(image_spec(image)),
                auth,
                sandbox_config: sandbox.cloned(),
            })
            .await
            .map(|r| r.into_inner().image_ref)
            .map_err(|s| Error::from_status(format!("PullImage {image}"), &s))
    }
}

/// The error for a status call answered without its status.
fn no_status(call: String) -> Error {
    Error::Runtime {
        call,
        message: "the runtime answered without a status".into(),
        code: tonic::Code::Internal,
    }
}

/// An image spec naming `image`.
fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

/// `namespace/name` of a sandbox config, for messages.
pub(crate) fn pod_name(config: &api::PodSandboxConfig) -> String {
    config
        .metadata
        .as_ref()
        .map_or_else(String::new, |m| format!("{}/{}", m.namespace, m.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint_uri("unix:///run/containerd/containerd.sock").unwrap(),
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(endpoint_uri("/tmp/c.sock").unwrap(), "unix:///tmp/c.sock");
        let e = endpoint_uri("tcp://127.0.0.1:1234")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tcp://127.0.0.1:1234") && e.contains("unix"),
            "{e}"
        );
    }

    /// A socket whose owner accepts connections and never answers: an error naming the
    /// endpoint once the timeout passes.
    #[tokio::test]
    async fn a_runtime_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let endpoint = format!("unix://{}", path.display());
        let started = std::time::Instant::now();
        let e = Cri::connect_within(&endpoint, std::time::Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert!(e.contains(&endpoint) && e.contains("within 300ms"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_socket_is_named() {
        let e = Cri::connect("unix:///nonexistent/wasmpod-test.sock")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/wasmpod-test.sock"), "{e}");
        assert!(e.contains("does not exist"), "{e}");
    }
}
