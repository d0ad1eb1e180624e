//! An embedder of wasmpod's crates, with no containerd: pull a wasm image from a registry
//! (`oci-image`), describe the container in plain terms (`sandbox::ContainerSpec`), turn
//! that into what the guest may use (`sandbox::RunPolicy`) and run it (`wasm-engine`).
//!
//! ```text
//! embed-example [--insecure] REFERENCE [ARG...]
//! ```
//!
//! The guest's output goes to ours; we exit with its exit status (125 when we fail before
//! it runs, naming what failed). `cargo xtask test` runs it against a private registry.

#![forbid(unsafe_code)]

use anyhow::Context;
use oci_image::{ImageRef, PullOptions, Store};
use sandbox::{ContainerSpec, RunPolicy};
use wasm_engine::{Engine, EngineConfig, KillHandle, ProgramLimits, Stdio, StdioStream};

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("embed-example: {e:#}");
            std::process::exit(125);
        }
    }
}

/// Pulls and runs the image the arguments name; returns the guest's exit status.
fn run() -> anyhow::Result<i32> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let insecure = args.first().is_some_and(|a| a == "--insecure");
    if insecure {
        args.remove(0);
    }
    let Some(reference) = args.first().cloned() else {
        anyhow::bail!("usage: embed-example [--insecure] REFERENCE [ARG...]");
    };
    let guest_args = &args[1..];

    // Where the image and the compiled code live: a real embedder keeps these.
    let data = tempfile::tempdir().context("creating a data directory")?;
    let store = Store::open(data.path().join("images"))?;
    let engine = Engine::new(EngineConfig::default().cache_dir(data.path().join("cache")))?;
    let runtime = wasm_engine::guest_runtime(0).context("starting the async runtime")?;

    // 1. Pull: the index, the manifest for this host, the layers, digests verified.
    let reference = ImageRef::parse(&reference)?;
    let image = runtime.block_on(oci_image::pull(
        &store,
        &reference,
        &PullOptions::default().insecure(insecure),
    ))?;

    // 2. Describe the container: the image's entrypoint, environment and working
    // directory, its unpacked root filesystem read-only (the store's copy is shared).
    let mut container = ContainerSpec::new(image.config.argv(guest_args)).root(&image.rootfs, true);
    for entry in &image.config.env {
        container = container.env(entry.clone());
    }
    if let Some(dir) = &image.config.working_dir {
        container = container.cwd(dir.clone());
    }
    let spec = container.to_spec()?;

    // 3. Decide what the guest may use, as the shim does with containerd's config.json.
    let policy = RunPolicy::from_spec(&spec, data.path())?;
    for warning in policy.warnings() {
        eprintln!("warning: {warning}");
    }

    // 4. Compile (or load from the cache) and run.
    let program = engine.load(&policy.read_entrypoint(ProgramLimits::DEFAULT_MAX_SIZE)?)?;
    let stdio = Stdio {
        stdin: StdioStream::Null,
        stdout: StdioStream::Inherit,
        stderr: StdioStream::Inherit,
    };
    let status =
        runtime.block_on(engine.run(&program, policy.run_config(stdio, KillHandle::new())))?;
    Ok(status.code())
}
