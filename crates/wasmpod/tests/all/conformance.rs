//! WASI conformance through `wasmpod run`. First the project's own programs
//! (`tests/conformance/`, cases in `test_support::conformance`), always; then the official
//! WASI testsuite: its preview 1 tests, each as
//! `wasmpod run [-e K=V]... [-v ROOT:/] TEST.wasm ARGS...` (what its `.json` says, as the
//! suite's wasmtime adapter runs `wasmtime run --env K=V --dir ROOT::/`), with the exit
//! code and stdout checked; its preview 3 tests by their operations (`wasi_p3.rs`).
//! Skipped, loudly, unless `$WASI_TESTSUITE_DIR` names a copy of the suite.

use std::io::Write as _;

use super::*;
use crate::wasi_p3;
use crate::wasi_testsuite as suite;
use test_support::conformance as own;

/// How a case's preopen is given: as the case wants it, read-only, or not at all.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Preopen {
    AsWanted,
    ReadOnly,
    Missing,
}

/// Runs `case` with `wasmpod run`, its `/data` as `preopen` says, and checks it (the
/// files it left only when its preopen was as it wants).
fn run_own_case(w: &Wasmpod, case: &own::Case, preopen: Preopen) -> Result<(), String> {
    let scratch = tempfile::tempdir().unwrap();
    let data = own::data_dir(scratch.path());
    let mut cmd = w.command();
    cmd.args(["run", "--timeout", "60s"]);
    for (k, v) in &case.env {
        cmd.args(["-e", &format!("{k}={v}")]);
    }
    if case.data && preopen != Preopen::Missing {
        std::fs::create_dir(&data).unwrap();
        let mode = if preopen == Preopen::ReadOnly {
            "ro"
        } else {
            "rw"
        };
        cmd.args(["-v", &format!("{}:/data:{mode}", data.display())]);
    }
    if case.stdin.is_some() {
        cmd.arg("-i");
    }
    cmd.arg(own::program(case)).args(&case.args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start wasmpod");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = &case.stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let checked = (case.data && preopen == Preopen::AsWanted).then_some(data.as_path());
    own::check(case, out.status.code(), &stdout(&out), checked)
        .map_err(|e| format!("{}: {e} (stderr: {})", case.name, stderr(&out).trim()))
}

#[test]
fn own_wasi_p1_conformance_through_wasmpod_run() {
    let w = Wasmpod::new();
    let failed: Vec<String> = own::cases()
        .iter()
        .filter_map(|case| run_own_case(&w, case, Preopen::AsWanted).err())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The file-system families are not fooled by a preopen that is wrong: read-only where
/// they need to write, or missing, each fails (and says so) instead of passing.
#[test]
fn a_broken_preopen_fails_the_own_conformance_programs() {
    let w = Wasmpod::new();
    for preopen in [Preopen::ReadOnly, Preopen::Missing] {
        for case in own::preopen_families() {
            let result = run_own_case(&w, &case, preopen);
            let err = result.expect_err(&format!("{} passed with a broken preopen", case.name));
            assert!(
                err.contains("FAIL") && err.contains("exit Some(1)"),
                "{err}"
            );
            if preopen == Preopen::Missing {
                assert!(err.contains("no directory preopened as /data"), "{err}");
            }
        }
    }
}

/// `wasmpod compile TEST.wasm` first, as CI fills a node's cache: the run's stderr is then
/// the guest's alone (a compile that takes over a second says so on stderr, which tests
/// that check their stderr would read). A program that does not compile fails its run.
fn precompile(w: &Wasmpod, wasm: &Path) {
    let _ = w.command().arg("compile").arg(wasm).output();
}

#[test]
fn wasi_testsuite_preview1_through_wasmpod_run() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some(tree) = suite::dir() else {
        eprintln!("{}", suite::skipped());
        return;
    };
    let tests = suite::preview1_tests(&tree);
    assert!(
        tests.len() >= 72,
        "only {} preview 1 tests found",
        tests.len()
    );
    let w = Wasmpod::new();
    let mut tally = suite::Tally::default();
    for test in &tests {
        precompile(&w, &test.wasm);
        let scratch = tempfile::tempdir().unwrap();
        let mut cmd = w.command();
        cmd.args(["run", "--timeout", "60s"]);
        for (k, v) in &test.env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        if let Some(root) = &test.root {
            let copy = scratch.path().join("root");
            suite::copy_tree(root, &copy);
            cmd.args(["-v", &format!("{}:/", copy.display())]);
        }
        cmd.arg(&test.wasm).args(&test.args);
        let out = cmd.output().unwrap();
        tally.record(test, out.status.code(), &stdout(&out), || {
            stderr(&out).lines().next().unwrap_or_default().to_owned()
        });
    }
    if let Err(e) = tally.finish("wasmpod run", "", &repo, "run") {
        panic!("{e}");
    }
}

/// The suite's preview 3 (WASI 0.3) component tests through `wasmpod run`, each as the
/// suite's wasmtime adapter runs it: a command as `wasmpod run`, a `wasi:http/service`
/// one as `wasmpod run --listen 127.0.0.1:0` (the address read off stderr), the
/// `sockets` proposal as `--allow-listen '*'` with loopback outbound, `http` as loopback
/// outbound (the test's servers are on 127.0.0.1).
#[test]
fn wasi_testsuite_preview3_through_wasmpod_run() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some(tree) = suite::dir() else {
        eprintln!("{}", suite::skipped());
        return;
    };
    let tests = wasi_p3::preview3_tests(&tree);
    assert!(
        tests.len() >= 55,
        "only {} preview 3 tests found",
        tests.len()
    );
    let w = Wasmpod::new();
    let mut tally = suite::Tally::default();
    for test in &tests {
        precompile(&w, &test.wasm);
        let scratch = tempfile::tempdir().unwrap();
        let mut start = |spec: &wasi_p3::RunSpec| {
            let mut cmd = w.command();
            // -i: stdin is the test's pipe, as wasmtime inherits it.
            cmd.args(["run", "-i", "--timeout", "60s"]);
            if test.world == wasi_p3::World::HttpService {
                cmd.args(["--listen", "127.0.0.1:0"]);
            }
            let proposal = |p: &str| test.proposals.iter().any(|q| q == p);
            if proposal("sockets") {
                cmd.args(["--allow-listen", "*"]);
            }
            if proposal("sockets") || proposal("http") {
                cmd.args(["--allow-outbound", "127.0.0.1:*,[::1]:*,localhost:*"]);
            }
            for (k, v) in &spec.env {
                cmd.args(["-e", &format!("{k}={v}")]);
            }
            if let Some(root) = &spec.root {
                let copy = scratch.path().join("root");
                if !copy.exists() {
                    suite::copy_tree(root, &copy);
                }
                cmd.args(["-v", &format!("{}:/", copy.display())]);
            }
            cmd.arg(&test.wasm).args(&spec.args);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().expect("start wasmpod")
        };
        let outcome = wasi_p3::run(test, &mut start);
        tally.record_outcome(&test.name, outcome);
    }
    if let Err(e) = tally.finish_suite("wasm32-wasip3", "wasmpod run", "", &repo, "run-p3") {
        panic!("{e}");
    }
}
