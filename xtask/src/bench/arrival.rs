//! `cargo xtask bench arrival`: the first `ctr run --rm` of a large module (over 5 MB of
//! code) under a private containerd (2.x from Debian sid) — compiled in Create (no agent), after the node's
//! precompile agent compiled it on import, started at once after the import (Create waits
//! for the agent's compile), and warm.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::{median, ms};
use crate::e2e::precompile::{compiles_of, Agent};
use crate::e2e::{build_binaries_in, Containerd, NAMESPACE, RUNTIME};

/// Functions in the module: about 90 bytes of code each.
const FUNCTIONS: usize = 60_000;
const WARM_RUNS: usize = 5;

pub(crate) fn run() -> anyhow::Result<()> {
    println!(
        "\n== containerd: first start of a large module, with and without the precompile agent"
    );
    if !crate::util::is_root() {
        bail!("the arrival bench starts containerd: run it as root");
    }
    let bins = build_binaries_in("release", &["--release"])?;
    let env = Containerd::start(&bins)?;
    println!("containerd {}", env.version()?.trim());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    // Copies of one program, each new to the cache (a nonce in a global).
    let image = |n: u128| -> anyhow::Result<(String, usize)> {
        let wat = env.dir.join(format!("big-{n}.wat"));
        fs::write(&wat, crate::e2e::faults::slow_module(FUNCTIONS, nonce + n))?;
        let size = wat::parse_file(&wat)?.len();
        let name = format!("localhost/wasmpod-bench/big-{n}:v1");
        env.import(&wat, &name, "compat")?;
        Ok((name, size))
    };
    let (cold, size) = image(0)?;
    let run = |image: &str, id: &str| -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let out = env.ctr(&["run", "--rm", "--runtime", RUNTIME, image, id])?;
        let took = t0.elapsed();
        ensure!(
            out.status.success(),
            "ctr run {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    };
    println!(
        "module: {:.1} MB of wasm, {FUNCTIONS} functions",
        size as f64 / 1e6
    );

    let cold_time = run(&cold, "big-cold")?;
    ensure!(
        !compiles_of(&env, "big-cold")?.is_empty(),
        "the cold run did not compile"
    );

    // The agent watches; an import arrives; the first run comes once it is compiled.
    let agent = Agent::start(&env, &["-namespace", NAMESPACE])?;
    let (fresh, _) = image(1)?;
    let compiled_after = agent.wait_for(&fresh, "precompiled", Duration::from_secs(600))?;
    let arrived_time = run(&fresh, "big-arrived")?;
    ensure!(
        compiles_of(&env, "big-arrived")?.is_empty(),
        "the run after the agent's compile compiled again"
    );

    // Started as soon as the import returns: Create waits for the agent's compile.
    let (again, _) = image(2)?;
    let at_once_time = run(&again, "big-at-once")?;
    let at_once_compiled = !compiles_of(&env, "big-at-once")?.is_empty();

    let warm: Vec<Duration> = (0..WARM_RUNS)
        .map(|i| run(&fresh, &format!("big-warm-{i}")))
        .collect::<anyhow::Result<_>>()?;
    let warm = median(warm);
    drop(agent);
    let x = |d: Duration| format!("{:.2}×", d.as_secs_f64() / warm.as_secs_f64());
    println!("| first ctr run --rm after ctr image import | time | × warm |");
    println!("|---|---|---|");
    println!(
        "| no agent: compiled inside Create | {} | {} |",
        ms(cold_time),
        x(cold_time)
    );
    println!(
        "| agent: compiled on arrival ({} after the import), then run | {} | {} |",
        ms(compiled_after),
        ms(arrived_time),
        x(arrived_time)
    );
    println!(
        "| agent: run at once after the import ({}) | {} | {} |",
        if at_once_compiled {
            "the shim compiled it: the agent had not begun"
        } else {
            "Create waited for the agent's compile"
        },
        ms(at_once_time),
        x(at_once_time)
    );
    println!("| warm (median of {WARM_RUNS}) | {} | 1.00× |", ms(warm));
    Ok(())
}
