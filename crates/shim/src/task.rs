//! The containerd task API (`containerd.task.v2.Task`) over the containers of this shim.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use containerd_shim::api::{self, Status};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::cgroups::metrics::{MemoryEntry, MemoryStat, Metrics};
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use oci_spec::runtime::Spec;
use sandbox::{Cgroup, HandlerOptions, Isolation, NetnsRuntime, NetworkPlan, RunPolicy, Selection};
use tracing::Instrument;
use wasm_engine::{
    Engine, ExitReason, KillHandle, Program, ProgramKind, EXIT_CANNOT_START, EXIT_KILLED,
    EXIT_TERMINATED,
};

use crate::container::{Container, Runner, State, StdioPaths, Workload};
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::events::{timestamp, Events};
use crate::process::{self, ExitWatch, ProcessWorkload};
use crate::{options, rootfs, stdio, CONTAINER_TYPE_ANNOTATION, IMAGE_NAME_ANNOTATION};

/// The task service: every container of this shim process.
#[derive(Clone)]
pub struct TaskService {
    engine: Engine,
    content: ContentStore,
    events: Events,
    exit: Arc<ExitSignal>,
    containers: Arc<Mutex<HashMap<String, Container>>>,
    /// Containers whose Create is under way, and a wake-up for every Create that ends: a
    /// call about such a container waits for it rather than answer "not found" — after
    /// containerd was restarted in the middle of a Create, its calls about the task come
    /// while the compile still runs, and a task it was told is missing would never be
    /// deleted (its shim, mount and bundle left for good).
    creating: Arc<(
        Mutex<std::collections::HashSet<String>>,
        tokio::sync::Notify,
    )>,
    /// The ids of the last Creates that failed: containerd cleans up after a failed Create
    /// by deleting the task, and that Delete succeeds (the task ended before it began)
    /// rather than make containerd log an error about a task it knows never existed.
    failed: Arc<Mutex<std::collections::VecDeque<String>>>,
    /// The engine of served handlers (made with the first): the pooling allocator.
    serving: Arc<std::sync::OnceLock<Engine>>,
    /// The network runtimes of pods' namespaces, by path, while a container uses one.
    netns_runtimes: Arc<Mutex<HashMap<PathBuf, std::sync::Weak<NetnsRuntime>>>>,
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

/// The engine that serves `wasi:http` handlers in this shim: instances come from the
/// pooling allocator's ready slots; the code from the same precompile cache.
fn serving_engine(cell: &std::sync::OnceLock<Engine>) -> wasm_engine::Result<Engine> {
    if let Some(engine) = cell.get() {
        return Ok(engine.clone());
    }
    let engine = Engine::new(wasm_engine::EngineConfig {
        cache_dir: Some(crate::service::cache_dir()),
        pooling: Some(wasm_engine::Pooling::default()),
        compiler: Some(wasm_engine::CompilerProcess::this_executable()),
        ..Default::default()
    })?;
    Ok(cell.get_or_init(|| engine).clone())
}

/// Starts a [`NetnsRuntime`] (threads and a setns each: off the async threads).
async fn new_netns_runtime(network: sandbox::Network, owner: &str) -> Result<NetnsRuntime> {
    let what = format!("{network:?}");
    tokio::task::spawn_blocking(move || NetnsRuntime::new(&network, 1))
        .await
        .map_err(|e| Error::Io {
            context: format!("{owner}: network runtime"),
            source: std::io::Error::other(e),
        })?
        .map_err(|e| Error::Io {
            context: format!("{owner}: threads in network namespace {what}"),
            source: std::io::Error::other(e),
        })
}

/// The listener of a served container: port `port` on every address of its network
/// namespace, bound on a thread inside that namespace (or here, in the host's).
fn bind(id: &str, port: u16, net: Option<&NetnsRuntime>) -> Result<std::net::TcpListener> {
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

/// What Create prepared for a container.
struct Prepared {
    workload: Workload,
    stdin_close: Option<tokio::sync::oneshot::Sender<()>>,
    cgroup: Option<Cgroup>,
    /// A sandbox's network namespace.
    netns: Option<PathBuf>,
}

/// The span of one container: a root, so the guest's task does not nest under the call
/// that started it.
fn span(id: &str) -> tracing::Span {
    tracing::info_span!(parent: None, "container", %id)
}

/// The exit status a signal gives a guest, or `None` for signals whose default action is to
/// do nothing.
fn signal_status(signal: u32) -> Result<Option<i32>> {
    match i32::try_from(signal).unwrap_or(-1) {
        libc::SIGKILL => Ok(Some(EXIT_KILLED)),
        libc::SIGTERM => Ok(Some(EXIT_TERMINATED)),
        libc::SIGCHLD | libc::SIGCONT | libc::SIGURG | libc::SIGWINCH => Ok(None),
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => {
            Err(Error::InvalidArgument(format!(
                "signal {signal} would pause the task; Pause is not supported for wasm guests"
            )))
        }
        s @ 1..=64 => Ok(Some(128 + s)),
        _ => Err(Error::InvalidArgument(format!("invalid signal {signal}"))),
    }
}

/// What the spec says about the image, for errors: CRI names it in an annotation.
fn describe_entrypoint(spec: &Spec, entrypoint: &str) -> String {
    match spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(IMAGE_NAME_ANNOTATION))
    {
        Some(image) => format!("image {image}: entrypoint {entrypoint}"),
        None => format!("entrypoint {entrypoint} (process.args[0]) in the root filesystem"),
    }
}

fn is_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION))
        .is_some_and(|t| t == "sandbox")
}

impl TaskService {
    pub(crate) fn new(
        engine: Engine,
        content: ContentStore,
        events: Events,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Self {
            engine,
            content,
            events,
            exit,
            containers: Arc::default(),
            creating: Arc::default(),
            netns_runtimes: Arc::default(),
            failed: Arc::default(),
            serving: Arc::default(),
        }
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn creating(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.creating.0.lock().unwrap_or_else(|p| p.into_inner())
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

    /// The runtime of network namespace `path`, shared by the containers in it (a pod's).
    async fn netns_runtime(&self, path: PathBuf) -> Result<Arc<NetnsRuntime>> {
        let found = {
            let map = self
                .netns_runtimes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.get(&path).and_then(std::sync::Weak::upgrade)
        };
        if let Some(runtime) = found {
            return Ok(runtime);
        }
        let runtime =
            Arc::new(new_netns_runtime(sandbox::Network::Join(path.clone()), "pod").await?);
        let mut map = self
            .netns_runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.retain(|_, weak| weak.strong_count() > 0);
        // Two Creates may race; the first one kept wins.
        if let Some(existing) = map.get(&path).and_then(std::sync::Weak::upgrade) {
            return Ok(existing);
        }
        map.insert(path, Arc::downgrade(&runtime));
        Ok(runtime)
    }

    /// Loads what the container will run: the spec, the policy, the compiled entrypoint and
    /// its stdio. Nothing here outlives a failure.
    async fn prepare(
        &self,
        id: &str,
        bundle: &Path,
        paths: &StdioPaths,
        has_rootfs: bool,
        handler: &HandlerOptions,
    ) -> Result<Prepared> {
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| {
            Error::InvalidArgument(format!(
                "container {id}: cannot read {}: {e}",
                bundle.join("config.json").display()
            ))
        })?;
        if is_sandbox(&spec) {
            tracing::info!("pod sandbox: held until killed, running nothing");
            let netns = match sandbox::Confinement::from_spec(&spec).map(|c| c.network().clone()) {
                Ok(sandbox::Network::Join(path)) => Some(path),
                _ => None,
            };
            return Ok(Prepared {
                workload: Workload::Sandbox,
                stdin_close: None,
                cgroup: None,
                netns,
            });
        }
        let policy_error = |source| Error::Policy {
            id: id.to_owned(),
            source,
        };
        let selection = Selection::decide(&spec, handler).map_err(policy_error)?;
        tracing::info!(isolation = %selection.isolation, grouping = %selection.grouping, "isolation");
        // No snapshot to mount, or an empty one (containerd 2.x's CRI makes one for an
        // image without filesystem layers): a Wasm OCI artifact, whose program is a layer
        // in containerd's content store rather than a file.
        let layer = if has_rootfs && !rootfs::is_empty(bundle) {
            None
        } else {
            self.content
                .wasm_layer(id, handler.program_limits.max_size)
                .await?
        };
        let policy = match &layer {
            Some(_) => RunPolicy::from_spec_with_program(&spec, bundle),
            None => RunPolicy::from_spec(&spec, bundle),
        }
        .map_err(|source| Error::Policy {
            id: id.to_owned(),
            source,
        })?;
        let mut policy = policy;
        let process_level = selection.isolation == Isolation::Process;
        for warning in policy.warnings_at(selection.isolation) {
            tracing::warn!(field = %warning.field, "{}", warning.message);
        }
        let mut program_file = None;
        let (what, bytes) = match layer {
            Some(layer) => {
                if process_level {
                    // The child reads the layer from the bundle.
                    let file = bundle.join(process::PROGRAM_FILE);
                    std::fs::write(&file, &layer.bytes)
                        .map_err(crate::error::io(format!("writing {}", file.display())))?;
                    program_file = Some(file);
                }
                (format!("image {}: wasm layer", layer.image), layer.bytes)
            }
            None => {
                let max = handler.program_limits.max_size;
                let bytes = policy
                    .read_entrypoint(max)
                    .map_err(|source| Error::Policy {
                        id: id.to_owned(),
                        source,
                    })?;
                (describe_entrypoint(&spec, policy.entrypoint()), bytes)
            }
        };
        let engine = self.engine.clone();
        let serving = self.serving.clone();
        let name = PathBuf::from(policy.entrypoint());
        let limits = handler.program_limits;
        // Compiling is CPU-bound: keep it off the threads that serve the task API. In
        // the container's span: the engine logs a compile's start and end there.
        let span = tracing::Span::current();
        let loaded = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let program = engine.load_limited(&bytes, &name, &limits);
            // Only a compile leaves much behind; trimming walks the whole heap, which in a
            // shim holding hundreds of guests took 35 of the 71 ms of a `ctr run`.
            if program.as_ref().map_or(true, Program::was_compiled) {
                crate::sys::release_free_memory();
            }
            let program = program?;
            // A component exporting wasi:http/incoming-handler is served, not run: by
            // the serving engine here (from the cache just filled), by its own process in
            // the process level.
            let serves = program.kind() == ProgramKind::Component && engine.serves_http(&program);
            if !serves {
                engine.check(&program)?;
                return Ok((program, false));
            }
            if process_level {
                return Ok((program, true));
            }
            let program = serving_engine(&serving)?.load_limited(&bytes, &name, &limits)?;
            Ok((program, true))
        })
        .await
        .map_err(|e| Error::Io {
            context: format!("container {id}: compiling"),
            source: std::io::Error::other(e),
        })?;
        let (program, serves) = match loaded {
            Ok(loaded) => loaded,
            Err(source) => {
                // Name the image even where CRI's annotation does not (`ctr run`).
                let what = match self.content.image_name(id).await {
                    Some(image) if !what.starts_with("image ") => {
                        format!("image {image}: {what}")
                    }
                    _ => what,
                };
                return Err(Error::Engine {
                    id: id.to_owned(),
                    what,
                    source,
                });
            }
        };
        let image_ports = if serves {
            self.content
                .exposed_ports(id)
                .await
                .unwrap_or_else(|error| {
                    tracing::debug!(%error, "no exposed ports from the image");
                    Vec::new()
                })
        } else {
            Vec::new()
        };
        let network = NetworkPlan::decide(&spec, handler, &image_ports).map_err(policy_error)?;
        if serves {
            tracing::info!(port = network.port, "a wasi:http handler: served");
        }
        policy.set_network(network.policy.clone());
        let sandbox_id = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(crate::SANDBOX_ID_ANNOTATION))
            .cloned();
        // Only a process-level child and a component (sockets) use the pod's namespace.
        let netns = if process_level || program.kind() == ProgramKind::Component {
            process::pod_netns(&spec, || {
                let map = self.containers();
                map.get(sandbox_id.as_deref()?)?.netns.clone()
            })?
        } else {
            None
        };
        if process_level {
            // The child loads the program from the precompile cache this compile filled.
            drop(program);
            let path = sandbox::cgroup_path(&spec, id).map_err(policy_error)?;
            let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
            // A handful of mkdir and small writes under /sys/fs/cgroup.
            let cgroup = Cgroup::create(&path, resources).map_err(policy_error)?;
            let streams = match stdio::open(paths).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = cgroup.delete();
                    return Err(e);
                }
            };
            return Ok(Prepared {
                workload: Workload::Process(Box::new(ProcessWorkload {
                    stdio: streams.stdio,
                    program: program_file,
                    netns,
                    network,
                    serve: serves,
                    max_size: handler.program_limits.max_size,
                })),
                stdin_close: streams.stdin_close,
                cgroup: Some(cgroup),
                netns: None,
            });
        }
        // A component's sockets must be its pod's: it runs on threads in that namespace.
        // A module has no sockets and stays on the shim's own threads.
        let net = match (program.kind(), netns) {
            (ProgramKind::Module, _) => None,
            (ProgramKind::Component, Some(path)) => Some(self.netns_runtime(path).await?),
            (ProgramKind::Component, None) => {
                match sandbox::Confinement::from_spec(&spec).map(|c| c.network().clone()) {
                    Ok(sandbox::Network::Host) => None,
                    Ok(sandbox::Network::Join(path)) => Some(self.netns_runtime(path).await?),
                    Ok(network @ sandbox::Network::New) => {
                        Some(Arc::new(new_netns_runtime(network, id).await?))
                    }
                    Err(source) => return Err(policy_error(source)),
                }
            }
        };
        let streams = stdio::open(paths).await?;
        let config = policy.run_config(streams.stdio, KillHandle::new());
        Ok(Prepared {
            workload: Workload::Wasm {
                program,
                config: Box::new(config),
                serve: serves.then_some(network.port),
                net,
            },
            stdin_close: streams.stdin_close,
            cgroup: None,
            netns: None,
        })
    }

    async fn do_create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        let id = req.id.clone();
        if self.containers().contains_key(&id) || !self.creating().insert(id.clone()) {
            return Err(Error::AlreadyExists(id));
        }
        // Ends the Create's mark however it ends.
        struct Mark(TaskService, String);
        impl Drop for Mark {
            fn drop(&mut self) {
                self.0.creating().remove(&self.1);
                self.0.creating.1.notify_waiters();
            }
        }
        let mark = Mark(self.clone(), id.clone());
        // The Create runs to its end even if the caller goes: the ttrpc server drops a
        // call whose connection closed (containerd killed or restarted), and a Create
        // dropped halfway would leave its rootfs mounted and the container unknown.
        // Finished, it is a created task containerd finds again when it comes back. Failed
        // with nobody to tell, and nothing else here, the shim ends as containerd would
        // have ended it: a restarted containerd then cleans the bundle up after it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let create = async move {
            let result = this.create_container(req).await;
            if result.is_err() {
                this.remember_failed(&mark.1);
            }
            drop(mark);
            if let Err(Err(e)) = tx.send(result) {
                tracing::warn!(error = %e, "create failed after its caller left");
                if this.containers().is_empty() && this.creating().is_empty() {
                    tracing::info!("no containers left: shutting down");
                    this.exit.signal();
                }
            }
        };
        tokio::spawn(create.instrument(tracing::Span::current()));
        rx.await.map_err(|e| Error::Io {
            context: format!("container {id}: create"),
            source: std::io::Error::other(e),
        })?
    }

    /// Notes that the Create of `id` failed (see [`TaskService::failed`]).
    fn remember_failed(&self, id: &str) {
        /// How many failed Creates are remembered: containerd deletes right after.
        const REMEMBERED: usize = 64;
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.len() == REMEMBERED {
            failed.pop_front();
        }
        failed.push_back(id.to_owned());
    }

    /// Forgets the failed Create of `id`; whether there was one.
    fn forget_failed(&self, id: &str) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let before = failed.len();
        failed.retain(|f| f != id);
        failed.len() != before
    }

    async fn create_container(
        &self,
        req: api::CreateTaskRequest,
    ) -> Result<api::CreateTaskResponse> {
        let id = req.id.clone();
        if !req.checkpoint.is_empty() {
            return Err(Error::Unimplemented("Create from a checkpoint"));
        }
        let bundle = PathBuf::from(&req.bundle);
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let handler = options::from_any(req.options.get_or_default())?;
        let mounted = rootfs::mount(&id, &bundle, &req.rootfs).await?;
        let prepared = self.prepare(&id, &bundle, &paths, mounted, &handler).await;
        let Prepared {
            workload,
            stdin_close,
            cgroup,
            netns,
        } = match prepared {
            Ok(p) => p,
            Err(e) => {
                if mounted {
                    if let Err(error) = rootfs::unmount(&id, &bundle) {
                        tracing::warn!(%error, "after a failed create");
                    }
                }
                return Err(e);
            }
        };
        let mut container = Container::new(id.clone(), bundle, paths.clone(), workload);
        container.rootfs_mounted = mounted;
        container.stdin_close = stdin_close;
        container.cgroup = cgroup.map(Arc::new);
        container.netns = netns;
        // No other Create of this id runs (`do_create` marked it), so the slot is free.
        self.containers().insert(id.clone(), container);
        tracing::info!("created");
        self.events
            .create(TaskCreate {
                container_id: id,
                bundle: req.bundle,
                rootfs: req.rootfs,
                io: Some(TaskIO {
                    stdin: paths.stdin,
                    stdout: paths.stdout,
                    stderr: paths.stderr,
                    terminal: paths.terminal,
                    ..Default::default()
                })
                .into(),
                checkpoint: req.checkpoint,
                pid: pid(),
                ..Default::default()
            })
            .await;
        Ok(api::CreateTaskResponse {
            pid: pid(),
            ..Default::default()
        })
    }

    async fn do_start(&self, req: &api::StartRequest) -> Result<api::StartResponse> {
        Self::no_exec(&req.exec_id, &req.id)?;
        let id = req.id.clone();
        let (bundle, cgroup) = self.with(&id, |c| Ok((c.bundle.clone(), c.cgroup.clone())))?;
        // Watch the reaper before a child can exist, so its exit cannot be missed.
        let watch = match &cgroup {
            Some(_) => Some(ExitWatch::new().await?),
            None => None,
        };
        enum Launched {
            Guest(Workload, KillHandle),
            Server {
                engine: Engine,
                program: Program,
                config: Box<wasm_engine::RunConfig>,
                listener: std::net::TcpListener,
                net: Option<Arc<NetnsRuntime>>,
                abort: KillHandle,
            },
            Child(u32),
        }
        let launched = self.with(&id, |c| {
            c.start(|workload| match workload {
                Workload::Process(p) => {
                    let cgroup = cgroup
                        .as_deref()
                        .expect("a process-level container has a cgroup");
                    let pid = process::spawn(&id, &bundle, cgroup, *p)?;
                    Ok((Runner::Child(pid), Launched::Child(pid)))
                }
                Workload::Wasm {
                    program,
                    config,
                    serve: Some(port),
                    net,
                } => {
                    // Made by Create with the program; only its errors come from here.
                    let engine = serving_engine(&self.serving).map_err(|source| Error::Engine {
                        id: id.clone(),
                        what: "the serving engine".into(),
                        source,
                    })?;
                    let listener = bind(&id, port, net.as_deref())?;
                    let (drain, abort) = (KillHandle::new(), KillHandle::new());
                    let mut config = config;
                    // The served config's kill handle is its shutdown: a drain.
                    config.kill = drain.clone();
                    let runner = Runner::Server {
                        drain: drain.clone(),
                        abort: abort.clone(),
                    };
                    let launched = Launched::Server {
                        engine,
                        program,
                        config,
                        listener,
                        net,
                        abort,
                    };
                    Ok((runner, launched))
                }
                other => {
                    let kill = KillHandle::new();
                    Ok((Runner::Guest(kill.clone()), Launched::Guest(other, kill)))
                }
            })
        });
        let launched = match launched {
            Ok(l) => l,
            Err(e) => {
                if let Some(watch) = watch {
                    watch.cancel().await;
                }
                if let Ok(Some(exit)) = self.with(&id, |c| Ok(c.exit())) {
                    self.events.exit(&id, pid(), exit.code, exit.at).await;
                }
                return Err(e);
            }
        };
        let service = self.clone();
        let task_id = id.clone();
        type Run = std::pin::Pin<Box<dyn std::future::Future<Output = i32> + Send>>;
        let (code_pid, run): (u32, Run) = match launched {
            Launched::Child(child) => {
                let watch = watch.expect("watching before the child started");
                let run = async move {
                    tracing::info!(pid = child, "started in its own process");
                    let code = watch.wait(child).await;
                    let oom = cgroup.as_ref().is_some_and(|c| c.stats().oom_kills > 0);
                    tracing::info!(code, oom, "exited");
                    if oom {
                        service.events.oom(&task_id).await;
                    }
                    code
                };
                (child, Box::pin(run))
            }
            Launched::Guest(workload, kill) => {
                let engine = self.engine.clone();
                let service = self.clone();
                let task_id = id.clone();
                let run = async move {
                    tracing::info!(?workload, "started");
                    match workload {
                        Workload::Wasm {
                            program,
                            mut config,
                            net,
                            ..
                        } => {
                            config.kill = kill;
                            let run = async move { engine.run(&program, *config).await };
                            let ended = match &net {
                                Some(net) => net.handle().spawn(run.in_current_span()).await,
                                None => Ok(run.await),
                            };
                            let ended = ended.unwrap_or_else(|e| {
                                Err(wasm_engine::Error::Instantiate(format!(
                                    "the guest's task: {e}"
                                )))
                            });
                            match ended {
                                Ok(status) => {
                                    tracing::info!(code = status.code(), reason = ?status.reason(), "exited");
                                    if matches!(status.reason(), ExitReason::OutOfMemory(_)) {
                                        service.events.oom(&task_id).await;
                                    }
                                    status.code()
                                }
                                Err(error) => {
                                    tracing::error!(%error, "cannot start the guest");
                                    EXIT_CANNOT_START
                                }
                            }
                        }
                        Workload::Process(_) => unreachable!("launched as a child"),
                        Workload::Sandbox => kill.wait().await,
                    }
                };
                (pid(), Box::pin(run))
            }
            Launched::Server {
                engine,
                program,
                config,
                listener,
                net,
                abort,
            } => {
                let run = async move {
                    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
                    tracing::info!(port, "serving wasi:http");
                    let config = wasm_engine::ServeConfig::from(*config);
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
                (pid(), Box::pin(run))
            }
        };
        let service = self.clone();
        let task = async move {
            // On a task of its own, so that a panic while it runs (in the engine or a host
            // function, on this tenant's behalf) ends this container — as a trap, 134 —
            // and not, unnoticed, the task that reports its exit: it stayed RUNNING.
            let code = match tokio::spawn(run.in_current_span()).await {
                Ok(code) => code,
                Err(error) => {
                    tracing::error!(%error, "the container's task failed; it ends, the shim goes on");
                    wasm_engine::EXIT_TRAP
                }
            };
            let code = u32::try_from(code).unwrap_or(u32::MAX);
            let exit = service.with(&id, |c| c.exited(code));
            if let Ok(exit) = exit {
                service.events.exit(&id, code_pid, exit.code, exit.at).await;
            }
        };
        tokio::spawn(task.instrument(span(&req.id)));
        Ok(api::StartResponse {
            pid: code_pid,
            ..Default::default()
        })
    }

    async fn do_kill(&self, req: &api::KillRequest) -> Result<()> {
        Self::no_exec(&req.exec_id, &req.id)?;
        let Some(code) = signal_status(req.signal)? else {
            return Ok(());
        };
        let killed_before_start = self.with(&req.id, |c| match c.state() {
            State::Running(Runner::Guest(kill)) => {
                kill.kill_with(code);
                Ok(None)
            }
            State::Running(Runner::Server { drain, abort }) => {
                if code == EXIT_KILLED {
                    abort.kill();
                } else {
                    drain.kill_with(code);
                }
                Ok(None)
            }
            State::Running(Runner::Child(child)) => {
                process::signal(&req.id, *child, req.signal)?;
                Ok(None)
            }
            State::Created(_) => c.exited(u32::try_from(code).unwrap_or(u32::MAX)).map(Some),
            State::Stopped(_) => Err(Error::NotFound(format!(
                "{}: process already finished",
                req.id
            ))),
        })?;
        tracing::info!(signal = req.signal, "killed");
        if let Some(exit) = killed_before_start {
            let task_pid = self.with(&req.id, |c| Ok(c.pid()))?;
            self.events
                .exit(&req.id, task_pid, exit.code, exit.at)
                .await;
        }
        Ok(())
    }

    async fn do_delete(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        Self::no_exec(&req.exec_id, &req.id)?;
        let container = {
            let mut map = self.containers();
            let Some(c) = map.get(&req.id) else {
                drop(map);
                if self.forget_failed(&req.id) {
                    tracing::debug!("deleted after a failed create");
                    return Ok(api::DeleteResponse {
                        pid: 0,
                        exit_status: u32::try_from(EXIT_CANNOT_START).unwrap_or(126),
                        exited_at: Some(timestamp(std::time::SystemTime::now())).into(),
                        ..Default::default()
                    });
                }
                return Err(Error::NotFound(req.id.clone()));
            };
            c.check_delete()?;
            map.remove(&req.id)
                .expect("present: looked up under the same lock")
        };
        let exit = container.exit();
        if let Some(cgroup) = &container.cgroup {
            let cgroup = cgroup.clone();
            tokio::task::spawn_blocking(move || cgroup.delete())
                .await
                .map_err(|e| Error::Io {
                    context: "removing the cgroup".into(),
                    source: std::io::Error::other(e),
                })?
                .map_err(|source| Error::Policy {
                    id: req.id.clone(),
                    source,
                })?;
        }
        let _ = std::fs::remove_file(container.bundle.join(process::PROGRAM_FILE));
        if container.rootfs_mounted {
            rootfs::unmount(&req.id, &container.bundle)?;
        }
        let code = exit.map_or(0, |e| e.code);
        let at = exit.map_or_else(std::time::SystemTime::now, |e| e.at);
        tracing::info!(code, "deleted");
        let task_pid = container.pid();
        self.events.delete(&req.id, task_pid, code, at).await;
        Ok(api::DeleteResponse {
            pid: task_pid,
            exit_status: code,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        })
    }

    fn do_state(&self, req: &api::StateRequest) -> Result<api::StateResponse> {
        Self::no_exec(&req.exec_id, &req.id)?;
        self.with(&req.id, |c| {
            let mut resp = api::StateResponse {
                id: c.id.clone(),
                bundle: c.bundle.display().to_string(),
                pid: c.pid(),
                stdin: c.stdio.stdin.clone(),
                stdout: c.stdio.stdout.clone(),
                stderr: c.stdio.stderr.clone(),
                terminal: c.stdio.terminal,
                ..Default::default()
            };
            resp.set_status(match c.state() {
                State::Created(_) => Status::CREATED,
                State::Running(_) => Status::RUNNING,
                State::Stopped(_) => Status::STOPPED,
            });
            if let Some(exit) = c.exit() {
                resp.exit_status = exit.code;
                resp.exited_at = Some(timestamp(exit.at)).into();
            }
            Ok(resp)
        })
    }

    fn do_stats(&self, req: &api::StatsRequest) -> Result<api::StatsResponse> {
        let (cgroup, usage, limit, cpu) = self.with(&req.id, |c| {
            Ok((
                c.cgroup.clone(),
                c.memory.bytes(),
                c.memory.limit(),
                c.cpu.used(),
            ))
        })?;
        let metrics = match cgroup {
            Some(cgroup) => cgroup_metrics(&cgroup.stats()),
            // The shared level: the engine's figures for this guest alone.
            None => Metrics {
                memory: Some(MemoryStat {
                    usage: Some(MemoryEntry {
                        usage,
                        limit: limit.unwrap_or(u64::MAX),
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                })
                .into(),
                cpu: Some(containerd_shim::protos::cgroups::metrics::CPUStat {
                    usage: Some(containerd_shim::protos::cgroups::metrics::CPUUsage {
                        total: u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX),
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
        };
        let value = metrics.write_to_bytes().map_err(|e| Error::Io {
            context: "encoding metrics".into(),
            source: std::io::Error::other(e),
        })?;
        Ok(api::StatsResponse {
            stats: Some(Any {
                type_url: "io.containerd.cgroups.v1.Metrics".into(),
                value,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
    }
}

/// A process-level container's cgroup figures as containerd's cgroup v1 metrics (which its
/// CRI reads on v1 and v2 hosts alike): memory usage, limit and working-set inputs, CPU
/// time and throttling, pids.
fn cgroup_metrics(s: &sandbox::CgroupStats) -> Metrics {
    use containerd_shim::protos::cgroups::metrics::{CPUStat, CPUUsage, PidsStat, Throttle};
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

/// Runs one task call inside the container's span and maps its error once.
macro_rules! traced {
    ($self:expr, $id:expr, $call:expr) => {{
        $self.settled($id).await;
        let result: Result<_> = $call.instrument(span($id)).await;
        result.map_err(|e| -> containerd_shim::protos::ttrpc::Error {
            tracing::warn!(id = %$id, error = %e, "task call failed");
            e.into()
        })
    }};
}

/// [`traced!`] for a question about a container (State, Pids, Stats): answered at once.
/// While its Create is under way the container is not there yet (as runc's shim says):
/// containerd's task list asks every task's State and would wait for a tenant's compile.
macro_rules! traced_now {
    ($self:expr, $id:expr, $call:expr) => {{
        if $self.creating().contains($id.as_str()) {
            let e = Error::NotFound(format!("{} (being created)", $id));
            return Err(e.into());
        }
        let result: Result<_> = $call.instrument(span($id)).await;
        result.map_err(|e| -> containerd_shim::protos::ttrpc::Error {
            tracing::warn!(id = %$id, error = %e, "task call failed");
            e.into()
        })
    }};
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        traced!(self, &id, self.do_create(req))
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let id = req.id.clone();
        let resp = traced!(self, &id, self.do_start(&req))?;
        self.events.start(&id, resp.pid).await;
        Ok(resp)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        traced!(self, &req.id, self.do_kill(&req))?;
        Ok(api::Empty::default())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let mut rx = traced!(self, &req.id, async {
            Self::no_exec(&req.exec_id, &req.id)?;
            self.with(&req.id, |c| Ok(c.subscribe()))
        })?;
        let exit = loop {
            if let Some(exit) = *rx.borrow_and_update() {
                break exit;
            }
            if rx.changed().await.is_err() {
                // The container was deleted while we waited.
                return Err(Error::NotFound(req.id.clone()).into());
            }
        };
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        traced!(self, &req.id, self.do_delete(&req))
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        traced_now!(self, &req.id, async { self.do_state(&req) })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let task_pid = traced_now!(self, &req.id, async { self.with(&req.id, |c| Ok(c.pid())) })?;
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
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        traced_now!(self, &req.id, async { self.do_stats(&req) })
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        traced!(self, &req.id, async {
            Self::no_exec(&req.exec_id, &req.id)?;
            let close = self.with(&req.id, |c| Ok(c.stdin_close.take()))?;
            if close.is_some() {
                tracing::debug!("stdin closed");
            }
            Ok(())
        })?;
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
        if self.containers().is_empty() && self.creating().is_empty() {
            tracing::info!("no containers left: shutting down");
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(Error::Unimplemented("Exec (a second process in a wasm container)").into())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(Error::Unimplemented("ResizePty (wasm guests have no terminal)").into())
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

    /// Update: a process-level container's cgroup takes the new resources (memory, CPU,
    /// pids); a shared-level guest takes a new memory limit at its next growth (CPU and
    /// pids are logged as not enforced there).
    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let _span = span(&req.id).entered();
        let resources = update_resources(&req)?;
        if let Some(cgroup) = self.with(&req.id, |c| Ok(c.cgroup.clone()))? {
            cgroup.update(&resources).map_err(|source| Error::Policy {
                id: req.id.clone(),
                source,
            })?;
            tracing::info!(cgroup = cgroup.path(), "resources updated");
            return Ok(api::Empty::new());
        }
        if let Some(memory) = resources.memory().as_ref().and_then(|m| m.limit()) {
            // OCI: a limit of -1 (or none) is no limit.
            let cap = u64::try_from(memory).ok().filter(|c| *c > 0);
            self.with(&req.id, |c| {
                c.set_memory_limit(cap);
                Ok(())
            })?;
            tracing::info!(?cap, "memory limit updated");
        }
        if let Some(cpu) = resources.cpu() {
            if cpu.quota().is_some() || cpu.period().is_some() {
                let micros = |v: u64| std::time::Duration::from_micros(v);
                let quota = cpu.quota().and_then(|q| u64::try_from(q).ok()).map(micros);
                let period = cpu.period().filter(|p| *p > 0).map(micros);
                self.with(&req.id, |c| {
                    c.cpu.set_budget(quota, period);
                    Ok(())
                })?;
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
        Ok(api::Empty::new())
    }
}

/// The `LinuxResources` (JSON, as containerd's typeurl marshals runtime-spec types) of an
/// Update request.
fn update_resources(req: &api::UpdateTaskRequest) -> Result<oci_spec::runtime::LinuxResources> {
    let any = req
        .resources
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument(format!("Update {}: no resources", req.id)))?;
    if !any.type_url.ends_with("LinuxResources") {
        return Err(Error::InvalidArgument(format!(
            "Update {}: resources of type {:?}, not LinuxResources",
            req.id, any.type_url
        )));
    }
    serde_json::from_slice(&any.value)
        .map_err(|e| Error::InvalidArgument(format!("Update {}: LinuxResources: {e}", req.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update_request(type_url: &str, json: &str) -> api::UpdateTaskRequest {
        let mut any = Any::new();
        any.type_url = type_url.to_owned();
        any.value = json.as_bytes().to_vec();
        api::UpdateTaskRequest {
            id: "c1".into(),
            resources: Some(any).into(),
            ..Default::default()
        }
    }

    #[test]
    fn update_reads_containerds_linux_resources() {
        let url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
        let r = update_resources(&update_request(
            url,
            r#"{"memory":{"limit":33554432},"cpu":{"shares":512}}"#,
        ))
        .unwrap();
        assert_eq!(r.memory().as_ref().and_then(|m| m.limit()), Some(32 << 20));
        let e = update_resources(&update_request("types.containerd.io/other", "{}")).unwrap_err();
        assert!(e.to_string().contains("not LinuxResources"), "{e}");
        let e = update_resources(&update_request(url, "{nope")).unwrap_err();
        assert!(e.to_string().contains("Update c1: LinuxResources"), "{e}");
        let e = update_resources(&api::UpdateTaskRequest {
            id: "c1".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("no resources"), "{e}");
    }

    #[test]
    fn signals_map_to_exit_statuses() {
        assert_eq!(signal_status(9).unwrap(), Some(137));
        assert_eq!(signal_status(15).unwrap(), Some(143));
        assert_eq!(signal_status(2).unwrap(), Some(130));
        assert_eq!(signal_status(1).unwrap(), Some(129));
        assert_eq!(signal_status(28).unwrap(), None); // SIGWINCH is ignored by default
        assert!(signal_status(19).is_err()); // SIGSTOP
        assert!(signal_status(0).is_err());
        assert!(signal_status(99).is_err());
    }
}
