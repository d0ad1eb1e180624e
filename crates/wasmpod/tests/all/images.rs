//! Images through the CLI: build → push → pull → run against a private registry, the
//! error lines users see, and interop with skopeo.

use std::process::Command;

use super::*;
use crate::registry::{self, Registry, PASSWORD, USER};

#[test]
fn build_push_pull_run_in_both_formats() {
    let registry = Registry::start();
    for format in ["compat", "artifact"] {
        let reference = format!("{}/probe:{format}", registry.host());
        let builder = Wasmpod::new();
        let out = builder.cmd(&["build", probe(), "-t", &reference, "--format", format]);
        assert_code(&out, 0);
        assert!(
            stdout(&out).starts_with(&format!("{reference}: built sha256:")),
            "{}",
            stdout(&out)
        );
        assert_code(&builder.cmd(&["push", &reference]), 0);

        // A machine that has never seen the image: `run` pulls it.
        let user = Wasmpod::new();
        let out = user.run(&[&reference, "args", "x"]);
        assert_code(&out, 0);
        assert_eq!(stdout(&out), "arg[0]=/probe.wasm\narg[1]=args\narg[2]=x\n");
        let out = user.run(&["--pull", "never", &reference, "exit", "7"]);
        assert_code(&out, 7);

        let puller = Wasmpod::new();
        let out = puller.cmd(&["pull", "-q", &reference]);
        assert_code(&out, 0);
        let digest = stdout(&out).trim().to_owned();
        assert!(digest.starts_with("sha256:"), "{digest}");
        let by_digest = format!("{}/probe@{digest}", registry.host());
        assert_code(&puller.cmd(&["pull", &by_digest]), 0);
        let listing = stdout(&puller.cmd(&["images"]));
        assert!(
            listing.contains(&reference) && listing.contains(&by_digest),
            "{listing}"
        );
    }
}

#[test]
fn an_image_that_is_not_there_locally_with_pull_never() {
    let w = Wasmpod::new();
    let out = w.run(&["--pull", "never", "localhost:5000/absent:v1"]);
    assert_code(&out, 125);
    assert_eq!(
        stderr(&out),
        "wasmpod: localhost:5000/absent:v1: no such image in the local store\n"
    );
}

/// One line on stderr, non-zero status.
#[track_caller]
fn one_line_error(out: &Output, expect: &str) {
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(expect), "{err}");
}

#[test]
fn registry_errors_are_one_clear_line() {
    let registry = Registry::start_with_auth();
    let w = Wasmpod::new();
    let reference = format!("{}/probe:v1", registry.host());
    assert_code(&w.cmd(&["build", probe(), "-t", &reference]), 0);

    let out = w.cmd(&["push", &reference]);
    one_line_error(&out, "authentication required");
    let out = w
        .command()
        .args(["push", "-u", USER, &reference])
        .env("WASMPOD_REGISTRY_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_code(&out, 0);

    let other = Wasmpod::new();
    let out = other
        .command()
        .args(["pull", "-u", USER, &reference])
        .env("WASMPOD_REGISTRY_PASSWORD", "wrong")
        .output()
        .unwrap();
    one_line_error(
        &out,
        &format!("the registry refused the credentials of user \"{USER}\""),
    );

    let out = other
        .command()
        .args([
            "pull",
            "-u",
            USER,
            "--password-stdin",
            &format!("{}/probe:missing", registry.host()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{PASSWORD}\n").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    one_line_error(&out, "tag \"missing\" not found in the registry");

    let down = format!("127.0.0.1:{}/probe:v1", registry::free_port());
    one_line_error(
        &other.cmd(&["pull", &down]),
        "cannot reach registry 127.0.0.1:",
    );
    one_line_error(&other.run(&[&down]), "cannot reach registry 127.0.0.1:");
    one_line_error(
        &other.cmd(&["pull", "Bad/Name"]),
        "invalid image reference \"Bad/Name\"",
    );
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo ({e}): apt-get install skopeo"))
}

#[test]
fn skopeo_reads_what_we_push_and_build() {
    let registry = Registry::start();
    let w = Wasmpod::new();
    let dir = tempfile::tempdir().unwrap();
    for format in ["compat", "artifact"] {
        let reference = format!("{}/probe:{format}", registry.host());
        assert_code(
            &w.cmd(&["build", probe(), "-t", &reference, "--format", format]),
            0,
        );
        assert_code(&w.cmd(&["push", &reference]), 0);
        let out = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let layout = dir.path().join(format);
        let out = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:{format}", layout.display()),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        if format == "compat" {
            assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
            let out = skopeo(&[
                "inspect",
                "--tls-verify=false",
                &format!("docker://{reference}"),
            ]);
            let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                (info["Os"].as_str(), info["Architecture"].as_str()),
                (Some("linux"), Some("amd64"))
            );
        } else {
            assert_eq!(
                raw["config"]["mediaType"],
                "application/vnd.wasm.config.v0+json"
            );
            assert_eq!(raw["layers"][0]["mediaType"], "application/wasm");
            assert_eq!(
                raw["layers"][0]["annotations"]["org.opencontainers.image.title"],
                "probe.wasm"
            );
        }
    }

    // An archive written by `build -o` is an OCI layout skopeo (and `ctr image import`) reads.
    let archive = dir.path().join("probe.tar");
    let out = w.cmd(&[
        "build",
        probe(),
        "-t",
        "example.com/probe:v1",
        "-o",
        path_str(&archive),
    ]);
    assert_code(&out, 0);
    let out = skopeo(&["inspect", &format!("oci-archive:{}", archive.display())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Os"], "linux");
}

#[test]
fn images_rmi_and_prune() {
    let w = Wasmpod::new();
    assert_code(&w.cmd(&["build", probe(), "-t", "example.com/a:v1"]), 0);
    assert_code(
        &w.cmd(&[
            "build",
            probe(),
            "-t",
            "example.com/b:v1",
            "--format",
            "artifact",
        ]),
        0,
    );
    let listing = stdout(&w.cmd(&["images"]));
    assert!(listing.starts_with("IMAGE"), "{listing}");
    assert_eq!(listing.lines().count(), 3, "{listing}");
    let out = w.cmd(&["rmi", "example.com/a:v1"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("Untagged: example.com/a:v1"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("Deleted 8 blobs"), "{}", stdout(&out));
    one_line_error(
        &w.cmd(&["rmi", "example.com/a:v1"]),
        "no such image in the local store",
    );
    let out = w.cmd(&["prune"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).starts_with("Deleted 0 blobs"),
        "{}",
        stdout(&out)
    );
    assert_code(&w.run(&["example.com/b:v1", "args"]), 0);
}
