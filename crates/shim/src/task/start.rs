//! Start: what a container runs (its [`Instance`](super::instance::Instance)) is launched,
//! and a task of its own reports its exit. A guest runs on the shim's runtime (or its pod's
//! network runtime), a served handler on its listener, a process-level container in a
//! child, a native container's init once runc started it; a pod sandbox waits for its
//! kill. Whatever the kind, launching gives a future that ends with its exit status.

use containerd_shim::api;
use tracing::Instrument;
use wasm_engine::Engine;

use super::instance::{Ended, Launch};
use super::{pid, span, TaskService};
use crate::container::State;
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

impl TaskService {
    /// Start: `Created → Running`; the exit is reported when the workload ends.
    pub(super) async fn start_task(&self, req: &api::StartRequest) -> Result<api::StartResponse> {
        Self::no_exec(&req.exec_id, &req.id)?;
        let id = req.id.clone();
        let (bundle, instance, created) = self.with(&id, |c| {
            Ok((
                c.bundle.clone(),
                c.instance.clone(),
                matches!(c.state(), State::Created),
            ))
        })?;
        // Watch the reaper before a child can exist (or a native init can run), so its
        // exit cannot be missed.
        let mut watch = match instance.watches_a_process() {
            true => Some(self.seams.processes.watch().await?),
            false => None,
        };
        // What must happen before the launch (runc's start) happens outside the map's lock.
        let mut before = Ok(());
        if created {
            before = instance.before_launch().await;
        }
        let launched = self.with(&id, |c| {
            c.start(|instance| {
                before?;
                let ctx = Launch {
                    id: &id,
                    bundle: &bundle,
                    engine: &self.engine,
                    serving: &self.serving,
                    processes: self.seams.processes.as_ref(),
                    watch: watch.take(),
                };
                let run = instance.launch(ctx)?;
                Ok((instance.pid().unwrap_or_else(pid), run))
            })
        });
        let (task_pid, run) = match launched {
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
        let run = span(&req.id, "guest.run");
        // In a trace the guest's run continues the Start that began it.
        crate::telemetry::follow_current(&run);
        tokio::spawn(task.instrument(run));
        self.seams.events.start(&req.id, task_pid).await;
        let _ = started.send(());
        Ok(api::StartResponse {
            pid: task_pid,
            ..Default::default()
        })
    }
}
