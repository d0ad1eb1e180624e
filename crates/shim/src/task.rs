//! The containerd task API (`containerd.task.v2.Task`, served as v3 too) over the containers
//! of this shim, one verb a file: `create.rs` (Create: spec → policy → compiled program →
//! stdio, nothing left behind on failure), `start.rs` (Start: what a container runs,
//! launched), `kill.rs`, `delete.rs`, `stats.rs` (State, Stats, Update), `native.rs`
//! (Create of a native container, through runc), `exec.rs` (Exec and the calls by exec
//! id), `instance.rs` (the workload kinds behind one trait, which Start, Kill, Stats, Update
//! and Delete go through), and `netns.rs` (the runtimes whose threads are in a pod's network namespace). What the service talks
//! to besides the engine is behind the traits of `seams.rs`, so `tests.rs` drives the
//! whole lifecycle without containerd or root.

mod create;
mod delete;
mod exec;
mod instance;
mod kill;
mod native;
mod netns;
mod seams;
mod start;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use sandbox::NetnsRuntime;
use tracing::Instrument;
use wasm_engine::Engine;

pub(crate) use instance::SharedInstance;
pub(crate) use seams::{ExitWait, Group, Images, Processes, Publish, Seams, SharedGroup};

/// A pod sandbox's instance, for the container's own tests.
#[cfg(test)]
pub(crate) fn sandbox_instance() -> SharedInstance {
    Arc::new(instance::Sandbox::default())
}

use crate::container::Container;
use crate::error::{Error, Result};
use crate::events::timestamp;

/// The task service: every container of this shim process.
#[derive(Clone)]
pub struct TaskService {
    engine: Engine,
    seams: Seams,
    exit: Arc<ExitSignal>,
    containers: Arc<Mutex<HashMap<String, Container>>>,
    /// Containers whose Create is under way, and a wake-up for every Create that ends: a
    /// call about such a container waits for it rather than answer "not found" — after
    /// containerd was restarted in the middle of a Create, its calls about the task come
    /// while the compile still runs, and a task it was told is missing would never be
    /// deleted (its shim, mount and bundle left for good).
    creating: Arc<(Mutex<HashSet<String>>, tokio::sync::Notify)>,
    /// The ids of the last Creates that failed: containerd cleans up after a failed Create
    /// by deleting the task, and that Delete succeeds (the task ended before it began)
    /// rather than make containerd log an error about a task it knows never existed.
    failed: Arc<Mutex<VecDeque<String>>>,
    /// The engine of served handlers (made with the first): the pooling allocator.
    serving: Arc<std::sync::OnceLock<Engine>>,
    /// The network runtimes of pods' namespaces, by path, while a container uses one.
    netns_runtimes: Arc<Mutex<HashMap<PathBuf, std::sync::Weak<NetnsRuntime>>>>,
    /// The holders of pods' IPC, UTS and PID namespaces, by sandbox id: one per pod with a
    /// native container.
    holders: Arc<tokio::sync::Mutex<HashMap<String, Arc<crate::pod::Holder>>>>,
}

impl std::fmt::Debug for TaskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskService").finish_non_exhaustive()
    }
}

/// The pid of this shim: what containerd is shown for a task whose guest runs inside it.
fn pid() -> u32 {
    std::process::id()
}

/// The span of one container's call or run (`phase`: `create`, `start`, `guest.run`…): a
/// root, so the guest's task does not nest under the call that started it.
pub(crate) fn span(id: &str, phase: &'static str) -> tracing::Span {
    tracing::info_span!(parent: None, "container", %id, phase, otel.name = phase)
}

/// Locks `m`, taking over from a holder that panicked (the maps stay consistent: every
/// change under the lock is one insert or remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TaskService {
    /// A task service running guests on `engine`, talking to `seams`, signalling `exit`
    /// when its last container is gone and Shutdown was asked.
    pub(crate) fn new(engine: Engine, seams: Seams, exit: Arc<ExitSignal>) -> Self {
        Self {
            engine,
            seams,
            exit,
            containers: Arc::default(),
            creating: Arc::default(),
            netns_runtimes: Arc::default(),
            failed: Arc::default(),
            serving: Arc::default(),
            holders: Arc::default(),
        }
    }

    /// Where this service's events go, for the shim to flush before it ends.
    pub(crate) fn events(&self) -> Arc<dyn Publish> {
        self.seams.events.clone()
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        lock(&self.containers)
    }

    fn creating(&self) -> MutexGuard<'_, HashSet<String>> {
        lock(&self.creating.0)
    }

    /// Waits while a Create of `id` is under way.
    async fn settled(&self, id: &str) {
        loop {
            let ended = self.creating.1.notified();
            if !self.creating().contains(id) {
                return;
            }
            ended.await;
        }
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> Result<T>) -> Result<T> {
        let mut map = self.containers();
        let c = map
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        f(c)
    }

    fn no_exec(exec_id: &str, id: &str) -> Result<()> {
        if exec_id.is_empty() {
            Ok(())
        } else {
            Err(Error::NotFound(format!("{id} exec {exec_id}")))
        }
    }

    /// Whether no container is left or being made: the shim may end.
    fn idle(&self) -> bool {
        self.containers().is_empty() && self.creating().is_empty()
    }

    /// Notes that the Create of `id` failed (see [`TaskService::failed`]).
    fn remember_failed(&self, id: &str) {
        /// How many failed Creates are remembered: containerd deletes right after.
        const REMEMBERED: usize = 64;
        let mut failed = lock(&self.failed);
        if failed.len() == REMEMBERED {
            failed.pop_front();
        }
        failed.push_back(id.to_owned());
    }

    /// Forgets the failed Create of `id`; whether there was one.
    fn forget_failed(&self, id: &str) -> bool {
        let mut failed = lock(&self.failed);
        let before = failed.len();
        failed.retain(|f| f != id);
        failed.len() != before
    }

    /// Wait: until the task has exited.
    async fn wait_exit(&self, req: &api::WaitRequest) -> Result<api::WaitResponse> {
        Self::no_exec(&req.exec_id, &req.id)?;
        let mut rx = self.with(&req.id, |c| Ok(c.subscribe()))?;
        let exit = loop {
            if let Some(exit) = *rx.borrow_and_update() {
                break exit;
            }
            if rx.changed().await.is_err() {
                // The container was deleted while we waited.
                return Err(Error::NotFound(req.id.clone()));
            }
        };
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    /// CloseIO: the guest's stdin ends.
    fn close_io(&self, req: &api::CloseIORequest) -> Result<()> {
        Self::no_exec(&req.exec_id, &req.id)?;
        let close = self.with(&req.id, |c| Ok(c.stdin_close.take()))?;
        if close.is_some() {
            tracing::debug!("stdin closed");
        }
        Ok(())
    }
}

/// Maps a call's error to ttrpc's, once, logging it in the container's span.
fn answer<T>(id: &str, result: Result<T>) -> TtrpcResult<T> {
    result.map_err(|e| {
        tracing::warn!(%id, error = %e, "task call failed");
        e.into()
    })
}

impl TaskService {
    /// Runs one call about `id` inside the container's span, after any Create of it; in a
    /// trace, the span is the child of containerd's that `ctx` carries.
    async fn traced<T>(
        &self,
        ctx: &TtrpcContext,
        verb: &'static str,
        id: &str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> TtrpcResult<T> {
        self.settled(id).await;
        let span = span(id, verb);
        crate::telemetry::adopt(&span, &ctx.metadata);
        answer(id, call.instrument(span).await)
    }

    /// [`TaskService::traced`] for a question about a container (State, Pids, Stats):
    /// answered at once. While its Create is under way the container is not there yet (as
    /// runc's shim says): containerd's task list asks every task's State and would wait
    /// for a tenant's compile.
    async fn traced_now<T>(
        &self,
        ctx: &TtrpcContext,
        verb: &'static str,
        id: &str,
        call: impl FnOnce() -> Result<T>,
    ) -> TtrpcResult<T> {
        if self.creating().contains(id) {
            return answer(id, Err(Error::NotFound(format!("{id} (being created)"))));
        }
        let span = span(id, verb);
        crate::telemetry::adopt(&span, &ctx.metadata);
        let _span = span.entered();
        answer(id, call())
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        self.traced(ctx, "create", &id, self.create_task(req)).await
    }

    async fn start(
        &self,
        ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        if !req.exec_id.is_empty() {
            let call = self.start_exec(&req.id, &req.exec_id);
            return self.traced(ctx, "exec.start", &req.id, call).await;
        }
        self.traced(ctx, "start", &req.id, self.start_task(&req))
            .await
    }

    async fn kill(&self, ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        if req.exec_id.is_empty() {
            self.traced(ctx, "kill", &req.id, self.kill_task(&req))
                .await?;
        } else {
            let call = async { self.kill_exec(&req.id, &req.exec_id, req.signal) };
            self.traced(ctx, "exec.kill", &req.id, call).await?;
        }
        Ok(api::Empty::default())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        self.settled(&req.id).await;
        if !req.exec_id.is_empty() {
            return answer(&req.id, self.wait_exec(&req.id, &req.exec_id).await);
        }
        answer(&req.id, self.wait_exit(&req).await)
    }

    async fn delete(
        &self,
        ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let call = async { self.delete_exec(&req.id, &req.exec_id) };
            return self.traced(ctx, "exec.delete", &req.id, call).await;
        }
        self.traced(ctx, "delete", &req.id, self.delete_task(&req))
            .await
    }

    async fn state(
        &self,
        ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        if !req.exec_id.is_empty() {
            return self
                .traced_now(ctx, "exec.state", &req.id, || {
                    self.state_exec(&req.id, &req.exec_id)
                })
                .await;
        }
        self.traced_now(ctx, "state", &req.id, || self.state_of(&req))
            .await
    }

    async fn pids(
        &self,
        ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let task_pid = self
            .traced_now(ctx, "pids", &req.id, || self.with(&req.id, |c| Ok(c.pid())))
            .await?;
        Ok(api::PidsResponse {
            processes: vec![containerd_shim::protos::api::ProcessInfo {
                pid: task_pid,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn stats(
        &self,
        ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        self.traced_now(ctx, "stats", &req.id, || self.stats_of(&req))
            .await
    }

    async fn close_io(
        &self,
        ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        if req.exec_id.is_empty() {
            self.traced(ctx, "close_io", &req.id, async { self.close_io(&req) })
                .await?;
        } else {
            let call = async { self.close_exec_io(&req.id, &req.exec_id) };
            self.traced(ctx, "exec.close_io", &req.id, call).await?;
        }
        Ok(api::Empty::default())
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: pid(),
            task_pid: pid(),
            version: concat!("wasmpod ", env!("CARGO_PKG_VERSION")).into(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        // containerd asks after each Delete; a pod's shim stays while it has containers,
        // or one is being created.
        if self.idle() {
            tracing::info!("no containers left: shutting down");
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }

    async fn exec(
        &self,
        ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        self.traced(ctx, "exec", &req.id, self.add_exec(&req))
            .await?;
        Ok(api::Empty::default())
    }

    async fn resize_pty(
        &self,
        ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let resize = || match req.exec_id.as_str() {
            "" => {
                let instance = self.with(&req.id, |c| Ok(c.instance.clone()))?;
                instance.resize(&req.id, req.width, req.height)
            }
            exec_id => self.resize_exec(&req.id, exec_id, req.width, req.height),
        };
        self.traced_now(ctx, "resize_pty", &req.id, resize).await?;
        Ok(api::Empty::new())
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        Err(Error::Unimplemented("Pause").into())
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(Error::Unimplemented("Resume").into())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(Error::Unimplemented("Checkpoint").into())
    }

    async fn update(
        &self,
        ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        self.traced(ctx, "update", &req.id, self.update_resources(&req))
            .await?;
        Ok(api::Empty::new())
    }
}
