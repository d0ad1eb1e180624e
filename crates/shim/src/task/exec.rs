//! Exec: a second process in a running container (CRI's ExecSync and Exec, `ctr task exec`)
//! with containerd's FIFOs as its stdio; its Start, Wait, Kill, State, CloseIO and Delete by
//! exec id. In a native container `runc exec` runs it. In a wasm container it is a wasm
//! program — a file of the container's root filesystem, or an image's program named as
//! `oci://IMAGE` and read from containerd's store — run beside the guest with the
//! container's spec (its preopens, environment and limits) and the exec's arguments: in
//! the shim at the shared level, in a child in the container's cgroup at the process level.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::api::{self, Status};
use oci_spec::runtime::{Process, Spec};
use sandbox::{EntrypointKind, RunPolicy};
use tracing::Instrument;
use wasm_engine::{KillHandle, ProgramKind, EXIT_CANNOT_START};

use super::create::read_entrypoint;
use super::instance::run_in_shim;
use super::kill::signal_status;
use super::{span, SharedGroup, TaskService};
use crate::container::{Exec, ExecContext, Exit, State, StdioPaths, WasmExecPlan};
use crate::error::{Error, Result};
use crate::events::timestamp;
use crate::process::ProcessWorkload;
use crate::stdio;

/// The first argument of an exec's process, for errors.
fn command(process: &Process) -> String {
    process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default()
}

/// The prefix of an exec command naming an image's program rather than a file:
/// `oci://IMAGE`, an image on the node (in containerd's store), by its name as pulled.
pub(crate) const IMAGE_EXEC_PREFIX: &str = "oci://";

/// What a wasm container can exec, for errors.
fn what_a_wasm_container_execs(own: &str) -> String {
    format!(
        "a wasm container execs wasm programs (modules or components): from its root \
         filesystem, such as its own {own:?}, or from an image on the node, as \
         {IMAGE_EXEC_PREFIX}IMAGE; only the native containers of a wasm pod run other programs"
    )
}

/// A wasm exec's run policy: the container's spec with the exec's process. A program
/// from the root filesystem is refused unless it is wasm, saying what a wasm container
/// can exec; one `from_image` is not looked for in the files.
fn wasm_exec_policy(
    id: &str,
    exec_id: &str,
    bundle: &Path,
    process: Process,
    from_image: bool,
) -> Result<RunPolicy> {
    let mut spec = load_spec(id, bundle)?;
    let own = spec.process().as_ref().map(command).unwrap_or_default();
    let cmd = command(&process);
    spec.set_process(Some(process));
    let policy = match from_image {
        true => RunPolicy::from_spec_with_program(&spec, bundle),
        false => RunPolicy::from_spec(&spec, bundle),
    };
    let policy = policy.map_err(|source| Error::Policy {
        id: id.to_owned(),
        source,
    })?;
    if from_image {
        return Ok(policy);
    }
    let why = match policy.entrypoint_kind() {
        Ok(EntrypointKind::Wasm) => return Ok(policy),
        Ok(EntrypointKind::Elf) => "it is a Linux executable".to_owned(),
        Ok(EntrypointKind::Script) => "it is a script".to_owned(),
        Ok(EntrypointKind::Unknown) => "it is not a wasm program".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(Error::InvalidArgument(format!(
        "container {id}: exec {exec_id}: {cmd:?} cannot run in a wasm container ({why}): {}",
        what_a_wasm_container_execs(&own)
    )))
}

/// A file a process-level wasm exec hands its child in the bundle: its process (`json`)
/// or an image's program (`wasm`).
fn exec_file(bundle: &Path, exec_id: &str, extension: &str) -> PathBuf {
    bundle.join(format!("wasmpod-exec-{exec_id}.{extension}"))
}

/// Removes an exec's files, once it has ended or failed to start.
fn remove_files(first: Option<&Path>, second: Option<&Path>) {
    for file in first.into_iter().chain(second) {
        let _ = std::fs::remove_file(file);
    }
}

/// Container `id`'s spec, from its bundle.
fn load_spec(id: &str, bundle: &Path) -> Result<Spec> {
    let config = bundle.join("config.json");
    Spec::load(&config).map_err(|e| {
        Error::InvalidArgument(format!(
            "container {id}: cannot read {}: {e}",
            config.display()
        ))
    })
}

/// What a wasm exec's Start needs.
struct WasmExec<'a> {
    id: &'a str,
    exec_id: &'a str,
    process: &'a Process,
    context: &'a ExecContext,
    bundle: &'a Path,
}

/// What a container can exec.
enum Execs {
    /// Anything, through `runc exec` (a native container).
    Native,
    /// Wasm programs (a wasm container).
    Wasm(Arc<ExecContext>),
}

/// A started exec: its pid, what ends it in the shim (a wasm exec at the shared level), and
/// the future that ends with its exit status.
struct Running {
    pid: u32,
    kill: Option<KillHandle>,
    terminal: Option<crate::native::Terminal>,
    stdin_close: Option<tokio::sync::oneshot::Sender<()>>,
    run: Pin<Box<dyn Future<Output = i32> + Send>>,
}

impl TaskService {
    fn no_such_exec(id: &str, exec_id: &str) -> Error {
        Error::NotFound(format!("{id} exec {exec_id}"))
    }

    /// Whether container `c` can take exec `exec_id` now: running, the id unused.
    fn can_exec(c: &crate::container::Container, exec_id: &str) -> Result<()> {
        if !matches!(c.state(), State::Running) {
            return Err(Error::FailedPrecondition {
                id: c.id.clone(),
                call: "Exec",
                state: c.state().name(),
            });
        }
        if c.execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!("{} exec {exec_id}", c.id)));
        }
        Ok(())
    }

    /// Exec: the process is recorded, to run on its Start. A wasm exec's program is
    /// looked at (and an image's read) now, so that one that cannot run is refused here.
    pub(super) async fn add_exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        let (id, exec_id) = (&req.id, &req.exec_id);
        let process: Process = serde_json::from_slice(&req.spec.value).map_err(|e| {
            Error::InvalidArgument(format!(
                "container {id}: exec {exec_id}: its process is not an OCI process: {e}"
            ))
        })?;
        if exec_id.is_empty() || exec_id.contains('/') || exec_id.starts_with('.') {
            return Err(Error::InvalidArgument(format!(
                "container {id}: exec id {exec_id:?} is not a valid identifier"
            )));
        }
        let (bundle, execs) = self.with(id, |c| {
            Self::can_exec(c, exec_id)?;
            let execs = match (c.instance.runc(), &c.wasm_execs) {
                (Some(_), _) => Execs::Native,
                (None, Some(context)) => Execs::Wasm(context.clone()),
                (None, None) => {
                    return Err(Error::InvalidArgument(format!(
                        "container {id}: exec {exec_id}: {:?}: a pod sandbox takes no exec; \
                         exec into one of its containers",
                        command(&process)
                    )))
                }
            };
            Ok((c.bundle.clone(), execs))
        })?;
        let wasm = match execs {
            Execs::Native => None,
            Execs::Wasm(context) => {
                if req.terminal {
                    return Err(Error::InvalidArgument(format!(
                        "container {id}: exec {exec_id}: a wasm program has no terminal (WASI \
                         has none); run it without one"
                    )));
                }
                let plan = self
                    .plan_wasm_exec(id, exec_id, bundle, &context, process.clone())
                    .await?;
                Some(Box::new(plan))
            }
        };
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        // Looked at again: the container may have stopped while the program was read.
        self.with(id, |c| {
            Self::can_exec(c, exec_id)?;
            let mut exec = Exec::new(process, stdio);
            exec.wasm = wasm;
            c.execs.insert(exec_id.clone(), exec);
            Ok(())
        })?;
        tracing::info!(%exec_id, "exec added");
        Ok(())
    }

    /// What wasm exec `exec_id` of container `id` runs: an image's program (`oci://IMAGE`,
    /// read from containerd's store) or a file of the root filesystem, with the
    /// container's spec and the exec's process.
    async fn plan_wasm_exec(
        &self,
        id: &str,
        exec_id: &str,
        bundle: PathBuf,
        context: &ExecContext,
        process: Process,
    ) -> Result<WasmExecPlan> {
        let cmd = command(&process);
        let refused = |why: String| {
            Error::InvalidArgument(format!("container {id}: exec {exec_id}: {cmd:?}: {why}"))
        };
        let image = match cmd.strip_prefix(IMAGE_EXEC_PREFIX) {
            Some(reference) => Some(
                oci_image::ImageRef::parse(reference)
                    .map_err(|e| refused(e.to_string()))?
                    .to_string(),
            ),
            None if context.rootfs => None,
            None => {
                return Err(refused(format!(
                    "this container's program is its image's wasm layer, so it has no root \
                     filesystem to run another program from; exec a program from an image \
                     instead, as {IMAGE_EXEC_PREFIX}IMAGE"
                )))
            }
        };
        let (owned, exec_owned, from_image) = (id.to_owned(), exec_id.to_owned(), image.is_some());
        let files = bundle.clone();
        // The tenant's files are looked at off the task threads.
        let policy = tokio::task::spawn_blocking(move || {
            wasm_exec_policy(&owned, &exec_owned, &files, process, from_image)
        })
        .await
        .map_err(|e| Error::Internal {
            context: format!("container {id}: exec {exec_id}"),
            reason: e.to_string(),
        })??;
        let Some(image) = image else {
            return Ok(WasmExecPlan {
                policy,
                image: None,
            });
        };
        let program = self
            .seams
            .images
            .program(&image, &bundle, context.limits.max_size)
            .await
            .map_err(|e| refused(e.to_string()))?
            .map_err(|why| {
                refused(format!(
                    "image {image} is not a wasm image ({why}): only a wasm image's program \
                     runs in a wasm container"
                ))
            })?;
        Ok(WasmExecPlan {
            policy,
            image: Some(program),
        })
    }

    /// Start of an exec: it runs, and a task records its exit.
    pub(super) async fn start_exec(&self, id: &str, exec_id: &str) -> Result<api::StartResponse> {
        type Found = (
            Option<Arc<crate::native::Runc>>,
            Process,
            Option<Box<WasmExecPlan>>,
            StdioPaths,
            Option<Arc<ExecContext>>,
            Option<SharedGroup>,
            PathBuf,
        );
        let started_already = || Error::FailedPrecondition {
            id: format!("{id} exec {exec_id}"),
            call: "Start",
            state: "started",
        };
        let (runc, process, plan, paths, context, cgroup, bundle): Found = self.with(id, |c| {
            let exec = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            if exec.pid.is_some() || exec.exit.borrow().is_some() {
                return Err(started_already());
            }
            Ok((
                c.instance.runc(),
                exec.process.clone(),
                // Taken: a wasm exec starts once.
                exec.wasm.take(),
                exec.stdio.clone(),
                c.wasm_execs.clone(),
                c.instance.cgroup(),
                c.bundle.clone(),
            ))
        })?;
        let started = match (runc, plan, context) {
            (Some(runc), _, _) => {
                self.start_native_exec(&runc, exec_id, &process, &paths)
                    .await
            }
            (None, Some(plan), Some(context)) => {
                let exec = WasmExec {
                    id,
                    exec_id,
                    process: &process,
                    context: &context,
                    bundle: &bundle,
                };
                self.start_wasm_exec(&exec, *plan, cgroup, &paths).await
            }
            // Another Start took its program.
            _ => return Err(started_already()),
        };
        let Running {
            pid,
            kill,
            terminal,
            stdin_close,
            run,
        } = match started {
            Ok(running) => running,
            Err(e) => {
                let _ = self.with(id, |c| {
                    if let Some(exec) = c.execs.get(exec_id) {
                        exec.exit.send_replace(Some(Exit {
                            code: EXIT_CANNOT_START as u32,
                            at: SystemTime::now(),
                        }));
                    }
                    Ok(())
                });
                return Err(e);
            }
        };
        self.with(id, |c| {
            let exec = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            exec.pid = Some(pid);
            exec.kill = kill;
            exec.terminal = terminal;
            exec.stdin_close = stdin_close;
            Ok(())
        })?;
        let service = self.clone();
        let (id_owned, exec_owned) = (id.to_owned(), exec_id.to_owned());
        let reap = async move {
            let code = run.await;
            tracing::info!(exec_id = %exec_owned, code, "exec exited");
            let _ = service.with(&id_owned, |c| {
                if let Some(exec) = c.execs.get_mut(&exec_owned) {
                    exec.stdin_close.take();
                    exec.exit.send_replace(Some(Exit {
                        code: u32::try_from(code).unwrap_or(u32::MAX),
                        at: SystemTime::now(),
                    }));
                }
                Ok(())
            });
        };
        let run = span(id, "exec.run");
        crate::telemetry::follow_current(&run);
        tokio::spawn(reap.instrument(run));
        tracing::info!(%exec_id, pid, "exec started");
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// `runc exec` in a native container.
    async fn start_native_exec(
        &self,
        runc: &crate::native::Runc,
        exec_id: &str,
        process: &Process,
        paths: &StdioPaths,
    ) -> Result<Running> {
        // With a terminal, containerd's FIFOs are relayed to and from the one runc makes.
        let fifos = StdioPaths {
            terminal: false,
            ..paths.clone()
        };
        let streams = stdio::open(&fifos).await?;
        // Taken before the process exists, so its exit cannot be missed.
        let watch = self.seams.processes.watch().await?;
        match runc.exec(exec_id, process, streams.stdio).await {
            Ok((pid, terminal)) => Ok(Running {
                pid,
                kill: None,
                terminal,
                stdin_close: streams.stdin_close,
                run: Box::pin(async move { watch.wait(pid).await }),
            }),
            Err(e) => {
                watch.cancel().await;
                Err(e)
            }
        }
    }

    /// A wasm exec: its program compiled (into the precompile cache) under the handler's
    /// limits, then run in the shim, or by a child in the container's cgroup.
    async fn start_wasm_exec(
        &self,
        exec: &WasmExec<'_>,
        plan: WasmExecPlan,
        cgroup: Option<SharedGroup>,
        paths: &StdioPaths,
    ) -> Result<Running> {
        let WasmExec {
            id,
            exec_id,
            context,
            bundle,
            ..
        } = *exec;
        let WasmExecPlan { mut policy, image } = plan;
        let from_image = image.is_some();
        let (bytes, name) = match image {
            Some(image) => (image.bytes, image.name),
            None => (
                read_entrypoint(id, &policy, context.limits.max_size).await?,
                policy.entrypoint().to_owned(),
            ),
        };
        // A process-level child reads an image's program from the bundle.
        let program_file = match (&cgroup, from_image) {
            (Some(_), true) => {
                let file = exec_file(bundle, exec_id, "wasm");
                std::fs::write(&file, &bytes)
                    .map_err(crate::error::io(format!("writing {}", file.display())))?;
                Some(file)
            }
            _ => None,
        };
        let engine = self.engine.clone();
        let limits = context.limits;
        let span = tracing::Span::current();
        let path = PathBuf::from(&name);
        let loaded = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let program = engine.load_limited(&bytes, &path, &limits)?;
            engine.check(&program)?;
            Ok(program)
        })
        .await
        .map_err(|e| Error::Internal {
            context: format!("container {id}: exec {exec_id}: compiling"),
            reason: e.to_string(),
        });
        let loaded = loaded.and_then(|l| {
            l.map_err(|source| Error::Engine {
                id: id.to_owned(),
                what: format!("exec {exec_id}: {name}"),
                source,
            })
        });
        let program = match loaded {
            Ok(program) => program,
            Err(e) => {
                remove_files(program_file.as_deref(), None);
                return Err(e);
            }
        };
        policy.set_network(context.network.policy.clone());
        if let Some(group) = cgroup {
            // The child loads the program from the cache this compile filled.
            drop(program);
            let started = self
                .spawn_wasm_exec(exec, group, paths, program_file.clone())
                .await;
            if started.is_err() {
                remove_files(program_file.as_deref(), None);
            }
            return started;
        }
        // A component's sockets are the pod's: its threads are in the pod's namespace
        // (those of the container, or of the pod when the container is a module).
        let net = match (&context.net, program.kind()) {
            (Some(net), _) => Some(net.clone()),
            (None, ProgramKind::Module) => None,
            (None, ProgramKind::Component) => {
                let spec = load_spec(id, bundle)?;
                let netns = self.pod_netns_of(&spec)?;
                self.component_net(id, &spec, netns).await?
            }
        };
        let streams = stdio::open(paths).await?;
        let kill = KillHandle::new();
        let config = policy.run_config(streams.stdio, kill.clone());
        let engine = self.engine.clone();
        let run = async move { run_in_shim(engine, program, config, net, "exec").await.code };
        Ok(Running {
            pid: std::process::id(),
            kill: Some(kill),
            terminal: None,
            stdin_close: streams.stdin_close,
            run: Box::pin(run.in_current_span()),
        })
    }

    /// A process-level wasm exec: a child in the container's cgroup, given the exec's
    /// process in a file (and an image's program in another).
    async fn spawn_wasm_exec(
        &self,
        exec: &WasmExec<'_>,
        group: SharedGroup,
        paths: &StdioPaths,
        program: Option<PathBuf>,
    ) -> Result<Running> {
        let WasmExec {
            id,
            exec_id,
            process,
            context,
            bundle,
        } = *exec;
        let file = exec_file(bundle, exec_id, "json");
        let json = serde_json::to_vec(process).map_err(|e| Error::Internal {
            context: format!("container {id}: exec {exec_id}"),
            reason: e.to_string(),
        })?;
        std::fs::write(&file, json)
            .map_err(crate::error::io(format!("writing {}", file.display())))?;
        let streams = match stdio::open(paths).await {
            Ok(streams) => streams,
            Err(e) => {
                remove_files(Some(&file), None);
                return Err(e);
            }
        };
        let watch = self.seams.processes.watch().await?;
        let workload = ProcessWorkload {
            stdio: streams.stdio,
            program: program.clone(),
            netns: context.netns.clone(),
            network: context.network.clone(),
            serve: false,
            max_size: context.limits.max_size,
            http: context.http,
            exec: Some(file.clone()),
            guest_user: context.guest_user,
        };
        let pid = match self
            .seams
            .processes
            .spawn(id, bundle, group.as_ref(), workload)
        {
            Ok(pid) => pid,
            Err(e) => {
                watch.cancel().await;
                remove_files(Some(&file), None);
                return Err(e);
            }
        };
        let run = async move {
            let code = watch.wait(pid).await;
            remove_files(Some(&file), program.as_deref());
            code
        };
        Ok(Running {
            pid,
            kill: None,
            terminal: None,
            stdin_close: streams.stdin_close,
            run: Box::pin(run),
        })
    }

    /// Wait of an exec: until it has exited.
    pub(super) async fn wait_exec(&self, id: &str, exec_id: &str) -> Result<api::WaitResponse> {
        let mut rx = self.with(id, |c| {
            let exec = c
                .execs
                .get(exec_id)
                .ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            Ok(exec.exit.subscribe())
        })?;
        let exit = loop {
            if let Some(exit) = *rx.borrow_and_update() {
                break exit;
            }
            if rx.changed().await.is_err() {
                return Err(Self::no_such_exec(id, exec_id));
            }
        };
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    /// Kill of an exec: the signal to its process.
    pub(super) fn kill_exec(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let pid = self.with(id, |c| {
            let exec = c
                .execs
                .get(exec_id)
                .ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            match (exec.pid, *exec.exit.borrow(), &exec.kill) {
                // A wasm exec in the shim ends with its signal's status.
                (Some(_), None, Some(kill)) => {
                    if let Some(code) = signal_status(signal)? {
                        kill.kill_with(code);
                    }
                    Ok(None)
                }
                (Some(pid), None, None) => Ok(Some(pid)),
                _ => Err(Error::NotFound(format!(
                    "{id} exec {exec_id}: process not running"
                ))),
            }
        })?;
        match pid {
            Some(pid) => self.seams.processes.signal(id, pid, signal),
            None => Ok(()),
        }
    }

    /// ResizePty of an exec: its terminal's window size.
    pub(super) fn resize_exec(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        self.with(id, |c| {
            let exec = c
                .execs
                .get(exec_id)
                .ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            super::instance::resize(
                &format!("{id} exec {exec_id}"),
                exec.terminal.as_ref(),
                width,
                height,
            )
        })
    }

    /// State of an exec.
    pub(super) fn state_exec(&self, id: &str, exec_id: &str) -> Result<api::StateResponse> {
        self.with(id, |c| {
            let exec = c
                .execs
                .get(exec_id)
                .ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            let exit = *exec.exit.borrow();
            let mut resp = api::StateResponse {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                bundle: c.bundle.display().to_string(),
                pid: exec.pid.unwrap_or(0),
                stdin: exec.stdio.stdin.clone(),
                stdout: exec.stdio.stdout.clone(),
                stderr: exec.stdio.stderr.clone(),
                terminal: exec.stdio.terminal,
                ..Default::default()
            };
            resp.set_status(match (exec.pid, exit) {
                (_, Some(_)) => Status::STOPPED,
                (Some(_), None) => Status::RUNNING,
                (None, None) => Status::CREATED,
            });
            if let Some(exit) = exit {
                resp.exit_status = exit.code;
                resp.exited_at = Some(timestamp(exit.at)).into();
            }
            Ok(resp)
        })
    }

    /// CloseIO of an exec: its stdin ends.
    pub(super) fn close_exec_io(&self, id: &str, exec_id: &str) -> Result<()> {
        self.with(id, |c| {
            let exec = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            exec.stdin_close.take();
            Ok(())
        })
    }

    /// Delete of an exec that has ended (or never started).
    pub(super) fn delete_exec(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        let exec = self.with(id, |c| {
            let exec = c
                .execs
                .get(exec_id)
                .ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            if exec.pid.is_some() && exec.exit.borrow().is_none() {
                return Err(Error::FailedPrecondition {
                    id: format!("{id} exec {exec_id}"),
                    call: "Delete",
                    state: "running",
                });
            }
            Ok(c.execs
                .remove(exec_id)
                .expect("present: looked up under the same lock"))
        })?;
        let exit = *exec.exit.borrow();
        let at = exit.map_or_else(SystemTime::now, |e| e.at);
        Ok(api::DeleteResponse {
            pid: exec.pid.unwrap_or(0),
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        })
    }
}
