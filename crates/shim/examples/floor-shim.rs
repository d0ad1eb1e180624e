//! The floor of a `ctr run --rm`, for `cargo xtask bench shim`: a containerd shim v2 that
//! does nothing but answer. Built on the `containerd-shim` crate as ours is (its flags,
//! `start` spawning a serving shim, the ttrpc server), it mounts nothing, reads no spec,
//! loads no program: Create records where stdout goes, Start writes `hello` there and the
//! task has exited at once. What a `ctr run --rm` through it costs is containerd's, ctr's
//! and two process starts; the rest of our shim's time is ours.
//!
//! Installed as `containerd-shim-floor-v1` (runtime type `io.containerd.floor.v1`).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{run, spawn, ExitSignal, Shim};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::{Config, DeleteResponse, Flags, StartOpts, Task, TtrpcContext, TtrpcResult};

struct Floor {
    exit: Arc<ExitSignal>,
}

struct FloorTask {
    exit: Arc<ExitSignal>,
    /// Each task's stdout FIFO.
    stdout: Mutex<HashMap<String, String>>,
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut t = Timestamp::new();
    t.seconds = d.as_secs() as i64;
    t.nanos = d.subsec_nanos() as i32;
    t
}

#[async_trait]
impl Shim for Floor {
    type T = FloorTask;

    async fn new(_runtime_id: &str, _args: &Flags, _config: &mut Config) -> Self {
        Floor {
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let group = opts.id.clone();
        let address = spawn(opts, &group, Vec::new()).await?;
        std::fs::write("address", &address)
            .map_err(|e| containerd_shim::Error::Other(format!("writing address: {e}")))?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let mut response = DeleteResponse::new();
        response.exited_at = Some(now()).into();
        Ok(response)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, _publisher: RemotePublisher) -> FloorTask {
        FloorTask {
            exit: self.exit.clone(),
            stdout: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Task for FloorTask {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.id, req.stdout);
        Ok(api::CreateTaskResponse {
            pid: std::process::id(),
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let stdout = self
            .stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&req.id)
            .cloned()
            .unwrap_or_default();
        if !stdout.is_empty() {
            if let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(&stdout) {
                let _ = fifo.write_all(b"hello\n");
            }
        }
        Ok(api::StartResponse {
            pid: std::process::id(),
            ..Default::default()
        })
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        _req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        Ok(api::WaitResponse {
            exit_status: 0,
            exited_at: Some(now()).into(),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        Ok(api::StateResponse {
            id: req.id,
            pid: std::process::id(),
            status: containerd_shim::protos::api::Status::STOPPED.into(),
            exited_at: Some(now()).into(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, _req: api::KillRequest) -> TtrpcResult<api::Empty> {
        Ok(api::Empty::default())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<DeleteResponse> {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req.id);
        Ok(DeleteResponse {
            pid: std::process::id(),
            exited_at: Some(now()).into(),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: std::process::id(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        self.exit.signal();
        Ok(api::Empty::default())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // containerd 2.3 writes a `BootstrapParams` protobuf to `start`'s stdin, which the
    // crate's bootstrap (1.x's bare options) cannot read: the floor takes no options, so
    // it drops them; containerd reads the plain address `start` answers.
    if std::env::args().any(|a| a == "start") {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    }
    run::<Floor>("io.containerd.floor.v1", None).await;
}
