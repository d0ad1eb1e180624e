//! Faults under containerd: containerd killed while our shim is inside Create. (The shim
//! killed with tasks running is `shim-killed` in `e2e.rs`.)

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::ensure;

use super::{Containerd, NAMESPACE, RUNTIME};
use crate::util::run as sh;

use test_support::hostile;

const SLOW_IMAGE: &str = "localhost/wasmpod-e2e/slow:v1";

/// A module whose compile takes seconds in a debug shim: many functions of arithmetic.
/// `nonce` makes it new to the precompile cache.
pub(crate) fn slow_module(functions: usize, nonce: u128) -> String {
    let mut wat = format!("(module (global i64 (i64.const {}))\n", nonce as i64);
    for i in 0..functions {
        let _ = write!(wat, "(func (param i32) (result i32) local.get 0 ");
        for k in 0..12 {
            let _ = write!(
                wat,
                "i32.const {} i32.add i32.const {} i32.mul ",
                i + k,
                k | 1
            );
        }
        wat.push_str(")\n");
    }
    wat.push_str("(func (export \"_start\")))\n");
    wat
}

/// containerd SIGKILLed while a container's Create is compiling in the shim; after it
/// comes back and the container is removed as a user would, no shim process, mount,
/// bundle or cgroup of it is left.
pub(crate) fn check_containerd_killed_during_create(env: &Containerd) -> anyhow::Result<()> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let wat = env.dir.join("slow.wat");
    fs::write(&wat, slow_module(20_000, nonce))?;
    env.import(&wat, SLOW_IMAGE, "compat")?;
    let shims_before = env.shims();
    let mounts_before = env.mounts();
    let mut run = env
        .ctr_cmd(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            SLOW_IMAGE,
            "slow",
            "/slow.wasm",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // The shim exists as soon as containerd started it; Create follows at once, and the
    // compile keeps it there for seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let shim = loop {
        if let Some(pid) = env.shims().into_iter().find(|p| !shims_before.contains(p)) {
            break pid;
        }
        ensure!(
            Instant::now() < deadline,
            "no shim started for the container"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    std::thread::sleep(Duration::from_millis(200));
    env.kill_daemon()?;
    // The shim logs `created` (to containerd's log) when its Create ends.
    let log = fs::read_to_string(env.dir.join("containerd.log"))?;
    let in_create = !log.lines().any(|l| {
        // `container{id=slow}` or `container{id=slow phase="create"}`.
        (l.contains("container{id=slow}") || l.contains("container{id=slow "))
            && l.ends_with("created")
    });
    let _ = run.wait();
    env.relaunch()?;
    // containerd reconnects to (or cleans up after) the shim it left; give it a moment,
    // then remove the container as a user would.
    std::thread::sleep(Duration::from_secs(2));
    let seen = env.task("slow")?;
    let _ = env.ctr(&["task", "rm", "-f", "slow"]);
    let _ = env.ctr(&["container", "rm", "slow"]);
    let bundle = env
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(NAMESPACE)
        .join("slow");
    // The shim ends once its Create does: the compile of the slow module, which on 2 busy
    // cores (a CI machine building beside it) has taken over 10 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shims: Vec<u32> = env
            .shims()
            .into_iter()
            .filter(|p| !shims_before.contains(p))
            .collect();
        let mounts = env.mounts();
        let left_mounts: Vec<&String> = mounts
            .iter()
            .filter(|m| !mounts_before.contains(m))
            .collect();
        let containers = env.ctr_ok(&["container", "ls", "-q"])?;
        if shims.is_empty()
            && left_mounts.is_empty()
            && !bundle.exists()
            && !containers.contains("slow")
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after containerd was killed during Create and came back: shims {shims:?} left, \
             mounts {left_mounts:?}, bundle left {}, containers {containers:?}",
            bundle.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cgroup = super::cgroup_file("memory", "slow", "");
    ensure!(!cgroup.exists(), "{} was left", cgroup.display());
    eprintln!(
        "  killed containerd {}; after its restart the task was {seen:?}; shim {shim}, its mount and bundle all gone",
        if in_create { "inside Create (no task yet)" } else { "after Create" }
    );
    Ok(())
}

/// A hostile tenant in a node-grouped shim: a container whose entrypoint is a sparse
/// 40 GiB file in a shared volume (made with one seek). Its Create fails with the size
/// limit named, at once; the shim and the sleeping tenant beside it are unharmed. Then
/// special files as the program (see [`special_files_as_programs`]), and the neighbour's
/// kill and delete.
pub(crate) fn check_hostile_entrypoint(env: &Containerd) -> anyhow::Result<()> {
    const NODE: [&str; 2] = ["--annotation", "wasmpod.io/grouping=node"];
    let volume = env.dir.join("hostile-volume");
    fs::create_dir_all(&volume)?;
    fs::File::create(volume.join("big.wasm"))?.set_len(40 << 30)?;
    env.run_detached("sleeper", &NODE, &["sleep", "600000"])?;
    let shims = env.shims();
    ensure!(shims.len() == 1, "one node-grouped shim, not {shims:?}");
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        volume.display()
    );
    let started = Instant::now();
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        NODE[0],
        NODE[1],
        "--mount",
        &mount,
        super::IMAGE,
        "hostile",
        "/data/big.wasm",
    ])?;
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains("/data/big.wasm")
            && err.contains("over the limit of 268435456 bytes for a program"),
        "the hostile Create: {} {err}",
        out.status
    );
    ensure!(
        took < Duration::from_secs(10),
        "the hostile Create took {took:?}"
    );
    sleeper_unharmed(env, &shims)?;
    eprintln!(
        "  a 40 GiB sparse entrypoint refused in {took:.1?}; the shim and its sleeper unharmed"
    );
    special_files_as_programs(env, &volume, &mount, &shims)?;
    // The neighbour is still its own: it can be killed and deleted.
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "sleeper"])?;
    env.wait_status("sleeper", "STOPPED", Duration::from_secs(5))?;
    env.ctr_ok(&["task", "rm", "sleeper"])?;
    Ok(())
}

/// The node-grouped shim is the same process and its `sleeper` still runs.
fn sleeper_unharmed(env: &Containerd, shims: &[u32]) -> anyhow::Result<()> {
    ensure!(
        env.shims() == shims,
        "the shim changed: {shims:?} -> {:?}",
        env.shims()
    );
    env.wait_status("sleeper", "RUNNING", Duration::from_secs(1))
}

/// A named pipe and a character device (1:5) as the program, three Creates in flight at
/// once (the pipe at both isolation levels) in the node-grouped shim that holds the
/// sleeper: each is refused unopened, naming the file and its kind, while the neighbour's
/// `ctr task ls` stays prompt.
fn special_files_as_programs(
    env: &Containerd,
    volume: &Path,
    mount: &str,
    shims: &[u32],
) -> anyhow::Result<()> {
    const NODE: [&str; 2] = ["--annotation", "wasmpod.io/grouping=node"];
    const PROCESS: [&str; 2] = ["--annotation", "wasmpod.io/isolation=process"];
    sh(Command::new("mkfifo").arg(volume.join("fifo.wasm")))?;
    sh(Command::new("mknod")
        .arg(volume.join("dev.wasm"))
        .args(["c", "1", "5"]))?;
    let cases: [(&str, &[&str], &str, &str); 3] = [
        ("fifo-shared", &[], "/data/fifo.wasm", "(a named pipe)"),
        (
            "fifo-process",
            &PROCESS,
            "/data/fifo.wasm",
            "(a named pipe)",
        ),
        ("dev-shared", &[], "/data/dev.wasm", "(a character device)"),
    ];
    let mut runs = Vec::new();
    for (id, level, program, _) in cases {
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME, NODE[0], NODE[1]];
        args.extend_from_slice(level);
        args.extend_from_slice(&["--mount", mount, super::IMAGE, id, program]);
        let child = env
            .ctr_cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        runs.push(child);
    }
    let asked = Instant::now();
    env.ctr_ok(&["task", "ls"])?;
    let listing = asked.elapsed();
    // A Create that blocks on the file would never end: each gets 20 s, then fails.
    let deadline = Instant::now() + Duration::from_secs(20);
    for ((id, _, program, kind), mut child) in cases.iter().zip(runs) {
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the hostile Create {id} ({program}) still runs after 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && err.contains(program)
                && err.contains(&format!("not a regular file {kind}")),
            "the hostile Create {id}: {} {err}",
            out.status
        );
        eprintln!("  {id}: {}", err.trim().lines().last().unwrap_or_default());
    }
    ensure!(
        listing < Duration::from_millis(100),
        "ctr task ls took {listing:?} with three hostile Creates in flight"
    );
    sleeper_unharmed(env, shims)?;
    eprintln!(
        "  a named pipe and a device as the program refused unopened; task ls took {listing:.1?}"
    );
    Ok(())
}

/// Hostile tenants' programs that take minutes, or gigabytes, to compile, in a
/// node-grouped shim with a sleeping tenant. Each Create fails at the handler's limit
/// (`compile_timeout = "4s"`, then `compile_memory = "256Mi"`) naming the program and the
/// limit; meanwhile `ctr task ls` (a State call into the same shim for the sleeper) stays
/// prompt; afterwards the shim is the same process, the sleeper is RUNNING and no compile
/// process is left.
pub(crate) fn check_hostile_compile(env: &Containerd) -> anyhow::Result<()> {
    const NODE: [&str; 2] = ["--annotation", "wasmpod.io/grouping=node"];
    let volume = env.dir.join("hostile-compile");
    fs::create_dir_all(&volume)?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    // 10,000 values: about a minute of compiling in a few hundred MB; 20,000: gigabytes.
    fs::write(
        volume.join("slow.wat"),
        hostile::slow_to_compile(10_000, nonce),
    )?;
    fs::write(
        volume.join("hungry.wat"),
        hostile::slow_to_compile(20_000, nonce),
    )?;
    env.run_detached("compile-sleeper", &NODE, &["sleep", "600000"])?;
    let shims = env.shims();
    ensure!(shims.len() == 1, "one node-grouped shim, not {shims:?}");
    let idle: Vec<Duration> = (0..5).map(|_| time_task_ls(env)).collect();
    let cases = [
        (
            "slow.wat",
            "compile_timeout = \"4s\"",
            "/data/slow.wat: compiling took longer than the deadline of 4s",
            10,
        ),
        (
            "hungry.wat",
            "compile_memory = \"256Mi\"",
            "/data/hungry.wat: compiling failed: the compiler process ran out of memory (its limit is 268435456 bytes)",
            // It reaches 256 MiB within a second: few calls, if any, fall inside.
            0,
        ),
    ];
    for (file, option, expect, min_calls) in cases {
        let options = env.dir.join("compile-options.toml");
        fs::write(&options, format!("{option}\n"))?;
        let (took, during) = hostile_create(env, &NODE, &options, file, expect)?;
        ensure!(
            took < Duration::from_secs(20),
            "the hostile Create of {file} took {took:?}"
        );
        ensure!(
            during.len() >= min_calls,
            "only {} task ls during the compile of {file}",
            during.len()
        );
        let mut sorted = during.clone();
        if sorted.is_empty() {
            sorted.push(Duration::ZERO);
        }
        sorted.sort();
        let worst = sorted[sorted.len() - 1];
        ensure!(
            worst < Duration::from_millis(100),
            "ctr task ls took up to {worst:?} while a tenant compiled {file} (idle: {idle:?})"
        );
        ensure!(
            env.shims() == shims,
            "the shim changed, or a compile process is left: {shims:?} -> {:?}",
            env.shims()
        );
        let compilers = compile_children();
        ensure!(
            compilers.is_empty(),
            "compile processes left: {compilers:?}"
        );
        env.wait_status("compile-sleeper", "RUNNING", Duration::from_secs(1))?;
        eprintln!(
            "  {file} ({option}): Create failed after {took:.1?}: {expect:?}; ctr task ls meanwhile: \
             median {:?}, worst {worst:?} over {} calls (idle {:?}); shim and sleeper unharmed",
            sorted[sorted.len() / 2],
            during.len(),
            idle.iter().min().copied().unwrap_or_default(),
        );
    }
    env.ctr_ok(&["task", "kill", "-s", "KILL", "compile-sleeper"])?;
    env.wait_status("compile-sleeper", "STOPPED", Duration::from_secs(10))?;
    env.ctr_ok(&["task", "rm", "compile-sleeper"])?;
    env.ctr_ok(&["container", "rm", "compile-sleeper"])?;
    Ok(())
}

/// `ctr run --rm` of `/data/<file>` with the handler options in `options`, which must fail
/// with `expect`; returns how long it took and how long each `ctr task ls` took meanwhile.
fn hostile_create(
    env: &Containerd,
    flags: &[&str],
    options: &Path,
    file: &str,
    expect: &str,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        env.dir.join("hostile-compile").display()
    );
    let entrypoint = format!("/data/{file}");
    let mut args = vec![
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        options.to_str().unwrap_or_default(),
    ];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "--mount",
        &mount,
        super::IMAGE,
        "hostile-compile",
        &entrypoint,
    ]);
    let started = Instant::now();
    let mut ctr = env
        .ctr_cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut during = Vec::new();
    while ctr.try_wait()?.is_none() {
        if started.elapsed() > Duration::from_secs(90) {
            let _ = ctr.kill();
            anyhow::bail!("the hostile Create of {file} did not end within 90 s");
        }
        during.push(time_task_ls(env));
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    let out = ctr.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains(expect),
        "the hostile Create of {file}: {} {err}",
        out.status
    );
    Ok((took, during))
}

/// How long one `ctr task ls` takes.
fn time_task_ls(env: &Containerd) -> Duration {
    let started = Instant::now();
    let _ = env.ctr(&["task", "ls"]);
    started.elapsed()
}

/// Processes that are compile children (their environment says so).
fn compile_children() -> Vec<u32> {
    super::processes(|environ, _| {
        environ
            .split(|&b| b == 0)
            .any(|v| v.starts_with(b"WASMPOD_COMPILE_CHILD="))
    })
}

/// A hostile tenant of [`check_blast_radius`]: what it does, extra `ctr run` flags, the
/// args after the image and id, and its exit code or the text of its Create's error.
type Tenant<'a> = (&'a str, &'a [&'a str], &'a [&'a str], Result<i32, &'a str>);

/// Blast radius of a node-grouped shim: beside a tenant whose output continues, other
/// tenants' containers trap, overflow their C stack and the wasm call stack, pass their
/// memory limit, have an allocation refused, and fail to compile. Each ends with its own
/// status (or its Create fails naming it); the shim is the same process after each, and
/// the beating tenant is RUNNING and still writing.
pub(crate) fn check_blast_radius(env: &Containerd) -> anyhow::Result<()> {
    const NODE: [&str; 2] = ["--annotation", "wasmpod.io/grouping=node"];
    let volume = env.dir.join("blast-radius");
    fs::create_dir_all(&volume)?;
    fs::write(
        volume.join("deep.wat"),
        "(module (memory (export \"memory\") 1) (func $f (call $f)) (func (export \"_start\") (call $f)))",
    )?;
    fs::write(
        volume.join("garbage.wasm"),
        b"\0asm\x01\0\0\0\x01\xff\xff\xff",
    )?;
    let log = env.dir.join("beater.log");
    let log_uri = format!("file://{}", log.display());
    env.run_detached(
        "beater",
        &[NODE[0], NODE[1], "--log-uri", &log_uri],
        &["beat", "100000", "50"],
    )?;
    let shims = env.shims();
    ensure!(shims.len() == 1, "one node-grouped shim, not {shims:?}");
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        volume.display()
    );
    let cases: [Tenant<'_>; 6] = [
        ("trap", &[], &["/probe.wasm", "trap"], Ok(134)),
        (
            "C stack overflow",
            &[],
            &["/probe.wasm", "recurse"],
            Ok(134),
        ),
        ("wasm stack overflow", &[], &["/data/deep.wat"], Ok(134)),
        (
            "memory limit (OOM)",
            &["--memory-limit", "16777216"],
            &["/probe.wasm", "alloc", "64"],
            Ok(137),
        ),
        // 4 GiB is all a wasm32 memory can be: malloc returns NULL, the guest copes.
        (
            "allocation refused",
            &[],
            &["/probe.wasm", "alloc", "8192"],
            Ok(3),
        ),
        (
            "compile failure",
            &[],
            &["/data/garbage.wasm"],
            Err("/data/garbage.wasm"),
        ),
    ];
    for (i, (what, flags, args, expect)) in cases.iter().enumerate() {
        let id = format!("tenant-{i}");
        let mut all = vec!["run", "--rm", "--runtime", RUNTIME, NODE[0], NODE[1]];
        all.extend_from_slice(&["--mount", &mount]);
        all.extend_from_slice(flags);
        all.extend_from_slice(&[super::IMAGE, &id]);
        all.extend_from_slice(args);
        let before = fs::read_to_string(&log).unwrap_or_default().lines().count();
        let out = env.ctr(&all)?;
        let err = String::from_utf8_lossy(&out.stderr);
        match expect {
            Ok(code) => ensure!(
                out.status.code() == Some(*code),
                "{what}: exit {:?}, not {code}: {err}",
                out.status.code()
            ),
            Err(names) => ensure!(
                !out.status.success() && err.contains(names),
                "{what}: {} {err}",
                out.status
            ),
        }
        ensure!(
            env.shims() == shims,
            "after the {what}: the shim changed: {shims:?} -> {:?}",
            env.shims()
        );
        env.wait_status("beater", "RUNNING", Duration::from_secs(1))?;
        // Its output goes on: new lines within a few beats.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let now = fs::read_to_string(&log).unwrap_or_default().lines().count();
            if now > before + 2 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "after the {what}: the beating tenant wrote {} lines in 2 s",
                now - before
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "  {what}: {}; the shim and the beating tenant unharmed",
            match expect {
                Ok(code) => format!("exit {code}"),
                Err(_) => "Create failed naming the program".to_owned(),
            }
        );
    }
    env.ctr_ok(&["task", "kill", "-s", "KILL", "beater"])?;
    env.wait_status("beater", "STOPPED", Duration::from_secs(10))?;
    env.ctr_ok(&["task", "rm", "beater"])?;
    env.ctr_ok(&["container", "rm", "beater"])?;
    Ok(())
}
