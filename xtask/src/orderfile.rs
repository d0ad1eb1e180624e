//! `cargo xtask orderfile` (as root): which of the shim's functions run, written to
//! `crates/shim/text.order` for the linker, which then puts them side by side
//! (`crates/shim/build.rs`).
//!
//! Why: a shim's code is shared with every other shim through the page cache, but each
//! process maps what it runs, and the kernel maps 64 KiB around every page it faults in.
//! Linked in crate order, the functions a shim runs are spread over 28 MB of text, and a
//! node-grouped shim ended up with 11.5 MiB of it resident — the most of what it costs.
//! Packed together, what a shim runs is a few MiB.
//!
//! How: the workspace is built once more with every function on a page of its own
//! (`-C llvm-args=-align-all-functions=12`, which leaves the symbols' names as they are),
//! and that shim is copied onto a small ext4 on a loop device with read-ahead off, so a
//! page of it enters the page cache only when some process runs code on it. A private
//! containerd then runs the e2e checks of what users do all day — `ctr run`, services,
//! stdin, kill, pod sandboxes, metrics, pods through the CRI, node grouping, HTTP — twice:
//! the first round compiles each program into the precompile cache; in the second, warm
//! one, the file's cache is dropped before each check and read after it. The order is the
//! functions the warm round ran — those more checks ran first (a shim's start, Create,
//! Start and exit before one check's own paths), then by address — and then those only
//! the first round ran (the compiler's). Functions not aligned (the standard library's, C
//! code) count when a page they are on was cached.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::e2e::{self, Binaries, Check, Containerd};
use crate::sys::{cached_pages, evict, PAGE};
use crate::util::{is_root, output_ok, root, run as sh, target_dir};

/// The checks run twice: the paths a container takes every day, not their failures.
const CHECKS: &[(&str, Check)] = &[
    (
        "output-and-exit-codes",
        e2e::basic::check_output_and_exit_codes,
    ),
    ("sleepers", sleepers),
    ("env", e2e::basic::check_env),
    ("bind-mounts", e2e::basic::check_bind_mounts),
    ("stdin", e2e::basic::check_stdin),
    ("kill", e2e::basic::check_kill),
    ("pod-sandbox", e2e::basic::check_pod_sandbox),
    ("events-and-metrics", e2e::basic::check_events_and_metrics),
    ("process-level", e2e::isolation::check_process_level),
    ("pod-run", e2e::cri::check_pod_run),
    ("pod-two-containers", e2e::cri::check_pod_two_containers),
    ("pod-node-grouping", e2e::cri::check_pod_node_grouping),
    ("http-serve", e2e::http::check_http_serve),
    ("pod-http", e2e::http::check_pod_http),
];

/// Long-running containers, as services are: a few with a shim each and a few in one
/// node-grouped shim, started detached, then stopped.
fn sleepers(env: &Containerd) -> anyhow::Result<()> {
    for i in 0..3 {
        env.run_detached(&format!("alone-{i}"), &[], &["sleep", "600000"])?;
        env.run_detached(
            &format!("grouped-{i}"),
            &["--annotation", "wasmpod.io/grouping=node"],
            &["sleep", "600000"],
        )?;
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// Where the order goes.
pub(crate) fn order_file() -> PathBuf {
    root().join("crates/shim/text.order")
}

pub(crate) fn run(_args: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the orderfile task mounts a loop device and starts containerd: run it as root");
    }
    crate::util::require_wasm_toolchain()?;
    let bins = build_aligned()?;
    let work = std::env::temp_dir().join(format!("wasmpod-orderfile-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = (|| {
        let disk = LoopFs::mount(&work.join("disk.img"), &work.join("mnt"))?;
        let shim = disk.dir.join("containerd-shim-wasm-v1");
        fs::copy(&bins.shim, &shim)?;
        evict(&shim)?;
        let bins = Binaries { shim, ..bins };
        let (first, warm) = profile(&bins)?;
        write_order(&bins.shim, &first, &warm)
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

/// The workspace's binaries, built as the bench builds them, every function page-aligned.
fn build_aligned() -> anyhow::Result<Binaries> {
    let target = target_dir().join("orderfile");
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    flags.push_str(" -C llvm-args=-align-all-functions=12");
    sh(e2e::build_command()
        .arg("--release")
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", flags.trim()))?;
    Ok(Binaries::in_dir(&target.join("release")))
}

/// What the checks read of `bins.shim`, page by page: the first round's pages (which
/// include the compiler's), and for each check of the warm round its own.
fn profile(bins: &Binaries) -> anyhow::Result<(Vec<bool>, Vec<Vec<bool>>)> {
    let env = Containerd::start(bins)?;
    env.prepare_image()?;
    e2e::cri::import_pause_image(&env)?;
    let check = |round: &str, name: &str, f: &Check| -> anyhow::Result<()> {
        let started = Instant::now();
        f(&env).with_context(|| format!("{round} round: e2e check {name}"))?;
        env.clean_namespace();
        eprintln!(
            "orderfile {round} round: {name} ({:.1?})",
            started.elapsed()
        );
        Ok(())
    };
    for (name, f) in CHECKS {
        check("first", name, f)?;
    }
    let first = cached_pages(&bins.shim)?;
    let mut warm = Vec::new();
    for (name, f) in CHECKS {
        drop_cache(&bins.shim)?;
        check("warm", name, f)?;
        warm.push(cached_pages(&bins.shim)?);
    }
    Ok((first, warm))
}

/// Drops every page of `shim` from the page cache: possible once no shim maps it, which
/// each does until its containers are gone (a node-grouped one, its last).
fn drop_cache(shim: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        evict(shim)?;
        let left = cached_pages(shim)?.iter().filter(|c| **c).count();
        if left == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{left} pages of {} stay cached 30 s after the check: a shim still runs",
            shim.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The functions on cached pages, written to [`order_file`]: those of the warm round
/// first, the ones more checks ran before the others, then the first round's others.
fn write_order(shim: &Path, first: &[bool], warm: &[Vec<bool>]) -> anyhow::Result<()> {
    let data = fs::read(shim)?;
    let elf = object::File::parse(&*data).context("reading the shim's symbols")?;
    // A symbol's file offset: through the segment that maps its address.
    let segments: Vec<(u64, u64, u64)> = elf
        .segments()
        .map(|s| (s.address(), s.size(), s.file_range().0))
        .collect();
    let offset = |addr: u64| {
        segments
            .iter()
            .find(|(a, size, _)| (*a..a + size).contains(&addr))
            .map(|(a, _, off)| addr - a + off)
    };
    let ran = |pages: &[bool], start: u64, size: u64| {
        let first_page = start / PAGE;
        let last_page = (start + size.max(1) - 1) / PAGE;
        (first_page..=last_page).any(|p| pages.get(p as usize).copied().unwrap_or(false))
    };
    // (how many checks ran it, negated to sort first; address; name)
    let mut hot = Vec::new();
    let mut compile = Vec::new();
    let (mut hot_bytes, mut compile_bytes) = (0, 0);
    for sym in elf.symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let (Ok(name), Some(start)) = (sym.name(), offset(sym.address())) else {
            continue;
        };
        let checks = warm.iter().filter(|w| ran(w, start, sym.size())).count();
        if checks > 0 {
            hot.push((std::cmp::Reverse(checks), sym.address(), name));
            hot_bytes += sym.size();
        } else if ran(first, start, sym.size()) {
            compile.push((std::cmp::Reverse(0), sym.address(), name));
            compile_bytes += sym.size();
        }
    }
    hot.sort_unstable();
    compile.sort_unstable();
    let mut seen = BTreeSet::new();
    let mut text = String::new();
    for (_, _, name) in hot.iter().chain(&compile) {
        if seen.insert(*name) {
            text.push_str(name);
            text.push('\n');
        }
    }
    let path = order_file();
    fs::write(&path, text)?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{}: {} functions the warm round ran ({:.2} MiB), then {} only the first round ran \
         ({:.2} MiB)",
        path.display(),
        hot.len(),
        mib(hot_bytes),
        compile.len(),
        mib(compile_bytes),
    );
    let all_warm: Vec<bool> = (0..first.len())
        .map(|p| warm.iter().any(|w| w.get(p).copied().unwrap_or(false)))
        .collect();
    // What else of the file the warm round read, section by section.
    for section in elf.sections() {
        let (Some((start, size)), Ok(name)) = (section.file_range(), section.name()) else {
            continue;
        };
        if size < 64 * 1024 {
            continue;
        }
        let pages = (start / PAGE..(start + size).div_ceil(PAGE))
            .filter(|p| all_warm.get(*p as usize).copied().unwrap_or(false))
            .count() as u64;
        println!(
            "  {name:<20} {:>8.2} MiB, of which {:.2} MiB read by the warm round",
            mib(size),
            mib(pages * PAGE)
        );
    }
    Ok(())
}

/// An ext4 on a loop device with read-ahead off, unmounted and detached on drop.
struct LoopFs {
    dir: PathBuf,
    device: String,
}

impl LoopFs {
    fn mount(image: &Path, dir: &Path) -> anyhow::Result<Self> {
        // The aligned shim is about ten times the size of the real one.
        fs::File::create(image)?.set_len(2 << 30)?;
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))?;
        let device = output_ok(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(image),
        )?
        .trim()
        .to_owned();
        let mounted = Self {
            dir: dir.to_owned(),
            device,
        };
        let name = mounted
            .device
            .rsplit('/')
            .next()
            .context("losetup printed no device")?;
        fs::write(format!("/sys/block/{name}/queue/read_ahead_kb"), "0")
            .with_context(|| format!("turning read-ahead off on {}", mounted.device))?;
        fs::create_dir_all(dir)?;
        sh(Command::new("mount").arg(&mounted.device).arg(dir))?;
        Ok(mounted)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.dir).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// How many of [`order_file`]'s functions `shim` has, of how many: a dependency bumped
/// since the list was made renames some, which the linker then leaves where they were.
pub(crate) fn coverage(shim: &Path) -> anyhow::Result<(usize, usize)> {
    let order = fs::read_to_string(order_file())?;
    let data = fs::read(shim)?;
    let elf = object::File::parse(&*data).context("reading the shim's symbols")?;
    let names: BTreeSet<&str> = elf.symbols().filter_map(|s| s.name().ok()).collect();
    let listed: BTreeSet<&str> = order.lines().collect();
    Ok((
        listed.iter().filter(|n| names.contains(*n)).count(),
        listed.len(),
    ))
}
