//! `cargo xtask test`: everything CI checks, in the order that fails fastest, ending with
//! the containerd e2e.

use crate::util::{cargo, require_wasm_toolchain, run as sh};

/// Runs fmt, clippy, docs and the whole test suite. Extra arguments go to `cargo test`.
pub(crate) fn run(extra: &[String]) -> anyhow::Result<()> {
    require_wasm_toolchain()?;
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    sh(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    sh(cargo().args(["test", "--workspace"]).args(extra))?;
    if crate::util::is_root() {
        crate::e2e::run(&[])?;
    } else {
        eprintln!("skipping the containerd e2e: it needs root (run `sudo cargo xtask e2e`)");
    }
    Ok(())
}
