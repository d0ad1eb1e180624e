//! `cargo xtask test`: everything CI checks, in the order that fails fastest: fmt, tidy,
//! clippy, docs, the tests, the README's first command, the embedding example, a short pass
//! of each fuzz target, then the containerd e2e.

use anyhow::Context;

use crate::util::{cargo, output_ok, require_wasm_toolchain, run as sh};

/// Seconds each fuzz target runs in the short pass (`cargo xtask fuzz` runs them longer).
const FUZZ_SECONDS: &str = "15";

/// The README's first command, literally as it stands in README.md and as a new user runs
/// it (on a machine with no protoc, as CI's; from nothing when CI's target directory is
/// empty): the bundled example must print its greeting.
fn readme_first_command() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(crate::util::root().join("README.md"))?;
    let command = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|block| block.lines().next())
        .context("README.md has no ```sh block")?;
    anyhow::ensure!(
        command.starts_with("cargo run "),
        "the README's first command is not a `cargo run`: {command:?}"
    );
    eprintln!("$ {command}");
    let out = output_ok(
        std::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(crate::util::root()),
    )?;
    anyhow::ensure!(
        out == "Hello from a wasm container!\n",
        "the README's first command printed {out:?}"
    );
    eprintln!("the README's first command: {}", out.trim_end());
    Ok(())
}

/// The embedding example (`examples/embed`): pulls a hello world that this checkout's
/// wasmpod built and pushed to a private registry, and runs it with no containerd.
fn embedding_example(bins: &crate::e2e::Binaries) -> anyhow::Result<()> {
    let dir = crate::util::target_dir().join("tmp/embed-example");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let hello = dir.join("hello.wasm");
    crate::e2e::compile_fixture("hello", &hello)?;
    let registry = test_support::registry::Registry::start();
    let reference = format!("{}/embed/hello:v1", registry.host());
    let root = dir.join("root");
    for args in [
        &["build", "-t", &reference, &hello.to_string_lossy()][..],
        &["push", &reference][..],
    ] {
        output_ok(
            std::process::Command::new(&bins.wasmpod)
                .arg("--root")
                .arg(&root)
                .args(args),
        )?;
    }
    let out = output_ok(
        std::process::Command::new(&bins.embed_example).args(["--insecure", &reference]),
    )?;
    anyhow::ensure!(
        out == "Hello from a wasm container!\n",
        "the embedding example printed {out:?}"
    );
    eprintln!(
        "the embedding example, from {reference}: {}",
        out.trim_end()
    );
    Ok(())
}

/// Runs fmt, clippy, docs and the whole test suite. Extra arguments go to `cargo test`.
pub(crate) fn run(extra: &[String]) -> anyhow::Result<()> {
    require_wasm_toolchain()?;
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    crate::tidy::run(&[])?;
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
    readme_first_command()?;
    embedding_example(&crate::e2e::build_binaries_in("debug", &[])?)?;
    // The fuzz targets: formatted like the rest, and a short pass of each.
    sh(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
    crate::fuzz::run(&["--seconds".to_owned(), FUZZ_SECONDS.to_owned()])?;
    if crate::util::is_root() {
        crate::e2e::run(&[])?;
        // The cgroup checks again, in a cgroup v2 kernel: these machines mount v1.
        crate::e2e::run(&["--cgroup2".to_owned()])?;
    } else {
        eprintln!("skipping the containerd e2e: it needs root (run `sudo cargo xtask e2e`)");
    }
    Ok(())
}
