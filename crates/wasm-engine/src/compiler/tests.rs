//! The compile child is this test binary itself: `compile_child_entry` is the test it is
//! asked to run, and [`run_child_if_asked`] takes over there.

use std::time::{Duration, Instant};

use super::*;
use crate::{Engine, EngineConfig, RunConfig};

/// Runs only as a compile child (in the parent's own run it returns at once).
#[test]
fn compile_child_entry() {
    run_child_if_asked();
}

fn child_engine() -> Engine {
    Engine::new(EngineConfig {
        compiler: Some(CompilerProcess {
            program: std::env::current_exe().unwrap(),
            args: [
                "--exact",
                "compiler::tests::compile_child_entry",
                "--test-threads=1",
            ]
            .map(OsString::from)
            .to_vec(),
        }),
        ..Default::default()
    })
    .unwrap()
}

use test_support::hostile;

fn slow_to_compile(values: usize) -> Vec<u8> {
    wat::parse_str(hostile::slow_to_compile(values, 0)).unwrap()
}

#[test]
fn a_compile_in_the_child_runs_like_one_here() {
    let engine = child_engine();
    let program = engine
        .load_limited(
            br#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") (call $exit (i32.const 7))))"#,
            Path::new("seven.wat"),
            &ProgramLimits::default(),
        )
        .unwrap();
    assert!(program.was_compiled());
    let rt = crate::guest_runtime(0).unwrap();
    let status = rt
        .block_on(engine.run(&program, RunConfig::default()))
        .unwrap();
    assert_eq!(status.code(), 7, "{:?}", status.reason());
}

#[test]
fn the_childs_verdict_on_an_invalid_program_is_the_error() {
    let err = child_engine()
        .load_limited(
            b"\0asm\x01\0\0\0\x01\x05\x01\x60",
            Path::new("bad.wasm"),
            &ProgramLimits::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("invalid WebAssembly: "),
        "{err}"
    );
}

/// Issue 17, finding 3: a compile past its deadline is killed, and the error names the
/// program and the deadline.
#[test]
fn a_compile_past_its_deadline_is_killed() {
    let slow = slow_to_compile(5_000);
    let limits = ProgramLimits {
        compile_timeout: Some(Duration::from_millis(300)),
        ..ProgramLimits::default()
    };
    let started = Instant::now();
    let err = child_engine()
        .load_limited(&slow, Path::new("/app/slow.wasm"), &limits)
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err.to_string(),
        "/app/slow.wasm: compiling took longer than the deadline of 300ms"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_compile_past_its_memory_cap_fails_naming_it() {
    let limits = ProgramLimits {
        compile_memory: 16 << 20,
        ..ProgramLimits::default()
    };
    let err = child_engine()
        .load_limited(&slow_to_compile(2_000), Path::new("/app/big.wasm"), &limits)
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Compiler { .. }), "{err:?}");
    assert_eq!(
        text,
        "/app/big.wasm: compiling failed: the compiler process ran out of memory (its limit is 16777216 bytes)"
    );
}

#[test]
fn durations_read_as_people_write_them() {
    assert_eq!(show_duration(Duration::from_millis(300)), "300ms");
    assert_eq!(show_duration(Duration::from_secs(5)), "5s");
    assert_eq!(show_duration(Duration::from_secs(300)), "5m");
    assert_eq!(show_duration(Duration::from_secs(90)), "1m 30s");
}
