//! `cargo xtask bench`: the figures the issues ask for, measured on this machine.
//!
//! Builds the release binaries and the workloads (Lua 5.4, its sources from PyPI's `lupa`
//! sdist (`bench/lua.rs`), compiled to wasm32-wasi and natively; a C hello world), then
//! reports:
//! - compile time of a ~700 KB module cold vs its load from the precompile cache,
//!   instantiate + run of a hello world and the kill latency (in-process, engine-bench);
//! - `wasmpod run` of the hello world from process start to exit, cold and warm cache;
//! - CPU-bound throughput: the Lua benchmark in wasm against the native build;
//! - pull + unpack of a ~5 MB wasm image from a private docker-registry on loopback,
//!   `wasmpod pull` against `skopeo copy docker://… oci:DIR`.
//!
//! - under a private containerd (as root): `ctr run --rm` of a hello world with our shim
//!   against runc running busybox echo, and the memory of idle shims (`bench/shim.rs`).
//!
//! - through containerd's CRI plugin (as root): pod start latency, RunPodSandbox to the
//!   containers running, of a wasm pod against a runc busybox pod (`bench/pod.rs`).
//!
//! - HTTP: the hello handler under `wasmpod run --listen` against `wasmtime serve`, loaded by
//!   wrk (`bench/http.rs`; `--connections N --seconds S`).
//!
//! - `cargo xtask bench --load [CYCLES]`: 1,000 `ctr run --rm` cycles 8 at a time per runtime
//!   (ours, one shim per container and one node-grouped shim; runc), cycles per second and
//!   what they left behind (`bench/load.rs`).
//!
//! - the first `ctr run --rm` of a large module (over 5 MB of code): compiled inside Create,
//!   after the node's precompile agent compiled it on import, and warm (`bench/arrival.rs`).
//!
//! `cargo xtask bench pull` (or `engine`, `run`, `lua`, `http`, `shim`, `arrival`, `pod`)
//! runs one section only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use test_support::registry::Registry;

use crate::util::{require_wasm_toolchain, root, run as sh};

mod anchors;
mod arrival;
pub(crate) mod breakdown;
mod density;
mod http;
mod load;
mod lua;
mod pod;
mod shim;
mod trace;

struct Workloads {
    lua_wasm: PathBuf,
    lua_native: PathBuf,
    hello_wasm: PathBuf,
    fixtures: PathBuf,
}

fn build_workloads(out: &Path) -> anyhow::Result<Workloads> {
    let fixtures = root().join("tests/fixtures");
    let lua_src = fixtures.join("lua_wasi.c");
    let lua = lua::sources()?;
    let w = Workloads {
        lua_wasm: out.join("lua.wasm"),
        lua_native: out.join("lua-native"),
        hello_wasm: out.join("hello.wasm"),
        fixtures: fixtures.clone(),
    };
    sh(Command::new("clang")
        .args([
            "--target=wasm32-wasi",
            "-O2",
            "-Wno-deprecated-declarations",
        ])
        .arg("-I")
        .arg(fixtures.join("lua-wasi"))
        .arg("-I")
        .arg(&lua)
        .args(["-D_WASI_EMULATED_SIGNAL", "-D_WASI_EMULATED_PROCESS_CLOCKS"])
        .arg(&lua_src)
        .arg("-o")
        .arg(&w.lua_wasm)
        .args(["-lwasi-emulated-signal", "-lwasi-emulated-process-clocks"]))?;
    sh(Command::new("clang")
        .args(["-O2", "-I"])
        .arg(&lua)
        .arg(&lua_src)
        .arg("-o")
        .arg(&w.lua_native)
        .arg("-lm"))?;
    sh(Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2"])
        .arg(fixtures.join("hello.c"))
        .arg("-o")
        .arg(&w.hello_wasm))?;
    Ok(w)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Runs `cmd` to completion with output discarded and returns its wall time.
fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(elapsed)
}

/// Runs `cmd` and returns its stdout, failing on a non-zero status.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    // Minutes long: only when asked for, and then alone.
    if args.iter().any(|a| a == "--load" || a == "load") {
        return load::run(args);
    }
    let only = |section: &str| args.is_empty() || args.iter().any(|a| a == section);
    require_wasm_toolchain()?;
    // One release build of every binary and example (the sections' shims, CLI,
    // engine-bench, pod-start), with one resolution of features.
    let bins = crate::e2e::build_binaries_in("release", &["--release"])?;
    // The escape simulator (a test-only feature) is in no release binary.
    anyhow::ensure!(
        !crate::e2e::escape::has_simulator(&bins.shim)?,
        "{} holds the escape simulator",
        bins.shim.display()
    );
    let target = crate::util::target_dir();
    let out = target.join("bench");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let w = build_workloads(&out)?;
    let wasmpod = target.join("release/wasmpod");

    if only("engine") {
        engine(&target, &w)?;
    }
    if only("run") {
        start_to_exit(&wasmpod, &w, &out)?;
    }
    if only("lua") {
        lua(&wasmpod, &w, &out)?;
    }
    if only("pull") {
        image_pull(&wasmpod, &out)?;
    }
    if only("http") {
        http::run(&wasmpod, &out, args)?;
    }
    if only("shim") {
        if crate::util::is_root() {
            shim::run()?;
        } else {
            println!("\n== containerd: skipped (needs root)");
        }
    }
    if only("trace") {
        if crate::util::is_root() {
            trace::run()?;
        } else {
            println!("\n== tracing: skipped (needs root)");
        }
    }
    if only("arrival") {
        if crate::util::is_root() {
            arrival::run()?;
        } else {
            println!("\n== precompile on arrival: skipped (needs root)");
        }
    }
    if only("pod") {
        if crate::util::is_root() {
            pod::run()?;
        } else {
            println!("\n== CRI pods: skipped (needs root)");
        }
    }
    // Minutes long (hundreds of containers per level): only when asked for by name.
    if args.iter().any(|a| a == "density") {
        density::run(args)?;
    } else if args.is_empty() {
        println!("\n== density: run `cargo xtask bench density [N...]` (default N: 50 200 500)");
    }
    Ok(())
}

fn engine(target: &Path, w: &Workloads) -> anyhow::Result<()> {
    println!("\n== engine (in-process)");
    let engine_report = output(
        Command::new(target.join("release/examples/engine-bench"))
            .arg(&w.lua_wasm)
            .arg(&w.hello_wasm)
            .arg(&w.fixtures),
    )?;
    print!("{engine_report}");
    Ok(())
}

fn start_to_exit(wasmpod: &Path, w: &Workloads, out: &Path) -> anyhow::Result<()> {
    println!("\n== wasmpod run hello.wasm, process start to exit");
    let wasmpod_run = |root_dir: &Path| {
        let mut cmd = Command::new(wasmpod);
        cmd.arg("--root")
            .arg(root_dir)
            .arg("--state")
            .arg(out.join("state"))
            .arg("run")
            .arg(&w.hello_wasm);
        cmd
    };
    let cold: Vec<_> = (0..5)
        .map(|i| timed(&mut wasmpod_run(&out.join(format!("cold-{i}")))))
        .collect::<anyhow::Result<_>>()?;
    println!("cold cache (compiles): {} median of 5", ms(median(cold)));
    let warm_root = out.join("warm");
    timed(&mut wasmpod_run(&warm_root))?;
    let warm: Vec<_> = (0..30)
        .map(|_| timed(&mut wasmpod_run(&warm_root)))
        .collect::<anyhow::Result<_>>()?;
    println!("warm cache: {} median of 30", ms(median(warm)));
    Ok(())
}

fn lua(wasmpod: &Path, w: &Workloads, out: &Path) -> anyhow::Result<()> {
    println!("\n== CPU-bound: Lua 5.4 running tests/fixtures/bench.lua");
    let warm_root = out.join("warm");
    let script = w.fixtures.join("bench.lua");
    let native_sum = output(Command::new(&w.lua_native).arg(&script))?;
    let wasm_run = || {
        let mut cmd = Command::new(wasmpod);
        cmd.arg("--root")
            .arg(&warm_root)
            .arg("--state")
            .arg(out.join("state"))
            .args(["run", "-v"])
            .arg(format!("{}:/bench:ro", w.fixtures.display()))
            .arg(&w.lua_wasm)
            .arg("/bench/bench.lua");
        cmd
    };
    let wasm_sum = output(&mut wasm_run())?;
    if native_sum != wasm_sum {
        bail!("native and wasm disagree: {native_sum:?} vs {wasm_sum:?}");
    }
    let native: Vec<_> = (0..3)
        .map(|_| timed(Command::new(&w.lua_native).arg(&script)))
        .collect::<anyhow::Result<_>>()?;
    let wasm: Vec<_> = (0..3)
        .map(|_| timed(&mut wasm_run()))
        .collect::<anyhow::Result<_>>()?;
    let (native, wasm) = (median(native), median(wasm));
    println!("native: {} median of 3", ms(native));
    println!("wasmpod run (warm cache): {} median of 3", ms(wasm));
    println!(
        "throughput ratio wasm/native: {:.2} (wasm takes {:.2}x the native time)",
        native.as_secs_f64() / wasm.as_secs_f64(),
        wasm.as_secs_f64() / native.as_secs_f64()
    );
    Ok(())
}

/// A ~5 MB wasm module: a valid header and a custom section of incompressible bytes.
fn big_module(size: usize) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    let payload = size - 16;
    let mut len = payload + 4;
    m.push(0);
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            m.push(byte);
            break;
        }
        m.push(byte | 0x80);
    }
    m.extend_from_slice(b"\x03pad");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    m.extend((0..payload).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    m
}

fn image_pull(wasmpod: &Path, out: &Path) -> anyhow::Result<()> {
    println!("\n== pull + unpack of a 5 MB wasm image from a loopback registry");
    println!("(wasmpod pull --insecure vs skopeo copy --src-tls-verify=false: both plain HTTP)");
    let dir = out.join("pull");
    std::fs::create_dir_all(&dir)?;
    let registry = Registry::start();
    let host = registry.host();
    let module = dir.join("big.wasm");
    std::fs::write(&module, big_module(5 << 20))?;
    let runs = 9;
    for format in ["artifact", "compat"] {
        let reference = format!("{host}/big:{format}");
        let publisher = dir.join("publisher");
        sh(Command::new(wasmpod)
            .arg("--root")
            .arg(&publisher)
            .args(["build", "--format", format, "-t", &reference])
            .arg(&module)
            .stdout(Stdio::null()))?;
        sh(Command::new(wasmpod)
            .arg("--root")
            .arg(&publisher)
            .args(["push", &reference])
            .stdout(Stdio::null()))?;
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for i in 0..runs {
            let root_dir = dir.join(format!("root-{format}-{i}"));
            ours.push(timed(
                Command::new(wasmpod).arg("--root").arg(&root_dir).args([
                    "pull",
                    "--insecure",
                    "-q",
                    &reference,
                ]),
            )?);
            let unpacked = root_dir.join("images/rootfs");
            let found = std::fs::read_dir(&unpacked)?
                .filter_map(Result::ok)
                .any(|e| e.path().join("big.wasm").is_file());
            if !found {
                bail!(
                    "wasmpod pull did not unpack big.wasm under {}",
                    unpacked.display()
                );
            }
            let layout = dir.join(format!("skopeo-{format}-{i}"));
            theirs.push(timed(Command::new("skopeo").args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{reference}"),
                &format!("oci:{}:{format}", layout.display()),
            ]))?);
        }
        let (ours, theirs) = (median(ours), median(theirs));
        println!(
            "{format}: wasmpod pull {} vs skopeo copy {} (median of {runs}): wasmpod takes {:.2}x skopeo's time",
            ms(ours),
            ms(theirs),
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    }
    Ok(())
}
