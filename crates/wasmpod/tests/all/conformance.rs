//! The official WASI testsuite through `wasmpod run`: its preview 1 tests, each as
//! `wasmpod run [-e K=V]... [-v ROOT:/] TEST.wasm ARGS...` (what its `.json` says, as the
//! suite's wasmtime adapter runs `wasmtime run --env K=V --dir ROOT::/`), with the exit
//! code and stdout checked; its preview 3 tests by their operations (`wasi_p3.rs`).
//! Skipped, loudly, where the archive is not found.

use super::*;
use crate::wasi_p3;
use crate::wasi_testsuite as suite;

/// `wasmpod compile TEST.wasm` first, as CI fills a node's cache: the run's stderr is then
/// the guest's alone (a compile that takes over a second says so on stderr, which tests
/// that check their stderr would read). A program that does not compile fails its run.
fn precompile(w: &Wasmpod, wasm: &Path) {
    let _ = w.command().arg("compile").arg(wasm).output();
}

#[test]
fn wasi_testsuite_preview1_through_wasmpod_run() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some(archive) = suite::archive(&repo) else {
        eprintln!("SKIPPED: no wasi-testsuite archive (../shared/wasi-testsuite/ or $WASMPOD_WASI_TESTSUITE_TGZ)");
        return;
    };
    let unpacked = tempfile::tempdir().unwrap();
    let tests = suite::preview1_tests(&archive, unpacked.path());
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
    let Some(archive) = suite::archive(&repo) else {
        eprintln!("SKIPPED: no wasi-testsuite archive (../shared/wasi-testsuite/ or $WASMPOD_WASI_TESTSUITE_TGZ)");
        return;
    };
    let unpacked = tempfile::tempdir().unwrap();
    suite::unpack(&archive, unpacked.path());
    let tests = wasi_p3::preview3_tests(unpacked.path());
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
