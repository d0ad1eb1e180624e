//! The e2e's Kubernetes path: Pods with `runtimeClassName: wasm` through containerd's CRI
//! plugin and our shim, driven by `wasmpod pod` and `wasmpod cri` as a kubelet would.
//! Images are pushed to a loopback registry and pulled by containerd through CRI PullImage;
//! pods get addresses from a bridge network of the test's own.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use super::{compile_fixture, retry, Containerd};
use test_support::registry::{Registry, PASSWORD, USER};

use crate::util::{output_ok, root, run as sh};

/// The sandbox image in the e2e's containerd config: a native `pause` of our own.
pub(crate) const PAUSE_IMAGE: &str = "localhost/wasmpod-e2e/pause:v1";
/// containerd's CRI namespace.
pub(crate) const K8S_NAMESPACE: &str = "k8s.io";
/// The pod network of the test's CNI config.
pub(crate) const SUBNET_PREFIX: &str = "10.231.0.";

/// The bridge interface of this run's CNI network (at most 15 characters).
fn bridge() -> String {
    format!("wpe{}", std::process::id() % 1_000_000)
}

/// Deletes the bridges of earlier runs that were killed before they could: such a bridge,
/// though down, keeps the route to [`SUBNET_PREFIX`], and no pod of this run could be
/// reached. A bridge is stale when no live process has the id its name was made from.
fn remove_stale_bridges() -> anyhow::Result<()> {
    let links = output_ok(Command::new("ip").args(["-o", "link", "show"]))?;
    let live: std::collections::HashSet<u32> = fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .map(|pid| pid % 1_000_000)
        .collect();
    for name in links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
    {
        let Some(id) = name.strip_prefix("wpe").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !live.contains(&id) {
            eprintln!("  deleting {name}, the bridge of an e2e run that is gone");
            sh(Command::new("ip").args(["link", "del", name]))?;
        }
    }
    Ok(())
}

/// Writes a bridge + host-local conflist into `dir/cni/net.d` (IPAM state in the test
/// directory, no masquerade: pods reach nothing beyond the node).
pub(crate) fn write_cni_config(dir: &Path) -> anyhow::Result<()> {
    remove_stale_bridges()?;
    let net = dir.join("cni/net.d");
    fs::create_dir_all(&net)?;
    fs::write(
        net.join("10-wasmpod-e2e.conflist"),
        format!(
            r#"{{
  "cniVersion": "1.0.0",
  "name": "wasmpod-e2e",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{SUBNET_PREFIX}0/24"}}]],
        "dataDir": "{ipam}"
      }}
    }}
  ]
}}
"#,
            bridge = bridge(),
            ipam = dir.join("cni/ipam").display()
        ),
    )?;
    Ok(())
}

/// Deletes this run's bridge interface, if the CNI plugin made one.
pub(crate) fn remove_bridge() {
    let _ = Command::new("ip")
        .args(["link", "del", &bridge()])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Builds `tests/fixtures/pause.c` natively (static) and imports it as [`PAUSE_IMAGE`]
/// into the CRI namespace, so no sandbox image is pulled from anywhere.
pub(crate) fn import_pause_image(env: &Containerd) -> anyhow::Result<()> {
    let dir = env.dir.join("pause");
    fs::create_dir_all(dir.join("rootfs"))?;
    sh(
        Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-static", "-O2", "-o"])
            .arg(dir.join("rootfs/pause"))
            .arg(root().join("tests/fixtures/pause.c")),
    )?;
    env.import_rootfs(K8S_NAMESPACE, &dir, PAUSE_IMAGE, &["/pause"])
}

/// Builds `wasm` (a `.wasm` or `.wat`) as a compat image and pushes it to the e2e
/// registry; returns the image name containerd pulls.
pub(crate) fn push_image(env: &Containerd, wasm: &Path, name: &str) -> anyhow::Result<String> {
    let image = format!("{}/{name}:v1", env.registry()?);
    sh(env.wasmpod(&["build"]).arg(wasm).args(["-t", &image]))?;
    sh(&mut env.wasmpod(&["push", &image]))?;
    Ok(image)
}

/// The RuntimeClass `wasm-process`: the `wasm-process` handler (its option `isolation =
/// "process"`), for a manifest's second document.
pub(crate) const PROCESS_RUNTIME_CLASS: &str = "apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: wasm-process}
handler: wasm-process
";

/// The probe image in the e2e registry.
pub(crate) fn probe_image(env: &Containerd) -> anyhow::Result<String> {
    let wasm = env.dir.join("probe.wasm");
    if !wasm.exists() {
        compile_fixture("probe", &wasm)?;
    }
    push_image(env, &wasm, "e2e/probe")
}

/// Writes a manifest into the test directory and returns its path.
pub(crate) fn manifest(env: &Containerd, name: &str, yaml: &str) -> anyhow::Result<PathBuf> {
    let path = env.dir.join(format!("{name}.yaml"));
    fs::write(&path, yaml)?;
    Ok(path)
}

/// A Pod of one probe container, both named `name`, with `runtimeClassName: wasm`, the
/// extra `spec` lines (indented two spaces) and the probe's `args` (a YAML list).
fn probe_pod(name: &str, image: &str, spec: &str, args: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  runtimeClassName: wasm\n\
         {spec}  containers:\n  - name: {name}\n    image: {image}\n    args: {args}\n"
    )
}

/// Runs `wasmpod`, failing unless it succeeds; returns stdout.
pub(crate) fn wasmpod_ok(env: &Containerd, args: &[&str]) -> anyhow::Result<String> {
    output_ok(&mut env.wasmpod(args))
}

fn log_dir(env: &Containerd) -> String {
    env.dir.join("pod-logs").display().to_string()
}

/// `wasmpod pod run --log-dir <the test's> ARGS...`.
fn pod_run_cmd(env: &Containerd, args: &[&str]) -> Command {
    let mut cmd = env.wasmpod(&["pod", "run", "--log-dir", &log_dir(env)]);
    cmd.args(args);
    cmd
}

/// [`pod_run_cmd`]'s output, whatever its status.
pub(crate) fn pod_run(env: &Containerd, args: &[&str]) -> anyhow::Result<Output> {
    pod_run_cmd(env, args)
        .output()
        .context("running wasmpod pod run")
}

/// [`pod_run_cmd`], failing unless it succeeds; returns stdout.
pub(crate) fn pod_run_ok(env: &Containerd, args: &[&str]) -> anyhow::Result<String> {
    output_ok(&mut pod_run_cmd(env, args))
}

/// Fails unless `wasmpod pod run` exited with `code`.
pub(crate) fn ensure_exit(out: &Output, code: i32) -> anyhow::Result<()> {
    ensure!(
        out.status.code() == Some(code),
        "pod run exited {} (not {code}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `wasmpod cri inspect ID` as JSON.
pub(crate) fn inspect(env: &Containerd, id: &str) -> anyhow::Result<serde_json::Value> {
    let text = wasmpod_ok(env, &["cri", "inspect", id])?;
    serde_json::from_str(&text).with_context(|| format!("cri inspect {id}: {text}"))
}

/// The scalar at `path` (`/status/exit_code`) as text: strings without quotes.
pub(crate) fn field(json: &serde_json::Value, path: &str) -> String {
    match json.pointer(path) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Removes every pod sandbox a check left (after a failure), so the next starts clean.
pub(crate) fn remove_all_pods(env: &Containerd) {
    let Ok(out) = env.wasmpod(&["cri", "pods", "-q"]).output() else {
        return;
    };
    let ids = String::from_utf8_lossy(&out.stdout).into_owned();
    let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    if !ids.is_empty() {
        let _ = env
            .wasmpod(&["pod", "rm", "--grace-period", "0"])
            .args(&ids)
            .output();
    }
}

/// What must be gone after `wasmpod pod rm`: CRI sandboxes and containers, containerd
/// containers in the CRI namespace, shims and mounts.
pub(crate) fn ensure_nothing_left(env: &Containerd) -> anyhow::Result<()> {
    let pods = wasmpod_ok(env, &["cri", "pods", "-q"])?;
    ensure!(pods.trim().is_empty(), "sandboxes left: {pods}");
    let containers = wasmpod_ok(env, &["cri", "ps", "-a", "-q"])?;
    ensure!(
        containers.trim().is_empty(),
        "containers left: {containers}"
    );
    let records = env.ctr_in(K8S_NAMESPACE, &["container", "ls", "-q"])?;
    ensure!(
        records.trim().is_empty(),
        "containerd containers left: {records}"
    );
    retry(Duration::from_secs(5), Duration::from_millis(50), || {
        ensure!(env.shims().is_empty(), "shims left: {:?}", env.shims());
        Ok(())
    })?;
    ensure!(env.mounts().is_empty(), "mounts left: {:?}", env.mounts());
    Ok(())
}

/// The shipped hello example, its image built from `examples/hello.wat` and pulled through
/// the CRI: output on the terminal and in the CRI log file, exit code 0 in the status.
pub(crate) fn check_pod_run(env: &Containerd) -> anyhow::Result<()> {
    let image = push_image(env, &root().join("examples/hello.wat"), "examples/hello")?;
    let shipped = fs::read_to_string(root().join("deploy/examples/hello.yaml"))?;
    ensure!(shipped.contains("ghcr.io/wasmpod/examples/hello:v1"));
    let pod = manifest(
        env,
        "hello",
        &shipped.replace("ghcr.io/wasmpod/examples/hello:v1", &image),
    )?;
    let runtimeclass = root().join("deploy/runtimeclass.yaml");
    let started = Instant::now();
    let out = pod_run(
        env,
        &[&pod.to_string_lossy(), &runtimeclass.to_string_lossy()],
    )?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.contains("Hello from a wasm container!"),
        "pod run: {} {stdout:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The CRI log file, in the kubelet's layout.
    let pod_dir = fs::read_dir(log_dir(env))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("default_hello-wasm_"))
        })
        .context("no pod log directory default_hello-wasm_<uid>")?;
    let log = fs::read_to_string(pod_dir.join("hello/0.log"))?;
    ensure!(
        log.lines()
            .any(|l| l.ends_with(" stdout F Hello from a wasm container!")),
        "CRI log: {log:?}"
    );
    // The exit code in ContainerStatus, the handler in PodSandboxStatus.
    let id = wasmpod_ok(env, &["cri", "ps", "-a", "-q"])?;
    let status = inspect(env, id.trim())?;
    ensure!(
        field(&status, "/status/exit_code") == "0" && field(&status, "/status/state") == "2",
        "container status: {status}"
    );
    let sandbox = wasmpod_ok(env, &["cri", "pods", "-q"])?;
    let sandbox_status = inspect(env, sandbox.trim())?;
    ensure!(
        field(&sandbox_status, "/status/runtime_handler") == "wasm",
        "sandbox status: {sandbox_status}"
    );
    // crictl-style logs, by container name.
    let logs = wasmpod_ok(env, &["cri", "logs", "hello"])?;
    ensure!(
        logs == "Hello from a wasm container!\n",
        "cri logs: {logs:?}"
    );
    let logs = wasmpod_ok(env, &["cri", "logs", "-f", "-t", "hello"])?;
    ensure!(
        logs.ends_with("Z Hello from a wasm container!\n"),
        "cri logs -f -t: {logs:?}"
    );
    wasmpod_ok(env, &["pod", "rm", "hello-wasm"])?;
    ensure_nothing_left(env)?;
    eprintln!("  hello pod: pull + run + exit in {took:.0?}");
    Ok(())
}

/// A failing container's exit code is the pod run's and its ContainerStatus's.
pub(crate) fn check_pod_exit_code(env: &Containerd) -> anyhow::Result<()> {
    let image = probe_image(env)?;
    let pod = manifest(
        env,
        "exit7",
        &probe_pod("exit7", &image, "  restartPolicy: Never\n", "[exit, \"7\"]"),
    )?;
    let out = pod_run(env, &[&pod.to_string_lossy()])?;
    ensure_exit(&out, 7)?;
    let id = wasmpod_ok(env, &["cri", "ps", "-a", "-q"])?;
    let status = inspect(env, id.trim())?;
    ensure!(
        field(&status, "/status/exit_code") == "7",
        "status: {status}"
    );
    // Found by name, as `wasmpod cri logs` and `inspect` take names too.
    inspect(env, "exit7")?;
    // crictl's way out: rm the container, stop and rm the sandbox.
    wasmpod_ok(env, &["cri", "rm", id.trim()])?;
    let left = wasmpod_ok(env, &["cri", "ps", "-a", "-q"])?;
    ensure!(left.trim().is_empty(), "cri rm left {left}");
    let sandbox = wasmpod_ok(env, &["cri", "pods", "-q"])?;
    wasmpod_ok(env, &["cri", "stop", sandbox.trim()])?;
    wasmpod_ok(env, &["cri", "rm", sandbox.trim()])?;
    ensure_nothing_left(env)
}

/// Two containers and the pause sandbox in one shim process, a pod IP from the bridge,
/// init containers reading a ConfigMap volume and writing into an emptyDir on the node;
/// `wasmpod pod rm` leaves nothing behind.
pub(crate) fn check_pod_two_containers(env: &Containerd) -> anyhow::Result<()> {
    let image = probe_image(env)?;
    let pod = manifest(
        env,
        "two",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: two
  namespace: e2e
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  volumes:
  - name: scratch
    emptyDir: {{}}
  - name: settings
    configMap: {{name: settings}}
  initContainers:
  - name: reader
    image: {image}
    args: [cat, /etc/app/greeting]
    volumeMounts: [{{name: settings, mountPath: /etc/app}}]
  - name: writer
    image: {image}
    args: [write, /scratch/hello.txt, from the pod]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  containers:
  - name: sleeper-a
    image: {image}
    args: [sleep, "600000"]
    resources:
      limits: {{memory: 64Mi}}
  - name: sleeper-b
    image: {image}
    args: [sleep, "600000"]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: e2e}}
data: {{greeting: hello from a configmap}}
"#
        ),
    )?;
    let sandbox = pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
    let sandbox = sandbox.trim().to_owned();
    // One shim holds the sandbox and both containers: every task reports its pid.
    let pids = task_pids(env)?;
    let shims = env.shims();
    ensure!(
        pids.len() == 3,
        "expected 3 tasks (sandbox, sleeper-a, sleeper-b): {pids:?}"
    );
    ensure!(
        shims.len() == 1 && pids.iter().all(|p| *p == shims[0]),
        "tasks {pids:?} are not all in the one shim {shims:?}"
    );
    let status = inspect(env, &sandbox)?;
    let ip = field(&status, "/status/network/ip");
    ensure!(
        ip.starts_with(SUBNET_PREFIX),
        "pod IP {ip:?} is not on the bridge: {status}"
    );
    // The init container ran first: its file is in the pod's emptyDir on the node.
    let uid = field(&status, "/status/metadata/uid");
    let written = env
        .dir
        .join("wasmpod-state/pods")
        .join(&uid)
        .join("volumes/empty-dir/scratch/hello.txt");
    retry(Duration::from_secs(10), Duration::from_millis(50), || {
        ensure!(
            fs::read_to_string(&written).ok().as_deref() == Some("from the pod"),
            "{} was not written",
            written.display()
        );
        Ok(())
    })?;
    // ContainerStats, as the kubelet reads them for `kubectl top`: the guests' memory.
    let stats = wasmpod_ok(env, &["cri", "stats", "--pod", &sandbox])?;
    for name in ["sleeper-a", "sleeper-b"] {
        let line = stats
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .with_context(|| format!("no stats for {name}: {stats}"))?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let mem = fields.last().copied().unwrap_or_default();
        ensure!(
            mem.ends_with("MiB") && mem != "0.0MiB",
            "{name}'s memory is not reported: {stats}"
        );
        // CPU time from the engine's meter (well under a millisecond for a sleeper).
        let cpu = fields
            .iter()
            .find_map(|f| f.strip_suffix('s')?.parse::<f64>().ok());
        ensure!(cpu.is_some(), "{name}'s CPU time is not reported: {stats}");
    }
    // The first init container read the ConfigMap volume: its CRI log says so.
    let reader = wasmpod_ok(env, &["cri", "logs", "reader"])?;
    ensure!(
        reader == "hello from a configmap\n",
        "reader's log: {reader:?}"
    );
    let running = wasmpod_ok(env, &["cri", "ps", "--pod", &sandbox])?;
    ensure!(
        running.contains("sleeper-a")
            && running.contains("sleeper-b")
            && !running.contains("writer"),
        "cri ps: {running}"
    );
    // SIGTERM is honoured: removal does not wait out the grace period.
    let t0 = Instant::now();
    wasmpod_ok(env, &["pod", "rm", "e2e/two"])?;
    let took = t0.elapsed();
    ensure!(took < Duration::from_secs(10), "pod rm took {took:?}");
    ensure!(!written.exists(), "the pod's volumes outlived it");
    ensure_nothing_left(env)?;
    eprintln!(
        "  two containers in one shim (pid {}), pod IP {ip}, pod rm in {took:.0?}",
        shims[0]
    );
    Ok(())
}

/// `restartPolicy: OnFailure`: a failing container is started again (attempt 1, its own
/// log file) after the kubelet's 10 s back-off; SIGTERM to `wasmpod pod run` stops the pod.
pub(crate) fn check_pod_restart(env: &Containerd) -> anyhow::Result<()> {
    let image = probe_image(env)?;
    let pod = manifest(
        env,
        "flaky",
        &probe_pod(
            "flaky",
            &image,
            "  restartPolicy: OnFailure\n  terminationGracePeriodSeconds: 5\n",
            "[cat, /missing]",
        ),
    )?;
    let mut child = pod_run_cmd(env, &[&pod.to_string_lossy()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let restarted = loop {
        let attempt = inspect(env, "flaky").map(|s| field(&s, "/status/metadata/attempt"));
        if attempt.as_ref().is_ok_and(|a| a == "1") {
            break true;
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    sh(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(restarted, "no second attempt within 30 s: {stdout}");
    ensure!(
        stdout.matches("open /missing:").count() >= 2,
        "both attempts' output: {stdout:?}"
    );
    // Stopped from outside: 130, as a Ctrl-C'd `docker run`.
    ensure!(out.status.code() == Some(130), "exit {}", out.status);
    let id = wasmpod_ok(env, &["cri", "pods", "-q"])?;
    let sandbox = inspect(env, id.trim())?;
    ensure!(
        field(&sandbox, "/status/state") == "1",
        "the pod still runs after SIGTERM: {sandbox}"
    );
    wasmpod_ok(env, &["pod", "rm", "flaky"])?;
    ensure_nothing_left(env)
}

/// A container past `resources.limits.memory` is OOM-killed: exit 137, reason `OOMKilled`
/// in its ContainerStatus (from the shim's TaskOOM event), as the kubelet would report it.
/// The pod's metadata line with the isolation annotation for `level`.
fn at_level(yaml: &str, name: &str, level: &str) -> String {
    yaml.replace(
        &format!("metadata: {{name: {name}}}"),
        &format!("metadata: {{name: {name}, annotations: {{wasmpod.io/isolation: {level}}}}}"),
    )
}

/// Past its memory limit a container is OOMKilled (137) in both levels: by the engine in
/// the shared level, by its cgroup in the process level.
pub(crate) fn check_pod_oom(env: &Containerd) -> anyhow::Result<()> {
    let image = probe_image(env)?;
    for level in ["shared", "process"] {
        let pod = manifest(
            env,
            "oom",
            &at_level(
                &probe_pod("oom", &image, "  restartPolicy: Never\n", "[alloc, \"64\"]").replace(
                    "    args:",
                    "    resources: {limits: {memory: 32Mi}}\n    args:",
                ),
                "oom",
                level,
            ),
        )?;
        let out = pod_run(env, &[&pod.to_string_lossy()])?;
        ensure_exit(&out, 137).with_context(|| format!("{level} level"))?;
        let status = inspect(env, "oom")?;
        ensure!(
            field(&status, "/status/exit_code") == "137"
                && field(&status, "/status/reason") == "OOMKilled",
            "{level} level: status: {status}"
        );
        wasmpod_ok(env, &["pod", "rm", "oom"])?;
        ensure_nothing_left(env)?;
    }
    Ok(())
}

/// UpdateContainerResources reaches a running guest: a container started under 256Mi whose
/// limit is lowered to 32Mi is OOM-killed by the allocation it makes afterwards.
pub(crate) fn check_pod_update(env: &Containerd) -> anyhow::Result<()> {
    for level in ["shared", "process"] {
        update_at_level(env, level).with_context(|| format!("{level} level"))?;
    }
    Ok(())
}

fn update_at_level(env: &Containerd, level: &str) -> anyhow::Result<()> {
    let image = probe_image(env)?;
    let pod = manifest(
        env,
        "upd",
        &at_level(
            &probe_pod(
                "upd",
                &image,
                "  restartPolicy: Never\n",
                &format!(
                    "[sleep-alloc, \"{}\", \"64\"]",
                    super::scaled(Duration::from_secs(3)).as_millis()
                ),
            )
            .replace(
                "    args:",
                "    resources: {limits: {memory: 256Mi}}\n    args:",
            ),
            "upd",
            level,
        ),
    )?;
    pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
    wasmpod_ok(env, &["cri", "update", "--memory", "32Mi", "upd"])?;
    let status = retry(Duration::from_secs(20), Duration::from_millis(100), || {
        let status = inspect(env, "upd")?;
        ensure!(
            field(&status, "/status/state") == "2",
            "upd did not end: {status}"
        );
        Ok(status)
    })?;
    ensure!(
        field(&status, "/status/exit_code") == "137"
            && field(&status, "/status/reason") == "OOMKilled",
        "after lowering the limit to 32Mi: {status}"
    );
    wasmpod_ok(env, &["pod", "rm", "upd"])?;
    ensure_nothing_left(env)
}

/// A private registry (htpasswd): without credentials the pull fails and nothing is left;
/// with an `imagePullSecrets` Secret, or with `--docker-config`, the pod runs.
pub(crate) fn check_pod_pull_secret(env: &Containerd) -> anyhow::Result<()> {
    let dir = env.dir.join("auth-registry");
    fs::create_dir_all(&dir)?;
    let registry = Registry::start_with_auth();
    let host = registry.host();
    env.trust_registry(&host)?;
    let wasm = env.dir.join("probe.wasm");
    if !wasm.exists() {
        compile_fixture("probe", &wasm)?;
    }
    let image = format!("{host}/private/probe:v1");
    sh(env.wasmpod(&["build"]).arg(&wasm).args(["-t", &image]))?;
    sh(env
        .wasmpod(&["push", "--username", USER, &image])
        .env("WASMPOD_REGISTRY_PASSWORD", PASSWORD))?;
    let pod = |secrets: &str| {
        probe_pod(
            "private",
            &image,
            &format!("  restartPolicy: Never\n{secrets}"),
            "[args, pulled-with-auth]",
        )
    };
    let docker_config =
        format!(r#"{{"auths":{{"{host}":{{"username":"{USER}","password":"{PASSWORD}"}}}}}}"#);

    let anonymous = manifest(env, "private-anonymous", &pod(""))?;
    let out = pod_run(env, &["--rm", &anonymous.to_string_lossy()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "an anonymous pull ran: {err}");
    ensure!(
        err.contains(&format!("PullImage {image}"))
            // containerd 1.6 says 401 Unauthorized; 2.3 "authorization failed: no basic
            // auth credentials".
            && (err.contains("401") || err.contains("nauthorized") || err.contains("authorization failed")),
        "unclear error: {err}"
    );
    ensure_nothing_left(env)?;

    let with_secret = manifest(
        env,
        "private-secret",
        &format!(
            "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: registry}}\n\
             type: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{docker_config}'\n",
            pod("  imagePullSecrets: [{name: registry}]\n")
        ),
    )?;
    let out = pod_run_ok(env, &["--rm", &with_secret.to_string_lossy()])?;
    ensure!(out.contains("pulled-with-auth"), "output: {out:?}");
    ensure_nothing_left(env)?;

    // The same from a docker config file; the image is on the node now, so pull again.
    let config_file = env.dir.join("docker-config.json");
    fs::write(&config_file, &docker_config)?;
    let always = manifest(
        env,
        "private-config",
        &pod("").replace("    args:", "    imagePullPolicy: Always\n    args:"),
    )?;
    let out = pod_run_ok(
        env,
        &[
            "--rm",
            "--docker-config",
            &config_file.to_string_lossy(),
            &always.to_string_lossy(),
        ],
    )?;
    ensure!(out.contains("pulled-with-auth"), "output: {out:?}");
    ensure_nothing_left(env)?;
    eprintln!("  anonymous pull refused: {}", err.trim());
    Ok(())
}

/// A RuntimeClass whose handler containerd does not know fails with the fix in the message.
pub(crate) fn check_pod_unknown_handler(env: &Containerd) -> anyhow::Result<()> {
    let pod = manifest(
        env,
        "nohandler",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: nohandler}\nspec:\n  runtimeClassName: nope\n  \
         containers:\n  - {name: c, image: localhost/none:v1}\n",
    )?;
    let out = pod_run(env, &["--rm", &pod.to_string_lossy()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "exit {}: {err}", out.status);
    ensure!(
        err.contains("RunPodSandbox default/nohandler")
            && err.contains("\"nope\"")
            && err.contains("wasmpod install"),
        "unclear error: {err}"
    );
    eprintln!("  error: {}", err.trim());
    ensure_nothing_left(env)
}

/// The pids of the CRI namespace's tasks, as `ctr task ls` shows them.
pub(crate) fn task_pids(env: &Containerd) -> anyhow::Result<Vec<u32>> {
    let tasks = env.ctr_in(K8S_NAMESPACE, &["task", "ls"])?;
    Ok(tasks
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect())
}

/// A pod under the `wasm-process` handler (its option `isolation = "process"`): each
/// container in a child process of the pod's one shim, both in the pod's network
/// namespace (where the pod IP is), ContainerStats from their cgroups.
pub(crate) fn check_pod_process(env: &Containerd) -> anyhow::Result<()> {
    let image = probe_image(env)?;
    let pod = manifest(
        env,
        "proc",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: proc}}
spec:
  runtimeClassName: wasm-process
  containers:
  - name: one
    image: {image}
    args: [sleep, "600000"]
    resources: {{limits: {{memory: 64Mi, cpu: 500m}}}}
  - name: two
    image: {image}
    args: [sleep, "600000"]
---
{PROCESS_RUNTIME_CLASS}"#
        ),
    )?;
    let sandbox = pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
    let sandbox = sandbox.trim().to_owned();
    let shims = env.shims();
    ensure!(shims.len() == 1, "expected one shim: {shims:?}");
    let shim = shims[0];
    let children: Vec<u32> = task_pids(env)?.into_iter().filter(|p| *p != shim).collect();
    ensure!(
        children.len() == 2,
        "expected two container processes beside the shim's sandbox: {children:?}"
    );
    let status = inspect(env, &sandbox)?;
    let ip = field(&status, "/status/network/ip");
    let net = |pid: u32| fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    for pid in &children {
        let parent = super::proc_status(*pid, "PPid");
        ensure!(parent == shim.to_string(), "{pid}'s parent is {parent}");
        ensure!(
            net(*pid) != net(std::process::id()),
            "container {pid} is in the host's network namespace"
        );
        // The pod's namespace is the one that holds the pod IP.
        let local = fs::read_to_string(format!("/proc/{pid}/net/fib_trie"))?;
        ensure!(
            ip.starts_with(SUBNET_PREFIX) && local.contains(&ip),
            "container {pid} does not see the pod IP {ip:?}"
        );
    }
    ensure!(
        net(children[0]) == net(children[1]),
        "two network namespaces"
    );
    // The kubelet's stats: from the cgroups, CPU time included.
    let stats = wasmpod_ok(env, &["cri", "stats", "--pod", &sandbox])?;
    for name in ["one", "two"] {
        let line = stats
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .with_context(|| format!("no stats for {name}: {stats}"))?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let cpu = fields
            .iter()
            .find_map(|f| f.strip_suffix('s')?.parse::<f64>().ok())
            .unwrap_or(0.0);
        let mem = fields.last().copied().unwrap_or_default();
        ensure!(
            cpu > 0.0 && mem.ends_with("MiB") && mem != "0.0MiB",
            "{name}'s cgroup stats are not reported: {stats}"
        );
    }
    let t0 = Instant::now();
    wasmpod_ok(env, &["pod", "rm", "proc"])?;
    let took = t0.elapsed();
    ensure!(took < Duration::from_secs(10), "pod rm took {took:?}");
    ensure_nothing_left(env)?;
    eprintln!(
        "  containers {children:?} children of shim {shim}, pod IP {ip} in their netns, pod rm in {took:.0?}"
    );
    Ok(())
}

/// Two pods under the `wasm-node` handler (its option `grouping = "node"`) share one shim.
pub(crate) fn check_pod_node_grouping(env: &Containerd) -> anyhow::Result<()> {
    let image = probe_image(env)?;
    for name in ["node-a", "node-b"] {
        let yaml = probe_pod(name, &image, "", "[sleep, \"600000\"]")
            .replace("runtimeClassName: wasm", "runtimeClassName: wasm-node")
            + "---\napiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: wasm-node}\nhandler: wasm-node\n";
        let pod = manifest(env, name, &yaml)?;
        pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
    }
    let shims = env.shims();
    let pids = task_pids(env)?;
    ensure!(
        shims.len() == 1 && pids.len() == 4 && pids.iter().all(|p| *p == shims[0]),
        "two pods' 4 tasks {pids:?} should all be in one shim {shims:?}"
    );
    wasmpod_ok(env, &["pod", "rm", "node-a", "node-b"])?;
    ensure_nothing_left(env)
}

/// A Wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one
/// `application/wasm` layer, no root filesystem) as a pod's image, pulled through the CRI.
/// containerd 2.3 pulls it and the shim runs its layer from the content store; containerd
/// 1.6.20 refuses it at pull ("mismatched image rootfs and manifest layers"), which
/// docs/kubernetes.md states.
pub(crate) fn check_pod_artifact(env: &Containerd) -> anyhow::Result<()> {
    let wasm = env.dir.join("probe.wasm");
    if !wasm.exists() {
        compile_fixture("probe", &wasm)?;
    }
    let image = format!("{}/e2e/probe-artifact:v1", env.registry()?);
    sh(env
        .wasmpod(&["build", "--format", "artifact"])
        .arg(&wasm)
        .args(["-t", &image]))?;
    sh(&mut env.wasmpod(&["push", &image]))?;
    // An artifact names no entrypoint: `command` gives the name the guest sees as argv[0].
    let pod = manifest(
        env,
        "artifact",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: artifact}}\nspec:\n  runtimeClassName: wasm\n  \
             restartPolicy: Never\n  containers:\n  - name: artifact\n    image: {image}\n    \
             command: [probe.wasm]\n    args: [args, from-artifact]\n"
        ),
    )?;
    let out = pod_run(env, &[&pod.to_string_lossy()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match env.flavor {
        // containerd fixed the refusal below in 1.6.25 and 1.7.7.
        super::Flavor::V2 | super::Flavor::V1_7 => ensure!(
            out.status.success() && stdout.contains("arg[2]=from-artifact"),
            "pod run: {} {stdout:?} {stderr}",
            out.status
        ),
        super::Flavor::V1_6 => ensure!(
            !out.status.success() && stderr.contains("mismatched image rootfs and manifest layers"),
            "containerd 1.6 was expected to refuse the artifact at pull: {} {stdout:?} {stderr}",
            out.status
        ),
    }
    Ok(())
}
