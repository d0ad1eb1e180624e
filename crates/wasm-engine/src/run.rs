//! Running a [`Program`]: the WASI context, limits, kill handle and exit status.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::Store;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::error::{chain, Error, Result};
use crate::limits::{MemoryBudget, OutOfMemory};
use crate::net::{NetworkPolicy, PolicyHooks};
use crate::program::{Code, Program};
use crate::stdio::{self, Stdio};
use crate::{Engine, EXIT_KILLED, EXIT_TRAP};

/// Gives the guest each of `preopens`, read-only where it says so.
pub(crate) fn add_preopens(builder: &mut WasiCtxBuilder, preopens: &[Preopen]) -> Result<()> {
    for p in preopens {
        let perms = if p.readonly {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&p.host, &p.guest, perms)
            .map_err(|e| Error::Preopen {
                path: p.host.clone(),
                reason: chain(&e),
            })?;
    }
    Ok(())
}

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it, as an absolute path (`/`, `/data`).
    pub guest: String,
    /// Whether the guest is refused every write under it.
    pub readonly: bool,
}

/// Resource limits of one run: [`Limits::default`] (none) and what differs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Cap in bytes over all linear memories and tables. `None`: no cap beyond wasm's own.
    pub memory: Option<u64>,
    /// Wall-clock deadline for the whole run. When it passes the guest is killed (137).
    pub timeout: Option<Duration>,
    /// Past the memory cap, kill the guest (137, [`ExitReason::OutOfMemory`]) as a
    /// container's memory cgroup would, instead of failing the growth inside it.
    pub oom_kill: bool,
}

impl Limits {
    /// Caps linear memories and tables at `bytes` in all.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Kills the guest when `timeout` has passed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Past the memory cap, kills the guest rather than failing its growth.
    pub fn oom_kill(mut self, yes: bool) -> Self {
        self.oom_kill = yes;
        self
    }
}

/// Everything one run of a [`Program`] is given: [`RunConfig::default`] (no arguments,
/// no environment, no directories, standard streams at end-of-file and discarded, no
/// limits, no network) and what differs.
///
/// ```
/// let config = wasm_engine::RunConfig::default()
///     .args(["hello.wasm", "--verbose"])
///     .env("GREETING", "hello")
///     .limits(wasm_engine::Limits::default().memory(64 << 20));
/// assert_eq!(config.args[1], "--verbose");
/// ```
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RunConfig {
    /// Arguments; `args[0]` is the program name the guest sees.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// The working directory reported to the guest.
    pub cwd: Option<String>,
    /// Directories the guest may use. Nothing else of the host is reachable.
    pub preopens: Vec<Preopen>,
    /// Standard streams.
    pub stdio: Stdio,
    /// Memory cap and deadline.
    pub limits: Limits,
    /// Stops the run from anywhere; keep a clone to use it.
    pub kill: KillHandle,
    /// Reports the bytes of linear memory and tables in use while the guest runs.
    pub memory: MemoryGauge,
    /// Counts the guest's CPU time and holds its CPU budget.
    pub cpu: CpuMeter,
    /// What a component may do on the network (`wasi:sockets`, outgoing `wasi:http`).
    pub network: NetworkPolicy,
}

impl RunConfig {
    /// The arguments; the first is the program name the guest sees.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The working directory reported to the guest.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Gives the guest a directory.
    pub fn preopen(mut self, preopen: Preopen) -> Self {
        self.preopens.push(preopen);
        self
    }

    /// The standard streams.
    pub fn stdio(mut self, stdio: Stdio) -> Self {
        self.stdio = stdio;
        self
    }

    /// Memory cap and deadline.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Stops the run when this handle (or a clone) is killed.
    pub fn kill(mut self, kill: KillHandle) -> Self {
        self.kill = kill;
        self
    }

    /// Reports the guest's memory use here.
    pub fn memory(mut self, memory: MemoryGauge) -> Self {
        self.memory = memory;
        self
    }

    /// Counts the guest's CPU time here (and holds its budget).
    pub fn cpu(mut self, cpu: CpuMeter) -> Self {
        self.cpu = cpu;
        self
    }

    /// What the guest may do on the network.
    pub fn network(mut self, network: NetworkPolicy) -> Self {
        self.network = network;
        self
    }
}

/// A guest's CPU time, and the budget it runs under (a quota per period, as a CFS quota
/// gives a process), readable and changeable from any thread while it runs.
///
/// Time is counted while the guest's future is being polled: the guest's own code and the
/// host calls it makes, on whichever thread runs it. Past its quota within a period the
/// guest is suspended at its next epoch check (within about 10 ms) until the period ends,
/// so its neighbours get the CPU.
#[derive(Debug, Clone, Default)]
pub struct CpuMeter(Arc<CpuState>);

#[derive(Debug, Default)]
struct CpuState {
    used_ns: std::sync::atomic::AtomicU64,
    /// Quota per period in microseconds; 0 means none.
    quota_us: std::sync::atomic::AtomicU64,
    period_us: std::sync::atomic::AtomicU64,
}

/// The CFS default period, used when a quota comes without one.
const DEFAULT_CPU_PERIOD: Duration = Duration::from_millis(100);

impl CpuMeter {
    /// CPU time used so far.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.0.used_ns.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The budget: `quota` of CPU time per `period` (`None`: unlimited).
    pub fn budget(&self) -> Option<(Duration, Duration)> {
        let quota = self.0.quota_us.load(std::sync::atomic::Ordering::Relaxed);
        let period = self.0.period_us.load(std::sync::atomic::Ordering::Relaxed);
        (quota > 0).then(|| {
            let period = if period == 0 {
                DEFAULT_CPU_PERIOD
            } else {
                Duration::from_micros(period)
            };
            (Duration::from_micros(quota), period)
        })
    }

    /// Sets the budget of a running or future guest: `quota` per `period` (the CFS default
    /// of 100 ms when `None`); a `quota` of `None` or zero lifts it.
    pub fn set_budget(&self, quota: Option<Duration>, period: Option<Duration>) {
        use std::sync::atomic::Ordering::Relaxed;
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.period_us.store(period.map_or(0, micros), Relaxed);
        self.0.quota_us.store(quota.map_or(0, micros), Relaxed);
    }

    fn add(&self, spent: Duration) {
        let ns = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.0
            .used_ns
            .fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A guest's CPU allowance: `quota` per `period`, accrued continuously from when the
/// budget took effect, with at most one quota of unused credit (so a guest that was idle
/// may burst for one quota, not for all the time it slept).
struct BudgetClock {
    meter: CpuMeter,
    budget: Option<(Duration, Duration)>,
    start: std::time::Instant,
    used_at_start: Duration,
}

impl BudgetClock {
    fn new(meter: CpuMeter) -> Self {
        let used_at_start = meter.used();
        Self {
            budget: meter.budget(),
            meter,
            start: std::time::Instant::now(),
            used_at_start,
        }
    }

    fn rebase(&mut self, now: std::time::Instant) {
        self.start = now;
        self.used_at_start = self.meter.used();
    }

    /// How long the guest must wait before it may run again: `None` while it is within its
    /// allowance.
    fn over_budget(&mut self) -> Option<Duration> {
        let now = std::time::Instant::now();
        let budget = self.meter.budget();
        if budget != self.budget {
            // Update changed it: the new budget starts now.
            self.budget = budget;
            self.rebase(now);
        }
        let (quota, period) = budget?;
        let rate = quota.as_secs_f64() / period.as_secs_f64();
        let earned = now.duration_since(self.start).as_secs_f64() * rate;
        let used = self
            .meter
            .used()
            .saturating_sub(self.used_at_start)
            .as_secs_f64();
        let credit = earned + quota.as_secs_f64() - used;
        if credit > quota.as_secs_f64() {
            self.rebase(now);
            return None;
        }
        (credit <= 0.0).then(|| Duration::from_secs_f64(-credit / rate))
    }
}

/// A future whose polls are counted as the guest's CPU time.
/// A future whose polling time is counted on a [`CpuMeter`]: a guest's CPU time.
pub(crate) struct Metered<F> {
    pub(crate) inner: std::pin::Pin<Box<F>>,
    pub(crate) meter: CpuMeter,
}

impl<F: std::future::Future> std::future::Future for Metered<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let started = std::time::Instant::now();
        let result = self.inner.as_mut().poll(cx);
        self.meter.add(started.elapsed());
        result
    }
}

/// Makes a guest yield to the executor at every epoch tick, and sleep out the rest of its
/// period when it has used its CPU quota.
pub(crate) fn install_budget<T: 'static>(store: &mut Store<T>, meter: CpuMeter) {
    let mut clock = BudgetClock::new(meter);
    store.epoch_deadline_callback(move |_| {
        Ok(match clock.over_budget() {
            Some(wait) => {
                wasmtime::UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(wait)))
            }
            None => wasmtime::UpdateDeadline::Yield(1),
        })
    });
}

/// The memory a running guest holds (linear memories and tables), readable from any
/// thread: what `ctr task metrics` and the kubelet's stats show; and its memory cap, which
/// can be changed while it runs (containerd's Update, the CRI's UpdateContainerResources).
#[derive(Debug, Clone, Default)]
pub struct MemoryGauge(Arc<GaugeState>);

#[derive(Debug, Default)]
struct GaugeState {
    used: std::sync::atomic::AtomicU64,
    /// The cap plus one; 0 means none.
    cap: std::sync::atomic::AtomicU64,
}

impl MemoryGauge {
    /// Bytes in use now.
    pub fn bytes(&self) -> u64 {
        self.0.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cap the guest runs under now (`None`: none beyond wasm's own).
    pub fn limit(&self) -> Option<u64> {
        self.0
            .cap
            .load(std::sync::atomic::Ordering::Relaxed)
            .checked_sub(1)
    }

    /// Changes the cap of a running guest. Memory it already holds stays; its next growth
    /// past the new cap is refused (or, under [`Limits::oom_kill`], ends it).
    pub fn set_limit(&self, cap: Option<u64>) {
        let stored = cap.map_or(0, |c| c.saturating_add(1));
        self.0
            .cap
            .store(stored, std::sync::atomic::Ordering::Relaxed);
    }

    /// Charges `delta` more bytes to a gauge that several stores share (a server's
    /// instances), unless that would pass its cap; `false` then, and nothing changes.
    pub(crate) fn try_charge(&self, delta: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let cap = self.limit();
        let mut used = self.0.used.load(Relaxed);
        loop {
            let next = used.saturating_add(delta);
            if cap.is_some_and(|cap| next > cap) {
                return false;
            }
            match self
                .0
                .used
                .compare_exchange_weak(used, next, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Gives back bytes [`try_charge`](Self::try_charge) took.
    pub(crate) fn release(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = self
            .0
            .used
            .fetch_update(Relaxed, Relaxed, |used| Some(used.saturating_sub(bytes)));
    }

    pub(crate) fn set(&self, bytes: usize) {
        self.0
            .used
            .store(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Stops a running guest from any thread, even one spinning in `loop {}`.
///
/// The guest is interrupted at its next epoch check (within about 10 ms of CPU time), or
/// at once if it is waiting in a host call.
#[derive(Debug, Clone, Default)]
pub struct KillHandle(Arc<KillState>);

#[derive(Debug, Default)]
struct KillState {
    status: Mutex<Option<i32>>,
    notify: tokio::sync::Notify,
}

impl KillHandle {
    /// A handle that has not been used.
    pub fn new() -> Self {
        Self::default()
    }

    /// Kills the guest; its status will be 137.
    pub fn kill(&self) {
        self.kill_with(EXIT_KILLED);
    }

    /// Stops the guest with the given exit status (143 for a SIGTERM, say). The first
    /// call wins; later ones change nothing.
    pub fn kill_with(&self, status: i32) {
        {
            let mut slot = self.0.status.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_some() {
                return;
            }
            *slot = Some(status);
        }
        self.0.notify.notify_waiters();
        self.0.notify.notify_one();
    }

    /// The status asked for, if the handle has been used.
    pub fn killed(&self) -> Option<i32> {
        *self.0.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the handle is used and returns the status asked for. The shim holds a
    /// pod's sandbox container on this: it runs nothing until it is killed.
    pub async fn wait(&self) -> i32 {
        loop {
            let notified = self.0.notify.notified();
            if let Some(status) = self.killed() {
                return status;
            }
            notified.await;
        }
    }
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest returned from its entry point or called `proc_exit`/`exit`.
    Exited,
    /// The guest trapped; the message (also written to its stderr) is kept here.
    Trapped(String),
    /// A [`KillHandle`] stopped it.
    Killed,
    /// The [deadline](Limits::timeout) passed.
    TimedOut,
    /// It asked for memory past its cap under [`Limits::oom_kill`]; the message says how
    /// much.
    OutOfMemory(String),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    code: i32,
    reason: ExitReason,
    memory_denied: bool,
}

impl ExitStatus {
    /// The exit status as a container runtime reports it: the guest's own code, 134 for a
    /// trap, 137 for a kill or deadline (or what [`KillHandle::kill_with`] asked).
    pub fn code(&self) -> i32 {
        self.code
    }

    /// Why the run ended.
    pub fn reason(&self) -> &ExitReason {
        &self.reason
    }

    /// Whether the guest asked for memory beyond its cap at some point (the growth failed
    /// inside the guest). Not known for killed runs.
    pub fn memory_denied(&self) -> bool {
        self.memory_denied
    }
}

/// Store data of a preview 1 module.
pub(crate) struct P1Host {
    wasi: WasiP1Ctx,
    budget: MemoryBudget,
}

/// Store data of a preview 2 component: a command's, or one served instance's.
pub(crate) struct P2Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: PolicyHooks,
    table: ResourceTable,
    budget: MemoryBudget,
}

impl WasiHttpView for P2Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for P2Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store for one component instance: its WASI context, its network hooks, its memory
/// budget as the store's limiter, and its CPU meter at every epoch tick.
pub(crate) fn component_store(
    engine: &wasmtime::Engine,
    wasi: WasiCtx,
    hooks: PolicyHooks,
    budget: MemoryBudget,
    cpu: CpuMeter,
) -> Store<P2Host> {
    let mut store = Store::new(
        engine,
        P2Host {
            wasi,
            http: WasiHttpCtx::new(),
            hooks,
            table: ResourceTable::new(),
            budget,
        },
    );
    store.limiter(|h| &mut h.budget);
    install_budget(&mut store, cpu);
    store
}

fn instantiate_err(e: &wasmtime::Error) -> Error {
    Error::Instantiate(chain(e))
}

/// Whether an instantiation failed in the guest's own code (a trap, `proc_exit`, a kill
/// at an epoch) rather than in linking or allocating it.
fn ran_guest_code(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::Trap>().is_some() || e.downcast_ref::<I32Exit>().is_some()
}

impl Engine {
    fn p1_linker(&self) -> Result<&wasmtime::Linker<P1Host>> {
        if let Some(l) = self.inner.p1_linker.get() {
            return Ok(l);
        }
        let mut linker = wasmtime::Linker::new(&self.inner.wasmtime);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut P1Host| &mut h.wasi)
            .map_err(|e| Error::Config(chain(&e)))?;
        #[cfg(feature = "escape-simulator")]
        crate::sys::escape::add_to_linker(&mut linker).map_err(|e| Error::Config(chain(&e)))?;
        Ok(self.inner.p1_linker.get_or_init(|| linker))
    }

    /// The linker of every component, command or handler: WASI preview 2 and 0.3
    /// (preview 3), each with its `wasi:http`, as `wasmtime run -Shttp` links them.
    pub(crate) fn p2_linker(&self) -> Result<&wasmtime::component::Linker<P2Host>> {
        if let Some(l) = self.inner.p2_linker.get() {
            return Ok(l);
        }
        let config = |e: wasmtime::Error| Error::Config(chain(&e));
        let mut linker = wasmtime::component::Linker::new(&self.inner.wasmtime);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(config)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(config)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(config)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(config)?;
        Ok(self.inner.p2_linker.get_or_init(|| linker))
    }

    /// Checks that every import of `program` is provided and its entry point exists,
    /// without running it.
    pub fn check(&self, program: &Program) -> Result<()> {
        match &*program.code {
            Code::Module(m) => {
                self.p1_linker()?
                    .instantiate_pre(m)
                    .map_err(|e| instantiate_err(&e))?;
                if !m.exports().any(|e| e.name() == "_start") {
                    return Err(Error::Instantiate(
                        "the module has no `_start` export (is it a WASI command?)".into(),
                    ));
                }
            }
            Code::Component(c) => {
                let pre = self
                    .p2_linker()?
                    .instantiate_pre(c)
                    .map_err(|e| instantiate_err(&e))?;
                command_world(&pre)?;
            }
        }
        Ok(())
    }

    /// Runs `program` to completion, a kill or its deadline.
    ///
    /// Errors are for workloads that cannot start (missing imports, no entry point, a
    /// preopen that cannot be opened); everything after the start is an [`ExitStatus`].
    /// Must be called inside a tokio runtime.
    pub async fn run(&self, program: &Program, config: RunConfig) -> Result<ExitStatus> {
        let RunConfig {
            args,
            env,
            cwd,
            preopens,
            stdio,
            limits,
            kill,
            memory,
            cpu,
            network,
        } = config;
        // From here to the guest's first instruction (WASI context, instantiation): a
        // phase the shim times under `WASMPOD_TIMINGS`.
        let setup = tracing::debug_span!("phase", phase = "guest.setup", otel.name = "guest.setup");
        self.start_ticker()?;
        let mut builder = WasiCtxBuilder::new();
        builder.args(&args).envs(&env);
        network.apply(&mut builder);
        if let Some(cwd) = &cwd {
            builder.initial_cwd(cwd);
        }
        add_preopens(&mut builder, &preopens)?;
        let mut err_sink = stdio::install(stdio, &mut builder)?;
        let budget = MemoryBudget::new(limits.memory, limits.oom_kill, memory);

        let meter = cpu.clone();
        let guest = Metered {
            inner: Box::pin(async move {
                match &*program.code {
                    Code::Module(m) => self.run_module(m, builder, budget, meter, setup).await,
                    Code::Component(c) => {
                        let hooks = PolicyHooks(Arc::new(network));
                        self.run_component(c, builder, hooks, budget, meter, setup)
                            .await
                    }
                }
            }),
            meter: cpu,
        };
        let deadline = async {
            match limits.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let (outcome, memory_denied) = tokio::select! {
            biased;
            outcome = guest => outcome?,
            code = kill.wait() => {
                return Ok(ExitStatus { code, reason: ExitReason::Killed, memory_denied: false });
            }
            () = deadline => {
                return Ok(ExitStatus { code: EXIT_KILLED, reason: ExitReason::TimedOut, memory_denied: false });
            }
        };
        let (code, reason) = match outcome {
            Ok(code) => (code, ExitReason::Exited),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => (exit.0, ExitReason::Exited),
                None if e.chain().any(|c| c.is::<OutOfMemory>()) => {
                    let oom = e.chain().find_map(|c| c.downcast_ref::<OutOfMemory>());
                    let message = oom.map(ToString::to_string).unwrap_or_default();
                    tracing::debug!(error = %chain(&e), "killed: out of memory");
                    (EXIT_KILLED, ExitReason::OutOfMemory(message))
                }
                None => {
                    let message = format!("Error: {e:?}");
                    err_sink.write_line(&message);
                    (EXIT_TRAP, ExitReason::Trapped(chain(&e)))
                }
            },
        };
        Ok(ExitStatus {
            code,
            reason,
            memory_denied,
        })
    }

    /// Instantiates and runs a module; the outer error is "cannot start", the inner one
    /// is how the guest ended.
    async fn run_module(
        &self,
        module: &wasmtime::Module,
        mut builder: WasiCtxBuilder,
        budget: MemoryBudget,
        cpu: CpuMeter,
        setup: tracing::Span,
    ) -> Result<(wasmtime::Result<i32>, bool)> {
        let pre = self
            .p1_linker()?
            .instantiate_pre(module)
            .map_err(|e| instantiate_err(&e))?;
        let mut store = Store::new(
            &self.inner.wasmtime,
            P1Host {
                wasi: builder.build_p1(),
                budget,
            },
        );
        store.limiter(|h| &mut h.budget);
        install_budget(&mut store, cpu);
        let instance = match pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            // The module's own `(start)` function ran and trapped, exited or was
            // stopped: that is the guest's outcome (134 for a trap), not a failure to
            // start it.
            Err(e) if ran_guest_code(&e) => {
                return Ok((Err(e), store.data().budget.denied()));
            }
            Err(e) => return Err(instantiate_err(&e)),
        };
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|_| {
                Error::Instantiate(
                    "the module has no `_start` export (is it a WASI command?)".into(),
                )
            })?;
        drop(setup);
        let result = start.call_async(&mut store, ()).await.map(|()| 0);
        Ok((result, store.data().budget.denied()))
    }

    async fn run_component(
        &self,
        component: &wasmtime::component::Component,
        mut builder: WasiCtxBuilder,
        hooks: PolicyHooks,
        budget: MemoryBudget,
        cpu: CpuMeter,
        setup: tracing::Span,
    ) -> Result<(wasmtime::Result<i32>, bool)> {
        let pre = self
            .p2_linker()?
            .instantiate_pre(component)
            .map_err(|e| instantiate_err(&e))?;
        let world = command_world(&pre)?;
        let mut store = component_store(&self.inner.wasmtime, builder.build(), hooks, budget, cpu);
        let instance = match pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(e) if ran_guest_code(&e) => return Ok((Err(e), store.data().budget.denied())),
            Err(e) => return Err(instantiate_err(&e)),
        };
        drop(setup);
        let result = match world {
            CommandWorld::P3 => {
                let command = wasmtime_wasi::p3::bindings::Command::new(&mut store, &instance)
                    .map_err(|e| instantiate_err(&e))?;
                // A 0.3 command runs inside the store's event loop, which also drives
                // the tasks and streams it starts; it is done when `run` returns.
                store
                    .run_concurrent(async |store| command.wasi_cli_run().call_run(store).await)
                    .await
                    .and_then(|r| r)
            }
            CommandWorld::P2 => {
                let command = wasmtime_wasi::p2::bindings::Command::new(&mut store, &instance)
                    .map_err(|e| instantiate_err(&e))?;
                command.wasi_cli_run().call_run(&mut store).await
            }
        }
        .map(|r| i32::from(r.is_err()));
        Ok((result, store.data().budget.denied()))
    }
}

/// Which `wasi:cli/run` a component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommandWorld {
    /// `wasi:cli/run@0.2`.
    P2,
    /// `wasi:cli/run@0.3` (WASI preview 3): an async export.
    P3,
}

/// The command world `pre` exports, preview 3's first as `wasmtime run` looks for it.
fn command_world(pre: &wasmtime::component::InstancePre<P2Host>) -> Result<CommandWorld> {
    if wasmtime_wasi::p3::bindings::CommandIndices::new(pre).is_ok() {
        return Ok(CommandWorld::P3);
    }
    wasmtime_wasi::p2::bindings::CommandIndices::new(pre)
        .map(|_| CommandWorld::P2)
        .map_err(|e| {
            Error::Instantiate(format!(
                "the component does not export wasi:cli/run (0.2 or 0.3): {}",
                chain(&e)
            ))
        })
}
