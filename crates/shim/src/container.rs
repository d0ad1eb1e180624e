//! One container of this shim and its task lifecycle: `Created → Running → Stopped`, then
//! removed on Delete. Every other transition is a `FailedPrecondition` naming the state.

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::{oneshot, watch};
use wasm_engine::{KillHandle, MemoryGauge, Program, RunConfig};

use crate::error::{Error, Result};

/// What a container runs once started.
pub(crate) enum Workload {
    /// A wasm program with everything its run is given.
    Wasm {
        /// The compiled entrypoint.
        program: Program,
        /// Arguments, environment, preopens, stdio and limits from the spec.
        config: Box<RunConfig>,
    },
    /// A pod's sandbox (pause) container: holds the pod until it is killed, running nothing.
    Sandbox,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Wasm { program, .. } => write!(f, "Wasm({})", program.digest()),
            Workload::Sandbox => f.write_str("Sandbox"),
        }
    }
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exit {
    /// The exit status containerd reports (137 killed, 143 terminated, 134 trap).
    pub(crate) code: u32,
    /// When it ended.
    pub(crate) at: SystemTime,
}

/// Where a container is in its life.
#[derive(Debug)]
pub(crate) enum State {
    /// Created, not started: the workload is loaded and its stdio open.
    Created(Box<Workload>),
    /// Running; the handle stops it.
    Running(KillHandle),
    /// Ended, not yet deleted.
    Stopped(Exit),
}

impl State {
    /// The state's name as containerd shows it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            State::Created(_) => "created",
            State::Running(_) => "running",
            State::Stopped(_) => "stopped",
        }
    }
}

/// The paths containerd gave for the task's stdio.
#[derive(Debug, Clone, Default)]
pub(crate) struct StdioPaths {
    pub(crate) stdin: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) terminal: bool,
}

/// One container.
#[derive(Debug)]
pub(crate) struct Container {
    pub(crate) id: String,
    pub(crate) bundle: PathBuf,
    pub(crate) stdio: StdioPaths,
    /// Whether the shim mounted `bundle/rootfs` and must unmount it on Delete.
    pub(crate) rootfs_mounted: bool,
    /// The guest's memory in use and its cap (`linux.resources.memory.limit`, or what
    /// Update set), for Stats.
    pub(crate) memory: MemoryGauge,
    /// Closes the guest's stdin (CloseIO).
    pub(crate) stdin_close: Option<oneshot::Sender<()>>,
    state: State,
    exit_tx: watch::Sender<Option<Exit>>,
}

impl Container {
    /// Changes the memory cap (Update): for a running guest through its gauge, for one not
    /// started yet in the config it will start with.
    pub(crate) fn set_memory_limit(&mut self, cap: Option<u64>) {
        self.memory.set_limit(cap);
        if let State::Created(workload) = &mut self.state {
            if let Workload::Wasm { config, .. } = workload.as_mut() {
                config.limits.memory = cap;
            }
        }
    }

    /// A container in the `Created` state; its memory gauge and cap are the workload's.
    pub(crate) fn new(id: String, bundle: PathBuf, stdio: StdioPaths, workload: Workload) -> Self {
        let memory = match &workload {
            Workload::Wasm { config, .. } => {
                config.memory.set_limit(config.limits.memory);
                config.memory.clone()
            }
            Workload::Sandbox => MemoryGauge::default(),
        };
        Self {
            id,
            bundle,
            stdio,
            rootfs_mounted: false,
            memory,
            stdin_close: None,
            state: State::Created(Box::new(workload)),
            exit_tx: watch::channel(None).0,
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    fn refuse(&self, call: &'static str) -> Error {
        Error::FailedPrecondition {
            id: self.id.clone(),
            call,
            state: self.state.name(),
        }
    }

    /// `Created → Running`: hands out the workload to run and the handle that stops it.
    pub(crate) fn start(&mut self) -> Result<(Workload, KillHandle)> {
        if !matches!(self.state, State::Created(_)) {
            return Err(self.refuse("Start"));
        }
        let kill = KillHandle::new();
        match std::mem::replace(&mut self.state, State::Running(kill.clone())) {
            State::Created(workload) => Ok((*workload, kill)),
            _ => unreachable!("checked to be Created above"),
        }
    }

    /// `Running → Stopped` (the workload ended) or `Created → Stopped` (killed before it
    /// started). Wakes every waiter.
    pub(crate) fn exited(&mut self, code: u32) -> Result<Exit> {
        if matches!(self.state, State::Stopped(_)) {
            return Err(self.refuse("exit"));
        }
        let exit = Exit {
            code,
            at: SystemTime::now(),
        };
        self.state = State::Stopped(exit);
        self.stdin_close.take();
        self.exit_tx.send_replace(Some(exit));
        Ok(exit)
    }

    /// Whether Delete may remove the container now; Running ones must be stopped first.
    pub(crate) fn check_delete(&self) -> Result<()> {
        match self.state {
            State::Running(_) => Err(self.refuse("Delete")),
            _ => Ok(()),
        }
    }

    /// A receiver that sees the exit once it happens.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Exit>> {
        self.exit_tx.subscribe()
    }

    /// The exit, if the task has ended.
    pub(crate) fn exit(&self) -> Option<Exit> {
        match self.state {
            State::Stopped(exit) => Some(exit),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> Container {
        Container::new(
            "c1".into(),
            PathBuf::from("/bundle"),
            StdioPaths::default(),
            Workload::Sandbox,
        )
    }

    fn refused_state(err: Error) -> (&'static str, &'static str) {
        match err {
            Error::FailedPrecondition { call, state, .. } => (call, state),
            other => panic!("expected FailedPrecondition, got {other:?}"),
        }
    }

    #[test]
    fn created_starts_runs_and_stops_once() {
        let mut c = created();
        assert_eq!(c.state().name(), "created");
        let mut rx = c.subscribe();
        let (workload, _kill) = c.start().unwrap();
        assert!(matches!(workload, Workload::Sandbox));
        assert_eq!(c.state().name(), "running");
        assert_eq!(refused_state(c.start().unwrap_err()), ("Start", "running"));
        assert_eq!(
            refused_state(c.check_delete().unwrap_err()),
            ("Delete", "running")
        );

        let exit = c.exited(143).unwrap();
        assert_eq!(exit.code, 143);
        assert_eq!(c.exit(), Some(exit));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Some(exit));
        assert_eq!(refused_state(c.exited(0).unwrap_err()), ("exit", "stopped"));
        assert_eq!(refused_state(c.start().unwrap_err()), ("Start", "stopped"));
        c.check_delete().unwrap();
    }

    #[test]
    fn a_created_task_can_be_killed_and_deleted_without_starting() {
        let mut c = created();
        c.check_delete().unwrap();
        let exit = c.exited(137).unwrap();
        assert_eq!(c.exit(), Some(exit));
        assert_eq!(refused_state(c.start().unwrap_err()), ("Start", "stopped"));
    }

    #[test]
    fn the_first_exit_wins_for_late_subscribers_too() {
        let mut c = created();
        c.start().unwrap();
        c.exited(3).unwrap();
        let rx = c.subscribe();
        assert_eq!(rx.borrow().map(|e| e.code), Some(3));
    }
}
