//! The official WASI testsuite's preview 1 tests through the shim under containerd: each
//! test's `.wasm` imported as a Wasm OCI artifact and run as a container through
//! containerd's API (`run-via-api`: `ctr run` cannot run an artifact on 1.6), with the
//! environment its `.json` gives, its root directory (a scratch copy) bind-mounted at
//! `/`, and no root filesystem otherwise — what `wasmtime run` gives it. Exit codes and
//! stdout are checked; failures must be listed in `tests/wasi-testsuite/expected-failures.txt`.

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
    let mut tally = suite::Tally::default();
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
        let stdout = fs::read_to_string(&output).unwrap_or_default();
        tally.record(test, out.status.code(), &stdout, || {
            let err = fs::read_to_string(output.with_extension("err")).unwrap_or_default();
            let client = String::from_utf8_lossy(&out.stderr).into_owned();
            err.lines()
                .chain(client.lines())
                .next()
                .unwrap_or_default()
                .to_owned()
        });
        let _ = env.ctr(&["image", "rm", &image]);
    }
    tally
        .finish("the shim", "  ", &repo, "shim")
        .map_err(anyhow::Error::msg)
}
