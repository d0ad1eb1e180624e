//! Start: what a container runs ([`Workload`]) is launched, and a task of its own reports
//! its exit. A guest runs on the shim's runtime (or its pod's network runtime), a served
//! handler on its listener, a process-level container in a child; a pod sandbox waits for
//! its kill. Whatever the kind, launching gives what stops it ([`Runner`]) and a future
//! that ends with its exit status.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use containerd_shim::api;
use tracing::Instrument;
use wasm_engine::{Engine, ExitReason, KillHandle, EXIT_CANNOT_START, EXIT_KILLED};

use super::netns::bind;
use super::{pid, span, ExitWait, SharedGroup, TaskService};
use crate::container::{Runner, State, Workload};
use crate::error::{Error, Result};

/// The engine that serves `wasi:http` handlers in this shim: instances come from the
/// pooling allocator's ready slots; the code from the same precompile cache.
pub(super) fn serving_engine(cell: &std::sync::OnceLock<Engine>) -> wasm_engine::Result<Engine> {
    if let Some(engine) = cell.get() {
        return Ok(engine.clone());
    }
    let engine = Engine::new(
        wasm_engine::EngineConfig::default()
            .cache_dir(crate::service::cache_dir())
            .pooling(wasm_engine::Pooling::default())
            .compiler(wasm_engine::CompilerProcess::this_executable()),
    )?;
    Ok(cell.get_or_init(|| engine).clone())
}

/// A launched workload: the future that ends with its exit status.
type Run = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// How a workload's run ended: its exit code, and whether it ran out of memory (an OOM
/// event goes out before its exit).
struct Ended {
    code: i32,
    oom: bool,
}

impl Ended {
    fn exited(code: i32) -> Self {
        Self { code, oom: false }
    }
}

/// A launched workload: the pid containerd is shown, and its run.
struct Launched {
    pid: u32,
    run: Run,
}

impl TaskService {
    /// Start: `Created → Running`; the exit is reported when the workload ends.
    pub(super) async fn start_task(&self, req: &api::StartRequest) -> Result<api::StartResponse> {
        Self::no_exec(&req.exec_id, &req.id)?;
        let id = req.id.clone();
        let (bundle, cgroup, native, created) = self.with(&id, |c| {
            Ok((
                c.bundle.clone(),
                c.cgroup.clone(),
                c.native.clone(),
                matches!(c.state(), State::Created(_)),
            ))
        })?;
        // Watch the reaper before a child can exist (or a native init can run), so its
        // exit cannot be missed.
        let mut watch = match (&cgroup, &native) {
            (None, None) => None,
            _ => Some(self.seams.processes.watch().await?),
        };
        // A native init runs once runc has started it, outside the map's lock.
        let mut native_started = Ok(());
        if let (Some(runc), true) = (&native, created) {
            native_started = runc.start().await;
        }
        let launched = self.with(&id, |c| {
            c.start(|workload| {
                native_started?;
                self.launch(&id, &bundle, cgroup.clone(), workload, &mut watch)
            })
        });
        let Launched { pid: task_pid, run } = match launched {
            Ok(launched) => launched,
            Err(e) => {
                if let Some(watch) = watch {
                    watch.cancel().await;
                }
                // A launch that failed stopped the task (126): containerd hears of it. A
                // task that was stopped already (killed before Start) said so then.
                let refused = matches!(e, Error::FailedPrecondition { .. });
                if let (false, Ok(Some(exit))) = (refused, self.with(&id, |c| Ok(c.exit()))) {
                    self.seams.events.exit(&id, pid(), exit.code, exit.at).await;
                }
                return Err(e);
            }
        };
        let service = self.clone();
        // containerd must hear of the start before the exit: a guest that ends at once
        // waits for the start event to be out before its exit event goes.
        let (started, start_published) = tokio::sync::oneshot::channel::<()>();
        let task = async move {
            // On a task of its own, so that a panic while it runs (in the engine or a host
            // function, on this tenant's behalf) ends this container — as a trap, 134 —
            // and not, unnoticed, the task that reports its exit: it stayed RUNNING.
            let ended = match tokio::spawn(run.in_current_span()).await {
                Ok(ended) => ended,
                Err(error) => {
                    tracing::error!(%error, "the container's task failed; it ends, the shim goes on");
                    Ended::exited(wasm_engine::EXIT_TRAP)
                }
            };
            let code = u32::try_from(ended.code).unwrap_or(u32::MAX);
            // Published, or Start's call went away (then the exit is all there is).
            let _ = start_published.await;
            if ended.oom {
                service.seams.events.oom(&id).await;
            }
            let stopped = service.with(&id, |c| c.stop(code).map(|exit| (exit, c.end_execs())));
            if let Ok((exit, execs)) = stopped {
                for pid in execs {
                    let _ = service
                        .seams
                        .processes
                        .signal(&id, pid, libc::SIGKILL as u32);
                }
                service
                    .seams
                    .events
                    .exit(&id, task_pid, exit.code, exit.at)
                    .await;
                // Gone already only if containerd deleted it on the event.
                let _ = service.with(&id, |c| {
                    c.announce();
                    Ok(())
                });
            }
        };
        tokio::spawn(task.instrument(span(&req.id, "guest.run")));
        self.seams.events.start(&req.id, task_pid).await;
        let _ = started.send(());
        Ok(api::StartResponse {
            pid: task_pid,
            ..Default::default()
        })
    }

    /// Launches `workload` of container `id`: what stops it, and its run. Runs under the
    /// map's lock, so it only starts things (a child, a listener) and never waits.
    fn launch(
        &self,
        id: &str,
        bundle: &Path,
        cgroup: Option<SharedGroup>,
        workload: Workload,
        watch: &mut Option<Box<dyn ExitWait>>,
    ) -> Result<(Runner, Launched)> {
        match workload {
            Workload::Process(p) => {
                let (Some(cgroup), Some(watch)) = (cgroup, watch.take()) else {
                    return Err(Error::Internal {
                        context: format!("container {id}: start"),
                        reason: "a process-level container without its cgroup".into(),
                    });
                };
                let child = self
                    .seams
                    .processes
                    .spawn(id, bundle, cgroup.as_ref(), *p)?;
                let run = child_run(child, Some(cgroup), watch);
                Ok((Runner::Child(child), Launched { pid: child, run }))
            }
            Workload::Wasm {
                program,
                mut config,
                serve: Some(port),
                http,
                net,
            } => {
                // Made by Create with the program; only its errors come from here.
                let engine = serving_engine(&self.serving).map_err(|source| Error::Engine {
                    id: id.to_owned(),
                    what: "the serving engine".into(),
                    source,
                })?;
                let listener = bind(id, port, net.as_deref())?;
                let (drain, abort) = (KillHandle::new(), KillHandle::new());
                // The served config's kill handle is its shutdown: a drain.
                config.kill = drain.clone();
                let runner = Runner::Server {
                    drain,
                    abort: abort.clone(),
                };
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
                Ok((
                    runner,
                    Launched {
                        pid: pid(),
                        run: Box::pin(async move { Ended::exited(run.await) }),
                    },
                ))
            }
            Workload::Wasm {
                program,
                mut config,
                serve: None,
                net,
                ..
            } => {
                let kill = KillHandle::new();
                config.kill = kill.clone();
                let engine = self.engine.clone();
                let digest = program.digest().to_owned();
                let run = async move {
                    tracing::info!(program = %digest, "started");
                    let run = async move { engine.run(&program, *config).await };
                    let ended = match &net {
                        Some(net) => net.handle().spawn(run.in_current_span()).await,
                        None => Ok(run.await),
                    };
                    match ended {
                        Ok(Ok(status)) => {
                            tracing::info!(code = status.code(), reason = ?status.reason(), "exited");
                            Ended {
                                code: status.code(),
                                oom: matches!(status.reason(), ExitReason::OutOfMemory(_)),
                            }
                        }
                        Ok(Err(error)) => {
                            tracing::error!(%error, "cannot start the guest");
                            Ended::exited(EXIT_CANNOT_START)
                        }
                        // The guest's task panicked (or its runtime went): it ends as a trap.
                        Err(error) => {
                            tracing::error!(%error, "the guest's task failed");
                            Ended::exited(wasm_engine::EXIT_TRAP)
                        }
                    }
                };
                Ok((
                    Runner::Guest(kill),
                    Launched {
                        pid: pid(),
                        run: Box::pin(run),
                    },
                ))
            }
            Workload::Native { init: pid } => {
                let Some(watch) = watch.take() else {
                    return Err(Error::Internal {
                        context: format!("container {id}: start"),
                        reason: "a native container without its init".into(),
                    });
                };
                Ok((
                    Runner::Child(pid),
                    Launched {
                        pid,
                        run: child_run(pid, cgroup, watch),
                    },
                ))
            }
            Workload::Sandbox => {
                let kill = KillHandle::new();
                let held = kill.clone();
                let run = async move {
                    tracing::info!("pod sandbox: held until killed");
                    Ended::exited(held.wait().await)
                };
                Ok((
                    Runner::Guest(kill),
                    Launched {
                        pid: pid(),
                        run: Box::pin(run),
                    },
                ))
            }
        }
    }
}

/// The run of a process-level or native container: its process's exit, and whether its
/// cgroup's OOM killer ended it.
fn child_run(child: u32, cgroup: Option<SharedGroup>, watch: Box<dyn ExitWait>) -> Run {
    Box::pin(async move {
        tracing::info!(pid = child, "started in its own process");
        let code = watch.wait(child).await;
        let oom = cgroup.is_some_and(|c| c.stats().oom_kills > 0);
        tracing::info!(code, oom, "exited");
        Ended { code, oom }
    })
}
