//! Running: exit statuses, traps, kills, deadlines, stdio and components.

use super::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use wasm_engine::{ExitReason, KillHandle, Limits, ProgramKind, Stdio, StdioStream};

const EXIT_7: &str = r#"(module
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func (export "_start") (call $exit (i32.const 7))))"#;

const SPIN: &str = r#"(module
    (memory (export "memory") 1)
    (func (export "_start") (loop $l (br $l))))"#;

const TRAP: &str = r#"(module
    (memory (export "memory") 1)
    (func $deep (unreachable))
    (func (export "_start") (call $deep)))"#;

fn probe_config(args: &[&str]) -> RunConfig {
    let mut all = vec!["probe".to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    RunConfig::default().args(all)
}

/// An OS pipe as (read end, write end) files.
fn pipe() -> (std::fs::File, std::fs::File) {
    let (r, w) = std::io::pipe().unwrap();
    (
        std::fs::File::from(std::os::fd::OwnedFd::from(r)),
        std::fs::File::from(std::os::fd::OwnedFd::from(w)),
    )
}

#[tokio::test]
async fn proc_exit_gives_its_code() {
    let e = engine();
    let p = load(&e, EXIT_7);
    assert_eq!(p.kind(), ProgramKind::Module);
    let status = run(&e, &p, RunConfig::default()).await;
    assert_eq!(status.code(), 7);
    assert_eq!(status.reason(), &ExitReason::Exited);
}

#[tokio::test]
async fn returning_from_start_is_zero() {
    let e = engine();
    let p = load(&e, r#"(module (func (export "_start")))"#);
    assert_eq!(run(&e, &p, RunConfig::default()).await.code(), 0);
}

#[tokio::test]
async fn a_trap_is_134_and_its_message_goes_to_stderr() {
    let e = engine();
    let p = load(&e, TRAP);
    let err = tempfile::NamedTempFile::new().unwrap();
    let config = RunConfig::default().stdio(Stdio {
        stderr: StdioStream::File(err.reopen().unwrap()),
        ..Stdio::default()
    });
    let status = run(&e, &p, config).await;
    assert_eq!(status.code(), 134);
    let ExitReason::Trapped(message) = status.reason() else {
        panic!("{status:?}")
    };
    assert!(message.contains("unreachable"), "{message}");
    let written = std::fs::read_to_string(err.path()).unwrap();
    assert!(
        written.contains("wasm trap") && written.contains("unreachable"),
        "{written}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_handle_stops_a_spinning_guest_from_another_thread() {
    let e = engine();
    let p = load(&e, SPIN);
    let kill = KillHandle::new();
    let config = RunConfig::default()
        .kill(kill.clone())
        .memory(Default::default());
    let killed_at = std::sync::Arc::new(std::sync::Mutex::new(None));
    let at = killed_at.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        *at.lock().unwrap() = Some(Instant::now());
        kill.kill();
    });
    let status = run(&e, &p, config).await;
    let latency = killed_at.lock().unwrap().expect("killed").elapsed();
    assert_eq!(status.code(), 137);
    assert_eq!(status.reason(), &ExitReason::Killed);
    // The target is 100 ms (the epoch tick is 10 ms); `cargo xtask bench` measures it.
    // Here a loose bound keeps the test honest on a loaded machine.
    assert!(latency < Duration::from_secs(2), "took {latency:?}");
}

#[tokio::test]
async fn kill_with_a_status_and_the_first_kill_wins() {
    let e = engine();
    let p = load(&e, SPIN);
    let kill = KillHandle::new();
    kill.kill_with(143);
    kill.kill();
    assert_eq!(kill.killed(), Some(143));
    let config = RunConfig::default().kill(kill).memory(Default::default());
    assert_eq!(run(&e, &p, config).await.code(), 143);
}

#[tokio::test]
async fn the_deadline_stops_a_spinning_guest() {
    let e = engine();
    let p = load(&e, SPIN);
    let config = RunConfig::default().limits(Limits::default().timeout(Duration::from_millis(100)));
    let status = run(&e, &p, config).await;
    assert_eq!(status.code(), 137);
    assert_eq!(status.reason(), &ExitReason::TimedOut);
}

#[tokio::test]
async fn a_guest_blocked_on_a_pipe_can_be_killed() {
    let e = engine();
    let p = e.load_file(fixtures::probe_module()).unwrap();
    let (stdin_r, stdin_w) = pipe();
    let kill = KillHandle::new();
    let mut config = probe_config(&["stdin"]);
    config.stdio.stdin = StdioStream::File(stdin_r);
    config.kill = kill.clone();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        kill.kill();
    });
    let status = run(&e, &p, config).await;
    killer.await.unwrap();
    assert_eq!(status.code(), 137);
    drop(stdin_w);
}

/// The probe's config with all three streams on pipes, and the ends the test holds:
/// stdin's write end, stdout's and stderr's read ends.
fn piped(args: &[&str]) -> (RunConfig, std::fs::File, std::fs::File, std::fs::File) {
    let (stdin_r, stdin_w) = pipe();
    let (stdout_r, stdout_w) = pipe();
    let (stderr_r, stderr_w) = pipe();
    let mut config = probe_config(args);
    config.stdio = Stdio {
        stdin: StdioStream::File(stdin_r),
        stdout: StdioStream::File(stdout_w),
        stderr: StdioStream::File(stderr_w),
    };
    (config, stdin_w, stdout_r, stderr_r)
}

// Pipe writers are driven by tasks on the runtime; they close their end once the run is
// over, which a multi-threaded runtime lets happen while this test blocks on the reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_through_pipes() {
    let e = engine();
    let p = e.load_file(fixtures::probe_module()).unwrap();
    let (config, mut stdin_w, mut stdout_r, mut stderr_r) = piped(&["stdin"]);
    let writer = std::thread::spawn(move || {
        stdin_w.write_all(b"through a pipe").unwrap();
    });
    let status = run(&e, &p, config).await;
    writer.join().unwrap();
    assert_eq!(status.code(), 0);
    let mut out = String::new();
    stdout_r.read_to_string(&mut out).unwrap();
    assert_eq!(out, "THROUGH A PIPE");
    let mut err = String::new();
    stderr_r.read_to_string(&mut err).unwrap();
    assert_eq!(err, "read 14 bytes\n");
}

/// More input than one read returns, arriving in pieces while the guest waits for it,
/// through a module's and a component's stdin: every byte, in order, then end-of-file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_from_a_pipe_in_pieces() {
    let e = engine();
    for program in [fixtures::probe_module(), fixtures::probe_component()] {
        let p = e.load_file(program).unwrap();
        let (config, mut stdin_w, mut stdout_r, mut stderr_r) = piped(&["stdin"]);
        let input: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let expected = input.to_ascii_uppercase();
        let writer = std::thread::spawn(move || {
            for piece in input.chunks(70_000) {
                stdin_w.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            stdout_r.read_to_end(&mut out).unwrap();
            out
        });
        let status = run(&e, &p, config).await;
        writer.join().unwrap();
        assert_eq!(status.code(), 0, "{}", program.display());
        let out = reader.join().unwrap();
        assert!(
            out == expected,
            "{}: {} bytes out",
            program.display(),
            out.len()
        );
        let mut err = String::new();
        stderr_r.read_to_string(&mut err).unwrap();
        assert_eq!(err, "read 300000 bytes\n", "{}", program.display());
    }
}

#[tokio::test]
async fn stdout_to_a_file_and_stdin_from_a_file() {
    let e = engine();
    let p = e.load_file(fixtures::probe_module()).unwrap();
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), "from a file").unwrap();
    let output = tempfile::NamedTempFile::new().unwrap();
    let mut config = probe_config(&["stdin"]);
    config.stdio.stdin = StdioStream::File(input.reopen().unwrap());
    config.stdio.stdout = StdioStream::File(output.reopen().unwrap());
    assert_eq!(run(&e, &p, config).await.code(), 0);
    assert_eq!(
        std::fs::read_to_string(output.path()).unwrap(),
        "FROM A FILE"
    );
}

#[tokio::test]
async fn a_component_runs_with_args_env_and_preopens() {
    let e = engine();
    let p = e.load_file(fixtures::probe_component()).unwrap();
    assert_eq!(p.kind(), ProgramKind::Component);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "component read this").unwrap();
    let output = tempfile::NamedTempFile::new().unwrap();
    let mut config = probe_config(&["cat", "/data/f.txt"]);
    config.env = vec![("K".into(), "V".into())];
    config.preopens = vec![wasm_engine::Preopen {
        host: dir.path().to_owned(),
        guest: "/data".into(),
        readonly: true,
    }];
    config.stdio.stdout = StdioStream::File(output.reopen().unwrap());
    assert_eq!(run(&e, &p, config).await.code(), 0);
    assert_eq!(
        std::fs::read_to_string(output.path()).unwrap(),
        "component read this"
    );
}

#[tokio::test]
async fn missing_imports_are_reported_before_running() {
    let e = engine();
    let p = load(
        &e,
        r#"(module (import "env" "nope" (func)) (func (export "_start")))"#,
    );
    let err = e.check(&p).unwrap_err().to_string();
    assert!(err.contains("env::nope"), "{err}");
    let err = e.run(&p, RunConfig::default()).await.unwrap_err();
    assert!(err.to_string().contains("env::nope"), "{err}");
}

#[tokio::test]
async fn a_missing_preopen_is_an_error_naming_it() {
    let e = engine();
    let p = load(&e, EXIT_7);
    let config = RunConfig::default().preopen(wasm_engine::Preopen {
        host: "/nonexistent/wasmpod".into(),
        guest: "/data".into(),
        readonly: false,
    });
    let err = e.run(&p, config).await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/wasmpod"), "{err}");
}

#[test]
fn not_wasm_and_invalid_wasm_are_errors() {
    let e = engine();
    let err = e.load(b"#!/bin/sh\necho hi\n").unwrap_err().to_string();
    assert!(err.contains("a script"), "{err}");
    let err = e
        .load(b"\0asm\x01\0\0\0\x05\x03\x01")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid WebAssembly"), "{err}");
}

#[test]
fn the_cache_serves_a_second_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig::default().cache_dir(dir.path().join("cache"));
    let first = Engine::new(config.clone()).unwrap();
    assert!(first.has_cache());
    let a = first.load(EXIT_7.as_bytes()).unwrap();
    let second = Engine::new(config).unwrap();
    let b = second.load(EXIT_7.as_bytes()).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert!(a.was_compiled() && !b.was_compiled());
    let entries = walk(dir.path());
    assert_eq!(
        entries.iter().filter(|p| p.ends_with(".cwasm")).count(),
        1,
        "{entries:?}"
    );
}

/// A pooling engine (a server's) loads what an on-demand engine (the shim's, at Create)
/// compiled into the cache, and runs it.
#[tokio::test]
async fn a_pooling_engine_shares_the_cache_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig::default().cache_dir(dir.path().join("cache"));
    let first = Engine::new(config.clone()).unwrap();
    let a = first.load(EXIT_7.as_bytes()).unwrap();
    let pooled = Engine::new(config.pooling(wasm_engine::Pooling::new(4, 64 << 20))).unwrap();
    let b = pooled.load(EXIT_7.as_bytes()).unwrap();
    assert!(a.was_compiled() && !b.was_compiled(), "compiled again");
    let status = pooled.run(&b, RunConfig::default()).await.unwrap();
    assert_eq!(status.code(), 7);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}
