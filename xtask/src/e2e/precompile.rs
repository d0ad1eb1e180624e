//! The node's precompile agent (`containerd-shim-wasm-v1 precompile`) under containerd: a
//! wasm image is compiled as it arrives, so its first container finds it compiled.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use super::{Containerd, Flavor, NAMESPACE, RUNTIME};

/// A running agent on `env`'s containerd, logging to `log`; killed on drop.
pub(crate) struct Agent {
    child: Child,
    pub(crate) log: PathBuf,
}

impl Agent {
    /// The shim that `env`'s containerd runs.
    fn shim(env: &Containerd) -> PathBuf {
        env.dir.join("bin/containerd-shim-wasm-v1")
    }

    /// `containerd-shim-wasm-v1 precompile` against `env`, on the shims' cache, with
    /// `flags`; returns once it watches containerd.
    pub(crate) fn start(env: &Containerd, flags: &[&str]) -> anyhow::Result<Self> {
        let log = env.dir.join("precompile-agent.log");
        let file = fs::File::create(&log)?;
        let child = Command::new(Self::shim(env))
            .arg("precompile")
            .arg("-address")
            .arg(env.socket())
            .args(flags)
            .env("WASMPOD_ROOT", env.dir.join("wasmpod"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting the precompile agent")?;
        let agent = Agent { child, log };
        agent.wait_for("", "watching containerd's images", Duration::from_secs(30))?;
        Ok(agent)
    }

    /// Waits until the log has a line with `message` about `image` (any when empty);
    /// returns how long that took.
    pub(crate) fn wait_for(
        &self,
        image: &str,
        message: &str,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let image = format!("image={image}");
        loop {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if log
                .lines()
                .any(|l| l.contains(message) && (image == "image=" || l.contains(&image)))
            {
                return Ok(started.elapsed());
            }
            ensure!(
                started.elapsed() < timeout,
                "the precompile agent did not log {message:?} for {image} within {timeout:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of containerd's log in which container `id`'s shim compiled something.
pub(crate) fn compiles_of(env: &Containerd, id: &str) -> anyhow::Result<Vec<String>> {
    let log = fs::read_to_string(env.dir.join("containerd.log"))?;
    // The shim's container span: `container{id=ID}` or `container{id=ID phase="create"}`.
    let spans = [format!("{{id={id}}}"), format!("{{id={id} ")];
    Ok(log
        .lines()
        .filter(|l| spans.iter().any(|s| l.contains(s)) && l.contains(": compiling"))
        .map(str::to_owned)
        .collect())
}

/// Images imported while the agent watches are compiled before their first container: that
/// container's shim compiles nothing, for an image of files and for a Wasm OCI artifact. A
/// second agent, started after them, finds both compiled already (its catch-up of what is
/// there), passes over an image that is not wasm, and (containerd 2.x) compiles an image
/// whose layers containerd discarded once unpacked, from its snapshot.
pub(crate) fn check_precompile_on_arrival(env: &Containerd) -> anyhow::Result<()> {
    // What an agent killed mid-unpack leaves: unpacked files and a view still mounted.
    let scratch = env.dir.join("wasmpod/precompile");
    let killed = scratch.join("image-killed-mid-unpack");
    let view = killed.join("snapshot/rootfs");
    fs::create_dir_all(killed.join("rootfs/usr/share"))?;
    fs::create_dir_all(&view)?;
    fs::write(killed.join("rootfs/usr/share/part"), vec![0u8; 4 << 20])?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&view)
        .status()?;
    ensure!(mounted.success(), "mounting a tmpfs at {}", view.display());
    let agent = Agent::start(env, &["-namespace", NAMESPACE, "-nice", "0"])?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        !killed.exists() && !mounts.contains(&view.display().to_string()),
        "the agent left an earlier agent's scratch in {}",
        scratch.display()
    );
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let mut images = Vec::new();
    for (n, format) in [(0, "compat"), (1, "artifact")] {
        let wat = env.dir.join(format!("arrival-{format}.wat"));
        fs::write(&wat, super::faults::slow_module(2_000, nonce + n))?;
        let image = format!("localhost/wasmpod-e2e/arrival-{format}:v1");
        env.import(&wat, &image, format)?;
        agent.wait_for(&image, "precompiled", Duration::from_secs(120))?;
        let id = format!("arrival-{format}");
        let out = if format == "compat" {
            env.ctr(&["run", "--rm", "--runtime", RUNTIME, &image, &id])?
        } else {
            let out_file = env.dir.join(format!("{id}.out"));
            Command::new(&env.run_via_api)
                .arg(env.socket())
                .args([NAMESPACE, RUNTIME, &image, &id])
                .arg(&out_file)
                .arg(format!("arrival-{format}.wasm"))
                .output()?
        };
        ensure!(
            out.status.success(),
            "{id}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let compiles = compiles_of(env, &id)?;
        ensure!(
            compiles.is_empty(),
            "{id}: the shim compiled although the agent had: {compiles:?}"
        );
        images.push(image);
    }
    // SIGTERM: it stops at once, cleanly, and leaves no scratch.
    let mut agent = agent;
    let sent = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()?;
    ensure!(sent.success(), "SIGTERM to the agent");
    let status = agent.child.wait()?;
    ensure!(
        status.success(),
        "the agent ended with {status} at SIGTERM:\n{}",
        fs::read_to_string(&agent.log).unwrap_or_default()
    );
    let left = fs::read_dir(&scratch).map_or(0, |d| d.count());
    ensure!(left == 0, "{left} entries left in {}", scratch.display());
    drop(agent);
    // Layers containerd let go of once unpacked: the program is read from the snapshot.
    let discarded = "localhost/wasmpod-e2e/arrival-discarded:v1";
    if env.flavor == Flavor::V2 {
        let wat = env.dir.join("arrival-discarded.wat");
        fs::write(&wat, super::faults::slow_module(2_000, nonce + 2))?;
        env.import_with(
            &wat,
            discarded,
            "compat",
            &["--local", "--discard-unpacked-layers"],
        )?;
        // A synchronous removal runs containerd's garbage collection now.
        let gc = "localhost/wasmpod-e2e/arrival-gc:v1";
        env.ctr_ok(&["image", "tag", discarded, gc])?;
        env.ctr_ok(&["image", "rm", "--sync", gc])?;
    }
    let out = Command::new(Agent::shim(env))
        .args(["precompile", "-once", "-address"])
        .arg(env.socket())
        .env("WASMPOD_ROOT", env.dir.join("wasmpod"))
        .env("WASMPOD_LOG", "info,shim=debug")
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "precompile -once: {}: {log}",
        out.status
    );
    for image in &images {
        ensure!(
            log.lines()
                .any(|l| l.contains(&format!("image={image}")) && l.contains("already compiled")),
            "precompile -once did not find {image} compiled:\n{log}"
        );
    }
    if env.flavor == Flavor::V2 {
        let line = |what: &str| {
            log.lines()
                .any(|l| l.contains(&format!("image={discarded}")) && l.contains(what))
        };
        ensure!(
            line("reading the program from the image's snapshot") && line("precompiled"),
            "precompile -once did not compile {discarded} from its snapshot:\n{log}"
        );
        let out = env.ctr(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            discarded,
            "arrival-discarded",
        ])?;
        ensure!(out.status.success(), "arrival-discarded: {}", out.status);
        let compiles = compiles_of(env, "arrival-discarded")?;
        ensure!(
            compiles.is_empty(),
            "arrival-discarded compiled: {compiles:?}"
        );
    }
    fifo_through_a_snapshot(env)?;
    // The pause image the CRI checks use (k8s.io): a native image, left alone.
    ensure!(
        log.lines().any(|l| l.contains("not a wasm image")),
        "precompile -once did not pass over a native image:\n{log}"
    );
    ensure!(
        !log.contains("cannot precompile"),
        "precompile -once failed on an image:\n{log}"
    );
    Ok(())
}

/// An image whose program is a named pipe, in a layer our own extractor refuses (a pax
/// record of 100 KiB) but containerd unpacks: the agent reads it through a view of the
/// snapshot, refuses the pipe unopened, goes on to exit, and leaves no view mounted and
/// no scratch.
fn fifo_through_a_snapshot(env: &Containerd) -> anyhow::Result<()> {
    let dir = env.dir.join("agent-fifo");
    fs::create_dir_all(dir.join("rootfs"))?;
    super::sh(Command::new("mkfifo").arg(dir.join("rootfs/app.wasm")))?;
    let image = "localhost/wasmpod-e2e/agent-fifo:v1";
    let pad = format!("wasmpod.pad={}", "p".repeat(100 << 10));
    env.import_rootfs_with(
        NAMESPACE,
        &dir,
        image,
        &["/app.wasm"],
        &["--format=pax", "--pax-option", &pad],
    )?;
    let started = Instant::now();
    let out = Command::new(Agent::shim(env))
        .args(["precompile", "-once", "-namespace", NAMESPACE, "-address"])
        .arg(env.socket())
        .env("WASMPOD_ROOT", env.dir.join("wasmpod"))
        .env("WASMPOD_LOG", "info,shim=debug")
        .stdin(Stdio::null())
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && started.elapsed() < Duration::from_secs(60),
        "precompile -once with a pipe for a program: {} after {:?}: {log}",
        out.status,
        started.elapsed()
    );
    let line = log
        .lines()
        .find(|l| l.contains(&format!("image={image}")) && l.contains("cannot precompile"))
        .with_context(|| format!("nothing said of {image}:\n{log}"))?;
    ensure!(
        line.contains("not a regular file (a named pipe)"),
        "the pipe was not refused as one: {line}"
    );
    ensure!(
        log.lines().any(|l| l.contains(&format!("image={image}"))
            && l.contains("reading the program from the image's snapshot")),
        "the program was not read through the snapshot:\n{log}"
    );
    let scratch = env.dir.join("wasmpod/precompile");
    let left = fs::read_dir(&scratch).map_or(0, |d| d.count());
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        left == 0 && !mounts.contains(&scratch.display().to_string()),
        "{left} entries left in {}, or a view still mounted",
        scratch.display()
    );
    eprintln!("  a pipe read through a snapshot view: {}", line.trim());
    Ok(())
}
