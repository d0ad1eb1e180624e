//! The process isolation level under `ctr`: a child process per container, confined and
//! limited by its cgroup, with cgroup stats, forwarded signals and OOM events.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use super::{cgroup_file, proc_status, Containerd, NAMESPACE, RUNTIME};

/// The annotation that asks for the process level.
const PROCESS: &str = "wasmpod.io/isolation=process";

/// The namespace `/proc/PID/ns/KIND` links to (`net:[4026531840]`).
fn namespace(pid: u32, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// `ctr task metrics ID` as `name → value`.
pub(crate) fn metrics(
    env: &Containerd,
    id: &str,
) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let text = env.ctr_ok(&["task", "metrics", id])?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.parse().ok()?))
        })
        .collect())
}

fn read_u64(path: &std::path::Path) -> anyhow::Result<u64> {
    let text = fs::read_to_string(path).with_context(|| path.display().to_string())?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: {text:?}", path.display()))
}

pub(crate) fn check_process_level(env: &Containerd) -> anyhow::Result<()> {
    let annotate = ["--annotation", PROCESS];
    let (code, out, err) = env.run_wasm("p-args", &annotate, &["args", "hello"])?;
    ensure!(
        code == 0 && out.contains("arg[2]=hello"),
        "exit {code}: {out:?} {err}"
    );
    let (code, _, err) = env.run_wasm("p-exit7", &annotate, &["exit", "7"])?;
    ensure!(code == 7, "proc_exit(7) gave {code}: {err}");

    // A sleeping guest: its own process, child of the one shim, confined.
    env.run_detached("p-sleep", &annotate, &["sleep", "600000"])?;
    let (pid, _) = env.task("p-sleep")?.context("p-sleep has no task")?;
    let shims = env.shims();
    ensure!(
        shims.len() == 1 && pid != shims[0],
        "task pid {pid} should be a child, not the shim {shims:?}"
    );
    let ppid: u32 = proc_status(pid, "PPid").parse().unwrap_or(0);
    ensure!(
        ppid == shims[0],
        "the child's parent is {ppid}, not the shim"
    );
    // The child confines itself before the guest's first instruction, which may be just
    // after the task is reported running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_status(pid, "NoNewPrivs") != "1" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(
        proc_status(pid, "NoNewPrivs") == "1",
        "no_new_privs is not set"
    );
    // containerd's default spec grants 14 capabilities, not CAP_SYS_ADMIN (bit 21).
    let bounding = u64::from_str_radix(&proc_status(pid, "CapBnd"), 16).unwrap_or(u64::MAX);
    ensure!(
        bounding & (1 << 21) == 0 && bounding.count_ones() <= 14,
        "bounding set {bounding:#x} is wider than the spec's"
    );
    for kind in ["mnt", "net"] {
        ensure!(
            namespace(pid, kind) != namespace(shims[0], kind),
            "the child shares the shim's {kind} namespace"
        );
    }
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let want = format!("/{NAMESPACE}/p-sleep");
    ensure!(
        cgroups
            .lines()
            .any(|l| l.contains("memory") && l.ends_with(&want))
            || cgroups
                .lines()
                .any(|l| l.starts_with("0::") && l.ends_with(&want)),
        "not in cgroup {want}: {cgroups}"
    );
    // Stats are the cgroup's: what its files say.
    let m = metrics(env, "p-sleep")?;
    let usage = read_u64(&cgroup_file("memory", "p-sleep", "memory.usage_in_bytes"))?;
    let reported = m.get("memory.usage_in_bytes").copied().unwrap_or(0);
    ensure!(
        reported > 0 && reported.abs_diff(usage) < 1 << 20,
        "metrics say {reported} bytes, the cgroup {usage}: {m:?}"
    );
    let pids = read_u64(&cgroup_file("pids", "p-sleep", "pids.current"))?;
    ensure!(
        m.get("pids.current") == Some(&pids),
        "pids.current {pids} vs metrics {m:?}"
    );
    eprintln!(
        "  child {pid} of shim {}: no_new_privs, CapBnd {bounding:#x}, own mnt+net ns; \
         {:.1} MiB, {pids} tasks in its cgroup",
        shims[0],
        usage as f64 / (1 << 20) as f64
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "p-sleep"])?;
    env.wait_status("p-sleep", "STOPPED", Duration::from_secs(5))?;
    env.ctr_ok(&["task", "rm", "p-sleep"])?;
    ensure!(
        !cgroup_file("memory", "p-sleep", "").exists(),
        "the cgroup outlived the task"
    );
    env.ctr_ok(&["container", "rm", "p-sleep"])?;

    // Signals reach the child's guest, even while it spins.
    for (signal, expected) in [("SIGTERM", 143), ("SIGKILL", 137)] {
        let id = format!("p-spin-{}", signal.to_lowercase());
        let took = super::kill_spinning(env, &id, &["--annotation", PROCESS], signal, expected)?;
        eprintln!("  {signal}: spinning child stopped in {took:.0?}, exit {expected}");
    }
    Ok(())
}

pub(crate) fn check_process_oom(env: &Containerd) -> anyhow::Result<()> {
    let events = env.watch_events()?;
    let limit = (32u64 << 20).to_string();
    let (code, out, err) = env.run_wasm(
        "p-oom",
        &["--annotation", PROCESS, "--memory-limit", &limit],
        &["alloc", "64"],
    )?;
    let seen = events.finish()?;
    ensure!(
        code == 137 && !out.contains("allocated"),
        "a 32 MiB cgroup let the guest go on (exit {code}): {out:?} {err:?}"
    );
    ensure!(
        seen.lines()
            .any(|l| l.contains("/tasks/oom") && l.contains("p-oom")),
        "no /tasks/oom event for p-oom:\n{seen}"
    );
    let (code, out, _) = env.run_wasm(
        "p-mem-ok",
        &[
            "--annotation",
            PROCESS,
            "--memory-limit",
            &(128u64 << 20).to_string(),
        ],
        &["alloc", "64"],
    )?;
    ensure!(
        code == 0 && out.contains("allocated 64 MiB"),
        "128 MiB: {code} {out:?}"
    );
    Ok(())
}

/// A spinning guest under a CFS quota of 0.2 CPU uses 0.2 CPU (±30%) in both levels:
/// measured over three seconds through `ctr task metrics` (`cpuacct.usage`), which the
/// process level reads from its cgroup and the shared level from the engine's CPU meter.
pub(crate) fn check_cpu_quota(env: &Containerd) -> anyhow::Result<()> {
    for level in ["shared", "process"] {
        let id = format!("cpu-{level}");
        let annotation = format!("wasmpod.io/isolation={level}");
        env.run_detached(
            &id,
            &[
                "--annotation",
                &annotation,
                "--cpu-quota",
                "20000",
                "--cpu-period",
                "100000",
            ],
            &["spin"],
        )?;
        std::thread::sleep(Duration::from_millis(500));
        let usage = |m: &std::collections::HashMap<String, u64>| {
            m.get("cpuacct.usage").copied().unwrap_or(0)
        };
        let (t0, u0) = (Instant::now(), usage(&metrics(env, &id)?));
        std::thread::sleep(Duration::from_secs(3));
        let (t1, u1) = (Instant::now(), usage(&metrics(env, &id)?));
        let share = (u1.saturating_sub(u0)) as f64 / (t1 - t0).as_nanos() as f64;
        env.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id])?;
        ensure!(
            (0.14..=0.26).contains(&share),
            "{level} level: a 0.2 CPU quota gave a share of {share:.3}"
        );
        eprintln!("  {level} level, 0.2 CPU quota: measured {share:.3} CPU over 3 s");
    }
    Ok(())
}

/// Programs using the proposals wasmtime enables by default — exceptions, shared memory
/// and atomics, GC with a tail call (`tests/fixtures/features/`) — run under `ctr run` at
/// both isolation levels, each exiting with the value it computed.
pub(crate) fn check_wasm_features(env: &Containerd) -> anyhow::Result<()> {
    let fixtures = crate::util::root().join("tests/fixtures/features");
    let mount = format!(
        "type=bind,src={},dst=/features,options=rbind:ro",
        fixtures.display()
    );
    for (level, flags) in [
        ("shared", &[][..]),
        ("process", &["--annotation", PROCESS][..]),
    ] {
        for (file, code) in [("exceptions.wat", 42), ("atomics.wat", 43), ("gc.wat", 44)] {
            let id = format!("feature-{level}-{}", file.trim_end_matches(".wat"));
            let entrypoint = format!("/features/{file}");
            let mut args = vec!["run", "--rm", "--runtime", RUNTIME, "--mount", &mount];
            args.extend_from_slice(flags);
            args.extend_from_slice(&[super::IMAGE, &id, &entrypoint]);
            let out = env.ctr(&args)?;
            ensure!(
                out.status.code() == Some(code),
                "{file} at the {level} level: exit {:?}, not {code}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    eprintln!("  exceptions, atomics and GC fixtures ran at both levels");
    Ok(())
}
