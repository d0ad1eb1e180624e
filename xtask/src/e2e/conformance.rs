//! The official WASI testsuite's preview 1 tests through the shim under containerd: each
//! test's `.wasm` imported as a Wasm OCI artifact and run as a container through
//! containerd's API (`run-via-api`: `ctr run` cannot run an artifact on 1.6), with the
//! environment its `.json` gives, its root directory (a scratch copy) bind-mounted at
//! `/`, and no root filesystem otherwise — what `wasmtime run` gives it. Exit codes and
//! stdout are checked; failures must be listed in `tests/wasi-testsuite/expected-failures.txt`.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use anyhow::ensure;

use super::{Containerd, NAMESPACE, RUNTIME};

#[path = "../../../tests/support/wasi_testsuite.rs"]
mod suite;

pub(crate) fn check_wasi_testsuite(env: &Containerd) -> anyhow::Result<()> {
    let repo = crate::util::root();
    let Some(archive) = suite::archive(&repo) else {
        eprintln!(
            "  SKIPPED: no wasi-testsuite archive (../shared/wasi-testsuite/ or $WASMPOD_WASI_TESTSUITE_TGZ)"
        );
        return Ok(());
    };
    let unpacked = env.dir.join("wasi-testsuite");
    let tests = suite::preview1_tests(&archive, &unpacked);
    ensure!(
        tests.len() >= 72,
        "only {} preview 1 tests found",
        tests.len()
    );
    let mut failed = BTreeMap::new();
    let mut per_language: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, test) in tests.iter().enumerate() {
        let image = format!("localhost/wasi-testsuite/t{i}:v1");
        env.import(&test.wasm, &image, "artifact")?;
        let id = format!("wasi-{i}");
        let scratch = env.dir.join(format!("wasi-scratch-{i}"));
        fs::create_dir_all(&scratch)?;
        let output = scratch.join("out");
        let mut cmd = Command::new(&env.run_via_api);
        for (k, v) in &test.env {
            cmd.args(["--env", &format!("{k}={v}")]);
        }
        if let Some(root) = &test.root {
            let copy = scratch.join("root");
            suite::copy_tree(root, &copy);
            cmd.args(["--mount", &format!("{}:/", copy.display())]);
        }
        let name = test
            .wasm
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        cmd.args(["--no-root", "--clear-env"])
            .arg(env.socket())
            .args([NAMESPACE, RUNTIME, &image, &id])
            .arg(&output)
            .arg(&name)
            .args(&test.args);
        let out = cmd.output()?;
        let code = out.status.code();
        let stdout = fs::read_to_string(&output).unwrap_or_default();
        let mut why = Vec::new();
        if code != Some(test.exit_code) {
            why.push(format!("exit {code:?}, expected {}", test.exit_code));
        }
        if let Some(expected) = &test.stdout {
            if stdout != *expected {
                why.push(format!("stdout {stdout:?}, expected {expected:?}"));
            }
        }
        let lang = test.name.split('/').next().unwrap_or_default().to_owned();
        let counts = per_language.entry(lang).or_default();
        counts.1 += 1;
        if why.is_empty() {
            counts.0 += 1;
        } else {
            let err = fs::read_to_string(output.with_extension("err")).unwrap_or_default();
            let client = String::from_utf8_lossy(&out.stderr).into_owned();
            let first = err
                .lines()
                .chain(client.lines())
                .next()
                .unwrap_or_default()
                .to_owned();
            failed.insert(test.name.clone(), format!("{} ({first})", why.join("; ")));
        }
        let _ = env.ctr(&["image", "rm", &image]);
    }
    let passed = tests.len() - failed.len();
    let languages: Vec<String> = per_language
        .iter()
        .map(|(lang, (ok, all))| format!("{lang} {ok}/{all}"))
        .collect();
    eprintln!(
        "  wasi-testsuite wasm32-wasip1 through the shim: {passed} passed, {} failed ({})",
        failed.len(),
        languages.join(", ")
    );
    for (name, why) in &failed {
        eprintln!("    FAILED {name}: {why}");
    }
    let expected = suite::expected_failures(&repo, "shim");
    let unexpected: Vec<&String> = failed
        .keys()
        .filter(|n| !expected.contains_key(*n))
        .collect();
    let now_passing: Vec<&String> = expected
        .keys()
        .filter(|n| !failed.contains_key(*n))
        .collect();
    ensure!(
        unexpected.is_empty() && now_passing.is_empty(),
        "failed without a line in tests/wasi-testsuite/expected-failures.txt: {unexpected:?}; \
         listed there but passing: {now_passing:?}"
    );
    Ok(())
}
