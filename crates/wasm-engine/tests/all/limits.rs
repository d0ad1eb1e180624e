//! The memory cap over memories and tables.

use super::*;
use wasm_engine::{ExitReason, Limits};

/// A module that grows its memory by `pages` and exits with 0 on success, 1 on failure.
fn grower(initial: u32, pages: u32) -> String {
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") {initial})
            (func (export "_start")
                (if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1))
                    (then (call $exit (i32.const 1))))
                (call $exit (i32.const 0))))"#
    )
}

fn capped(bytes: u64) -> RunConfig {
    RunConfig::default().limits(Limits::default().memory(bytes))
}

#[tokio::test]
async fn growth_within_the_cap_succeeds() {
    let e = engine();
    let p = load(&e, &grower(1, 3));
    let status = run(&e, &p, capped(4 << 16)).await;
    assert_eq!(status.code(), 0);
    assert!(!status.memory_denied());
}

#[tokio::test]
async fn growth_past_the_cap_fails_in_the_guest() {
    let e = engine();
    let p = load(&e, &grower(1, 4));
    let status = run(&e, &p, capped(4 << 16)).await;
    assert_eq!(
        status.code(),
        1,
        "memory.grow returned -1 and the guest exited 1"
    );
    assert!(status.memory_denied());
}

#[tokio::test]
async fn malloc_in_c_sees_the_cap() {
    let e = engine();
    let p = e.load_file(fixtures::probe_module()).unwrap();
    let mut config = capped(16 << 20);
    config.args = vec!["probe".into(), "alloc".into(), "64".into()];
    let status = run(&e, &p, config).await;
    assert_eq!(status.code(), 3);
    assert!(status.memory_denied());
}

#[tokio::test]
async fn oom_kill_stops_the_guest_with_137() {
    let e = engine();
    let p = e.load_file(fixtures::probe_module()).unwrap();
    let mut config = capped(16 << 20);
    config.limits.oom_kill = true;
    config.args = vec!["probe".into(), "alloc".into(), "64".into()];
    let status = run(&e, &p, config).await;
    assert_eq!(status.code(), 137);
    let ExitReason::OutOfMemory(message) = status.reason() else {
        panic!("{:?}", status.reason())
    };
    assert!(message.contains("16777216-byte limit"), "{message}");
    assert!(status.memory_denied());
}
