//! `cargo xtask bench http`: requests per second and latency of the hello handler
//! (`tests/fixtures/http_hello.c`) served by `wasmpod run --listen` against `wasmtime serve`
//! (wasmtime-cli, the same wasmtime release), the same component, with `wrk` at the same
//! concurrency. Both servers get the same cores; wrk runs beside them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::util::have;

/// What one wrk run reported.
struct Load {
    rps: f64,
    p50: String,
    p99: String,
    errors: String,
}

/// Finds wasmtime: `$WASMTIME`, `PATH`, or where `cargo install --root` put it here.
fn wasmtime() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WASMTIME") {
        return Some(PathBuf::from(p));
    }
    if have("wasmtime") {
        return Some(PathBuf::from("wasmtime"));
    }
    let cached = PathBuf::from("/var/cache/wasmtime-cli/bin/wasmtime");
    cached.exists().then_some(cached)
}

fn wait_listening(addr: &str, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited ({status}) before listening on {addr}");
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn wrk(url: &str, connections: u32, seconds: u32) -> anyhow::Result<Load> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("wrk output: {text}"))?;
    let percentile = |p: &str| {
        field(p)
            .and_then(|v| v.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default()
    };
    Ok(Load {
        rps,
        p50: percentile("50%"),
        p99: percentile("99%"),
        errors: field("Non-2xx or 3xx responses:")
            .or_else(|| field("Socket errors:"))
            .unwrap_or_else(|| "none".into()),
    })
}

/// Serves `component` with `command` on `addr`, loads it, stops it.
fn measure(
    name: &str,
    mut command: Command,
    addr: &str,
    connections: u32,
    seconds: u32,
) -> anyhow::Result<Load> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let result = (|| {
        wait_listening(addr, &mut child)?;
        // Warm-up: the first requests compile nothing (both load precompiled code) but
        // fill the pools and caches.
        wrk(&format!("http://{addr}/warm"), connections, 2)?;
        wrk(&format!("http://{addr}/bench"), connections, seconds)
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    result
}

pub(crate) fn run(wasmpod: &Path, out: &Path, args: &[String]) -> anyhow::Result<()> {
    println!("\n== HTTP: the hello handler, wasmpod run --listen against wasmtime serve (wrk)");
    if !have("wrk") {
        println!("skipped: needs wrk (apt-get install wrk)");
        return Ok(());
    }
    let Some(wasmtime) = wasmtime() else {
        println!(
            "skipped: needs wasmtime 48 (cargo install wasmtime-cli@48.0.8 --locked, or set WASMTIME)"
        );
        return Ok(());
    };
    let number = |flag: &str, default: u32| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let connections = number("--connections", 50);
    let seconds = number("--seconds", 10);
    let component = crate::util::build_http_component("http_hello", out)?;
    let version = crate::util::output_ok(Command::new(&wasmtime).arg("--version"))?;
    let root_dir = out.join("wasmpod-http-root");
    let mut ours = Command::new(wasmpod);
    ours.arg("--root")
        .arg(&root_dir)
        .args(["run", "--listen", "127.0.0.1:18181"])
        .arg(&component);
    let mut theirs = Command::new(&wasmtime);
    theirs
        .args(["serve", "--addr", "127.0.0.1:18182"])
        .arg(&component);
    println!(
        "hello handler ({} bytes), wrk -t2 -c{connections} -d{seconds}s after a 2 s warm-up; {}",
        std::fs::metadata(&component)?.len(),
        version.trim()
    );
    let a = measure("wasmpod", ours, "127.0.0.1:18181", connections, seconds)?;
    let b = measure(
        "wasmtime serve",
        theirs,
        "127.0.0.1:18182",
        connections,
        seconds,
    )?;
    for (name, l) in [("wasmpod run --listen", &a), ("wasmtime serve", &b)] {
        println!(
            "  {name:<22} {:>9.0} req/s   p50 {:>8}   p99 {:>8}   errors: {}",
            l.rps, l.p50, l.p99, l.errors
        );
    }
    println!("  wasmpod/wasmtime throughput: {:.2}x", a.rps / b.rps);
    Ok(())
}
