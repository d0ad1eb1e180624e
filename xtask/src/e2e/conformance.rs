//! WASI conformance through the shim under containerd: the project's own preview 1
//! programs (`tests/conformance/`) always, then the official WASI testsuite where
//! `$WASI_TESTSUITE_DIR` names a copy. Preview 1: each
//! test's `.wasm` imported as a Wasm OCI artifact and run as a container through
//! containerd's API (`run-via-api`: `ctr run` cannot run an artifact on 1.6), with the
//! environment its `.json` gives, its root directory (a scratch copy) bind-mounted at
//! `/`, and no root filesystem otherwise — what `wasmtime run` gives it. Exit codes and
//! stdout are checked; failures must be listed in `tests/wasi-testsuite/expected-failures.txt`.
//! Preview 3: the plain commands the same way, the `wasi:http/service` tests served.

use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::ensure;

use super::{Containerd, NAMESPACE, RUNTIME};

use test_support::conformance as own;
use test_support::wasi_p3 as p3;
use test_support::wasi_testsuite as suite;

/// The project's own preview 1 programs through the shim: each case (but `stdin`, which
/// `run-via-api` does not feed; `wasmpod run` covers it) as a container of a Wasm OCI
/// artifact, its `/data` a bind mount of a scratch directory, checked as `wasmpod run`'s
/// are: exit code, stdout, and the files it left on the host.
pub(crate) fn check_own_conformance(env: &Containerd) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    let mut ran = 0;
    let mut imported = std::collections::BTreeSet::new();
    for (i, case) in own::cases().iter().enumerate() {
        if case.stdin.is_some() {
            continue;
        }
        let image = format!("localhost/wasmpod-e2e/conformance-{}:v1", case.program);
        if imported.insert(case.program) {
            env.import(&own::program(case), &image, "artifact")?;
        }
        let scratch = env.dir.join(format!("conformance-{i}"));
        let data = own::data_dir(&scratch);
        fs::create_dir_all(&scratch)?;
        let output = env.dir.join(format!("conformance-{i}.out"));
        let mut cmd = Command::new(&env.run_via_api);
        for (k, v) in &case.env {
            cmd.args(["--env", &format!("{k}={v}")]);
        }
        if case.data {
            fs::create_dir(&data)?;
            cmd.args(["--mount", &format!("{}:/data", data.display())]);
        }
        // The artifact's program is argv[0], named as its file is; the case's own
        // arguments follow.
        cmd.arg("--no-root")
            .arg(env.socket())
            .args([NAMESPACE, RUNTIME, &image, &format!("conformance-{i}")])
            .arg(&output)
            .arg(format!("{}.wasm", case.program))
            .args(&case.args);
        let out = cmd.output()?;
        let stdout = fs::read_to_string(&output).unwrap_or_default();
        let checked = case.data.then_some(data.as_path());
        ran += 1;
        if let Err(e) = own::check(case, out.status.code(), &stdout, checked) {
            let err = fs::read_to_string(output.with_extension("out.err")).unwrap_or_default();
            failed.push(format!(
                "{}: {e} (stderr: {}; run-via-api: {})",
                case.name,
                err.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    ensure!(
        failed.is_empty(),
        "own conformance through the shim: {failed:#?}"
    );
    eprintln!("  own conformance programs through the shim: {ran} cases passed");
    Ok(())
}

pub(crate) fn check_wasi_testsuite(env: &Containerd) -> anyhow::Result<()> {
    let repo = crate::util::root();
    let Some(tree) = suite::dir() else {
        eprintln!("  {}", suite::skipped());
        return Ok(());
    };
    let tests = suite::preview1_tests(&tree);
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

/// Whether a preview 3 test is a plain command through the shim: run, its stdout checked,
/// its exit code; not stdin, sockets or a served port (those run through `wasmpod run`).
fn plain_command(test: &p3::Test) -> Option<(&p3::RunSpec, String, i32)> {
    if test.world != p3::World::Command || !test.servers.is_empty() {
        return None;
    }
    if test.proposals.iter().any(|p| p == "sockets") {
        return None;
    }
    let (mut run, mut stdout, mut code) = (None, String::new(), None);
    for op in &test.operations {
        match op {
            p3::Operation::Run(spec) if run.is_none() => run = Some(spec),
            p3::Operation::Read { stream, payload } if stream == "stdout" => {
                stdout.push_str(payload)
            }
            p3::Operation::Wait { exit_code } if code.is_none() => code = Some(*exit_code),
            _ => return None,
        }
    }
    Some((run?, stdout, code?))
}

/// The preview 3 (WASI 0.3) tests through the shim: every plain command (as the preview 1
/// tests run), and the `wasi:http/service` tests that need no servers of their own served
/// with `ctr run` at both isolation levels, asked what their `.json` asks, then drained
/// by SIGTERM (exit 0).
pub(crate) fn check_wasi_testsuite_p3(env: &Containerd) -> anyhow::Result<()> {
    let repo = crate::util::root();
    let Some(tree) = suite::dir() else {
        eprintln!("  {}", suite::skipped());
        return Ok(());
    };
    let tests = p3::preview3_tests(&tree);
    ensure!(
        tests.len() >= 55,
        "only {} preview 3 tests found",
        tests.len()
    );
    let mut tally = suite::Tally::default();
    let mut elsewhere = 0;
    for (i, test) in tests.iter().enumerate() {
        let served = test.world == p3::World::HttpService
            && test.servers.is_empty()
            && test
                .operations
                .iter()
                .all(|op| !matches!(op, p3::Operation::Run(spec) if spec.root.is_some()));
        if let Some((spec, stdout, code)) = plain_command(test) {
            let outcome = run_command(env, i, test, spec).map(|(got_code, got_stdout)| {
                let mut why = Vec::new();
                if got_code != Some(code) {
                    why.push(format!("exit {got_code:?}, expected {code}"));
                }
                if !got_stdout.starts_with(&stdout) {
                    why.push(format!("stdout {got_stdout:?}, expected {stdout:?}"));
                }
                why
            });
            let outcome = match outcome {
                Ok(why) if why.is_empty() => Ok(()),
                Ok(why) => Err(why.join("; ")),
                Err(e) => Err(format!("{e:#}")),
            };
            tally.record_outcome(&test.name, outcome);
        } else if served {
            for level in ["shared", "process"] {
                let outcome = serve(env, i, test, level).map_err(|e| format!("{e:#}"));
                tally.record_outcome(&format!("{}@{level}", test.name), outcome);
            }
        } else {
            elsewhere += 1;
        }
    }
    eprintln!(
        "  ({elsewhere} preview 3 tests need stdin, sockets or HTTP servers of their own: \
         they run through wasmpod run in cargo xtask test)"
    );
    tally
        .finish_suite("wasm32-wasip3", "the shim", "  ", &repo, "shim-p3")
        .map_err(anyhow::Error::msg)
}

/// A plain preview 3 command as an artifact container (as the preview 1 tests run): its
/// exit code and stdout.
fn run_command(
    env: &Containerd,
    i: usize,
    test: &p3::Test,
    spec: &p3::RunSpec,
) -> anyhow::Result<(Option<i32>, String)> {
    let image = format!("localhost/wasi-testsuite/p3-{i}:v1");
    env.import(&test.wasm, &image, "artifact")?;
    let id = format!("wasi-p3-{i}");
    let scratch = env.dir.join(format!("wasi-p3-scratch-{i}"));
    fs::create_dir_all(&scratch)?;
    let output = scratch.join("out");
    let mut cmd = Command::new(&env.run_via_api);
    for (k, v) in &spec.env {
        cmd.args(["--env", &format!("{k}={v}")]);
    }
    if let Some(root) = &spec.root {
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
        .args(&spec.args);
    let out = cmd.output()?;
    let stdout = fs::read_to_string(&output).unwrap_or_default();
    let _ = env.ctr(&["image", "rm", &image]);
    if out.status.code() != Some(0) && stdout.is_empty() {
        let err = fs::read_to_string(output.with_extension("err")).unwrap_or_default();
        let first = err
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .next()
            .unwrap_or_default()
            .to_owned();
        if !first.is_empty() {
            eprintln!("    {}: {first}", test.name);
        }
    }
    Ok((out.status.code(), stdout))
}

/// A `wasi:http/service` test served by the shim at `level`: its requests, then SIGTERM.
fn serve(env: &Containerd, i: usize, test: &p3::Test, level: &str) -> anyhow::Result<()> {
    let image = format!("localhost/wasi-testsuite/p3-serve-{i}:v1");
    env.import(&test.wasm, &image, "compat")?;
    let name = test
        .wasm
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let port = super::http::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let id = format!("wasi-p3-serve-{i}-{level}");
    let mut child =
        super::http::serve_image_attached(env, &id, level, port, &image, &format!("/{name}"))?;
    let asked = (|| -> anyhow::Result<()> {
        super::http::wait_serving(&addr, Duration::from_secs(20))?;
        for op in &test.operations {
            if let p3::Operation::Request(req) = op {
                p3::request(&format!("http://{addr}"), req).map_err(anyhow::Error::msg)?;
            }
        }
        Ok(())
    })();
    let _ = env.ctr(&["task", "kill", "-s", "SIGTERM", &id]);
    let code = super::http::wait_exit(&mut child, Duration::from_secs(20));
    let _ = env.ctr(&["image", "rm", &image]);
    asked?;
    let code = code?;
    ensure!(code == 0, "exit {code} after SIGTERM's drain, not 0");
    Ok(())
}
