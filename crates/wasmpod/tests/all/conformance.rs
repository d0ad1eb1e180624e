//! The official WASI testsuite's preview 1 tests through `wasmpod run`, each as
//! `wasmpod run [-e K=V]... [-v ROOT:/] TEST.wasm ARGS...` (what its `.json` says, as the
//! suite's wasmtime adapter runs `wasmtime run --env K=V --dir ROOT::/`), with the exit
//! code and stdout checked. Skipped, loudly, where the archive is not found.

use std::collections::BTreeMap;

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
    let mut failed = BTreeMap::new();
    let mut per_language: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
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
        let mut why = Vec::new();
        if out.status.code() != Some(test.exit_code) {
            why.push(format!(
                "exit {:?}, expected {}",
                out.status.code(),
                test.exit_code
            ));
        }
        if let Some(expected) = &test.stdout {
            if stdout(&out) != *expected {
                why.push(format!("stdout {:?}, expected {expected:?}", stdout(&out)));
            }
        }
        let lang = test.name.split('/').next().unwrap_or_default();
        let counts = per_language.entry(lang).or_default();
        counts.1 += 1;
        if why.is_empty() {
            counts.0 += 1;
        } else {
            let err = stderr(&out);
            let err = err.lines().next().unwrap_or_default();
            failed.insert(test.name.clone(), format!("{} ({err})", why.join("; ")));
        }
    }
    let passed = tests.len() - failed.len();
    let languages: Vec<String> = per_language
        .iter()
        .map(|(lang, (ok, all))| format!("{lang} {ok}/{all}"))
        .collect();
    eprintln!(
        "wasi-testsuite wasm32-wasip1 through wasmpod run: {passed} passed, {} failed ({})",
        failed.len(),
        languages.join(", ")
    );
    for (name, why) in &failed {
        eprintln!("  FAILED {name}: {why}");
    }
    let expected = suite::expected_failures(&repo, "run");
    let unexpected: Vec<&String> = failed
        .keys()
        .filter(|n| !expected.contains_key(*n))
        .collect();
    let now_passing: Vec<&String> = expected
        .keys()
        .filter(|n| !failed.contains_key(*n))
        .collect();
    assert!(
        unexpected.is_empty() && now_passing.is_empty(),
        "failed without a line in tests/wasi-testsuite/expected-failures.txt: {unexpected:?}; \
         listed there but passing: {now_passing:?}"
    );
}
