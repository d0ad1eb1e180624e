//! Mixed pods through the CRI: native containers (Debian's busybox-static, run by runc)
//! beside wasm ones under the `wasm` handler, in both isolation levels — an init container
//! writing iptables rules in the pod's network namespace, a sidecar sharing the pod's host name and volume, exec
//! into both kinds, logs, stats, a containerd restart, an OOM kill, and nothing left after
//! the pod is removed.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context};

use super::cri::{
    ensure_exit, ensure_nothing_left, field, inspect, manifest, pod_run, pod_run_ok, probe_image,
    wasmpod_ok, K8S_NAMESPACE, SUBNET_PREFIX,
};
use super::{retry, Containerd};
use crate::util::{have, run as sh};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The native image: busybox-static with every applet linked in `/bin`.
const BUSYBOX: &str = "localhost/wasmpod-e2e/busybox:v1";

/// Builds [`BUSYBOX`] from the node's busybox-static and imports it into the CRI namespace.
fn busybox_image(env: &Containerd) -> anyhow::Result<()> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() || !have("runc") {
        bail!("needs runc and busybox-static (apt-get install runc busybox-static)");
    }
    let dir = env.dir.join("busybox-native");
    if dir.exists() {
        return Ok(());
    }
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(sub))?;
    }
    fs::copy(busybox, root.join("bin/busybox"))?;
    let list = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            // Absolute, as Alpine's are: resolved inside the root, not on the node.
            std::os::unix::fs::symlink("/bin/busybox", root.join("bin").join(applet))?;
        }
    }
    env.import_rootfs(K8S_NAMESPACE, &dir, BUSYBOX, &["/bin/sh"])
}

/// The init container's image, as an `istio-init`'s: busybox (for `sh` and `ip`) and
/// Debian's `iptables` (nft backend) with its libraries and xtables extensions, unpacked
/// from the machine's archive (not installed) and copied in with the node's C library.
const NETINIT: &str = "localhost/wasmpod-e2e/netinit:v1";

/// The packages [`NETINIT`] takes its files from, and the files (under `usr/`) it takes.
const NETINIT_PACKAGES: [(&str, &str); 5] = [
    ("iptables", "sbin/xtables-nft-multi"),
    ("iptables", "lib/x86_64-linux-gnu/xtables"),
    ("libxtables12", "lib/x86_64-linux-gnu"),
    ("libnftnl11", "lib/x86_64-linux-gnu"),
    ("libmnl0", "lib/x86_64-linux-gnu"),
];

/// Builds [`NETINIT`] and imports it into the CRI namespace.
fn netinit_image(env: &Containerd) -> anyhow::Result<()> {
    let dir = env.dir.join("netinit-native");
    if dir.exists() {
        return Ok(());
    }
    busybox_image(env)?;
    let root = dir.join("rootfs");
    copy_tree(&env.dir.join("busybox-native/rootfs"), &root)?;
    for (package, path) in NETINIT_PACKAGES {
        let from = super::debian::unpacked(package, "bookworm")?
            .join("usr")
            .join(path);
        ensure!(
            from.exists(),
            "Debian's {package} has no {}",
            from.display()
        );
        copy_tree(&from, &root.join("usr").join(path))?;
    }
    for name in ["iptables", "iptables-save"] {
        std::os::unix::fs::symlink("xtables-nft-multi", root.join("usr/sbin").join(name))?;
    }
    // The C library and the loader, from the node (the same Debian release).
    let ldd = Command::new("ldd").arg("/bin/sh").output()?;
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().context("a library has a directory")?)?;
        fs::copy(lib, &to).with_context(|| format!("copying {lib}"))?;
    }
    env.import_rootfs(K8S_NAMESPACE, &dir, NETINIT, &["/bin/sh"])
}

/// Copies `from` (a file or a tree, symbolic links as links) to `to`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to.parent().context("a path has a directory")?)?;
    sh(Command::new("cp").arg("-a").arg(from).arg("-T").arg(to))
}

/// `wasmpod cri exec CONTAINER -- CMD...`: its exit code and output.
fn exec(env: &Containerd, container: &str, cmd: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = env
        .wasmpod(&["cri", "exec", container, "--"])
        .args(cmd)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Exec of wasm `program` into the mixed pod's app writes `text` to `/data/FILE`; the
/// sidecar reads it from the same volume at `/shared/FILE`.
fn wasm_exec_writes(env: &Containerd, program: &str, file: &str, text: &str) -> anyhow::Result<()> {
    let path = format!("/data/{file}");
    let (code, out, err) = exec(env, "app", &[program, "write", &path, text])?;
    ensure!(
        code == 0 && out == format!("wrote {path}\n"),
        "exec {program} into the app: {code} {out:?} {err:?}"
    );
    let (code, out, err) = exec(env, "sidecar", &["cat", &format!("/shared/{file}")])?;
    ensure!(
        code == 0 && out == text,
        "{program}'s file, read by the sidecar: {code} {out:?} {err:?}"
    );
    Ok(())
}

/// `wasmpod cri ARGS...` of a streamed call (`exec -i`/`-t`, `attach`): through
/// containerd's streaming server (what `kubectl exec -it` takes), `input` on its stdin;
/// its exit code and output.
fn streamed(
    env: &Containerd,
    args: &[&str],
    input: &[u8],
) -> anyhow::Result<(i32, String, String)> {
    let mut cmd = env.wasmpod(&["cri"]);
    cmd.args(args);
    with_input(cmd, input)
}

/// Runs `cmd` with `input` on its stdin (then closed); its exit code and output. Killed
/// after a minute.
fn with_input(mut cmd: Command, input: &[u8]) -> anyhow::Result<(i32, String, String)> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let ended = retry(secs(60), millis(50), || {
        child.try_wait()?.map(drop).context("still running")
    });
    if ended.is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output()?;
    ended.with_context(|| format!("{cmd:?}: {out:?}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The native containers' runtime directories left under the test's containerd
/// (`<state>/wasmpod-native/<namespace>/<id>`).
fn runc_dirs(dir: &Path) -> Vec<String> {
    let root = dir.join("state").join("wasmpod-native");
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|ns| fs::read_dir(ns.path()).into_iter().flatten().flatten())
        .map(|c| c.path().display().to_string())
        .collect()
}

/// The rule the mixed pod's init container writes, as `iptables -S` prints it.
const REDIRECT_RULE: &str = "-A OUTPUT -p tcp -m tcp --dport 15001 -j REDIRECT --to-ports 15006";

fn mixed_pod(probe: &str, level: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: mixed
  annotations: {{wasmpod.io/isolation: {level}}}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  volumes:
  - name: shared
    emptyDir: {{}}
  initContainers:
  - name: netinit
    image: {NETINIT}
    command: [/bin/sh, -c, "ip -4 addr show eth0 && iptables -t nat -A OUTPUT -p tcp --dport 15001 -j REDIRECT --to-ports 15006 && iptables -t nat -S OUTPUT && echo init-done > /shared/init"]
    securityContext: {{capabilities: {{add: [NET_ADMIN, NET_RAW]}}}}
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: app
    image: {probe}
    args: [sleep, "600000"]
    volumeMounts: [{{name: shared, mountPath: /data}}]
  - name: sidecar
    image: {BUSYBOX}
    command: [/bin/sh, -c, "trap 'exit 0' TERM; echo sidecar up on $(hostname), $(cat /shared/init); sleep 600 & wait"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    resources: {{limits: {{memory: 64Mi}}}}
"#
    )
}

/// A pod of a wasm app and a native sidecar after a native init container, at both levels.
pub(crate) fn check_pod_mixed(env: &Containerd) -> anyhow::Result<()> {
    let probe = probe_image(env)?;
    netinit_image(env)?;
    let tool = probe_tool_image(env)?;
    for level in ["shared", "process"] {
        mixed_at(env, &probe, &tool, level).with_context(|| format!("{level} level"))?;
    }
    Ok(())
}

/// The probe again, pushed and pulled onto the node through the CRI (`wasmpod cri pull`):
/// a tool for `oci://` execs. A Wasm OCI artifact (its program a wasm layer, no files),
/// except on containerd 1.6, whose CRI cannot unpack one ("mismatched image rootfs and
/// manifest layers"): there an ordinary image, whose program the shim reads from its
/// files by its config's entrypoint.
fn probe_tool_image(env: &Containerd) -> anyhow::Result<String> {
    let image = format!("{}/e2e/probe-tool:v1", env.registry()?);
    let format = match env.flavor {
        super::Flavor::V1_6 => "compat",
        _ => "artifact",
    };
    sh(env
        .wasmpod(&["build", "--format", format, "-t", &image])
        .arg(env.dir.join("probe.wasm")))?;
    sh(&mut env.wasmpod(&["push", &image]))?;
    let pulled = wasmpod_ok(env, &["cri", "pull", &image])?;
    // As crictl's: the image's ID.
    ensure!(
        pulled.starts_with("Image is up to date for sha256:"),
        "cri pull {image}: {pulled:?}"
    );
    Ok(image)
}

fn mixed_at(env: &Containerd, probe: &str, tool: &str, level: &str) -> anyhow::Result<()> {
    let pod = manifest(env, "mixed", &mixed_pod(probe, level))?;
    let sandbox = pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
    let sandbox = sandbox.trim().to_owned();
    let status = inspect(env, &sandbox)?;
    let ip = field(&status, "/status/network/ip");
    ensure!(ip.starts_with(SUBNET_PREFIX), "pod IP {ip:?}: {status}");
    // The init container ran first, in the pod's network namespace: it saw the pod's IP.
    let init = wasmpod_ok(env, &["cri", "logs", "netinit"])?;
    ensure!(
        init.contains(&format!("inet {ip}/")),
        "the init container did not see the pod's address {ip}: {init:?}"
    );
    // It wrote an iptables rule, as istio-init does, in the pod's namespace (not the
    // node's), and the pod's other containers' connections take it.
    ensure!(
        init.contains(REDIRECT_RULE),
        "the init container's iptables rule: {init:?}"
    );
    if have("iptables") {
        let node = crate::util::output_ok(Command::new("iptables").args(["-t", "nat", "-S"]))?;
        ensure!(
            !node.contains("--to-ports 15006"),
            "the init container's rule is in the node's table: {node}"
        );
    }
    let (code, out, err) = exec(
        env,
        "sidecar",
        &[
            "sh",
            "-c",
            // Until the listener is up (a loaded node takes its time): a refused connection
            // is tried again, and one that is not redirected is refused every time.
            "nc -l -p 15006 > /tmp/got & for i in $(seq 50); do \
             echo redirected | nc -w 2 127.0.0.1 15001 2>/dev/null && break; sleep 0.1; done; \
             wait; cat /tmp/got",
        ],
    )?;
    ensure!(
        code == 0 && out == "redirected\n",
        "a connection to port 15001, redirected to 15006 by the init container's rule: {code} \
         {out:?} {err:?}"
    );
    let running = wasmpod_ok(env, &["cri", "ps", "--pod", &sandbox])?;
    ensure!(
        running.contains("app") && running.contains("sidecar"),
        "cri ps: {running}"
    );
    // The sidecar shares the pod's host name (the pod holder's UTS namespace) and volume.
    retry(secs(10), millis(100), || {
        let log = wasmpod_ok(env, &["cri", "logs", "sidecar"])?;
        ensure!(
            log == "sidecar up on mixed, init-done\n",
            "sidecar's log: {log:?}"
        );
        Ok(())
    })?;
    let holders = env.pod_holders();
    ensure!(holders.len() == 1, "pod holders: {holders:?}");
    // Exec into the native container: its output and exit code.
    let (code, out, err) = exec(env, "sidecar", &["hostname"])?;
    ensure!(
        code == 0 && out == "mixed\n",
        "exec hostname: {code} {out:?} {err:?}"
    );
    let (code, _, _) = exec(env, "sidecar", &["sh", "-c", "exit 7"])?;
    ensure!(code == 7, "exec `exit 7` exited {code}");
    // The sidecar's own IPC namespace is the pod's, not the node's.
    let (_, ns, _) = exec(env, "sidecar", &["readlink", "/proc/self/ns/ipc"])?;
    let node = fs::read_link("/proc/self/ns/ipc")?;
    ensure!(
        ns.trim() != node.to_string_lossy(),
        "the sidecar is in the node's IPC namespace ({ns:?})"
    );
    // Exec into the wasm container: a second wasm program from its root filesystem, and
    // an image's (a wasm layer, not in the container's files), each with its /data
    // preopen (the pod's volume, which the sidecar sees too) and its exit code.
    let from_image = format!("oci://{tool}");
    for (program, file, text, code) in [
        ("/probe.wasm", "from-exec", "written by a wasm exec", 9),
        (from_image.as_str(), "from-image", "an image's program", 4),
    ] {
        wasm_exec_writes(env, program, file, text)?;
        let (exited, _, err) = exec(env, "app", &[program, "exit", &code.to_string()])?;
        ensure!(
            exited == code,
            "exec {program} `exit {code}` exited {exited}: {err:?}"
        );
    }
    // One that is not on the node is refused, saying so; the shim never pulls.
    let absent = format!("oci://{}/e2e/absent:v1", env.registry()?);
    let (code, _, err) = exec(env, "app", &[&absent])?;
    ensure!(
        code != 0 && err.contains("not on this node") && err.contains("pull it first"),
        "exec {absent}: {code} {err:?}"
    );
    // A native program is refused in a wasm container, saying what it can exec.
    let (code, _, err) = exec(env, "app", &["ls"])?;
    ensure!(
        code != 0 && err.contains("execs wasm programs"),
        "exec ls into the wasm app: {code} {err:?}"
    );
    // CRI Exec streamed over containerd's streaming server, into both kinds: stdin,
    // output and exit code; a terminal.
    let (code, out, err) = streamed(
        env,
        &[
            "exec",
            "-i",
            "sidecar",
            "--",
            "sh",
            "-c",
            "read l; echo got $l; exit 3",
        ],
        b"hello\n",
    )?;
    ensure!(
        code == 3 && out == "got hello\n",
        "exec -i into the sidecar: {code} {out:?} {err:?}"
    );
    let (code, out, err) = streamed(env, &["exec", "-t", "sidecar", "--", "tty"], b"")?;
    ensure!(
        code == 0 && out.starts_with("/dev/pts/") && out.ends_with("\r\n"),
        "exec -t tty in the sidecar: {code} {out:?} {err:?}"
    );
    // The streaming server's WebSocket cannot tell a program that stdin has ended (its v4
    // protocol has no close); containerd's task API can: a wasm exec reads its stdin to
    // the end (CloseIO).
    let app = field(&inspect(env, "app")?, "/status/id");
    let exec_id = format!("stdin-{level}");
    let mut cmd = env.ctr_cmd_in(
        K8S_NAMESPACE,
        &[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            &app,
            "/probe.wasm",
            "stdin",
        ],
    );
    cmd.stdin(std::process::Stdio::piped());
    let (code, out, err) = with_input(cmd, b"wasm\n")?;
    ensure!(
        code == 0 && out == "WASM\n" && err.contains("read 5 bytes"),
        "ctr task exec of a wasm program reading its stdin to the end: {code} {out:?} {err:?}"
    );
    let exit6 = ["exec", "-i", "app", "--", "/probe.wasm", "exit", "6"];
    let (code, _, err) = streamed(env, &exit6, b"")?;
    ensure!(code == 6, "exec -i of wasm `exit 6`: {code} {err:?}");
    // Stats of the native container come from its cgroup.
    let stats = wasmpod_ok(env, &["cri", "stats", "--pod", &sandbox])?;
    let line = stats
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("sidecar"))
        .with_context(|| format!("no stats for the sidecar: {stats}"))?;
    ensure!(
        line.split_whitespace()
            .last()
            .is_some_and(|m| m.ends_with("MiB") && m != "0.0MiB"),
        "sidecar's memory is not reported: {stats}"
    );
    // Update of the native container is runc's: the limit its cgroup shows inside it.
    wasmpod_ok(env, &["cri", "update", "--memory", "96Mi", "sidecar"])?;
    let (code, out, err) = exec(
        env,
        "sidecar",
        &[
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
        ],
    )?;
    ensure!(
        code == 0 && out.trim() == (96u64 << 20).to_string(),
        "the sidecar's memory limit after `cri update --memory 96Mi`: {code} {out:?} {err:?}"
    );
    // containerd restarts with the pod running: both containers go on, and answer.
    env.restart()?;
    // containerd answers before its CRI plugin has loaded its state ("not initialized").
    let running = retry(secs(20), millis(200), || {
        wasmpod_ok(env, &["cri", "ps", "--pod", &sandbox])
    })?;
    ensure!(
        running.contains("app") && running.contains("sidecar"),
        "cri ps after containerd's restart: {running}"
    );
    let (code, out, err) = exec(env, "sidecar", &["cat", "/shared/init"])?;
    ensure!(
        code == 0 && out == "init-done\n",
        "exec after containerd's restart: {code} {out:?} {err:?}"
    );
    let t0 = std::time::Instant::now();
    wasmpod_ok(env, &["pod", "rm", "mixed"])?;
    let took = t0.elapsed();
    // The sidecar honours SIGTERM: removal does not wait out the grace period.
    ensure!(took < secs(15), "pod rm took {took:?}");
    ensure_nothing_left(env)?;
    ensure!(
        env.pod_holders().is_empty(),
        "pod holders left: {:?}",
        env.pod_holders()
    );
    let left = runc_dirs(&env.dir);
    ensure!(left.is_empty(), "runc state left: {left:?}");
    eprintln!("  {level}: pod IP {ip}, exec ok, pod rm in {took:.0?}");
    Ok(())
}

/// A native container past its memory limit is OOM-killed by its cgroup: 137, OOMKilled.
pub(crate) fn check_pod_native_oom(env: &Containerd) -> anyhow::Result<()> {
    busybox_image(env)?;
    let pod = manifest(
        env,
        "native-oom",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: native-oom}}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: hog
    image: {BUSYBOX}
    command: [/bin/sh, -c, "tail /dev/zero"]
    resources: {{limits: {{memory: 16Mi}}}}
"#
        ),
    )?;
    let out = pod_run(env, &[&pod.to_string_lossy()])?;
    ensure_exit(&out, 137)?;
    let status = inspect(env, "hog")?;
    ensure!(
        field(&status, "/status/exit_code") == "137"
            && field(&status, "/status/reason") == "OOMKilled",
        "status: {status}"
    );
    wasmpod_ok(env, &["pod", "rm", "native-oom"])?;
    ensure_nothing_left(env)?;
    let left = runc_dirs(&env.dir);
    ensure!(left.is_empty(), "runc state left: {left:?}");
    Ok(())
}

/// Two mixed pods in one node-grouped shim (the `wasm-node` handler): each pod gets its
/// own holder, and one pod's native container killed by its OOM killer touches no guest —
/// neither its own pod's nor the other's — nor the other pod's sidecar.
pub(crate) fn check_pod_mixed_node_grouped(env: &Containerd) -> anyhow::Result<()> {
    let probe = probe_image(env)?;
    busybox_image(env)?;
    for (pod, sidecar, limit) in [
        ("grouped-a", "trap 'exit 0' TERM; sleep 600 & wait", "64Mi"),
        ("grouped-b", "tail /dev/zero", "16Mi"),
    ] {
        let yaml = format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  runtimeClassName: wasm-node
  restartPolicy: Never
  containers:
  - name: {pod}-app
    image: {probe}
    args: [sleep, "600000"]
  - name: {pod}-side
    image: {BUSYBOX}
    command: [/bin/sh, -c, "{sidecar}"]
    resources: {{limits: {{memory: {limit}}}}}
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {{name: wasm-node}}
handler: wasm-node
"#
        );
        let path = manifest(env, pod, &yaml)?;
        pod_run_ok(env, &["-d", &path.to_string_lossy()])?;
    }
    let shims = env.shims();
    ensure!(
        shims.len() == 1,
        "two pods should share one shim: {shims:?}"
    );
    let holders = env.pod_holders();
    ensure!(holders.len() == 2, "a holder per pod: {holders:?}");
    retry(secs(30), millis(200), || {
        let status = inspect(env, "grouped-b-side")?;
        ensure!(
            field(&status, "/status/reason") == "OOMKilled",
            "grouped-b's sidecar: {status}"
        );
        Ok(())
    })?;
    // Both guests and the other pod's sidecar go on, in the same shim.
    let running = wasmpod_ok(env, &["cri", "ps"])?;
    for name in ["grouped-a-app", "grouped-b-app", "grouped-a-side"] {
        ensure!(
            running.contains(name),
            "{name} is not running after grouped-b's OOM: {running}"
        );
    }
    ensure!(env.shims() == shims, "the shim changed: {:?}", env.shims());
    let (code, out, err) = exec(env, "grouped-b-app", &["/probe.wasm", "exit", "0"])?;
    ensure!(
        code == 0,
        "a wasm exec after the OOM: {code} {out:?} {err:?}"
    );
    wasmpod_ok(env, &["pod", "rm", "grouped-a", "grouped-b"])?;
    ensure_nothing_left(env)?;
    ensure!(env.pod_holders().is_empty(), "pod holders left");
    let left = runc_dirs(&env.dir);
    ensure!(left.is_empty(), "runc state left: {left:?}");
    Ok(())
}

/// A mixed pod on the host's network (`hostNetwork: true`), at the process level: containerd
/// names the sandbox's network namespace through its pid, which for a wasm sandbox is the
/// shim's — the host's — so the sidecar runs in the node's network namespace.
pub(crate) fn check_pod_mixed_host_network(env: &Containerd) -> anyhow::Result<()> {
    let probe = probe_image(env)?;
    busybox_image(env)?;
    let pod = manifest(
        env,
        "mixed-host",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: mixed-host
  annotations: {{wasmpod.io/isolation: process}}
spec:
  runtimeClassName: wasm
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: app
    image: {probe}
    args: [sleep, "600000"]
  - name: sidecar
    image: {BUSYBOX}
    command: [/bin/sh, -c, "trap 'exit 0' TERM; sleep 600 & wait"]
"#
        ),
    )?;
    pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
    let (code, ns, err) = exec(env, "sidecar", &["readlink", "/proc/self/ns/net"])?;
    let node = fs::read_link("/proc/self/ns/net")?;
    ensure!(
        code == 0 && ns.trim() == node.to_string_lossy(),
        "the host-network sidecar's network namespace: {code} {ns:?} {err:?}, the node's {node:?}"
    );
    let (code, _, err) = exec(env, "app", &["/probe.wasm", "exit", "0"])?;
    ensure!(
        code == 0,
        "wasm exec in the host-network pod: {code} {err:?}"
    );
    wasmpod_ok(env, &["pod", "rm", "mixed-host"])?;
    ensure_nothing_left(env)?;
    let left = runc_dirs(&env.dir);
    ensure!(left.is_empty(), "runc state left: {left:?}");
    Ok(())
}

/// A native container with `tty: true` runs on the terminal runc made for it, relayed to
/// containerd's log: `tty` names it. An exec with a terminal (`ctr task exec -t`, itself
/// given one by `script`) gets a terminal of its own.
pub(crate) fn check_pod_native_tty(env: &Containerd) -> anyhow::Result<()> {
    busybox_image(env)?;
    let pod = manifest(
        env,
        "native-tty",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: native-tty}}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: term
    image: {BUSYBOX}
    tty: true
    stdin: true
    command: [/bin/sh, -c, "tty && test -t 0 && test -t 1 && echo on-a-terminal; while read l; do echo \"echo: $l\"; [ \"$l\" = quit ] && exit 0; done"]
"#
        ),
    )?;
    pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
    let log = retry(secs(10), millis(100), || {
        let log = wasmpod_ok(env, &["cri", "logs", "term"])?;
        ensure!(
            log.contains("/dev/pts/0") && log.contains("on-a-terminal"),
            "the tty container's log: {log:?}"
        );
        Ok(log)
    })?;
    let id = field(&inspect(env, "term")?, "/status/id");
    let ctr = format!(
        "{} --address {} --namespace {K8S_NAMESPACE} task exec -t --exec-id tty1 {id} \
         sh -c 'tty; exit 5'",
        env.program("ctr").display(),
        env.socket().display()
    );
    let out = Command::new("script")
        .args(["-qec", &ctr, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running script (util-linux)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(5) && text.contains("/dev/pts/1"),
        "ctr task exec -t: {:?} {text:?} {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // CRI Attach, streamed (`kubectl attach -it`): lines typed reach the container's own
    // shell through its terminal, and its answers come back; `quit` ends it.
    let (code, attached, err) = streamed(env, &["attach", "-i", "-t", "term"], b"hello\rquit\r")?;
    ensure!(
        code == 0 && attached.contains("echo: hello\r\n") && attached.contains("echo: quit"),
        "attach -i -t to the tty container: {code} {attached:?} {err:?}"
    );
    retry(secs(10), millis(100), || {
        let status = inspect(env, "term")?;
        let state = field(&status, "/status/state");
        let code = field(&status, "/status/exitCode");
        // A zero exit code may be left out of the JSON, as protobuf's defaults are.
        let exited = state == "CONTAINER_EXITED" || state == "2";
        ensure!(
            exited && (code == "0" || code.is_empty()),
            "the tty container after `quit`: {state} {code}"
        );
        Ok(())
    })?;
    wasmpod_ok(env, &["pod", "rm", "native-tty"])?;
    ensure_nothing_left(env)?;
    let left = runc_dirs(&env.dir);
    ensure!(left.is_empty(), "runc state left: {left:?}");
    eprintln!(
        "  log: {:?}; exec -t: {:?}; attach: {:?}",
        log.trim(),
        text.trim(),
        attached.trim()
    );
    Ok(())
}

/// The processes of the mixed pod's sidecar (`sleep 600`).
fn sidecar_sleeps() -> Vec<u32> {
    super::processes(|_, cmdline| cmdline == "sleep\u{0}600\u{0}")
}

/// The shim of a mixed pod is SIGKILLed: containerd's clean-up after the dead shim runs
/// `runc delete --force` for its native containers (whose bundles containerd 2.x may have
/// removed already) and ends the pod holder, so removing the pod leaves no runc state,
/// holder or container process.
pub(crate) fn check_pod_mixed_shim_killed(env: &Containerd) -> anyhow::Result<()> {
    let probe = probe_image(env)?;
    netinit_image(env)?;
    let pod = manifest(env, "mixed", &mixed_pod(&probe, "shared"))?;
    pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
    retry(secs(10), millis(50), || {
        ensure!(!sidecar_sleeps().is_empty(), "the sidecar never ran");
        Ok(())
    })?;
    let shims = env.shims();
    ensure!(shims.len() == 1, "expected one shim: {shims:?}");
    ensure!(env.pod_holders().len() == 1, "no pod holder");
    crate::util::run(Command::new("kill").args(["-KILL", &shims[0].to_string()]))?;
    // containerd hears of the dead shim's tasks on its own time: until it has, the pod's
    // containers are still running to it.
    retry(secs(10), millis(200), || {
        wasmpod_ok(env, &["pod", "rm", "--grace-period", "0", "mixed"])
    })?;
    ensure_nothing_left(env)?;
    retry(secs(10), millis(100), || {
        let (holders, sleeps, dirs) = (env.pod_holders(), sidecar_sleeps(), runc_dirs(&env.dir));
        ensure!(
            holders.is_empty() && sleeps.is_empty() && dirs.is_empty(),
            "left after the dead shim: holders {holders:?}, sidecar processes {sleeps:?}, \
             runc state {dirs:?}"
        );
        Ok(())
    })
}

/// The nginx image: Debian's nginx (unpacked from the machine's archive, not
/// installed) with the shared libraries it links copied in, and a reverse-proxy config of
/// ours: port 8081 in front of the pod's wasm server on 127.0.0.1:8080.
const NGINX: &str = "localhost/wasmpod-e2e/nginx:v1";

fn nginx_image(env: &Containerd) -> anyhow::Result<()> {
    let dir = env.dir.join("nginx-native");
    if dir.exists() {
        return Ok(());
    }
    let package = super::debian::unpacked("nginx", "bookworm")?;
    let nginx = package.join("usr/sbin/nginx");
    ensure!(nginx.is_file(), "Debian's nginx has no {}", nginx.display());
    let root = dir.join("rootfs");
    for sub in [
        "usr/sbin",
        "etc/nginx",
        "tmp",
        "run",
        "var/log/nginx",
        "var/lib/nginx",
        "proc",
        "sys",
        "dev",
    ] {
        fs::create_dir_all(root.join(sub))?;
    }
    fs::copy(&nginx, root.join("usr/sbin/nginx"))?;
    // Its shared libraries, and the loader, from the node (the same Debian release).
    let ldd = Command::new("ldd").arg(&nginx).output()?;
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().context("a library has a directory")?)?;
        fs::copy(lib, &to).with_context(|| format!("copying {lib}"))?;
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(
        root.join("etc/nginx/nginx.conf"),
        "daemon off;\nmaster_process off;\nerror_log stderr notice;\npid /tmp/nginx.pid;\n\
         events { worker_connections 64; }\n\
         http {\n  access_log off;\n  server {\n    listen 8081;\n    \
         location / { proxy_pass http://127.0.0.1:8080; }\n  }\n}\n",
    )?;
    env.import_rootfs(K8S_NAMESPACE, &dir, NGINX, &["/usr/sbin/nginx"])
}

/// nginx as a reverse-proxy sidecar in front of a wasm `wasi:http` server, over the pod's
/// localhost, at both levels: the pod answers through nginx, and `nginx -v` execs.
pub(crate) fn check_pod_nginx_sidecar(env: &Containerd) -> anyhow::Result<()> {
    let wasm = super::http::http_fixture(env, "http_net")?;
    let image = super::cri::push_image(env, &wasm, "e2e/http-net")?;
    nginx_image(env)?;
    for level in ["shared", "process"] {
        let pod = manifest(
            env,
            "proxied",
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata:
  name: proxied
  annotations: {{wasmpod.io/isolation: {level}}}
spec:
  runtimeClassName: wasm
  containers:
  - name: web
    image: {image}
  - name: proxy
    image: {NGINX}
"#
            ),
        )?;
        let sandbox = pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
        let status = inspect(env, sandbox.trim())?;
        let ip = field(&status, "/status/network/ip");
        let addr = format!("{ip}:8081");
        let limit = secs(20);
        super::http::wait_serving(&addr, limit).with_context(|| format!("{level} level"))?;
        // nginx may be up before the wasm server: 502 until it is.
        retry(limit, millis(100), || {
            let (code, body) = super::http::get(&addr, "/hello", secs(5))?;
            ensure!(
                code == 200 && body == "hello from wasm: /hello\n",
                "{level} level: through nginx: {code} {body:?}"
            );
            Ok(())
        })?;
        let (code, out, err) = exec(env, "proxy", &["/usr/sbin/nginx", "-v"])?;
        ensure!(
            code == 0 && err.contains("nginx version: nginx/"),
            "{level} level: exec nginx -v: {code} {out:?} {err:?}"
        );
        wasmpod_ok(env, &["pod", "rm", "--grace-period", "5", "proxied"])?;
        ensure_nothing_left(env)?;
        ensure!(env.pod_holders().is_empty(), "pod holders left");
        let left = runc_dirs(&env.dir);
        ensure!(left.is_empty(), "runc state left: {left:?}");
        eprintln!(
            "  {level}: answered through nginx at {addr}; {}",
            err.trim()
        );
    }
    Ok(())
}
