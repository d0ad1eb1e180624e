//! Kill: a signal becomes the exit status a container runtime reports (143 for SIGTERM,
//! 137 for SIGKILL, 128 + n for the rest), which the instance takes as its kind does (a
//! served handler drains on a polite signal and aborts on SIGKILL; a child is sent the
//! signal itself).

use containerd_shim::api;
use wasm_engine::{EXIT_KILLED, EXIT_TERMINATED};

use super::TaskService;
use crate::container::State;
use crate::error::{Error, Result};

/// The exit status a signal gives a guest, or `None` for signals whose default action is to
/// do nothing.
pub(super) fn signal_status(signal: u32) -> Result<Option<i32>> {
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

impl TaskService {
    /// Kill: a running guest stopped by its signal's status; a child signalled; a task
    /// not started yet ends at once.
    pub(super) async fn kill_task(&self, req: &api::KillRequest) -> Result<()> {
        Self::no_exec(&req.exec_id, &req.id)?;
        let Some(code) = signal_status(req.signal)? else {
            return Ok(());
        };
        let killed_before_start = self.with(&req.id, |c| match c.state() {
            State::Running => {
                c.instance
                    .signal(&req.id, req.signal, code, self.seams.processes.as_ref())?;
                Ok(None)
            }
            State::Created => c.stop(u32::try_from(code).unwrap_or(u32::MAX)).map(Some),
            State::Stopped(_) => Err(Error::NotFound(format!(
                "{}: process already finished",
                req.id
            ))),
        })?;
        tracing::info!(signal = req.signal, "killed");
        if let Some(exit) = killed_before_start {
            let task_pid = self.with(&req.id, |c| Ok(c.pid()))?;
            self.seams
                .events
                .exit(&req.id, task_pid, exit.code, exit.at)
                .await;
            self.with(&req.id, |c| {
                c.announce();
                Ok(())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
