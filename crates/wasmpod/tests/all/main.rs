//! End-to-end tests of the `wasmpod` binary: C programs compiled to wasm32-wasi, run as
//! files and as images through a private registry.

use test_support::fixtures;
use test_support::hostile;
use test_support::http_fixture;
use test_support::registry;
use test_support::wasi_p3;
use test_support::wasi_testsuite;

mod conformance;
mod errors;
mod fs;
mod http;
mod images;
mod install;
mod kube;
mod limits;
mod run;
mod sys;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A `wasmpod` invocation with private root and state directories.
pub(crate) struct Wasmpod {
    dirs: tempfile::TempDir,
}

impl Wasmpod {
    pub(crate) fn new() -> Self {
        Self {
            dirs: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmpod"));
        cmd.arg("--root")
            .arg(self.dirs.path().join("root"))
            .arg("--state")
            .arg(self.dirs.path().join("state"))
            .env_remove("WASMPOD_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// `wasmpod ARGS...`, waiting for it.
    pub(crate) fn cmd(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// `wasmpod run ARGS...`, waiting for it.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command().arg("run").args(args).output().unwrap()
    }

    pub(crate) fn root_dir(&self) -> std::path::PathBuf {
        self.dirs.path().join("root")
    }

    pub(crate) fn state_dir(&self) -> std::path::PathBuf {
        self.dirs.path().join("state")
    }
}

pub(crate) fn probe() -> &'static str {
    fixtures::probe_module().to_str().unwrap()
}

pub(crate) fn component() -> &'static str {
    fixtures::probe_component().to_str().unwrap()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
#[track_caller]
pub(crate) fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `cmd` run to its end, with its peak resident memory in bytes (`wait4`'s rusage, which
/// is this child's alone).
#[allow(clippy::zombie_processes, reason = "reaped by the wait4 below")]
pub(crate) fn output_and_peak_memory(mut cmd: Command) -> (Output, u64) {
    use std::io::Read as _;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        err.read_to_end(&mut stderr).unwrap();
        stderr
    });
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let stderr = reader.join().unwrap();
    let (status, peak) = sys::wait_with_peak_rss(&child);
    use std::os::unix::process::ExitStatusExt as _;
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
    };
    (output, peak)
}
