//! Helpers shared by the tasks: the workspace root and running commands loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The workspace root (the parent of `xtask/`): of the checkout whose `cargo xtask` runs
/// us, which cargo names at run time. The path compiled in is only a fallback: a target
/// directory shared by two checkouts (as `.ci/run`'s cache is) keeps an xtask built in the
/// other one, and its compiled-in path would build and test that checkout — or, once it
/// is removed, nothing.
pub(crate) fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
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

/// Runs `cmd` quietly and returns its stdout; fails with its stdout and stderr unless it
/// succeeds.
pub(crate) fn output_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

/// Cargo's target directory: `CARGO_TARGET_DIR`, else the workspace's `target/`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Builds the `wasi:http` handler NAME (`tests/fixtures/NAME.c`, or `static-site` from
/// `examples/`) as a component into `dir/NAME.wasm`, through the engine's `http-fixture`
/// example (which generates the C bindings and adds the preview 1 adapter). The example is
/// built with the whole workspace's features, as the tests build the engine: `cargo run -p
/// wasm-engine` alone would build wasmtime a second time with fewer features.
pub(crate) fn build_http_component(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    output_ok(cargo().args(["build", "-q", "--workspace", "--example", "http-fixture"]))
        .context("building the http-fixture example")?;
    let target = target_dir();
    output_ok(
        Command::new(target.join("debug/examples/http-fixture"))
            .arg(name)
            .arg(dir),
    )
    .with_context(|| format!("building the {name} handler"))?;
    Ok(dir.join(format!("{name}.wasm")))
}
