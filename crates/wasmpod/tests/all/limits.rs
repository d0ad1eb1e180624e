//! Memory cap, deadline and signals.

use super::*;
use std::time::{Duration, Instant};

#[test]
fn memory_growth_past_the_cap_fails_inside_the_guest() {
    let w = Wasmpod::new();
    let out = w.run(&["--memory", "16Mi", probe(), "alloc", "64"]);
    // The guest sees malloc fail, reports how far it got and exits with its own code.
    assert_code(&out, 3);
    let got: u32 = stdout(&out)
        .trim()
        .strip_prefix("allocated ")
        .and_then(|s| s.strip_suffix(" MiB"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (8..16).contains(&got),
        "allocated {got} MiB under a 16 MiB cap"
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
    // Inside a component the preview 1 adapter shares the guest's memory: it may be the
    // one whose allocation fails (a trap, 134) or the guest reports the failure (1).
    assert!(
        matches!(out.status.code(), Some(1 | 134)),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
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
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
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
