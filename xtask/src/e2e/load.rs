//! Load: create/start/wait/delete cycles (`ctr run --rm`), several at a time, through the
//! private containerd — and what they leave behind. `cargo xtask e2e load` runs a short
//! pass with bounds on growth; `cargo xtask bench --load` runs 1,000 cycles per runtime
//! and reports cycles per second beside runc's.

use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use super::{fds, Containerd, IMAGE, RUNTIME};

/// What the node holds at one moment: the long-lived processes' descriptors and memory,
/// and what is left in the kernel and on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) containerd_fds: usize,
    pub(crate) containerd_rss_kib: u64,
    /// The shim every container of the run shares (node grouping), if there is one.
    pub(crate) shim_fds: Option<usize>,
    pub(crate) shim_rss_kib: Option<u64>,
    /// Shim processes of any runtime serving this containerd.
    pub(crate) shims: usize,
    pub(crate) mounts: usize,
    /// Snapshots in containerd's metadata (`ctr snapshot ls`), which a container's delete
    /// removes at once; the snapshotter's directories follow at containerd's next garbage
    /// collection, which may come later than any wait here, so they are not counted as
    /// files under root.
    pub(crate) snapshots: usize,
    /// Files and directories under containerd's state and root, and under wasmpod's root
    /// (the precompile cache).
    pub(crate) state_files: Files,
    pub(crate) root_files: Files,
    pub(crate) cache_files: Files,
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "containerd {} fds {:.1} MiB RSS",
            self.containerd_fds,
            self.containerd_rss_kib as f64 / 1024.0
        )?;
        if let (Some(fds), Some(rss)) = (self.shim_fds, self.shim_rss_kib) {
            write!(
                f,
                ", shared shim {fds} fds {:.1} MiB RSS",
                rss as f64 / 1024.0
            )?;
        }
        write!(
            f,
            ", {} shims, {} mounts, {} snapshots, files: state {} root {} cache {}",
            self.shims,
            self.mounts,
            self.snapshots,
            self.state_files.len(),
            self.root_files.len(),
            self.cache_files.len()
        )
    }
}

fn rss_kib(pid: u32) -> u64 {
    super::proc_status(pid, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The overlayfs snapshotter's snapshot directories, under the e2e directory.
const SNAPSHOTS: &str = "root/io.containerd.snapshotter.v1.overlayfs/snapshots";

/// The paths of the files and directories under a directory.
pub(crate) type Files = std::collections::BTreeSet<std::path::PathBuf>;

fn files(dir: &Path) -> Files {
    let mut found = Files::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(files(&e.path()));
        }
        found.insert(e.path());
    }
    found
}

pub(crate) fn snapshot(env: &Containerd, shim: Option<u32>) -> anyhow::Result<Snapshot> {
    let containerd = env.pid().context("containerd pid")?;
    Ok(Snapshot {
        containerd_fds: fds(containerd),
        containerd_rss_kib: rss_kib(containerd),
        shim_fds: shim.map(fds),
        shim_rss_kib: shim.map(rss_kib),
        shims: env.shim_pids("containerd-shim").len(),
        mounts: env.mounts().len(),
        snapshots: env
            .ctr_ok(&["snapshot", "ls"])?
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count(),
        state_files: files(&env.dir.join("state")),
        root_files: files(&env.dir.join("root"))
            .into_iter()
            .filter(|p| !p.starts_with(env.dir.join(SNAPSHOTS)))
            .collect(),
        cache_files: files(&env.dir.join("wasmpod")),
    })
}

/// One kind of container the load runs.
pub(crate) struct Workload<'a> {
    pub(crate) label: &'a str,
    pub(crate) runtime: &'a str,
    pub(crate) flags: &'a [&'a str],
    pub(crate) image: &'a str,
    pub(crate) args: &'a [&'a str],
    /// Failed cycles a pass may have and still be measured (a comparison runtime's own
    /// flakes, reported with the figures): none for ours.
    pub(crate) tolerated_failures: usize,
}

/// The probe under our shim, each container in its own shim (`ctr`'s containers belong
/// to no pod) or all in one (`wasmpod.io/grouping=node`).
pub(crate) const WASM: Workload<'static> = Workload {
    label: "wasm",
    runtime: RUNTIME,
    flags: &[],
    image: IMAGE,
    tolerated_failures: 0,
    args: &["/probe.wasm", "exit", "0"],
};
pub(crate) const NODE_FLAGS: &[&str] = &["--annotation", "wasmpod.io/grouping=node"];

/// Runs `cycles` `ctr run --rm` of `w`, `parallel` at a time; every one must exit 0.
pub(crate) fn cycles(
    env: &Containerd,
    w: &Workload<'_>,
    cycles: usize,
    parallel: usize,
) -> anyhow::Result<(Duration, Vec<String>)> {
    // containerd's handle stays on this thread: the commands are made here.
    let mut commands: Vec<(String, std::process::Command)> = (0..cycles)
        .map(|i| {
            let id = format!("load-{}-{i}", w.label);
            let mut all = vec!["run", "--rm", "--runtime", w.runtime];
            all.extend_from_slice(w.flags);
            all.extend_from_slice(&[w.image, &id]);
            all.extend_from_slice(w.args);
            let cmd = env.ctr_cmd(&all);
            (id, cmd)
        })
        .collect();
    commands.reverse();
    let queue = Mutex::new(commands);
    let failures = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                if failures.lock().unwrap().len() > w.tolerated_failures + 3 {
                    return;
                }
                let Some((id, mut cmd)) = queue.lock().unwrap().pop() else {
                    return;
                };
                match cmd.output() {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => failures.lock().unwrap().push(format!(
                        "{id}: {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                    Err(e) => failures.lock().unwrap().push(format!("{id}: {e}")),
                }
            });
        }
    });
    let took = started.elapsed();
    let failures = failures.into_inner().unwrap();
    ensure!(
        failures.len() <= w.tolerated_failures,
        "cycles failed: {failures:?}"
    );
    Ok((took, failures))
}

/// A detached container that keeps the node-grouped shim alive through the load; its
/// shim's pid.
fn keeper(env: &Containerd, id: &str) -> anyhow::Result<u32> {
    env.run_detached(id, NODE_FLAGS, &["sleep", "600000"])?;
    let (pid, _) = env.task(id)?.context("keeper task")?;
    Ok(pid) // a shared-level task's pid is its shim's
}

/// Settles after a load: exited shims reaped, containerd's housekeeping done.
fn settle() {
    std::thread::sleep(Duration::from_millis(1500));
}

/// How much the long-lived shim's RSS may grow over a pass (containerd's: four times it).
const RSS_SLACK_MIB: u64 = 4;

/// The snapshot after a pass: taken again until nothing is left beyond `before`, for at
/// most 10 s — the last shims of a loaded machine may still be exiting. What remains
/// after that is left behind.
fn settled_snapshot(
    env: &Containerd,
    shim: Option<u32>,
    before: &Snapshot,
) -> anyhow::Result<Snapshot> {
    settle();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = snapshot(env, shim)?;
        if growth(before, &after).is_empty() || Instant::now() > deadline {
            return Ok(after);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A load pass: `n` cycles of each kind, `parallel` at a time, with snapshots around.
pub(crate) struct Pass {
    pub(crate) label: String,
    pub(crate) cycles: usize,
    pub(crate) took: Duration,
    /// The cycles that failed (within the workload's tolerance): what each said.
    pub(crate) failures: Vec<String>,
    pub(crate) before: Snapshot,
    pub(crate) after: Snapshot,
}

impl Pass {
    /// Cycles that succeeded, per second.
    pub(crate) fn per_second(&self) -> f64 {
        (self.cycles - self.failures.len()) as f64 / self.took.as_secs_f64()
    }
}

/// Runs `n` cycles of `w` (after a warm-up of `parallel`), in one node-grouped shim when
/// `node` is set.
pub(crate) fn pass(
    env: &Containerd,
    w: &Workload<'_>,
    node: bool,
    n: usize,
    parallel: usize,
) -> anyhow::Result<Pass> {
    let flags: Vec<&str> = w
        .flags
        .iter()
        .chain(if node { NODE_FLAGS } else { &[] })
        .copied()
        .collect();
    let label = if node {
        format!("{}-node", w.label)
    } else {
        w.label.to_owned()
    };
    let w = Workload {
        label: &label,
        flags: &flags,
        ..*w
    };
    let shim = if node {
        Some(keeper(env, &format!("keeper-{label}"))?)
    } else {
        None
    };
    // Warm-up: the first containers compile, open descriptors containerd keeps, grow
    // the pools that are then reused.
    cycles(env, &w, parallel * 4, parallel)?;
    settle();
    let before = snapshot(env, shim)?;
    let (took, failures) = cycles(env, &w, n, parallel)?;
    let after = settled_snapshot(env, shim, &before)?;
    if node {
        env.kill_and_remove(&format!("keeper-{label}"))?;
    }
    Ok(Pass {
        label,
        cycles: n,
        took,
        failures,
        before,
        after,
    })
}

/// What a pass may leave: nothing on disk, in the kernel or among processes; descriptors
/// back where they were; memory of the long-lived processes within a bound.
pub(crate) fn check_growth(p: &Pass) -> anyhow::Result<()> {
    let left = growth(&p.before, &p.after);
    ensure!(
        left.is_empty(),
        "{} × {} left: {}",
        p.cycles,
        p.label,
        left.join("; ")
    );
    Ok(())
}

/// What `a` holds beyond `b`, in words.
fn growth(b: &Snapshot, a: &Snapshot) -> Vec<String> {
    let mut left = Vec::new();
    if a.mounts != b.mounts {
        left.push(format!("mounts {} -> {}", b.mounts, a.mounts));
    }
    if a.shims != b.shims {
        left.push(format!("shims {} -> {}", b.shims, a.shims));
    }
    if a.snapshots != b.snapshots {
        left.push(format!("snapshots {} -> {}", b.snapshots, a.snapshots));
    }
    for (what, x, y) in [
        ("files under state", &b.state_files, &a.state_files),
        ("files under root", &b.root_files, &a.root_files),
        ("files under the cache", &b.cache_files, &a.cache_files),
    ] {
        if y != x {
            let new: Vec<_> = y.difference(x).take(5).map(|p| p.display()).collect();
            let gone: Vec<_> = x.difference(y).take(5).map(|p| p.display()).collect();
            left.push(format!(
                "{what} {} -> {} (new: {new:?}, gone: {gone:?})",
                x.len(),
                y.len()
            ));
        }
    }
    if a.containerd_fds > b.containerd_fds + 2 {
        left.push(format!(
            "containerd fds {} -> {}",
            b.containerd_fds, a.containerd_fds
        ));
    }
    if let (Some(x), Some(y)) = (b.shim_fds, a.shim_fds) {
        if y > x + 1 {
            left.push(format!("shared shim fds {x} -> {y}"));
        }
    }
    let slack = RSS_SLACK_MIB * 1024;
    if a.containerd_rss_kib > b.containerd_rss_kib + 4 * slack {
        left.push(format!(
            "containerd RSS {} -> {} KiB",
            b.containerd_rss_kib, a.containerd_rss_kib
        ));
    }
    if let (Some(x), Some(y)) = (b.shim_rss_kib, a.shim_rss_kib) {
        if y > x + slack {
            left.push(format!("shared shim RSS {x} -> {y} KiB"));
        }
    }
    left
}

pub(crate) fn report(p: &Pass) {
    eprintln!(
        "  {} × {} (8 at a time): {:.1?}, {:.1} cycles/s\n    before: {}\n    after:  {}",
        p.cycles,
        p.label,
        p.took,
        p.per_second(),
        p.before,
        p.after
    );
}

/// The e2e's short pass: 200 cycles 8 at a time, per-container shims and one shared shim.
pub(crate) fn check_load(env: &Containerd) -> anyhow::Result<()> {
    for node in [false, true] {
        let p = pass(env, &WASM, node, 200, 8)?;
        report(&p);
        check_growth(&p)?;
    }
    Ok(())
}
