//! The pod holder: the process whose IPC, UTS and PID namespaces a wasm pod's native
//! containers share, as a runc pod's containers share its pause process's.
//!
//! A wasm pod's sandbox runs nothing, and containerd names the pod's namespaces through the
//! sandbox task's pid, which is this shim's. Wasm guests need none of them, so a wasm-only
//! pod has no holder and starts as before. The first native container of a pod starts one:
//! this binary re-executed as `containerd-shim-wasm-v1 __wasmpod-pod HOSTNAME`, which
//! unshares the namespaces, names the host as the pod's spec does, and forks the
//! namespace's first process, pid 1, which sleeps and reaps the namespace's orphans. The
//! holder is a child of this shim (a subreaper) and goes with the sandbox's Delete; a record
//! in the sandbox's bundle lets the `delete` after a dead shim end it too.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// The hidden first argument that makes this binary hold a pod's namespaces.
pub const HOLDER_COMMAND: &str = "__wasmpod-pod";

/// The file in the sandbox's bundle that records the holder: `PID START_TIME`.
const RECORD: &str = "wasmpod-pod-holder";

/// A running pod holder.
#[derive(Debug)]
pub(crate) struct Holder {
    pid: u32,
    record: PathBuf,
}

impl Holder {
    /// Starts the holder of the pod whose sandbox bundle is `bundle`, its host named
    /// `hostname`.
    pub(crate) async fn start(sandbox: &str, bundle: &Path, hostname: &str) -> Result<Self> {
        let exe =
            std::env::current_exe().map_err(crate::error::io("finding the shim's own binary"))?;
        let context = format!("pod sandbox {sandbox}: starting the holder of its namespaces");
        let mut command = std::process::Command::new(exe);
        command
            .arg(HOLDER_COMMAND)
            .arg(hostname)
            .env_remove(crate::bootstrap::LISTEN_FD_ENV)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = tokio::task::spawn_blocking(move || {
            // The first process prints its child's pid and exits; the reaper collects it.
            let mut child = command.spawn()?;
            let mut text = String::new();
            let mut err = String::new();
            use std::io::Read as _;
            if let Some(mut o) = child.stdout.take() {
                o.read_to_string(&mut text)?;
            }
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut err)?;
            }
            Ok::<_, std::io::Error>((text, err))
        })
        .await
        .map_err(|e| Error::Internal {
            context: context.clone(),
            reason: e.to_string(),
        })?
        .map_err(crate::error::io(context.clone()))?;
        let (text, err) = out;
        let pid: u32 = text.trim().parse().map_err(|_| Error::Internal {
            context: context.clone(),
            reason: format!("the holder said {:?}: {}", text.trim(), err.trim()),
        })?;
        let record = bundle.join(RECORD);
        let holder = sys::ProcessId::of(pid);
        std::fs::write(&record, format!("{holder}\n")).map_err(crate::error::io(context))?;
        tracing::info!(pid, "pod holder started");
        Ok(Self { pid, record })
    }

    /// The holder's pid: `/proc/<pid>/ns/{ipc,uts,pid}` are the pod's.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Ends the holder (and, with it, the pod's PID namespace and whatever is left in it).
    pub(crate) fn stop(&self) {
        let _ = sys::kill(libc::pid_t::try_from(self.pid).unwrap_or(0), libc::SIGKILL);
        let _ = std::fs::remove_file(&self.record);
    }
}

/// After a shim died: the holder recorded in the sandbox's `bundle`, if it is still the
/// same process, is killed.
pub(crate) fn clean_up_after_dead_shim(bundle: &Path) {
    let record = bundle.join(RECORD);
    let Ok(text) = std::fs::read_to_string(&record) else {
        return;
    };
    if let Some(holder) = sys::ProcessId::parse(&text).filter(sys::ProcessId::is_running) {
        let _ = sys::kill(
            libc::pid_t::try_from(holder.pid).unwrap_or(0),
            libc::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(&record);
}

/// The holder process: never returns.
pub(crate) fn holder_main(args: &[String]) -> ! {
    let hostname = args.first().map(String::as_str).unwrap_or("");
    if let Err(e) = sys::unshare_pod_namespaces(hostname) {
        eprintln!("{HOLDER_COMMAND}: making the pod's namespaces: {e}");
        std::process::exit(1);
    }
    match sys::fork_single_threaded() {
        Err(e) => {
            eprintln!("{HOLDER_COMMAND}: fork: {e}");
            std::process::exit(1)
        }
        Ok(Some(child)) => {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{child}");
            let _ = out.flush();
            std::process::exit(0)
        }
        Ok(None) => {
            // Pid 1 of the pod: its stdio would keep the shim's pipes open.
            let _ = std::env::set_current_dir("/");
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::AsRawFd as _;
                for fd in 0..=2 {
                    sys::dup_onto(null.as_raw_fd(), fd);
                }
            }
            sys::hold_as_init()
        }
    }
}
