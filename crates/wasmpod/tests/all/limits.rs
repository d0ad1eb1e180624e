//! Memory cap, deadline and signals.

use super::*;
use std::time::{Duration, Instant};

#[test]
fn memory_growth_past_the_cap_is_an_oom_kill() {
    let w = Wasmpod::new();
    let out = w.run(&["--memory", "16Mi", probe(), "alloc", "64"]);
    // As a container's memory cgroup: the guest is killed (137), and wasmpod says why.
    assert_code(&out, 137);
    assert!(!stdout(&out).contains("allocated"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("killed: out of memory") && err.contains("16777216-byte limit"),
        "{err}"
    );
}

#[test]
fn without_a_cap_the_same_allocation_succeeds() {
    let w = Wasmpod::new();
    let out = w.run(&[probe(), "alloc", "64"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "allocated 64 MiB\n");
}

#[test]
fn a_component_is_capped_too() {
    let w = Wasmpod::new();
    let out = w.run(&["-m", "16m", component(), "alloc", "64"]);
    // The adapter's allocations and the guest's count alike: whichever passes the cap,
    // the component is OOM-killed.
    assert_code(&out, 137);
    assert!(
        !stdout(&out).contains("allocated 64 MiB"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_infinite_loop_is_killed_by_the_deadline() {
    let w = Wasmpod::new();
    let started = Instant::now();
    let out = w.run(&["--timeout", "300ms", probe(), "spin"]);
    assert_code(&out, 137);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stderr(&out).contains("killed after the --timeout of 300ms"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_sleeping_guest_is_killed_by_the_deadline() {
    let w = Wasmpod::new();
    let out = w.run(&["--timeout", "200ms", probe(), "sleep", "60000"]);
    assert_code(&out, 137);
}

fn signal_after_start(args: &[&str], signal: i32, expected: i32) {
    let w = Wasmpod::new();
    let child = w
        .command()
        .arg("run")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sys::kill(&child, signal).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_code(&out, expected);
}

#[test]
fn sigterm_stops_a_spinning_guest_with_143() {
    signal_after_start(&[probe(), "spin"], libc::SIGTERM, 143);
}

#[test]
fn sigterm_stops_a_sleeping_guest_with_143() {
    signal_after_start(&[probe(), "sleep", "60000"], libc::SIGTERM, 143);
}

#[test]
fn sigint_stops_a_guest_with_130() {
    signal_after_start(&[component(), "spin"], libc::SIGINT, 130);
}

/// Issue 17, finding 3: a program that takes minutes to compile is stopped at
/// `--compile-timeout`, with an error naming it and the deadline.
#[test]
fn a_compile_past_its_deadline_is_stopped_naming_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow.wat");
    std::fs::write(&slow, hostile::slow_to_compile(10_000, 1)).unwrap();
    let w = Wasmpod::new();
    let started = Instant::now();
    let out = w.run(&["--compile-timeout", "500ms", path_str(&slow)]);
    let took = started.elapsed();
    assert_code(&out, 126);
    assert_eq!(
        stderr(&out),
        format!(
            "wasmpod: {}: compiling took longer than the deadline of 500ms\n",
            slow.display()
        )
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}
