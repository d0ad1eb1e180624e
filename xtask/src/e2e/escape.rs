//! `escape`: what a wasmtime bug that hands a guest native code execution would gain at the
//! process level. A shim built with the test-only feature `escape-simulator` (wasm-engine's
//! `src/escape.rs`) runs `tests/fixtures/escape.c`, which asks it to try, in the guest's
//! own process, each thing docs/security.md says that process is refused: every attempt
//! must fail with the kernel's refusal, and the node must be as it was afterwards.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{ensure, Context};

use super::{compile_fixture, proc_status, Containerd, NAMESPACE};
use crate::util::{cargo, run as sh};

/// The string only a binary built with the simulator holds (wasm-engine's
/// `escape::MARKER`).
const MARKER: &[u8] = b"wasmpod-escape-simulator-is-built-in";
const IMAGE: &str = "localhost/wasmpod-e2e/escape:v1";
const PROCESS: &str = "wasmpod.io/isolation=process";
/// The attempts the guest makes, in its order.
const ATTEMPTS: [&str; 12] = [
    "open-shadow",
    "open-neighbour",
    "connect-containerd",
    "exec-shell",
    "ptrace-neighbour",
    "mount",
    "kill-init",
    "write-proc-sys",
    "raw-socket",
    "setuid-root",
    "load-module",
    "user-namespace",
];

/// Whether the file at `path` holds [`MARKER`].
pub(crate) fn has_simulator(path: &Path) -> anyhow::Result<bool> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.windows(MARKER.len()).any(|w| w == MARKER))
}

/// The shim with the simulator, built once (debug, as the e2e's own shim) and copied out of
/// the way: the e2e's shim is then built again without it, as it was.
fn simulator_shim() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    if let Some(path) = BUILT.get() {
        return Ok(path.clone());
    }
    let target = crate::util::target_dir();
    let dir = target.join("escape-simulator");
    fs::create_dir_all(&dir)?;
    let copy = dir.join("containerd-shim-wasm-v1");
    sh(super::build_command().args(["--features", "shim/escape-simulator"]))?;
    fs::copy(target.join("debug/containerd-shim-wasm-v1"), &copy)
        .context("copying the simulator's shim")?;
    sh(&mut super::build_command())?;
    Ok(BUILT.get_or_init(|| copy).clone())
}

pub(crate) fn check_escape(env: &Containerd) -> anyhow::Result<()> {
    if std::env::var_os(super::vm::PREBUILT_ENV).is_some() {
        eprintln!("  skipped: the guest has no cargo to build the simulator's shim");
        return Ok(());
    }
    let sim = simulator_shim()?;
    // The simulator is in its build and in no other: the shim every other check runs, and
    // an optimized or release build, which wasm-engine's build script refuses.
    let shim = std::env::var_os("WASMPOD_E2E_SHIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::util::target_dir().join("debug/containerd-shim-wasm-v1"));
    ensure!(has_simulator(&sim)?, "{} has no simulator", sim.display());
    ensure!(
        !has_simulator(&shim)?,
        "{} (the shim under test) holds the escape simulator",
        shim.display()
    );
    let refused = cargo()
        .args(["check", "--release", "-p", "wasm-engine"])
        .args(["--features", "escape-simulator"])
        .output()?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && stderr.contains("escape-simulator feature is for tests"),
        "a release build with the simulator was not refused: {stderr}"
    );

    // A neighbour: another process-level container, its file and its process.
    env.run_detached(
        "esc-neighbour",
        &["--annotation", PROCESS],
        &["sleep", "600000"],
    )?;
    let (neighbour_pid, _) = env.task("esc-neighbour")?.context("no neighbour task")?;
    let neighbour_file = env
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(NAMESPACE)
        .join("esc-neighbour/rootfs/probe.wasm");
    ensure!(neighbour_file.exists(), "{}", neighbour_file.display());
    let mount_dir = env.dir.join("escape-mount");
    fs::create_dir_all(&mount_dir)?;
    let wasm = env.dir.join("escape.wasm");
    compile_fixture("escape", &wasm)?;
    env.import(&wasm, IMAGE, "compat")?;
    let before = NodeState::read(&mount_dir, neighbour_pid)?;

    let socket = env.socket();
    let sim_arg = sim.to_string_lossy();
    let pid_arg = neighbour_pid.to_string();
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        &sim_arg,
        "--annotation",
        PROCESS,
        IMAGE,
        "esc-process",
        "/escape.wasm",
        &neighbour_file.to_string_lossy(),
        &socket.to_string_lossy(),
        &pid_arg,
        &mount_dir.to_string_lossy(),
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("escape "))
        .collect();
    for line in &lines {
        eprintln!("  process level: {line}");
    }
    for name in ATTEMPTS {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .with_context(|| {
                format!(
                    "no answer to {name}: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        ensure!(line.ends_with(" refused"), "not refused: {line}");
    }
    ensure!(
        out.status.code() == Some(0),
        "the guest exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = NodeState::read(&mount_dir, neighbour_pid)?;
    ensure!(before == after, "the node changed: {before:?} → {after:?}");
    ensure!(
        env.task("esc-neighbour")?
            .is_some_and(|(_, status)| status == "RUNNING"),
        "the neighbour is no longer running"
    );
    env.kill_and_remove("esc-neighbour")
}

/// What an attempt that got through would have changed on the node.
#[derive(Debug, PartialEq, Eq)]
struct NodeState {
    swappiness: String,
    mounted: bool,
    neighbour_tracer: String,
    shadow: Option<std::time::SystemTime>,
}

impl NodeState {
    fn read(mount_dir: &Path, neighbour: u32) -> anyhow::Result<Self> {
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        let dir = mount_dir.to_string_lossy();
        Ok(Self {
            swappiness: fs::read_to_string("/proc/sys/vm/swappiness")?,
            mounted: mounts
                .lines()
                .any(|l| l.split_whitespace().nth(4) == Some(&dir)),
            neighbour_tracer: proc_status(neighbour, "TracerPid"),
            shadow: fs::metadata("/etc/shadow").and_then(|m| m.modified()).ok(),
        })
    }
}
