//! `cargo xtask bench trace`: what OpenTelemetry costs the start path. `ctr run --rm` of a
//! hello world under a private containerd 2.x, in blocks with tracing off and on (containerd
//! and its shims exporting over OTLP/gRPC to a receiver on loopback, as a node with tracing
//! turned on runs), off and on again, so that drift shows; the shim's own phases each time.
//! With `$WASMPOD_BENCH_BASELINE_SHIM` naming an earlier build of the shim, blocks of it
//! come first in each round: today's start path against that one's.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use test_support::otlp::Receiver;

use super::{median, ms};
use crate::e2e::{build_binaries_in, compile_fixture, Containerd, RUNTIME};

const HELLO: &str = "localhost/wasmpod-bench/hello:v1";
/// Runs per block; two blocks each way.
const RUNS: usize = 15;

pub(crate) fn run() -> anyhow::Result<()> {
    println!("\n== tracing: ctr run --rm with OpenTelemetry off and on");
    if !crate::util::is_root() {
        bail!("the tracing bench starts containerd: run it as root");
    }
    let bins = build_binaries_in("release", &["--release"])?;
    let env = Containerd::start(&bins)?;
    println!("containerd {}", env.version()?.trim());
    let hello = env.dir.join("hello.wasm");
    compile_fixture("hello", &hello)?;
    env.import(&hello, HELLO, "compat")?;
    let receiver = Receiver::start().context("starting the OTLP receiver")?;
    let endpoint = receiver.grpc_endpoint();
    let on = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ];
    let run_once = |id: &str| -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let out = env.ctr(&["run", "--rm", "--runtime", RUNTIME, HELLO, id])?;
        let took = t0.elapsed();
        ensure!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ello"),
            "ctr run {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    };
    let baseline = std::env::var_os("WASMPOD_BENCH_BASELINE_SHIM").map(std::path::PathBuf::from);
    let mut blocks: Vec<(&str, bool, bool)> = Vec::new();
    for round in [["before", "off", "on"], ["before2", "off2", "on2"]] {
        if baseline.is_some() {
            blocks.push((round[0], false, true));
        }
        blocks.push((round[1], false, false));
        blocks.push((round[2], true, false));
    }
    // containerd finds the shim through this link, read at each start.
    let link = env.dir.join("bin/containerd-shim-wasm-v1");
    let mut rows = Vec::new();
    for (name, traced, earlier) in blocks {
        let shim = match (&baseline, earlier) {
            (Some(b), true) => b.clone(),
            _ => bins.shim.clone(),
        };
        std::fs::remove_file(&link)?;
        std::os::unix::fs::symlink(&shim, &link)?;
        env.restart_with_env(if traced { &on[..] } else { &[] })?;
        // The first run after a restart warms containerd and the compile cache.
        run_once(&format!("warm-{name}"))?;
        let spans_before = receiver.spans().len();
        let samples = (0..RUNS)
            .map(|i| run_once(&format!("{name}-{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // containerd exports every 5 s: wait for the block's last spans.
        let received = if traced {
            let want = spans_before + RUNS * 10;
            receiver
                .wait_for(Duration::from_secs(10), |s| s.len() >= want)
                .len()
                - spans_before
        } else {
            0
        };
        rows.push((name, traced, median(samples), received));
    }
    std::fs::remove_file(&link)?;
    std::os::unix::fs::symlink(&bins.shim, &link)?;
    env.restart_with_env(&[])?;
    if let Some(b) = &baseline {
        println!("before: {}", b.display());
    }
    println!("| shim, tracing | ctr run --rm, median of {RUNS} | spans received per run |");
    println!("|---|---|---|");
    for (name, traced, m, received) in &rows {
        let spans = if *traced {
            format!("{:.1}", *received as f64 / RUNS as f64)
        } else {
            "—".to_owned()
        };
        println!("| {name} | {} | {spans} |", ms(*m));
    }
    for (name, _, m, _) in &rows {
        println!("\nthe shim's start path, {name} (median of {RUNS}; WASMPOD_TIMINGS):");
        super::breakdown::print(&env.timings(), &format!("{name}-"), *m)?;
    }
    Ok(())
}
