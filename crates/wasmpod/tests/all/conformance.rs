//! The official WASI testsuite's preview 1 tests through `wasmpod run`, each as
//! `wasmpod run [-e K=V]... [-v ROOT:/] TEST.wasm ARGS...` (what its `.json` says, as the
//! suite's wasmtime adapter runs `wasmtime run --env K=V --dir ROOT::/`), with the exit
//! code and stdout checked. Skipped, loudly, where the archive is not found.

use super::*;
use crate::wasi_testsuite as suite;

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
