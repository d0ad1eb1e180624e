//! Create: the bundle's spec → the isolation level → the run policy → the program, read
//! from the root filesystem or the image's wasm layer and compiled off the task threads →
//! stdio (and, in the process level, the cgroup). A Create that fails leaves nothing: no
//! mount, no cgroup, nothing in the map.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api;
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};
use oci_spec::runtime::Spec;
use sandbox::{HandlerOptions, Isolation, NetworkPlan, RunPolicy, Selection};
use tracing::Instrument;
use wasm_engine::{KillHandle, Program, ProgramKind};

use super::instance::{self, Instance};
use super::start::serving_engine;
use super::{SharedInstance, TaskService};
use crate::container::{Container, ExecContext, StdioPaths};
use crate::error::{Error, Result};
use crate::logging::phase;
use crate::process::{self, ProcessWorkload};
use crate::{options, rootfs, stdio, CONTAINER_TYPE_ANNOTATION, IMAGE_NAME_ANNOTATION};

/// What Create prepared for a container.
pub(super) struct Prepared {
    /// What it will run.
    pub(super) instance: SharedInstance,
    /// Closes its stdin.
    pub(super) stdin_close: Option<tokio::sync::oneshot::Sender<()>>,
    /// A sandbox's network namespace.
    netns: Option<PathBuf>,
    /// A sandbox's host name.
    hostname: Option<String>,
    /// What a wasm container's execs run with.
    execs: Option<Arc<ExecContext>>,
}

impl Prepared {
    pub(super) fn new(instance: impl Instance + 'static) -> Self {
        Self {
            instance: Arc::new(instance),
            stdin_close: None,
            netns: None,
            hostname: None,
            execs: None,
        }
    }
}

/// How long reading a container's entrypoint out of its root filesystem may take: far
/// more than any local disk needs for the largest program allowed.
const READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

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

/// Reads the entrypoint `policy` names, up to `max` bytes. The tenant's files are read off
/// the task threads and under a deadline: a file system call that does not return holds one
/// blocking thread, not a worker that serves every other container's calls.
pub(super) async fn read_entrypoint(id: &str, policy: &RunPolicy, max: u64) -> Result<Vec<u8>> {
    let reader = policy.clone();
    let span = phase("create.read");
    let read = tokio::task::spawn_blocking(move || span.in_scope(|| reader.read_entrypoint(max)));
    match tokio::time::timeout(READ_DEADLINE, read).await {
        Ok(Ok(read)) => read.map_err(|source| Error::Policy {
            id: id.to_owned(),
            source,
        }),
        Ok(Err(e)) => Err(Error::Internal {
            context: format!("container {id}: reading its entrypoint"),
            reason: e.to_string(),
        }),
        Err(_) => Err(Error::Rootfs {
            id: id.to_owned(),
            reason: format!(
                "reading the entrypoint {} did not finish within {READ_DEADLINE:?}",
                policy.entrypoint()
            ),
        }),
    }
}

impl TaskService {
    /// Create: the container exists, `Created`, or nothing of it does.
    pub(super) async fn create_task(
        &self,
        req: api::CreateTaskRequest,
    ) -> Result<api::CreateTaskResponse> {
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
                if this.idle() {
                    tracing::info!("no containers left: shutting down");
                    this.exit.signal();
                }
            }
        };
        // Boxed: spawning moves the future through the spawning thread's stack, and a
        // Create's future (a spec held across awaits, a native container's runc calls)
        // is tens of KiB, which every worker thread that ever spawned one keeps dirty.
        tokio::spawn(Box::pin(create).instrument(tracing::Span::current()));
        rx.await.map_err(|_| Error::Internal {
            context: format!("container {id}: create"),
            reason: "the Create's task ended without an answer".into(),
        })?
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
        let spec = phase("create.spec").in_scope(|| Spec::load(bundle.join("config.json")));
        let spec = spec.map_err(|e| {
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
                netns,
                hostname: spec.hostname().clone(),
                ..Prepared::new(instance::Sandbox::default())
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
            self.seams
                .images
                .wasm_layer(id, handler.program_limits.max_size)
                .await?
        };
        let policy = phase("create.policy").in_scope(|| match &layer {
            Some(_) => RunPolicy::from_spec_with_program(&spec, bundle),
            None => RunPolicy::from_spec(&spec, bundle),
        });
        let policy = policy.map_err(|source| Error::Policy {
            id: id.to_owned(),
            source,
        })?;
        let mut policy = policy;
        // An image for Linux rather than wasm: runc runs it, whatever the isolation level.
        if layer.is_none() && policy.entrypoint_kind().is_ok_and(|k| k.is_native()) {
            // Boxed: a native Create's future is large and a wasm Create should not carry it.
            return Box::pin(self.prepare_native(id, bundle, spec, paths, handler)).await;
        }
        let process_level = selection.isolation == Isolation::Process;
        for warning in policy.warnings_at(selection.isolation) {
            tracing::warn!(field = %warning.field, "{}", warning.message);
        }
        let mut program_file = None;
        let from_rootfs = layer.is_none();
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
                let bytes = read_entrypoint(id, &policy, handler.program_limits.max_size).await?;
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
            let _phase = phase("create.load").entered();
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
        .map_err(|e| Error::Internal {
            context: format!("container {id}: compiling"),
            reason: e.to_string(),
        })?;
        let (program, serves) = match loaded {
            Ok(loaded) => loaded,
            Err(source) => {
                // Name the image even where CRI's annotation does not (`ctr run`).
                let what = match self.seams.images.image_name(id).await {
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
            self.seams
                .images
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
        // Only a process-level child and a component (sockets) use the pod's namespace.
        let netns = if process_level || program.kind() == ProgramKind::Component {
            self.pod_netns_of(&spec)?
        } else {
            None
        };
        if process_level {
            // The child loads the program from the precompile cache this compile filled.
            drop(program);
            // The spec's seccomp profile, which the child applies: one it cannot fails here.
            sandbox::Hardening::from_spec(&spec).map_err(policy_error)?;
            let path = sandbox::cgroup_path(&spec, id).map_err(policy_error)?;
            let scope = sandbox::Scope::of(&spec).map_err(policy_error)?;
            let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
            // A handful of mkdir and small writes under /sys/fs/cgroup (cgroupfs), or a
            // few D-Bus calls to systemd (its driver).
            let cgroup = self
                .seams
                .processes
                .create_group(id, &path, scope.as_ref(), resources)
                .map_err(|source| Error::Cgroup {
                    id: id.to_owned(),
                    source,
                })?;
            let streams = match stdio::open(paths).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = cgroup.delete();
                    return Err(e);
                }
            };
            let execs = Some(Arc::new(ExecContext {
                limits: handler.program_limits,
                network: network.clone(),
                net: None,
                netns: netns.clone(),
                http: handler.http,
                rootfs: from_rootfs,
                guest_user: handler.guest_user,
            }));
            let workload = ProcessWorkload {
                stdio: streams.stdio,
                program: program_file,
                netns,
                network,
                serve: serves,
                max_size: handler.program_limits.max_size,
                http: handler.http,
                exec: None,
                guest_user: handler.guest_user,
            };
            return Ok(Prepared {
                stdin_close: streams.stdin_close,
                execs,
                ..Prepared::new(instance::ProcessGuest::new(workload, cgroup))
            });
        }
        // A component's sockets must be its pod's: it runs on threads in that namespace.
        // A module has no sockets and stays on the shim's own threads.
        let net = match program.kind() {
            ProgramKind::Module => None,
            ProgramKind::Component => self.component_net(id, &spec, netns).await?,
        };
        let streams = stdio::open(paths).instrument(phase("create.stdio")).await?;
        let config = policy.run_config(streams.stdio, KillHandle::new());
        let execs = Some(Arc::new(ExecContext {
            limits: handler.program_limits,
            network: network.clone(),
            net: net.clone(),
            netns: None,
            http: handler.http,
            rootfs: from_rootfs,
            guest_user: handler.guest_user,
        }));
        let prepared = instance::Prepared {
            program,
            config: Box::new(config),
            net,
        };
        let mut made = match serves {
            true => Prepared::new(instance::Server::new(
                prepared,
                instance::Serving {
                    port: network.port,
                    http: handler.http,
                },
            )),
            false => Prepared::new(instance::Guest::new(prepared)),
        };
        made.stdin_close = streams.stdin_close;
        made.execs = execs;
        Ok(made)
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
        let mounted = rootfs::mount(&id, &bundle, &req.rootfs)
            .instrument(phase("create.mount"))
            .await?;
        let prepared = self.prepare(&id, &bundle, &paths, mounted, &handler).await;
        let Prepared {
            instance,
            stdin_close,
            netns,
            hostname,
            execs,
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
        tracing::debug!(kind = instance.kind(), "prepared");
        let mut container = Container::new(id.clone(), bundle, paths.clone(), instance);
        container.rootfs_mounted = mounted;
        container.stdin_close = stdin_close;
        container.netns = netns;
        container.hostname = hostname;
        container.wasm_execs = execs;
        let task_pid = container.pid();
        // No other Create of this id runs (`do_create` marked it), so the slot is free.
        self.containers().insert(id.clone(), container);
        tracing::info!("created");
        self.seams
            .events
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
                pid: task_pid,
                ..Default::default()
            })
            .await;
        Ok(api::CreateTaskResponse {
            pid: task_pid,
            ..Default::default()
        })
    }
}
