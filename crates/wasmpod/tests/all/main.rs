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

/// `cmd` run to its end, with its peak resident memory in bytes.
///
/// Measured by GNU time (`/usr/bin/time`, Debian's `time`), which forks the command from
/// its own small process. The rusage of a child this test spawns would not do: a process
/// started by fork or vfork inherits, at its exec, the high-water mark of the memory it
/// was forked from, which is this whole test process (hundreds of MiB once a failing
/// test's backtrace has loaded its debug info).
pub(crate) fn output_and_peak_memory(cmd: Command) -> (Output, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "{}: missing; the peak memory tests need Debian's `time` package",
        time.display()
    );
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new(time);
    timed
        .args(["--quiet", "--format", "%M", "--output"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let output = timed.stdin(Stdio::null()).output().unwrap();
    let said = std::fs::read_to_string(report.path()).unwrap();
    let kib: u64 = said
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {said:?}: {e}", time.display()));
    (output, kib * 1024)
}
