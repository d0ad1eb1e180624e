//! Helpers shared by the tasks: the workspace root and running commands loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The workspace root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

/// `cargo` as the one running us.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, echoing it, and fails if it fails.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Whether `program` can be found on PATH.
pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails with the packages to install when the C-to-wasm toolchain is missing.
pub(crate) fn require_wasm_toolchain() -> anyhow::Result<()> {
    let sysroot = Path::new("/usr/lib/wasm32-wasi/libc.a").exists()
        || std::env::var_os("WASI_SYSROOT").is_some();
    if !have("clang") || !sysroot {
        bail!(
            "the tests compile C to wasm32-wasi: install clang, lld, wasi-libc and \
             libclang-rt-14-dev-wasm32 (Debian: apt-get install clang lld wasi-libc \
             libclang-rt-14-dev-wasm32; .ci/run does this)"
        );
    }
    Ok(())
}

/// Whether we run as root (the e2e mounts snapshots and starts containerd).
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
