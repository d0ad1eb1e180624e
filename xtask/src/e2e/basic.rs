//! The `ctr run` checks of the e2e: output and exit codes, env, mounts, stdin, kill,
//! limits, a pod sandbox, events and metrics, pulls and artifacts, containerd's restart, a
//! killed shim, the shim's socket, and cycles.

use super::*;

pub(crate) fn check_output_and_exit_codes(env: &Containerd) -> anyhow::Result<()> {
    let (code, out, err) = env.run_wasm("args", &[], &["args", "hello", "wasm world"])?;
    ensure!(code == 0, "exit {code}: {err}");
    ensure!(
        out.contains("arg[0]=/probe.wasm")
            && out.contains("arg[2]=hello")
            && out.contains("arg[3]=wasm world"),
        "unexpected output: {out:?}"
    );
    // The native snapshotter hands the shim a bind mount instead of overlayfs.
    let (code, out, err) =
        env.run_wasm("native", &["--snapshotter", "native"], &["args", "native"])?;
    ensure!(
        code == 0 && out.contains("arg[2]=native"),
        "native snapshotter: {code} {out:?} {err}"
    );
    let (code, _, err) = env.run_wasm("exit7", &[], &["exit", "7"])?;
    ensure!(code == 7, "proc_exit(7) gave {code}: {err}");
    // Each phase of that run's start path was timed (WASMPOD_TIMINGS, which the bench
    // reads), under the container's id.
    let timed = crate::bench::breakdown::read(&env.timings(), "exit7")?;
    for phase in [
        "shim.start",
        "create",
        "create.spec",
        "create.load",
        "start",
        "guest.setup",
        "guest.run",
        "delete",
    ] {
        ensure!(
            timed
                .get(phase)
                .is_some_and(|by_id| by_id.contains_key("exit7")),
            "no {phase} timing for exit7 in {}: {:?}",
            env.timings().display(),
            timed.keys().collect::<Vec<_>>()
        );
    }
    let (code, _, err) = env.run_wasm("trap", &[], &["trap"])?;
    ensure!(code == 134, "a trap gave {code}: {err}");
    ensure!(
        err.contains("wasm") || err.contains("unreachable"),
        "no trap message: {err:?}"
    );
    Ok(())
}

pub(crate) fn check_env(env: &Containerd) -> anyhow::Result<()> {
    let (code, out, err) = env.run_wasm("env", &["--env", "GREETING=hi there"], &["env"])?;
    ensure!(code == 0, "exit {code}: {err}");
    ensure!(
        out.lines().any(|l| l == "GREETING=hi there"),
        "GREETING missing: {out:?}"
    );
    Ok(())
}

/// `ctr run --mount` of host directory `src` at `dst`, `mode` `ro` or `rw`.
pub(crate) fn bind_mount(src: &Path, dst: &str, mode: &str) -> String {
    format!(
        "type=bind,src={},dst={dst},options=rbind:{mode}",
        src.display()
    )
}

pub(crate) fn check_bind_mounts(env: &Containerd) -> anyhow::Result<()> {
    let data = env.dir.join("data");
    // Afresh, for a second run in the same containerd (`cargo xtask orderfile`).
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(&data)?;
    fs::write(data.join("in.txt"), "from the host\n")?;
    let ro = bind_mount(&data, "/data", "ro");
    let (code, out, _) = env.run_wasm("ro-read", &["--mount", &ro], &["cat", "/data/in.txt"])?;
    ensure!(
        code == 0 && out.contains("from the host"),
        "ro read: {code} {out:?}"
    );
    let (code, out, _) = env.run_wasm(
        "ro-write",
        &["--mount", &ro],
        &["write", "/data/new.txt", "x"],
    )?;
    ensure!(
        code != 0 && !data.join("new.txt").exists(),
        "ro mount took a write: {code} {out:?}"
    );
    let rw = bind_mount(&data, "/data", "rw");
    let (code, out, _) = env.run_wasm(
        "rw-write",
        &["--mount", &rw],
        &["write", "/data/new.txt", "written"],
    )?;
    ensure!(code == 0, "rw write: {code} {out:?}");
    ensure!(
        fs::read_to_string(data.join("new.txt"))? == "written",
        "the host does not see the write"
    );
    // Nothing outside the container's directories: the host's /etc is not the guest's.
    let (_, out, _) = env.run_wasm("escape", &[], &["cat", "/../../../../etc/hostname"])?;
    let host = fs::read_to_string("/etc/hostname").unwrap_or_default();
    ensure!(
        host.is_empty() || !out.contains(host.trim()),
        "the guest read the host's /etc/hostname"
    );
    Ok(())
}

pub(crate) fn check_stdin(env: &Containerd) -> anyhow::Result<()> {
    let mut child = env
        .ctr_cmd(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            "stdin",
            "/probe.wasm",
            "stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"twelve bytes")?;
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "stdin run failed: {err}");
    ensure!(err.contains("read 12 bytes"), "stdin not seen: {err:?}");
    Ok(())
}

/// Starts `ctr run --rm` of a spinning probe with `flags`, sends `signal` once it runs, and
/// fails unless it ends with `expected` within a second (on a host's CPU, see
/// [`scaled`]); returns how long it took.
pub(crate) fn kill_spinning(
    env: &Containerd,
    id: &str,
    flags: &[&str],
    signal: &str,
    expected: i32,
) -> anyhow::Result<Duration> {
    let mut all = vec!["run", "--rm", "--runtime", RUNTIME];
    all.extend_from_slice(flags);
    all.extend_from_slice(&[IMAGE, id, "/probe.wasm", "spin"]);
    let child = env
        .ctr_cmd(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    env.wait_status(id, "RUNNING", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    env.ctr_ok(&["task", "kill", "-s", signal, id])?;
    let out = child.wait_with_output()?;
    let took = t0.elapsed();
    let code = out.status.code().unwrap_or(-1);
    ensure!(
        code == expected,
        "{signal} gave exit {code}, not {expected}"
    );
    ensure!(
        took < scaled(Duration::from_secs(1)),
        "{signal} took {took:?} to stop a spinning guest"
    );
    Ok(took)
}

pub(crate) fn check_kill(env: &Containerd) -> anyhow::Result<()> {
    for (signal, expected) in [("SIGTERM", 143), ("SIGKILL", 137)] {
        let id = format!("spin-{}", signal.to_lowercase());
        let took = kill_spinning(env, &id, &[], signal, expected)?;
        eprintln!("  {signal}: spinning guest stopped in {took:.0?}, exit {expected}");
    }
    Ok(())
}

pub(crate) fn check_memory_limit(env: &Containerd) -> anyhow::Result<()> {
    // Past its limit the guest is OOM-killed, as a memory cgroup would kill a process.
    let (code, out, err) = env.run_wasm(
        "mem",
        &["--memory-limit", &(32u64 << 20).to_string()],
        &["alloc", "64"],
    )?;
    ensure!(
        code == 137 && !out.contains("allocated"),
        "a 32 MiB limit let the guest go on (exit {code}): {out:?} {err:?}"
    );
    let (code, out, _) = env.run_wasm(
        "mem-ok",
        &["--memory-limit", &(128u64 << 20).to_string()],
        &["alloc", "64"],
    )?;
    ensure!(
        code == 0 && out.contains("allocated 64 MiB"),
        "128 MiB limit: {code} {out:?}"
    );
    Ok(())
}

pub(crate) fn check_not_wasm(env: &Containerd) -> anyhow::Result<()> {
    let bin = env.dir.join("notwasm");
    fs::create_dir_all(&bin)?;
    // Neither wasm nor a Linux program (an ELF file or a `#!` script runs through runc).
    fs::write(bin.join("app.txt"), "echo native\n")?;
    let mount = bind_mount(&bin, "/app", "ro");
    let mounts_before = env.mounts().len();
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--mount",
        &mount,
        IMAGE,
        "notwasm",
        "/app/app.txt",
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a text file ran as wasm");
    ensure!(
        err.contains("not a WebAssembly") && err.contains("/app/app.txt") && err.contains(IMAGE),
        "the error does not say what is wrong: {err}"
    );
    ensure!(env.task("notwasm")?.is_none(), "a task was left behind");
    let _ = env.ctr(&["container", "rm", "notwasm"]);
    ensure!(
        env.mounts().len() <= mounts_before,
        "a mount was left behind: {:?}",
        env.mounts()
    );
    eprintln!("  error: {}", err.trim());
    Ok(())
}

pub(crate) fn check_pod_sandbox(env: &Containerd) -> anyhow::Result<()> {
    let pod = [
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=pod1",
    ];
    // A sandbox container runs nothing, whatever its args say.
    env.run_detached("pod1", &pod, &["exit", "3"])?;
    let app = [
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=pod1",
    ];
    env.run_detached("pod1-app", &app, &["sleep", "600000"])?;
    let (sandbox_pid, _) = env.task("pod1")?.context("sandbox task")?;
    let (app_pid, _) = env.task("pod1-app")?.context("app task")?;
    ensure!(
        sandbox_pid == app_pid,
        "the pod's containers run in two shims ({sandbox_pid}, {app_pid})"
    );
    ensure!(
        env.shims().len() == 1,
        "expected one shim, found {:?}",
        env.shims()
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "pod1-app"])?;
    env.wait_status("pod1-app", "STOPPED", Duration::from_secs(2))?;
    env.ctr_ok(&["task", "rm", "pod1-app"])?;
    ensure!(
        env.task("pod1")?.is_some_and(|(_, s)| s == "RUNNING"),
        "the sandbox ended with the app"
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "pod1"])?;
    env.wait_status("pod1", "STOPPED", Duration::from_secs(2))?;
    env.ctr_ok(&["task", "rm", "pod1"])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env.shims().is_empty() {
        ensure!(
            Instant::now() < deadline,
            "the pod's shim outlived its containers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(crate) fn check_events_and_metrics(env: &Containerd) -> anyhow::Result<()> {
    let events = env.watch_events()?;
    let (code, _, err) = env.run_wasm("ev", &[], &["alloc", "8"])?;
    ensure!(code == 0, "ev: exit {code}: {err}");
    env.run_detached("metrics", &[], &["sleep", "600000"])?;
    let metrics = env.ctr_ok(&["task", "metrics", "metrics"])?;
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "metrics"])?;
    let text = events.finish()?;
    // Every event, and in the order the task went through them (the shim sends its queue
    // of events after answering the calls, in order).
    let mut last = None;
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        let at = text
            .lines()
            .position(|l| l.contains(topic) && l.contains("\"ev\""));
        ensure!(at.is_some(), "no {topic} event for ev in:\n{text}");
        ensure!(at > last, "{topic} of ev out of order in:\n{text}");
        last = at;
    }
    ensure!(
        metrics.contains("memory.usage_in_bytes"),
        "no memory in metrics: {metrics}"
    );
    Ok(())
}

pub(crate) fn check_registry_pull(env: &Containerd) -> anyhow::Result<()> {
    let registry = Registry::start();
    let host = registry.host();
    let remote = format!("{host}/e2e/probe:v1");
    sh(Command::new(&env.wasmpod)
        .arg("--root")
        .arg(env.dir.join("wasmpod"))
        .args(["push", IMAGE, &remote]))?;
    env.ctr_ok(&["image", "pull", "--plain-http", &remote])?;
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &remote,
        "pulled",
        "/probe.wasm",
        "args",
        "pulled",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("arg[2]=pulled"),
        "pulled image run: {text}"
    );
    Ok(())
}

pub(crate) fn check_artifact(env: &Containerd) -> anyhow::Result<()> {
    const ARTIFACT: &str = "localhost/wasmpod-e2e/probe-artifact:v1";
    env.import(&env.dir.join("probe.wasm"), ARTIFACT, "artifact")?;
    for (id, args, expected_code, expected_out) in [
        (
            "art-args",
            &["probe.wasm", "args", "from-content"][..],
            0,
            "arg[2]=from-content",
        ),
        ("art-exit", &["probe.wasm", "exit", "7"][..], 7, ""),
    ] {
        let out_file = env.dir.join(format!("{id}.out"));
        let out = Command::new(&env.run_via_api)
            .arg(env.socket())
            .args([NAMESPACE, RUNTIME, ARTIFACT, id])
            .arg(&out_file)
            .args(args)
            .output()?;
        let code = out.status.code().unwrap_or(-1);
        let text = fs::read_to_string(&out_file).unwrap_or_default();
        ensure!(
            code == expected_code && text.contains(expected_out),
            "artifact {id}: exit {code} (want {expected_code}), output {text:?}, {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub(crate) fn check_containerd_restart(env: &Containerd) -> anyhow::Result<()> {
    env.run_detached("survivor", &[], &["sleep", "600000"])?;
    let (pid, _) = env.task("survivor")?.context("task")?;
    env.restart()?;
    let after = env.task("survivor")?;
    ensure!(
        after == Some((pid, "RUNNING".into())),
        "after the restart: {after:?}"
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGTERM", "survivor"])?;
    env.wait_status("survivor", "STOPPED", Duration::from_secs(2))?;
    env.ctr_ok(&["task", "rm", "survivor"])?;
    env.ctr_ok(&["container", "rm", "survivor"])?;
    Ok(())
}

/// A field of `/proc/PID/status` (`NoNewPrivs`, `CapBnd`).
pub(crate) fn proc_status(pid: u32, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// A cgroup v1 file of container `id` (`memory`, `memory.usage_in_bytes`), as ctr's
/// `cgroupsPath` `/NAMESPACE/ID` puts it.
pub(crate) fn cgroup_file(controller: &str, id: &str, file: &str) -> PathBuf {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        format!("/sys/fs/cgroup/{NAMESPACE}/{id}/{file}").into()
    } else {
        format!("/sys/fs/cgroup/{controller}/{NAMESPACE}/{id}/{file}").into()
    }
}

/// Waits until containerd shows task `id` of a dead shim as stopped, or no longer at all.
pub(crate) fn wait_dead_shim_task(env: &Containerd, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match env.task(id)? {
            None => return Ok(()),
            Some((_, s)) if s == "STOPPED" => return Ok(()),
            Some(_) if Instant::now() > deadline => {
                bail!("containerd still shows the task {id} of a dead shim")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub(crate) fn check_shim_killed(env: &Containerd) -> anyhow::Result<()> {
    // Two tasks in one shim (node grouping); the shim is SIGKILLed under them: containerd
    // reports each task's exit (137) and cleans up after the dead shim.
    let node = ["--annotation", "wasmpod.io/grouping=node"];
    env.run_detached("orphan", &node, &["sleep", "600000"])?;
    env.run_detached("orphan-2", &node, &["sleep", "600000"])?;
    let (pid, _) = env.task("orphan")?.context("task")?;
    let (pid2, _) = env.task("orphan-2")?.context("task")?;
    ensure!(pid == pid2, "node grouping: two shims {pid} and {pid2}");
    let events = env.watch_events()?;
    sh(Command::new("kill").args(["-KILL", &pid.to_string()]))?;
    wait_dead_shim_task(env, "orphan")?;
    wait_dead_shim_task(env, "orphan-2")?;
    let text = events.finish()?;
    for id in ["orphan", "orphan-2"] {
        ensure!(
            text.lines()
                .any(|l| l.contains("/tasks/exit") && l.contains(&format!("\"{id}\""))),
            "no /tasks/exit for {id} after its shim was killed:\n{text}"
        );
        let _ = env.ctr(&["task", "rm", id]);
        env.ctr_ok(&["container", "rm", id])?;
    }
    ensure!(
        env.mounts().is_empty(),
        "mounts left after a dead shim: {:?}",
        env.mounts()
    );
    // At the process level the guest's own process dies with its shim, and the dead
    // shim's cleanup removes its cgroup.
    env.run_detached(
        "orphan-p",
        &["--annotation", "wasmpod.io/isolation=process"],
        &["sleep", "600000"],
    )?;
    let (child, _) = env.task("orphan-p")?.context("task")?;
    let shim = proc_status(child, "PPid");
    ensure!(!shim.is_empty(), "the guest {child} has no parent");
    sh(Command::new("kill").args(["-KILL", &shim]))?;
    wait_dead_shim_task(env, "orphan-p")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{child}")).exists() {
        ensure!(
            Instant::now() < deadline,
            "the guest process {child} outlived its shim"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = env.ctr(&["task", "rm", "orphan-p"]);
    env.ctr_ok(&["container", "rm", "orphan-p"])?;
    let cgroup = cgroup_file("memory", "orphan-p", "");
    ensure!(
        !cgroup.exists(),
        "{} outlived the dead shim",
        cgroup.display()
    );
    Ok(())
}

/// Open fds of a process.
pub(crate) fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The shim's ttrpc socket is a file under a directory only root can enter — not an
/// abstract socket a host-network container could reach (containerd's CVE-2020-15257): root
/// connects, an unprivileged user (65534) is refused.
pub(crate) fn check_shim_socket(env: &Containerd) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    env.run_detached("sock", &[], &["sleep", "600000"])?;
    let bundle = env
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(NAMESPACE)
        .join("sock");
    let address = fs::read_to_string(bundle.join("address"))?;
    let path = address.trim().trim_start_matches("unix://").to_owned();
    ensure!(
        path.starts_with('/') && Path::new(&path).exists(),
        "the shim's address {address:?} is not a socket file"
    );
    let me = std::env::current_exe()?;
    let connect = |unprivileged: bool| -> anyhow::Result<Option<i32>> {
        let mut cmd = Command::new(&me);
        cmd.args(["__connect", &path]);
        if unprivileged {
            // std drops the supplementary groups when root changes uid.
            cmd.uid(65534).gid(65534);
        }
        Ok(cmd.status()?.code())
    };
    let as_root = connect(false)?;
    let as_nobody = connect(true)?;
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "sock"])?;
    ensure!(
        as_root == Some(0),
        "root could not connect to {path}: {as_root:?}"
    );
    ensure!(
        as_nobody == Some(13),
        "uid 65534 was not refused at {path} (status {as_nobody:?})"
    );
    let parent = Path::new(&path).parent().and_then(Path::parent);
    eprintln!("  {path}: root connects, uid 65534 refused (permission denied under {parent:?})");
    Ok(())
}

pub(crate) fn check_cycles(env: &Containerd) -> anyhow::Result<()> {
    let task_dir = env
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(NAMESPACE);
    let entries = |p: &Path| fs::read_dir(p).map_or(0, |d| d.count());
    let containerd = env.pid().context("containerd pid")?;
    // One warm-up cycle: containerd opens some descriptors once.
    env.run_wasm("warmup", &[], &["exit", "0"])?;
    let before = (
        env.mounts().len(),
        env.shims().len(),
        entries(&task_dir),
        fds(containerd),
    );
    let started = Instant::now();
    for i in 0..100 {
        let (code, _, err) = env.run_wasm(&format!("cycle-{i}"), &[], &["exit", "0"])?;
        ensure!(code == 0, "cycle {i}: exit {code}: {err}");
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after = (
        env.mounts().len(),
        env.shims().len(),
        entries(&task_dir),
        fds(containerd),
    );
    ensure!(
        after.0 == before.0 && after.1 == before.1 && after.2 == before.2 && after.3 <= before.3 + 2,
        "100 cycles left something (mounts, shims, task dirs, containerd fds): {before:?} -> {after:?}"
    );
    eprintln!(
        "  100 × ctr run --rm in {took:.1?} ({:.0?} each); mounts/shims/task dirs/containerd fds {before:?} -> {after:?}",
        took / 100
    );
    Ok(())
}
