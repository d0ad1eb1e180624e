//! Arguments, environment, stdio, exit codes and components.

use super::*;
use std::io::Write;

#[test]
fn arguments_reach_the_guest() {
    let w = Wasmpod::new();
    let out = w.run(&[probe(), "args", "a b", "--flag", ""]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "arg[0]=probe.wasm\narg[1]=args\narg[2]=a b\narg[3]=--flag\narg[4]=\n"
    );
}

#[test]
fn environment_from_flags_and_host() {
    let w = Wasmpod::new();
    let out = w
        .command()
        .env("WASMPOD_TEST_FROM_HOST", "host value")
        .env("WASMPOD_TEST_NOT_PASSED", "secret")
        .args([
            "run",
            "-e",
            "A=1",
            "-e",
            "B=x=y",
            "-e",
            "WASMPOD_TEST_FROM_HOST",
        ])
        .args(["-e", "WASMPOD_TEST_UNSET", probe(), "env"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let env = stdout(&out);
    assert!(env.lines().any(|l| l == "A=1"), "{env}");
    assert!(env.lines().any(|l| l == "B=x=y"), "{env}");
    assert!(
        env.lines()
            .any(|l| l == "WASMPOD_TEST_FROM_HOST=host value"),
        "{env}"
    );
    assert!(!env.contains("WASMPOD_TEST_NOT_PASSED"), "{env}");
    assert!(!env.contains("WASMPOD_TEST_UNSET"), "{env}");
}

#[test]
fn exit_codes_pass_through() {
    let w = Wasmpod::new();
    for code in [0, 1, 42, 125] {
        let out = w.run(&[probe(), "exit", &code.to_string()]);
        assert_code(&out, code);
    }
}

#[test]
fn a_trap_is_134_with_the_message_on_stderr() {
    let w = Wasmpod::new();
    let out = w.run(&[probe(), "trap"]);
    assert_code(&out, 134);
    let err = stderr(&out);
    assert!(
        err.contains("wasm trap") && err.contains("unreachable"),
        "{err}"
    );
    assert!(
        err.contains("main"),
        "the backtrace names the function: {err}"
    );
}

#[test]
fn stdin_is_attached_with_interactive() {
    let w = Wasmpod::new();
    let mut child = w
        .command()
        .args(["run", "-i", probe(), "stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"hello, wasm\n").unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "HELLO, WASM\n");
    assert!(stderr(&out).contains("read 12 bytes"));
}

#[test]
fn stdin_is_empty_without_interactive() {
    let w = Wasmpod::new();
    let out = w
        .command()
        .args(["run", probe(), "stdin"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(stderr(&out).contains("read 0 bytes"));
}

#[test]
fn components_run_through_wasi_cli_run() {
    let w = Wasmpod::new();
    let out = w.run(&[component(), "args", "x"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "arg[0]=probe.component.wasm\narg[1]=args\narg[2]=x\n"
    );
    // A component reports failure through wasi:cli/exit, which carries no code: 1.
    let out = w.run(&[component(), "exit", "3"]);
    assert_code(&out, 1);
    let out = w.run(&[component(), "trap"]);
    assert_code(&out, 134);
}

#[test]
fn the_bundled_example_runs() {
    let w = Wasmpod::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello.wat");
    let out = w.run(&[path_str(&example)]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "Hello from a wasm container!\n");
}

#[test]
fn the_bundle_is_removed_after_the_run() {
    let w = Wasmpod::new();
    assert_code(&w.run(&[probe(), "exit", "0"]), 0);
    assert_code(&w.run(&[probe(), "exit", "3"]), 3);
    let left: Vec<_> = std::fs::read_dir(w.state_dir()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Proposals `wasmtime run` enables by default run here too (they were refused with 126:
/// "exception refs not supported without the exception handling feature", "threads
/// support is not enabled"): each fixture exits with the value it computed.
#[test]
fn wasm_proposals_wasmtime_enables_run() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/features");
    let w = Wasmpod::new();
    for (file, code) in [("exceptions.wat", 42), ("atomics.wat", 43), ("gc.wat", 44)] {
        let path = fixtures.join(file);
        let out = w.run(&[path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(code), "{file}: {}", stderr(&out));
    }
}

/// docker's flags do what docker users expect: `-u` is the container's user (not a
/// registry login), `--rm` and `--name` are accepted, `-d` is refused with the reason, and
/// a usage error exits 125 as docker's do.
#[test]
fn docker_habits() {
    let w = Wasmpod::new();
    let out = w.run(&["-u", "1000", "--rm", "--name", "probe-1", probe(), "args"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    // The warning is one line a person reads, not a timestamped log line.
    assert!(
        err.lines()
            .any(|l| l.starts_with("wasmpod: warning: ") && l.contains("uid 1000 gid 0")),
        "{err}"
    );
    assert!(!err.contains(" WARN "), "{err}");

    let out = w.run(&["-d", probe()]);
    assert_code(&out, 125);
    assert!(
        stderr(&out).contains("-d: wasmpod run stays in the foreground"),
        "{}",
        stderr(&out)
    );

    let out = w.run(&["--no-such-flag", probe()]);
    assert_code(&out, 125);
    let out = w.run(&["-u", "nobody", probe()]);
    assert_code(&out, 125);
    assert!(
        stderr(&out).contains("a numeric UID[:GID]"),
        "{}",
        stderr(&out)
    );
    // --help is not an error.
    assert_code(&w.cmd(&["run", "--help"]), 0);

    // A command's port cannot be moved: it listens on the host's network.
    let out = w.run(&["-p", "18080:8080", probe(), "args"]);
    assert_code(&out, 125);
    assert!(
        stderr(&out).contains("publish it as -p 8080:8080"),
        "{}",
        stderr(&out)
    );
    let out = w.run(&["-p", "8080:8080", probe(), "args"]);
    assert_code(&out, 0);
    // The name is what messages name.
    let out = w.run(&["--name", "probe-2", "--timeout", "50ms", probe(), "spin"]);
    assert_code(&out, 137);
    assert!(
        stderr(&out).contains("wasmpod: probe-2: killed after the --timeout"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn shell_completions() {
    let w = Wasmpod::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = w.cmd(&["completions", shell]);
        assert_code(&out, 0);
        let script = stdout(&out);
        assert!(
            script.contains("wasmpod") && script.contains("uninstall"),
            "{shell}: {script}"
        );
    }
    assert_code(&w.cmd(&["completions", "tcsh"]), 125);
}
