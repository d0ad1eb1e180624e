//! The shim's workload kinds behind one trait, [`Instance`]: a wasm guest run in the shim
//! ([`Guest`]), a `wasi:http` handler served in the shim ([`Server`]), a guest in a child
//! process of its own ([`ProcessGuest`]), a native container run by runc ([`Native`]) and a
//! pod's sandbox ([`Sandbox`]). Create makes one; Start launches it, Kill signals it, Stats
//! and Update read and change its resources, and Delete removes what it holds on the node,
//! each through the trait, whatever the kind.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use oci_spec::runtime::LinuxResources;
use sandbox::NetnsRuntime;
use tracing::Instrument;
use wasm_engine::{
    CpuMeter, Engine, ExitReason, KillHandle, MemoryGauge, Program, RunConfig, EXIT_CANNOT_START,
    EXIT_KILLED,
};

use super::netns::bind;
use super::start::serving_engine;
use super::{ExitWait, Processes, SharedGroup};
use crate::error::{Error, Result};
use crate::native::{Runc, Terminal};
use crate::process::ProcessWorkload;

/// A launched workload's run: the future that ends with how it ended.
pub(crate) type Run = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// How a workload's run ended: its exit code, and whether it ran out of memory (an OOM
/// event goes out before its exit).
pub(crate) struct Ended {
    pub(crate) code: i32,
    pub(crate) oom: bool,
}

impl Ended {
    pub(crate) fn exited(code: i32) -> Self {
        Self { code, oom: false }
    }
}

/// What launching needs of the shim. Launch runs under the map's lock, so it only starts
/// things (a child, a listener, a task) and never waits.
pub(crate) struct Launch<'a> {
    /// The container.
    pub(crate) id: &'a str,
    /// Its bundle.
    pub(crate) bundle: &'a std::path::Path,
    /// The engine guests run on.
    pub(crate) engine: &'a Engine,
    /// The engine handlers are served on, made at the first.
    pub(crate) serving: &'a OnceLock<Engine>,
    /// The process level's cgroups, children and reaper.
    pub(crate) processes: &'a dyn Processes,
    /// The reaper's watch, taken before a child can exist when
    /// [`Instance::watches_a_process`] said so.
    pub(crate) watch: Option<Box<dyn ExitWait>>,
}

/// One container's workload, from its Create to its Delete.
#[async_trait]
pub(crate) trait Instance: Send + Sync + std::fmt::Debug {
    /// The kind's name, for logs.
    fn kind(&self) -> &'static str;

    /// Whether its run is a process the reaper reports: Start watches the reaper before
    /// it can exist, so that its exit cannot be missed.
    fn watches_a_process(&self) -> bool {
        false
    }

    /// What Start does before launching, outside the map's lock (runc's `start`).
    async fn before_launch(&self) -> Result<()> {
        Ok(())
    }

    /// Start: what Create prepared runs; the future ends with its exit. Called once.
    fn launch(&self, ctx: Launch<'_>) -> Result<Run>;

    /// The pid containerd is shown, when it is not the shim's.
    fn pid(&self) -> Option<u32> {
        None
    }

    /// Kill of the running workload: `signal`, whose exit status a guest takes is `status`.
    fn signal(&self, id: &str, signal: u32, status: i32, processes: &dyn Processes) -> Result<()>;

    /// Stats: its figures as containerd's cgroup v1 metrics.
    fn metrics(&self) -> Metrics;

    /// Update: new resources.
    async fn update(&self, id: &str, resources: &LinuxResources) -> Result<()>;

    /// Delete: what it holds on the node goes (a cgroup and what runs in it, runc's
    /// container).
    async fn delete(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    /// The cgroup it runs in (the process level, a native container).
    fn cgroup(&self) -> Option<SharedGroup> {
        None
    }

    /// runc, for a native container.
    fn runc(&self) -> Option<Arc<Runc>> {
        None
    }

    /// ResizePty: its terminal's window size.
    fn resize(&self, id: &str, _width: u32, _height: u32) -> Result<()> {
        Err(Error::NotFound(format!(
            "{id}: no terminal (only a native container with tty: true has one; WASI has none)"
        )))
    }
}

/// ResizePty of `terminal`, which container (or exec) `id` may not have.
pub(crate) fn resize(id: &str, terminal: Option<&Terminal>, width: u32, height: u32) -> Result<()> {
    let terminal = terminal
        .ok_or_else(|| Error::NotFound(format!("{id}: it was started without a terminal")))?;
    terminal.resize(width, height).map_err(|source| Error::Io {
        context: format!("{id}: resizing its terminal"),
        source,
    })
}

/// A shared instance.
pub(crate) type SharedInstance = Arc<dyn Instance>;

/// Takes what Create prepared, once.
fn take<T>(slot: &Mutex<Option<T>>, id: &str) -> Result<T> {
    slot.lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| Error::Internal {
            context: format!("container {id}: start"),
            reason: "its workload was launched already".into(),
        })
}

/// What a program in the shim uses, metered for it alone: the engine's memory gauge (with
/// its cap) and CPU meter (with its budget).
struct InShim {
    memory: MemoryGauge,
    cpu: CpuMeter,
}

impl InShim {
    /// The gauge and meter of `config`, its memory capped at its limit.
    fn of(config: &RunConfig) -> Self {
        config.memory.set_limit(config.limits.memory);
        Self {
            memory: config.memory.clone(),
            cpu: config.cpu.clone(),
        }
    }

    /// Its figures as containerd's metrics.
    fn metrics(&self) -> Metrics {
        Metrics {
            memory: Some(MemoryStat {
                usage: Some(MemoryEntry {
                    usage: self.memory.bytes(),
                    limit: self.memory.limit().unwrap_or(u64::MAX),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })
            .into(),
            cpu: Some(CPUStat {
                usage: Some(CPUUsage {
                    total: u64::try_from(self.cpu.used().as_nanos()).unwrap_or(u64::MAX),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }
    }

    /// Update: a new memory cap at its next growth, a CPU budget; CPU shares and pids are
    /// logged as not enforced in the shim.
    fn update(&self, resources: &LinuxResources) {
        if let Some(limit) = resources.memory().as_ref().and_then(|m| m.limit()) {
            // OCI: a limit of -1 (or none) is no limit.
            let cap = u64::try_from(limit).ok().filter(|c| *c > 0);
            self.memory.set_limit(cap);
            tracing::info!(?cap, "memory limit updated");
        }
        if let Some(c) = resources.cpu() {
            if c.quota().is_some() || c.period().is_some() {
                let micros = |v: u64| std::time::Duration::from_micros(v);
                let quota = c.quota().and_then(|q| u64::try_from(q).ok()).map(micros);
                let period = c.period().filter(|p| *p > 0).map(micros);
                self.cpu.set_budget(quota, period);
                tracing::info!(?quota, ?period, "cpu budget updated");
            }
        }
        if resources.pids().is_some()
            || resources
                .cpu()
                .as_ref()
                .is_some_and(|c| c.shares().is_some())
        {
            tracing::info!(
                "cpu shares and pids limits are not enforced in the shared level: ignored \
                 (wasmpod.io/isolation: process enforces them)"
            );
        }
    }
}

/// Runs `program` in the shim with `config` — on `net`'s threads when it must use the
/// pod's network namespace — and tells how it ended. `what` names it in logs.
pub(super) async fn run_in_shim(
    engine: Engine,
    program: Program,
    config: RunConfig,
    net: Option<Arc<NetnsRuntime>>,
    what: &'static str,
) -> Ended {
    let run = async move { engine.run(&program, config).await };
    let ended = match &net {
        Some(net) => net.handle().spawn(run.in_current_span()).await,
        None => Ok(run.await),
    };
    match ended {
        Ok(Ok(status)) => {
            tracing::info!(code = status.code(), reason = ?status.reason(), "{what} exited");
            Ended {
                code: status.code(),
                oom: matches!(status.reason(), ExitReason::OutOfMemory(_)),
            }
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot start the {what}");
            Ended::exited(EXIT_CANNOT_START)
        }
        // Its task panicked (or its runtime went): it ends as a trap.
        Err(error) => {
            tracing::error!(%error, "the {what}'s task failed");
            Ended::exited(wasm_engine::EXIT_TRAP)
        }
    }
}

/// A cgroup's figures as containerd's cgroup v1 metrics (which its
/// CRI reads on v1 and v2 hosts alike): memory usage, limit and working-set inputs, CPU
/// time and throttling, pids.
pub(super) fn cgroup_metrics(s: &sandbox::CgroupStats) -> Metrics {
    Metrics {
        memory: Some(MemoryStat {
            usage: Some(MemoryEntry {
                usage: s.memory_usage,
                limit: s.memory_limit.unwrap_or(u64::MAX),
                ..Default::default()
            })
            .into(),
            total_inactive_file: s.memory_inactive_file,
            ..Default::default()
        })
        .into(),
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: s.cpu_usage_ns,
                user: s.cpu_user_ns,
                kernel: s.cpu_system_ns,
                ..Default::default()
            })
            .into(),
            throttling: Some(Throttle {
                periods: s.cpu_periods,
                throttled_periods: s.cpu_throttled_periods,
                throttled_time: s.cpu_throttled_ns,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        pids: Some(PidsStat {
            current: s.pids_current,
            limit: s.pids_limit.unwrap_or(0),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// Update of a cgroup: it takes the new resources (memory, CPU, pids).
fn update_cgroup(id: &str, cgroup: &SharedGroup, resources: &LinuxResources) -> Result<()> {
    cgroup.update(resources).map_err(|source| Error::Cgroup {
        id: id.to_owned(),
        source,
    })?;
    tracing::info!(cgroup = cgroup.path(), "resources updated");
    Ok(())
}

/// The run of a child process (a process-level guest, a native container's init): its
/// exit, and whether its cgroup's OOM killer ended it.
fn child_run(child: u32, cgroup: Option<SharedGroup>, watch: Box<dyn ExitWait>) -> Run {
    Box::pin(async move {
        tracing::info!(pid = child, "started in its own process");
        let code = watch.wait(child).await;
        let oom = cgroup.is_some_and(|c| c.stats().oom_kills > 0);
        tracing::info!(code, oom, "exited");
        Ended { code, oom }
    })
}

/// What a wasm program in the shim runs with.
pub(super) struct Prepared {
    /// The compiled entrypoint.
    pub(super) program: Program,
    /// Arguments, environment, preopens, stdio and limits from the spec.
    pub(super) config: Box<RunConfig>,
    /// The runtime whose threads are in the container's network namespace, for a
    /// component outside the host's network (its sockets must be the pod's).
    pub(super) net: Option<Arc<NetnsRuntime>>,
}

/// A wasm command run in the shim (the shared level).
pub(super) struct Guest {
    prepared: Mutex<Option<Prepared>>,
    kill: KillHandle,
    usage: InShim,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guest")
    }
}

impl Guest {
    /// A guest that will run `prepared`; its gauge and meter are its config's.
    pub(super) fn new(prepared: Prepared) -> Self {
        Self {
            usage: InShim::of(&prepared.config),
            prepared: Mutex::new(Some(prepared)),
            kill: KillHandle::new(),
        }
    }
}

#[async_trait]
impl Instance for Guest {
    fn kind(&self) -> &'static str {
        "guest"
    }

    fn launch(&self, ctx: Launch<'_>) -> Result<Run> {
        let Prepared {
            program,
            mut config,
            net,
        } = take(&self.prepared, ctx.id)?;
        config.kill = self.kill.clone();
        // What Update set since Create.
        config.limits.memory = self.usage.memory.limit();
        let engine = ctx.engine.clone();
        let digest = program.digest().to_owned();
        Ok(Box::pin(async move {
            tracing::info!(program = %digest, "started");
            run_in_shim(engine, program, *config, net, "guest").await
        }))
    }

    fn signal(&self, _: &str, _: u32, status: i32, _: &dyn Processes) -> Result<()> {
        self.kill.kill_with(status);
        Ok(())
    }

    fn metrics(&self) -> Metrics {
        self.usage.metrics()
    }

    async fn update(&self, _: &str, resources: &LinuxResources) -> Result<()> {
        self.usage.update(resources);
        Ok(())
    }
}

/// What a served handler runs with besides its program.
pub(super) struct Serving {
    /// The handler's port.
    pub(super) port: u16,
    /// What it may hold of its server.
    pub(super) http: wasm_engine::HttpLimits,
}

/// A `wasi:http` handler served in the shim: SIGKILL aborts it, any other terminating
/// signal drains it (requests in flight are answered, then it exits 0).
pub(super) struct Server {
    prepared: Mutex<Option<(Prepared, Serving)>>,
    drain: KillHandle,
    abort: KillHandle,
    usage: InShim,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Server")
    }
}

impl Server {
    /// A handler that will be served as `prepared`.
    pub(super) fn new(prepared: Prepared, serving: Serving) -> Self {
        Self {
            usage: InShim::of(&prepared.config),
            prepared: Mutex::new(Some((prepared, serving))),
            drain: KillHandle::new(),
            abort: KillHandle::new(),
        }
    }
}

#[async_trait]
impl Instance for Server {
    fn kind(&self) -> &'static str {
        "server"
    }

    fn launch(&self, ctx: Launch<'_>) -> Result<Run> {
        let (
            Prepared {
                program,
                mut config,
                net,
            },
            Serving { port, http },
        ) = take(&self.prepared, ctx.id)?;
        let id = ctx.id;
        // Made by Create with the program; only its errors come from here.
        let engine = serving_engine(ctx.serving).map_err(|source| Error::Engine {
            id: id.to_owned(),
            what: "the serving engine".into(),
            source,
        })?;
        let listener = bind(id, port, net.as_deref())?;
        // The served config's kill handle is its shutdown: a drain.
        config.kill = self.drain.clone();
        config.limits.memory = self.usage.memory.limit();
        let abort = self.abort.clone();
        let run = async move {
            let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
            tracing::info!(port, "serving wasi:http");
            let mut config = wasm_engine::ServeConfig::from(*config);
            config.http = http;
            let serve = async move { engine.serve(&program, listener, config).await };
            let served = match &net {
                Some(net) => net.handle().spawn(serve.in_current_span()),
                None => tokio::spawn(serve.in_current_span()),
            };
            let abort_task = served.abort_handle();
            tokio::select! {
                ended = served => match ended {
                    Ok(Ok(stats)) => {
                        tracing::info!(requests = stats.requests, failed = stats.failed, "drained; exited");
                        0
                    }
                    Ok(Err(error)) => {
                        tracing::error!(%error, "cannot serve");
                        EXIT_CANNOT_START
                    }
                    Err(error) => {
                        tracing::error!(%error, "the server's task ended");
                        EXIT_KILLED
                    }
                },
                code = abort.wait() => {
                    abort_task.abort();
                    tracing::info!(code, "aborted");
                    code
                }
            }
        };
        Ok(Box::pin(async move { Ended::exited(run.await) }))
    }

    fn signal(&self, _: &str, _: u32, status: i32, _: &dyn Processes) -> Result<()> {
        if status == EXIT_KILLED {
            self.abort.kill();
        } else {
            self.drain.kill_with(status);
        }
        Ok(())
    }

    fn metrics(&self) -> Metrics {
        self.usage.metrics()
    }

    async fn update(&self, _: &str, resources: &LinuxResources) -> Result<()> {
        self.usage.update(resources);
        Ok(())
    }
}

/// A wasm program run by a child process of its own, in its cgroup (the process level).
#[derive(Debug)]
pub(super) struct ProcessGuest {
    prepared: Mutex<Option<Box<ProcessWorkload>>>,
    cgroup: SharedGroup,
    child: OnceLock<u32>,
}

impl ProcessGuest {
    /// A child that will run `workload` in `cgroup`.
    pub(super) fn new(workload: ProcessWorkload, cgroup: SharedGroup) -> Self {
        Self {
            prepared: Mutex::new(Some(Box::new(workload))),
            cgroup,
            child: OnceLock::new(),
        }
    }
}

#[async_trait]
impl Instance for ProcessGuest {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn watches_a_process(&self) -> bool {
        true
    }

    fn launch(&self, ctx: Launch<'_>) -> Result<Run> {
        let Some(watch) = ctx.watch else {
            return Err(Error::Internal {
                context: format!("container {}: start", ctx.id),
                reason: "a process-level container without the reaper's watch".into(),
            });
        };
        let workload = take(&self.prepared, ctx.id)?;
        let child = ctx
            .processes
            .spawn(ctx.id, ctx.bundle, self.cgroup.as_ref(), *workload)?;
        let _ = self.child.set(child);
        Ok(child_run(child, Some(self.cgroup.clone()), watch))
    }

    fn pid(&self) -> Option<u32> {
        self.child.get().copied()
    }

    fn signal(&self, id: &str, signal: u32, _: i32, processes: &dyn Processes) -> Result<()> {
        let child = self
            .child
            .get()
            .copied()
            .ok_or_else(|| Error::NotFound(format!("{id}: its process has not started")))?;
        processes.signal(id, child, signal)
    }

    fn metrics(&self) -> Metrics {
        cgroup_metrics(&self.cgroup.stats())
    }

    async fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        update_cgroup(id, &self.cgroup, resources)
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let cgroup = self.cgroup.clone();
        tokio::task::spawn_blocking(move || cgroup.delete())
            .await
            .map_err(|e| Error::Internal {
                context: format!("container {id}: removing its cgroup"),
                reason: e.to_string(),
            })?
            .map_err(|source| Error::Cgroup {
                id: id.to_owned(),
                source,
            })
    }

    fn cgroup(&self) -> Option<SharedGroup> {
        Some(self.cgroup.clone())
    }
}

/// A native container, created by runc at Create: its init waits for `runc start`.
#[derive(Debug)]
pub(super) struct Native {
    runc: Arc<Runc>,
    init: u32,
    /// The cgroup runc made, which Stats and the OOM check read.
    cgroup: Option<SharedGroup>,
    /// Its terminal (`tty: true`).
    terminal: Option<Terminal>,
}

impl Native {
    /// The container runc created, its init `init`.
    pub(super) fn new(
        runc: Arc<Runc>,
        init: u32,
        cgroup: Option<SharedGroup>,
        terminal: Option<Terminal>,
    ) -> Self {
        Self {
            runc,
            init,
            cgroup,
            terminal,
        }
    }
}

#[async_trait]
impl Instance for Native {
    fn kind(&self) -> &'static str {
        "native"
    }

    fn watches_a_process(&self) -> bool {
        true
    }

    async fn before_launch(&self) -> Result<()> {
        self.runc.start().await
    }

    fn launch(&self, ctx: Launch<'_>) -> Result<Run> {
        let Some(watch) = ctx.watch else {
            return Err(Error::Internal {
                context: format!("container {}: start", ctx.id),
                reason: "a native container without the reaper's watch".into(),
            });
        };
        Ok(child_run(self.init, self.cgroup.clone(), watch))
    }

    fn pid(&self) -> Option<u32> {
        Some(self.init)
    }

    fn signal(&self, id: &str, signal: u32, _: i32, processes: &dyn Processes) -> Result<()> {
        processes.signal(id, self.init, signal)
    }

    fn metrics(&self) -> Metrics {
        self.cgroup
            .as_ref()
            .map(|c| cgroup_metrics(&c.stats()))
            .unwrap_or_default()
    }

    async fn update(&self, _: &str, resources: &LinuxResources) -> Result<()> {
        // runc changes its container's cgroup, with whichever driver made it.
        self.runc.update(resources).await?;
        tracing::info!("resources updated by runc");
        Ok(())
    }

    async fn delete(&self, _: &str) -> Result<()> {
        // runc kills what is left, and removes its cgroup and state.
        self.runc.delete().await
    }

    fn cgroup(&self) -> Option<SharedGroup> {
        self.cgroup.clone()
    }

    fn runc(&self) -> Option<Arc<Runc>> {
        Some(self.runc.clone())
    }

    fn resize(&self, id: &str, width: u32, height: u32) -> Result<()> {
        resize(id, self.terminal.as_ref(), width, height)
    }
}

/// A pod's sandbox (pause) container: holds the pod until it is killed, running nothing.
#[derive(Debug, Default)]
pub(super) struct Sandbox {
    kill: KillHandle,
}

#[async_trait]
impl Instance for Sandbox {
    fn kind(&self) -> &'static str {
        "sandbox"
    }

    fn launch(&self, _: Launch<'_>) -> Result<Run> {
        let held = self.kill.clone();
        Ok(Box::pin(async move {
            tracing::info!("pod sandbox: held until killed");
            Ended::exited(held.wait().await)
        }))
    }

    fn signal(&self, _: &str, _: u32, status: i32, _: &dyn Processes) -> Result<()> {
        self.kill.kill_with(status);
        Ok(())
    }

    fn metrics(&self) -> Metrics {
        InShim {
            memory: MemoryGauge::default(),
            cpu: CpuMeter::default(),
        }
        .metrics()
    }

    async fn update(&self, _: &str, _: &LinuxResources) -> Result<()> {
        tracing::info!("a pod sandbox runs nothing: its resources are its containers'");
        Ok(())
    }
}
