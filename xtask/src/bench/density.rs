//! `cargo xtask bench density [N...] [shared|process|runwasi|runc|per-container]`: N
//! sleeping containers at once — ours with a shim per container (as a shim per pod under
//! Kubernetes) and node-grouped in each isolation level, and for comparison runwasi's
//! wasmtime shim and runc busybox `sleep` — all in one private containerd:
//! start latency per container, and memory per container (PSS and RSS of the shim
//! processes and everything under them, plus containerd's own growth).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::anchors::{install_runwasi, RUNWASI};
use super::shim::{busybox_image, BUSYBOX};
use crate::e2e::{build_binaries_in, Containerd, IMAGE, NAMESPACE, RUNTIME};

/// runc's runtime type.
const BUSYBOX_RUNTIME: &str = "io.containerd.runc.v2";

/// The N of the issue: as far as the machine allows.
const DEFAULT_COUNTS: [usize; 3] = [50, 200, 500];

/// One way to run N sleeping containers.
struct Setup {
    name: &'static str,
    runtime: &'static str,
    image: &'static str,
    flags: &'static [&'static str],
    args: &'static [&'static str],
}

const SETUPS: [Setup; 5] = [
    Setup {
        name: "wasm shared (a shim per container)",
        runtime: RUNTIME,
        image: IMAGE,
        flags: &[],
        args: &["/probe.wasm", "sleep", "3600000"],
    },
    Setup {
        name: "runwasi wasmtime (a shim per container)",
        runtime: RUNWASI,
        image: IMAGE,
        flags: &[],
        args: &["/probe.wasm", "sleep", "3600000"],
    },
    Setup {
        name: "wasm shared (one shim per node)",
        runtime: RUNTIME,
        image: IMAGE,
        flags: &["--annotation", "wasmpod.io/grouping=node"],
        args: &["/probe.wasm", "sleep", "3600000"],
    },
    Setup {
        name: "wasm process (one shim per node)",
        runtime: RUNTIME,
        image: IMAGE,
        flags: &[
            "--annotation",
            "wasmpod.io/grouping=node",
            "--annotation",
            "wasmpod.io/isolation=process",
        ],
        args: &["/probe.wasm", "sleep", "3600000"],
    },
    Setup {
        name: "runc busybox sleep",
        runtime: BUSYBOX_RUNTIME,
        image: BUSYBOX,
        flags: &[],
        args: &["/bin/sleep", "3600"],
    },
];

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    println!("\n== density: N sleeping containers at once");
    if !crate::util::is_root() {
        bail!("the density bench starts containerd: run it as root");
    }
    let counts: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    // `shared`, `process`, `runwasi`, `runc` or `per-container` among the arguments pick
    // setups; none: all.
    let picked = |setup: &Setup| {
        let named: Vec<String> = args
            .iter()
            .filter(|a| ["shared", "process", "runc", "runwasi"].contains(&a.as_str()))
            .cloned()
            .chain(
                args.iter()
                    .any(|a| a == "per-container")
                    .then(|| "per container".to_owned()),
            )
            .collect();
        named.is_empty() || named.iter().any(|n| setup.name.contains(n.as_str()))
    };
    let counts = if counts.is_empty() {
        DEFAULT_COUNTS.to_vec()
    } else {
        counts
    };
    let bins = build_binaries_in("release", &["--release"])?;
    // The shim's memory is mostly the code it runs, packed by the order the linker had.
    match crate::orderfile::coverage(&bins.shim) {
        Ok((found, listed)) => println!(
            "text order: {found} of the {listed} functions of crates/shim/text.order are in \
             this shim (`cargo xtask orderfile` makes the list anew)"
        ),
        Err(e) => println!("text order: none ({e:#})"),
    }
    let env = Containerd::start(&bins)?;
    env.prepare_image()?;
    let runc = busybox_image(&env, NAMESPACE);
    if let Err(e) = &runc {
        println!("runc comparison skipped: {e:#}");
    }
    let runwasi = install_runwasi(&env);
    if let Err(e) = &runwasi {
        println!("runwasi comparison skipped: {e:#}");
    }
    // The probe compiled once into the precompile cache, as for any image after its first run.
    env.run_wasm("warm-cache", &[], &["exit", "0"])?;
    println!(
        "{:<40} {:>5} {:>12} {:>14} {:>14} {:>16} {:>16}",
        "setup",
        "N",
        "start/ctr",
        "PSS/container",
        "RSS/container",
        "containerd +PSS",
        "PSS/one more"
    );
    // Each setup's first (N, PSS): what one more container costs is the growth from there,
    // which a shared shim's own code and base do not dilute.
    let mut first: HashMap<&str, (usize, f64)> = HashMap::new();
    for &n in &counts {
        for setup in SETUPS.iter().filter(|s| picked(s)) {
            if (setup.runtime == BUSYBOX_RUNTIME && runc.is_err())
                || (setup.runtime == RUNWASI && runwasi.is_err())
            {
                continue;
            }
            match measure(&env, setup, n) {
                Ok(m) => {
                    let (n0, pss0) = *first.entry(setup.name).or_insert((n, m.pss));
                    let more = if n > n0 {
                        format!("{:>12.3} MiB", (m.pss - pss0) / (n - n0) as f64)
                    } else {
                        format!("{:>16}", "-")
                    };
                    println!(
                        "{:<40} {:>5} {:>9.1} ms {:>10.3} MiB {:>10.3} MiB {:>12.2} MiB {more}",
                        setup.name,
                        n,
                        m.start.as_secs_f64() * 1e3,
                        m.pss / n as f64,
                        m.rss / n as f64,
                        m.containerd_pss
                    )
                }
                Err(e) => println!("{:<40} {n:>5} failed: {e:#}", setup.name),
            }
        }
    }
    Ok(())
}

struct Measured {
    /// Median wall time of one `ctr run -d` (create + start) while the others run.
    start: Duration,
    /// PSS and RSS in MiB of every shim and its descendants.
    pss: f64,
    rss: f64,
    /// containerd's PSS growth in MiB.
    containerd_pss: f64,
}

fn measure(env: &Containerd, setup: &Setup, n: usize) -> anyhow::Result<Measured> {
    let containerd = env.pid().unwrap_or(0);
    let before = smaps(containerd).0;
    let mut samples = Vec::with_capacity(n);
    let ids: Vec<String> = (0..n).map(|i| format!("dense-{i}")).collect();
    let result = (|| {
        for id in &ids {
            let mut all = vec!["run", "-d", "--runtime", setup.runtime];
            all.extend_from_slice(setup.flags);
            all.push(setup.image);
            all.push(id);
            all.extend_from_slice(setup.args);
            let t0 = Instant::now();
            env.ctr_ok(&all)?;
            samples.push(t0.elapsed());
        }
        // Let every guest reach its sleep and the shims settle.
        std::thread::sleep(Duration::from_secs(2));
        let running = env.ctr_ok(&["task", "ls"])?;
        let count = running.lines().filter(|l| l.contains("RUNNING")).count();
        ensure!(count == n, "{count} of {n} tasks running");
        // Where the memory is, mapping by mapping, for whoever is chasing it.
        let shims = shim_trees(env);
        if let Ok(dir) = std::env::var("WASMPOD_BENCH_SMAPS") {
            for pid in &shims {
                let _ = fs::copy(
                    format!("/proc/{pid}/smaps"),
                    format!("{dir}/{n}-{pid}.smaps"),
                );
            }
        }
        let (pss, rss) = shims
            .into_iter()
            .map(smaps)
            .fold((0.0, 0.0), |(p, r), (p2, r2)| (p + p2, r + r2));
        Ok((pss, rss))
    })();
    let after = smaps(containerd).0;
    remove_all(env, &ids);
    let (pss, rss) = result?;
    Ok(Measured {
        start: super::median(samples),
        pss,
        rss,
        containerd_pss: after - before,
    })
}

/// `(PSS, RSS)` of a process in MiB, from `/proc/PID/smaps_rollup`.
pub(super) fn smaps(pid: u32) -> (f64, f64) {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("Pss:"), field("Rss:"))
}

/// Every shim serving this containerd (wasm or runc) and all their descendants: guests of
/// the process level, runc's container processes.
fn shim_trees(env: &Containerd) -> Vec<u32> {
    let needle = env.dir.join("containerd.sock.ttrpc");
    let needle = needle.to_string_lossy().into_owned();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut roots = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0);
        children.entry(ppid).or_default().push(pid);
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = fs::read(entry.path().join("environ")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("containerd-shim")
            && String::from_utf8_lossy(&environ).contains(&needle)
        {
            roots.push(pid);
        }
    }
    let mut seen = HashSet::new();
    let mut stack = roots;
    while let Some(pid) = stack.pop() {
        if seen.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    seen.into_iter().collect()
}

fn remove_all(env: &Containerd, ids: &[String]) {
    for id in ids {
        let _ = env.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    }
    for id in ids {
        let _ = env.wait_status(id, "STOPPED", Duration::from_secs(10));
        let _ = env.ctr(&["task", "rm", id]);
        let _ = env.ctr(&["container", "rm", id]);
    }
    // Shims exit once their last container is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shim_trees(env).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}
