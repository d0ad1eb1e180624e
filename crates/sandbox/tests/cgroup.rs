//! A process-level container's cgroup on this host's real hierarchy (v1 or v2, whichever it
//! mounts). Needs root, as a container runtime does.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use sandbox::Cgroup;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

/// The first line of a file in one controller's directory of `cg`.
fn read(cg: &Cgroup, controller: &str, file: &str) -> String {
    let dir = cg.controller_dir(controller).expect("controller present");
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_owned()
}

#[test]
fn limits_land_in_the_cgroup_files_and_stats_read_them_back() {
    if !is_root() {
        eprintln!("skipped: cgroups need root");
        return;
    }
    let path = format!("/wasmpod-test/limits-{}", std::process::id());
    let cg = Cgroup::create(
        &path,
        Some(&resources(
            r#"{"memory":{"limit":33554432},"cpu":{"shares":512,"quota":20000,"period":100000},"pids":{"limit":5}}"#,
        )),
    )
    .unwrap();
    let v2 = cg.v2();
    if v2 {
        assert_eq!(read(&cg, "memory", "memory.max"), "33554432");
        assert_eq!(read(&cg, "cpu", "cpu.max"), "20000 100000");
        assert_eq!(read(&cg, "cpu", "cpu.weight"), "20");
    } else {
        assert_eq!(read(&cg, "memory", "memory.limit_in_bytes"), "33554432");
        assert_eq!(read(&cg, "cpu", "cpu.cfs_quota_us"), "20000");
        assert_eq!(read(&cg, "cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read(&cg, "cpu", "cpu.shares"), "512");
    }
    assert_eq!(read(&cg, "pids", "pids.max"), "5");

    // A process in it: stats are what the files say.
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    cg.add_process(child.id()).unwrap();
    assert_eq!(cg.processes(), vec![child.id()]);
    let usage_file = if v2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    let usage = || -> u64 { read(&cg, "memory", usage_file).parse().unwrap() };
    // The process just joined may still be charging its pages: stats read between two
    // reads of the file lies between them (a page or two of slack either way).
    let before = usage();
    let stats = cg.stats();
    let after = usage();
    assert_eq!(stats.memory_limit, Some(32 << 20));
    assert_eq!(stats.pids_limit, Some(5));
    assert_eq!(stats.pids_current, 1);
    assert!(
        stats.memory_usage + (64 << 10) >= before.min(after)
            && stats.memory_usage <= before.max(after) + (64 << 10),
        "{stats:?} vs {before}..{after}"
    );
    assert_eq!(stats.oom_kills, 0);

    // Update: lifted and lowered limits.
    cg.update(&resources(r#"{"memory":{"limit":-1},"pids":{"limit":0}}"#))
        .unwrap();
    let stats = cg.stats();
    assert_eq!(stats.memory_limit, None);
    assert_eq!(stats.pids_limit, None);
    assert_eq!(read(&cg, "pids", "pids.max"), "max");

    // Delete kills what is left and removes the cgroup.
    cg.delete().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!cg.controller_dir("memory").unwrap().exists());
}

#[test]
fn a_pids_limit_holds() {
    if !is_root() {
        eprintln!("skipped: cgroups need root");
        return;
    }
    let path = format!("/wasmpod-test/pids-{}", std::process::id());
    let cg = Cgroup::create(&path, Some(&resources(r#"{"pids":{"limit":3}}"#))).unwrap();
    // A shell that waits for a line on stdin, then tries to start ten sleeps.
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg("read go; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cg.add_process(shell.id()).unwrap();
    use std::io::Write;
    shell.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(cg.stats().pids_current);
        if shell.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = shell.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    cg.delete().unwrap();
    assert!(
        peak >= 2,
        "the shell and a sleep should have run: peak {peak}"
    );
    assert!(peak <= 3, "pids.current reached {peak} under pids.max 3");
    assert!(
        err.contains("fork") || err.contains("Resource temporarily unavailable"),
        "the shell should have been refused a fork: {err:?}"
    );
}

#[test]
fn a_limit_the_kernel_refuses_is_named_and_nothing_is_left() {
    if !is_root() {
        eprintln!("skipped: cgroups need root");
        return;
    }
    let e = Cgroup::create(
        "/wasmpod-test/bad",
        Some(&resources(r#"{"cpu":{"period":1}}"#)),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cgroup /wasmpod-test/bad: setting the cpu quota"),
        "{e}"
    );
    for dir in [
        "memory/wasmpod-test/bad",
        "pids/wasmpod-test/bad",
        "wasmpod-test/bad",
    ] {
        assert!(
            !std::path::Path::new("/sys/fs/cgroup").join(dir).exists(),
            "{dir} left"
        );
    }
}
