//! `cargo xtask test`: everything CI checks, in the order that fails fastest: fmt, clippy,
//! docs, the tests, a short pass of each fuzz target, then the containerd e2e.

use crate::util::{cargo, require_wasm_toolchain, run as sh};

/// Seconds each fuzz target runs in the short pass (`cargo xtask fuzz` runs them longer).
const FUZZ_SECONDS: &str = "15";

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
    // The fuzz targets: formatted like the rest, and a short pass of each.
    sh(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
    crate::fuzz::run(&["--seconds".to_owned(), FUZZ_SECONDS.to_owned()])?;
    if crate::util::is_root() {
        crate::e2e::run(&[])?;
    } else {
        eprintln!("skipping the containerd e2e: it needs root (run `sudo cargo xtask e2e`)");
    }
    Ok(())
}
