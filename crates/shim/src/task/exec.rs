//! Exec: a second process in a running native container (CRI's ExecSync and Exec, `ctr task
//! exec`), run by `runc exec` with containerd's FIFOs as its stdio; its Start, Wait, Kill,
//! State, CloseIO and Delete by exec id.

use std::time::SystemTime;

use containerd_shim::api::{self, Status};
use tracing::Instrument;

use super::{span, TaskService};
use crate::container::{Exec, Exit, State, StdioPaths};
use crate::error::{Error, Result};
use crate::events::timestamp;
use crate::stdio;

impl TaskService {
    fn no_such_exec(id: &str, exec_id: &str) -> Error {
        Error::NotFound(format!("{id} exec {exec_id}"))
    }

    /// Exec: the process is recorded, to run on its Start.
    pub(super) fn add_exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        let (id, exec_id) = (&req.id, &req.exec_id);
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&req.spec.value).map_err(|e| {
                Error::InvalidArgument(format!(
                    "container {id}: exec {exec_id}: its process is not an OCI process: {e}"
                ))
            })?;
        if req.terminal {
            return Err(Error::InvalidArgument(format!(
                "container {id}: exec {exec_id}: a terminal is not supported; run it without one"
            )));
        }
        self.with(id, |c| {
            if c.native.is_none() {
                return Err(Error::InvalidArgument(format!(
                    "container {id}: exec {exec_id}: {:?} cannot run in a wasm container: only \
                     the native containers of a wasm pod take an exec",
                    process
                        .args()
                        .as_ref()
                        .and_then(|a| a.first())
                        .cloned()
                        .unwrap_or_default()
                )));
            }
            if !matches!(c.state(), State::Running(_)) {
                return Err(Error::FailedPrecondition {
                    id: id.clone(),
                    call: "Exec",
                    state: c.state().name(),
                });
            }
            if c.execs.contains_key(exec_id) {
                return Err(Error::AlreadyExists(format!("{id} exec {exec_id}")));
            }
            let stdio = StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            c.execs.insert(exec_id.clone(), Exec::new(process, stdio));
            Ok(())
        })?;
        tracing::info!(%exec_id, "exec added");
        Ok(())
    }

    /// Start of an exec: `runc exec`, and a task that records its exit.
    pub(super) async fn start_exec(&self, id: &str, exec_id: &str) -> Result<api::StartResponse> {
        let (runc, process, paths) = self.with(id, |c| {
            let runc = c.native.clone();
            let exec = c
                .execs
                .get(exec_id)
                .ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            if exec.pid.is_some() || exec.exit.borrow().is_some() {
                return Err(Error::FailedPrecondition {
                    id: format!("{id} exec {exec_id}"),
                    call: "Start",
                    state: "started",
                });
            }
            let runc = runc.ok_or_else(|| Self::no_such_exec(id, exec_id))?;
            Ok((runc, exec.process.clone(), exec.stdio.clone()))
        })?;
        let streams = stdio::open(&paths).await?;
        // Taken before the process exists, so its exit cannot be missed.
        let watch = self.seams.processes.watch().await?;
        let pid = match runc.exec(exec_id, &process, streams.stdio).await {
            Ok(pid) => pid,
            Err(e) => {
                watch.cancel().await;
                let _ = self.with(id, |c| {
                    if let Some(exec) = c.execs.get(exec_id) {
                        exec.exit.send_replace(Some(Exit {
                            code: wasm_engine::EXIT_CANNOT_START as u32,
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
            exec.stdin_close = streams.stdin_close;
            Ok(())
        })?;
        let service = self.clone();
        let (id_owned, exec_owned) = (id.to_owned(), exec_id.to_owned());
        let reap = async move {
            let code = watch.wait(pid).await;
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
        tokio::spawn(reap.instrument(span(id, "exec.run")));
        tracing::info!(%exec_id, pid, "exec started");
        Ok(api::StartResponse {
            pid,
            ..Default::default()
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
            match (exec.pid, *exec.exit.borrow()) {
                (Some(pid), None) => Ok(pid),
                _ => Err(Error::NotFound(format!(
                    "{id} exec {exec_id}: process not running"
                ))),
            }
        })?;
        self.seams.processes.signal(id, pid, signal)
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
