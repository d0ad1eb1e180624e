//! Workloads that cannot start: one line naming the file and the cause, non-zero status.

use super::*;

/// Runs `file`, expects `code` and a single stderr line naming the file and `cause`.
#[track_caller]
fn check(file: &Path, code: i32, cause: &str) {
    let w = Wasmpod::new();
    let out = w.run(&[path_str(file)]);
    assert_code(&out, code);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(
        err.starts_with(&format!("wasmpod: {}: ", file.display())),
        "names the file: {err}"
    );
    assert!(err.contains(cause), "{err:?} should contain {cause:?}");
}

fn file_with(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn missing_file() {
    check(
        Path::new("/nonexistent/app.wasm"),
        127,
        "No such file or directory",
    );
}

#[test]
fn not_wasm() {
    let (_d, path) = file_with("app.wasm", b"\x7fELF\x02\x01\x01\0rest of an executable");
    check(
        &path,
        126,
        "not a WebAssembly module or component: found an ELF executable",
    );
}

#[test]
fn empty_file() {
    let (_d, path) = file_with("app.wasm", b"");
    check(&path, 126, "the file is empty");
}

#[test]
fn invalid_module() {
    let (_d, path) = file_with("app.wasm", b"\0asm\x01\0\0\0\x01\xff\xff\xff");
    check(&path, 126, "invalid WebAssembly");
}

#[test]
fn invalid_text() {
    let (_d, path) = file_with("app.wat", b"(module (func $f (i32.add))");
    check(&path, 126, "invalid WebAssembly");
}

#[test]
fn unsatisfied_import() {
    let (_d, path) = file_with(
        "app.wat",
        br#"(module (import "env" "missing" (func)) (func (export "_start")))"#,
    );
    check(&path, 126, "`env::missing` has not been defined");
}

#[test]
fn no_entry_point() {
    let (_d, path) = file_with("lib.wat", b"(module (func (export \"add\")))");
    check(&path, 126, "no `_start` export");
}

#[test]
fn bad_volume_is_named() {
    let w = Wasmpod::new();
    let out = w.run(&["-v", "/nonexistent/wasmpod:/data", probe(), "exit", "0"]);
    assert_code(&out, 125);
    assert!(
        stderr(&out).contains("/nonexistent/wasmpod"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn programs_past_the_limits_are_refused_naming_the_limit() {
    let (_d, path) = file_with(
        "three.wat",
        br#"(module (func) (func) (func (export "_start")))"#,
    );
    let w = Wasmpod::new();
    let out = w.run(&["--max-functions", "2", path_str(&path)]);
    assert_code(&out, 126);
    assert_eq!(
        stderr(&out),
        format!(
            "wasmpod: {}: defines 3 functions or more, over the limit of 2\n",
            path.display()
        )
    );
    let out = w.run(&["--max-module-size", "16", path_str(&path)]);
    assert_code(&out, 126);
    assert!(
        stderr(&out).contains("bytes, over the limit of 16 bytes for a program"),
        "{}",
        stderr(&out)
    );
    // Within the limits the same program runs.
    let out = w.run(&["--max-functions", "3", path_str(&path)]);
    assert_code(&out, 0);
}

/// A state or store directory someone else could swap is refused, naming it: what is in
/// it would be run as this user.
#[test]
fn directories_others_can_write_are_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let w = Wasmpod::new();
    let state = w.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = w.run(&[probe(), "exit", "0"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&state.display().to_string()) && err.contains("writable by others"),
        "{err}"
    );
    // The store under a root open to everyone (no sticky bit).
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let root = state.with_file_name("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = w.cmd(&["images"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&root.display().to_string()) && err.contains("refusing to trust"),
        "{err}"
    );
}

/// A file past the size limit is refused from its length, before it is copied into a
/// bundle (a 23 GB file was copied first, and a SIGTERM meanwhile left the copy behind).
#[test]
fn a_huge_file_is_refused_before_it_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(40 << 30)
        .unwrap();
    let w = Wasmpod::new();
    let started = std::time::Instant::now();
    let out = w.run(&[path_str(&big)]);
    assert_code(&out, 126);
    assert_eq!(
        stderr(&out),
        format!(
            "wasmpod: {}: 42949672960 bytes, over the limit of 268435456 bytes for a program\n",
            big.display()
        )
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let bundles = std::fs::read_dir(w.state_dir())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(bundles, 0, "no bundle made for it");
}

/// A module's `(start)` function runs at instantiation: its trap is the guest's trap
/// (134, as wasmtime's CLI), its `proc_exit` the guest's exit code — not "cannot start".
#[test]
fn the_start_function_traps_and_exits_like_the_guest() {
    let (_d, trap) = file_with(
        "trap.wat",
        br#"(module (func $boom unreachable) (start $boom) (func (export "_start")))"#,
    );
    let w = Wasmpod::new();
    let out = w.run(&[path_str(&trap)]);
    assert_code(&out, 134);
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    let (_d, exit) = file_with(
        "exit.wat",
        br#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func $early (call $exit (i32.const 3)))
            (start $early)
            (func (export "_start")))"#,
    );
    let out = w.run(&[path_str(&exit)]);
    assert_code(&out, 3);
}
