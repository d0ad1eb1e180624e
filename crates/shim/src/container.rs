//! One container of this shim and its task lifecycle: `Created → Running → Stopped`, then
//! removed on Delete. Every other transition is a `FailedPrecondition` naming the state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use sandbox::NetnsRuntime;
use tokio::sync::{oneshot, watch};
use wasm_engine::KillHandle;

use crate::error::{Error, Result};
use crate::task::SharedInstance;

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
    Created,
    /// Running.
    Running,
    /// Ended, not yet deleted.
    Stopped(Exit),
}

impl State {
    /// The state's name as containerd shows it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
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

/// What a wasm container's execs run with besides their own process: the container's
/// handler limits and network, so that an exec sees what the container's guest sees.
#[derive(Debug)]
pub(crate) struct ExecContext {
    /// The handler's limits on a program.
    pub(crate) limits: wasm_engine::ProgramLimits,
    /// The container's port and network policy.
    pub(crate) network: sandbox::NetworkPlan,
    /// The runtime whose threads are in the pod's network namespace (shared level).
    pub(crate) net: Option<Arc<NetnsRuntime>>,
    /// The pod's network namespace a process-level exec joins.
    pub(crate) netns: Option<PathBuf>,
    /// The handler's HTTP limits (a process-level child is given them).
    pub(crate) http: wasm_engine::HttpLimits,
    /// Whether the container has a root filesystem to exec programs from (not one whose
    /// program is its image's wasm layer). Any wasm container execs an image's program.
    pub(crate) rootfs: bool,
    /// Who a process-level exec whose process asks for root runs as.
    pub(crate) guest_user: sandbox::GuestUser,
}

/// What a wasm exec runs, decided at Exec.
#[derive(Debug)]
pub(crate) struct WasmExecPlan {
    /// The container's run policy with the exec's process.
    pub(crate) policy: sandbox::RunPolicy,
    /// The program, when it comes from an image (`oci://IMAGE`) rather than the root
    /// filesystem.
    pub(crate) image: Option<crate::content::ImageProgram>,
}

/// A second process in a container (Exec), by its exec id.
#[derive(Debug)]
pub(crate) struct Exec {
    /// What runs: the OCI process containerd sent.
    pub(crate) process: oci_spec::runtime::Process,
    /// What a wasm exec runs, until its Start takes it.
    pub(crate) wasm: Option<Box<WasmExecPlan>>,
    /// Ends a wasm exec that runs in the shim.
    pub(crate) kill: Option<KillHandle>,
    /// A native exec's terminal (`-t`).
    pub(crate) terminal: Option<crate::native::Terminal>,
    /// Its stdio.
    pub(crate) stdio: StdioPaths,
    /// Its pid, once started.
    pub(crate) pid: Option<u32>,
    /// Closes its stdin (CloseIO).
    pub(crate) stdin_close: Option<oneshot::Sender<()>>,
    /// Its exit, once it has ended.
    pub(crate) exit: watch::Sender<Option<Exit>>,
}

impl Exec {
    /// An exec not started yet.
    pub(crate) fn new(process: oci_spec::runtime::Process, stdio: StdioPaths) -> Self {
        Self {
            process,
            wasm: None,
            kill: None,
            terminal: None,
            stdio,
            pid: None,
            stdin_close: None,
            exit: watch::channel(None).0,
        }
    }
}

/// One container.
#[derive(Debug)]
pub(crate) struct Container {
    pub(crate) id: String,
    pub(crate) bundle: PathBuf,
    pub(crate) stdio: StdioPaths,
    /// Whether the shim mounted `bundle/rootfs` and must unmount it on Delete.
    pub(crate) rootfs_mounted: bool,
    /// What it runs, of whichever kind.
    pub(crate) instance: SharedInstance,
    /// Closes the guest's stdin (CloseIO).
    pub(crate) stdin_close: Option<oneshot::Sender<()>>,
    /// A pod sandbox's network namespace (CNI's), which its process-level containers join.
    pub(crate) netns: Option<PathBuf>,
    /// A pod sandbox's host name (`hostname` of its spec), for its native containers.
    pub(crate) hostname: Option<String>,
    /// What a wasm container's execs run with; `None` where none can run (a sandbox, a
    /// program from the content store rather than a root filesystem).
    pub(crate) wasm_execs: Option<Arc<ExecContext>>,
    /// Its execs, by exec id.
    pub(crate) execs: std::collections::HashMap<String, Exec>,
    state: State,
    exit_tx: watch::Sender<Option<Exit>>,
}

impl Container {
    /// A container in the `Created` state, running `instance` once started.
    pub(crate) fn new(
        id: String,
        bundle: PathBuf,
        stdio: StdioPaths,
        instance: SharedInstance,
    ) -> Self {
        Self {
            id,
            bundle,
            stdio,
            rootfs_mounted: false,
            instance,
            stdin_close: None,
            netns: None,
            hostname: None,
            wasm_execs: None,
            execs: Default::default(),
            state: State::Created,
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

    /// `Created → Running`: `launch` is given the instance and starts it (returning
    /// whatever the caller needs next). When it fails the task ends as one that could not
    /// start (126), and its error is returned.
    pub(crate) fn start<T>(
        &mut self,
        launch: impl FnOnce(&SharedInstance) -> Result<T>,
    ) -> Result<T> {
        if !matches!(self.state, State::Created) {
            return Err(self.refuse("Start"));
        }
        match launch(&self.instance) {
            Ok(next) => {
                self.state = State::Running;
                Ok(next)
            }
            Err(e) => {
                self.stdin_close.take();
                let exit = Exit {
                    code: wasm_engine::EXIT_CANNOT_START as u32,
                    at: SystemTime::now(),
                };
                self.state = State::Stopped(exit);
                self.exit_tx.send_replace(Some(exit));
                Err(e)
            }
        }
    }

    /// A pod sandbox's network namespace, which its containers join: CNI's, or, for a pod on
    /// the host's network (`hostNetwork`, whose sandbox spec names none), the shim's own —
    /// the host's, as a pause process's would be.
    pub(crate) fn pod_netns(&self) -> PathBuf {
        self.netns
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/proc/{}/ns/net", std::process::id())))
    }

    /// The pid containerd is shown: a child's (a process-level container that has started,
    /// a native container's init), else the shim's own (its guests run inside it).
    pub(crate) fn pid(&self) -> u32 {
        self.instance.pid().unwrap_or_else(std::process::id)
    }

    /// `Running → Stopped` (the workload ended) or `Created → Stopped` (killed before it
    /// started). Waiters are woken by [`announce`](Self::announce), once containerd has
    /// been told of the exit: a Wait that returned before the exit event went out would
    /// let a Delete (and its event) overtake it.
    pub(crate) fn stop(&mut self, code: u32) -> Result<Exit> {
        if matches!(self.state, State::Stopped(_)) {
            return Err(self.refuse("exit"));
        }
        let exit = Exit {
            code,
            at: SystemTime::now(),
        };
        self.state = State::Stopped(exit);
        self.stdin_close.take();
        Ok(exit)
    }

    /// Ends a stopped wasm container's execs, as a container's processes end with its
    /// init: those in the shim at once; the pids of those in children are returned, to be
    /// killed (runc ends a native container's own).
    pub(crate) fn end_execs(&self) -> Vec<u32> {
        if self.instance.runc().is_some() {
            return Vec::new();
        }
        let mut children = Vec::new();
        for exec in self.execs.values() {
            if exec.exit.borrow().is_some() {
                continue;
            }
            match (&exec.kill, exec.pid) {
                (Some(kill), _) => kill.kill(),
                (None, Some(pid)) => children.push(pid),
                (None, None) => {}
            }
        }
        children
    }

    /// Wakes every waiter with the exit [`stop`](Self::stop) recorded.
    pub(crate) fn announce(&self) {
        if let State::Stopped(exit) = self.state {
            self.exit_tx.send_replace(Some(exit));
        }
    }

    /// [`stop`](Self::stop) and [`announce`](Self::announce) at once.
    #[cfg(test)]
    pub(crate) fn exited(&mut self, code: u32) -> Result<Exit> {
        let exit = self.stop(code)?;
        self.announce();
        Ok(exit)
    }

    /// Whether Delete may remove the container now; Running ones must be stopped first.
    pub(crate) fn check_delete(&self) -> Result<()> {
        match self.state {
            State::Running => Err(self.refuse("Delete")),
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
            crate::task::sandbox_instance(),
        )
    }

    fn guest(_: &SharedInstance) -> Result<&'static str> {
        Ok("launched")
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
        assert_eq!(c.start(guest).unwrap(), "launched");
        assert_eq!(c.state().name(), "running");
        assert_eq!(
            refused_state(c.start(guest).unwrap_err()),
            ("Start", "running")
        );
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
        assert_eq!(
            refused_state(c.start(guest).unwrap_err()),
            ("Start", "stopped")
        );
        c.check_delete().unwrap();
    }

    #[test]
    fn a_created_task_can_be_killed_and_deleted_without_starting() {
        let mut c = created();
        c.check_delete().unwrap();
        let exit = c.exited(137).unwrap();
        assert_eq!(c.exit(), Some(exit));
        assert_eq!(
            refused_state(c.start(guest).unwrap_err()),
            ("Start", "stopped")
        );
    }

    #[test]
    fn a_failed_launch_stops_the_task_as_unable_to_start() {
        let mut c = created();
        let rx = c.subscribe();
        let e = c
            .start(|_| -> Result<()> { Err(Error::InvalidArgument("no".into())) })
            .unwrap_err();
        assert_eq!(e.to_string(), "no");
        assert_eq!(c.exit().map(|e| e.code), Some(126));
        assert_eq!(rx.borrow().map(|e| e.code), Some(126));
        c.check_delete().unwrap();
    }

    #[test]
    fn a_sandbox_on_the_hosts_network_gives_its_pod_the_shims_namespace() {
        let mut c = created();
        let own = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
        assert_eq!(c.pod_netns(), own);
        c.netns = Some(PathBuf::from("/run/netns/cni-1"));
        assert_eq!(c.pod_netns(), PathBuf::from("/run/netns/cni-1"));
    }

    #[test]
    fn the_first_exit_wins_for_late_subscribers_too() {
        let mut c = created();
        c.start(guest).unwrap();
        c.exited(3).unwrap();
        let rx = c.subscribe();
        assert_eq!(rx.borrow().map(|e| e.code), Some(3));
    }
}
