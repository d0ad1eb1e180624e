//! `cargo xtask e2e --kind`: the same path on a real Kubernetes node. Creates a kind
//! cluster, installs the shim with `wasmpod install` inside the node (the step the local
//! e2e also takes), loads images built by `wasmpod build`, applies the RuntimeClass and the
//! shipped examples, and checks what `kubectl` users see. The cluster is deleted afterwards,
//! also when a check fails. Needs docker, kind and kubectl.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::{build_binaries_in, compile_fixture};
use crate::util::{have, output_ok, root, run as sh};

/// The cluster's name; its node container is `<CLUSTER>-control-plane`.
const CLUSTER: &str = "wasmpod-e2e";
/// The example image as the shipped manifest names it.
const HELLO: &str = "ghcr.io/wasmpod/examples/hello:v1";
/// The probe image for the two-container pod.
const PROBE: &str = "ghcr.io/wasmpod/e2e/probe:v1";

/// The kind cluster, deleted on drop.
struct Cluster {
    node: String,
    context: String,
}

impl Cluster {
    fn create(config: &std::path::Path) -> anyhow::Result<Self> {
        // A cluster left by an interrupted run is replaced.
        let _ = Command::new("kind")
            .args(["delete", "cluster", "--name", CLUSTER])
            .status();
        sh(Command::new("kind")
            .args([
                "create", "cluster", "--name", CLUSTER, "--wait", "120s", "--config",
            ])
            .arg(config))?;
        Ok(Self {
            node: format!("{CLUSTER}-control-plane"),
            context: format!("kind-{CLUSTER}"),
        })
    }

    fn kubectl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.args(["--context", &self.context]).args(args);
        cmd
    }

    fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        output_ok(&mut self.kubectl(args))
    }

    /// `docker exec` in the node.
    fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        output_ok(Command::new("docker").args(["exec", &self.node]).args(args))
    }

    /// Waits until `kubectl get pod NAME` shows `.status.phase` == `phase`.
    fn wait_phase(&self, pod: &str, phase: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])?;
            if now == phase {
                return Ok(());
            }
            if Instant::now() > deadline {
                let describe = self
                    .kubectl_ok(&["describe", "pod", pod])
                    .unwrap_or_default();
                bail!("pod {pod} is {now:?}, not {phase}, after {limit:?}:\n{describe}");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kind")
            .args(["delete", "cluster", "--name", CLUSTER])
            .status();
    }
}

/// Runs the kind e2e; see the module doc.
pub(crate) fn run() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["docker", "kind", "kubectl"]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the kind e2e needs {} on PATH (docker with a running engine, kind, kubectl)",
            missing.join(", ")
        );
    }
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()?;
    if !engine.status.success() {
        bail!("the kind e2e needs a running Docker engine: `docker info` failed");
    }
    crate::util::require_wasm_toolchain()?;
    let bins = build_binaries_in("release", &["--release"])?;
    let work = std::env::temp_dir().join(format!("wasmpod-kind-{}", std::process::id()));
    fs::create_dir_all(&work)?;

    // A plain cluster with the label our RuntimeClass selects; the runtime is added the
    // way users add it, by the installer.
    let config = work.join("kind.yaml");
    fs::write(
        &config,
        "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n  labels:\n    wasmpod.io/runtime: \"ready\"\n",
    )?;
    let cluster = Cluster::create(&config)?;
    for (bin, dest) in [
        (&bins.wasmpod, "/usr/local/bin/wasmpod"),
        (&bins.shim, "/tmp/containerd-shim-wasm-v1"),
    ] {
        sh(Command::new("docker")
            .arg("cp")
            .arg(bin)
            .arg(format!("{}:{dest}", cluster.node)))?;
    }
    let install = [
        "wasmpod",
        "install",
        "--shim",
        "/tmp/containerd-shim-wasm-v1",
        "--containerd-config",
        "/etc/containerd/config.toml",
    ];
    let first = cluster.exec(&install)?;
    ensure!(
        first.contains("restarting containerd"),
        "first install: {first}"
    );
    let second = cluster.exec(&install)?;
    ensure!(
        second.contains("nothing changed"),
        "the installer is not idempotent: {second}"
    );
    // containerd is back (the kubelet reconnects by itself).
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.exec(&["crictl", "info"]).is_err() {
        ensure!(
            Instant::now() < deadline,
            "containerd did not come back after the install"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // Images, built here and loaded into the node's containerd.
    let probe = work.join("probe.wasm");
    compile_fixture("probe", &probe)?;
    for (source, image, name) in [
        (root().join("examples/hello.wat"), HELLO, "hello"),
        (probe.clone(), PROBE, "probe"),
    ] {
        let archive = work.join(format!("{name}.tar"));
        sh(Command::new(&bins.wasmpod)
            .arg("--root")
            .arg(work.join("store"))
            .arg("build")
            .arg(&source)
            .args(["-t", image, "-o"])
            .arg(&archive))?;
        sh(Command::new("kind")
            .args(["load", "image-archive", "--name", CLUSTER])
            .arg(&archive))?;
    }

    let deploy = root().join("deploy");
    cluster.kubectl_ok(&[
        "apply",
        "-f",
        &deploy.join("runtimeclass.yaml").to_string_lossy(),
    ])?;
    cluster.kubectl_ok(&[
        "apply",
        "-f",
        &deploy.join("examples/hello.yaml").to_string_lossy(),
    ])?;
    cluster.wait_phase("hello-wasm", "Succeeded", Duration::from_secs(120))?;
    let logs = cluster.kubectl_ok(&["logs", "hello-wasm"])?;
    ensure!(
        logs.contains("Hello from a wasm container!"),
        "hello-wasm logs: {logs:?}"
    );
    eprintln!("e2e kind hello: ok");

    let two = work.join("two.yaml");
    fs::write(
        &two,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: two}}\nspec:\n  runtimeClassName: wasm\n  \
             containers:\n  - {{name: a, image: {PROBE}, imagePullPolicy: IfNotPresent, args: [sleep, \"600000\"]}}\n  \
             - {{name: b, image: {PROBE}, imagePullPolicy: IfNotPresent, args: [sleep, \"600000\"]}}\n"
        ),
    )?;
    cluster.kubectl_ok(&["apply", "-f", &two.to_string_lossy()])?;
    cluster.wait_phase("two", "Running", Duration::from_secs(120))?;
    // `v[1]`: the pattern must not match the shell that runs pgrep.
    let shims = cluster.exec(&[
        "sh",
        "-c",
        "pgrep -c -f 'containerd-shim-wasm-v[1]' || true",
    ])?;
    ensure!(
        shims.trim() == "1",
        "expected one shim for the pod, found {}",
        shims.trim()
    );
    // SIGTERM reaches the guests: deletion does not wait out the 30 s grace period.
    let t0 = Instant::now();
    cluster.kubectl_ok(&["delete", "pod", "two", "--wait=true", "--timeout=60s"])?;
    ensure!(
        t0.elapsed() < Duration::from_secs(20),
        "pod deletion took {:?}",
        t0.elapsed()
    );
    eprintln!(
        "e2e kind two-containers: ok (deleted in {:.1?})",
        t0.elapsed()
    );
    drop(cluster);
    let _ = fs::remove_dir_all(&work);
    Ok(())
}
