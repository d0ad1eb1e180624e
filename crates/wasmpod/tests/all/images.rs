//! Images through the CLI: build → push → pull → run against a private registry, the
//! error lines users see, and interop with skopeo.

use std::process::{Command, Stdio};

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
        // The pull compiled the program ahead: its first run compiles nothing.
        let out = puller.cmd(&["compile", "--pull", "never", &reference]);
        assert_code(&out, 0);
        assert!(
            stderr(&out).contains("is compiled already"),
            "{}",
            stderr(&out)
        );
        let lazy = Wasmpod::new();
        assert_code(&lazy.cmd(&["pull", "--no-compile", &reference]), 0);
        let out = lazy.cmd(&["compile", "--pull", "never", &reference]);
        assert_code(&out, 0);
        assert!(
            !stderr(&out).contains("is compiled already"),
            "{}",
            stderr(&out)
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
        .args(["push", "--username", USER, &reference])
        .env("WASMPOD_REGISTRY_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_code(&out, 0);

    let other = Wasmpod::new();
    let out = other
        .command()
        .args(["pull", "--username", USER, &reference])
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
            "--username",
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
    // The run compiled b's program into the cache; prune --cache empties it, and the next
    // run compiles again.
    let out = w.cmd(&["prune", "--cache"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("Deleted 1 compiled programs"),
        "{}",
        stdout(&out)
    );
    let out = w.cmd(&["prune", "--cache"]);
    assert!(
        stdout(&out).contains("Deleted 0 compiled programs"),
        "{}",
        stdout(&out)
    );
    assert_code(&w.run(&["example.com/b:v1", "args"]), 0);
}

/// A zstd tar layer of one entry of `kind` whose header claims `size` bytes, all present
/// (zeros), so a pull that reads what the header says really has that much to read.
fn hostile_layer(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_mtime(0);
    header.set_cksum();
    let mut out = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    std::io::Write::write_all(&mut out, header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = size.next_multiple_of(512) + 1024;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        std::io::Write::write_all(&mut out, &zeros[..n]).unwrap();
        left -= n as u64;
    }
    out.finish().unwrap()
}

/// Stores a one-layer compat image with `layer` as its layer under `reference`.
fn store_image(store: &oci_image::Store, reference: &str, layer: &[u8]) {
    use sha2::Digest as _;
    let layer_digest = store.write_blob(layer, None).unwrap();
    let diff_id = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let config_digest = store.write_blob(config.as_bytes(), None).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let digest = store.write_blob(manifest.as_bytes(), None).unwrap();
    assert_eq!(
        digest,
        format!("sha256:{:x}", sha2::Sha256::digest(manifest.as_bytes()))
    );
    let record = oci_image::ImageRecord {
        digest: digest.clone(),
        media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        manifest: digest,
        size: (config.len() + layer.len()) as u64,
    };
    let name = oci_image::ImageRef::parse(reference).unwrap();
    store.tag(&name, record).unwrap();
}

/// Issue 17, finding 2 (and the uncharged device entry): layers of a few hundred KB whose
/// tar headers claim gigabytes — a GNU long name, a pax record, a device node's data, a
/// file — make `wasmpod pull --max-unpacked 1M` fail promptly, naming the layer, in a
/// short error line, with its peak memory well under 100 MB (the long name and the pax
/// record took 15.8 GB before).
#[test]
fn hostile_layers_keep_a_pull_small() {
    let registry = Registry::start();
    let builder = Wasmpod::new();
    let store = oci_image::Store::open(builder.root_dir().join("images")).unwrap();
    let cases = [
        (
            "long-name",
            tar::EntryType::GNULongName,
            "././@LongLink",
            1 << 30,
            "unpacks to more than the limit of 1048576 bytes",
        ),
        (
            "pax",
            tar::EntryType::XHeader,
            "PaxHeaders/x",
            1 << 30,
            "unpacks to more than the limit of 1048576 bytes",
        ),
        (
            "device",
            tar::EntryType::Char,
            "dev/zero",
            4 << 30,
            "unpacks to more than the limit of 1048576 bytes",
        ),
        (
            "file",
            tar::EntryType::Regular,
            "big",
            1 << 30,
            "unpacks to more than the limit of 1048576 bytes",
        ),
    ];
    for (name, kind, entry, size, _) in &cases {
        let layer = hostile_layer(*kind, entry, *size);
        assert!(
            layer.len() < 1 << 20,
            "{name}: a {} byte layer",
            layer.len()
        );
        let reference = format!("{}/hostile:{name}", registry.host());
        store_image(&store, &reference, &layer);
        assert_code(&builder.cmd(&["push", &reference]), 0);
    }
    for (name, _, _, _, expect) in &cases {
        let reference = format!("{}/hostile:{name}", registry.host());
        let puller = Wasmpod::new();
        let mut cmd = puller.command();
        cmd.args(["pull", "-q", "--max-unpacked", "1M", &reference]);
        let started = std::time::Instant::now();
        let (out, peak) = output_and_peak_memory(cmd);
        let took = started.elapsed();
        eprintln!(
            "{name}: peak {} KiB, {took:?}: {}",
            peak >> 10,
            stderr(&out).trim()
        );
        assert_ne!(out.status.code(), Some(0), "{name}");
        let err = stderr(&out);
        assert!(
            err.contains(expect) && err.contains("layer sha256:"),
            "{name}: {err}"
        );
        assert!(err.len() < 1024, "{name}: a {} byte error", err.len());
        assert!(peak < 100 << 20, "{name}: peak memory {} MiB", peak >> 20);
        assert!(
            !stdout(&puller.cmd(&["images"])).contains("hostile"),
            "{name}: a failed pull tags nothing"
        );
    }
}

/// `wasmpod images | head -1`: a reader that goes away ends the listing as it ends `ls`
/// (SIGPIPE), not with a panic and exit 101.
#[test]
fn a_listing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let w = Wasmpod::new();
    for i in 0..3 {
        let out = w.cmd(&["build", probe(), "-t", &format!("localhost/many:v{i}")]);
        assert_code(&out, 0);
    }
    // The reading end is closed before wasmpod starts, so its first write meets no reader
    // however the two are scheduled. (Closing it after the spawn raced wasmpod: on a busy
    // machine the listing could fit in the pipe's buffer first and end with 0.)
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = w
        .command()
        .arg("images")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
}

/// A build whose `-o` cannot be written fails naming it, and leaves no tag behind.
#[test]
fn a_build_into_a_missing_directory_leaves_no_image() {
    let w = Wasmpod::new();
    let out = w.cmd(&[
        "build",
        probe(),
        "-t",
        "localhost/x:v1",
        "-o",
        "/nonexistent/dir/x.tar",
    ]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("-o /nonexistent/dir/x.tar: /nonexistent/dir is not a directory"),
        "{}",
        stderr(&out)
    );
    let listed = w.cmd(&["images"]);
    assert!(
        !stdout(&listed).contains("localhost/x"),
        "{}",
        stdout(&listed)
    );
}

/// Promotion from a staging registry to production: `pull` then `push` to another
/// registry gives the same image — `skopeo inspect --raw` shows the same index on both,
/// and every platform's manifest is there, though the pull fetched only this host's.
#[test]
fn pull_then_push_to_another_registry_is_the_same_index() {
    let (staging, production) = (Registry::start(), Registry::start());
    let staged = format!("{}/app:v1", staging.host());
    let promoted = format!("{}/team/app:v1", production.host());
    let builder = Wasmpod::new();
    assert_code(&builder.cmd(&["build", probe(), "-t", &staged]), 0);
    assert_code(&builder.cmd(&["push", &staged]), 0);
    let node = Wasmpod::new();
    assert_code(&node.cmd(&["pull", &staged]), 0);
    let out = node.cmd(&["push", &staged, &promoted]);
    assert_code(&out, 0);
    let raw = |reference: &str, digest: Option<&str>| {
        let target = match digest {
            Some(d) => format!("docker://{}@{d}", reference.rsplit_once(':').unwrap().0),
            None => format!("docker://{reference}"),
        };
        let out = skopeo(&["inspect", "--raw", "--tls-verify=false", &target]);
        assert!(out.status.success(), "{target}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let (before, after) = (raw(&staged, None), raw(&promoted, None));
    assert_eq!(before, after, "the promoted index differs");
    let index: serde_json::Value = serde_json::from_str(&after).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert!(manifests.len() > 1, "{index}");
    for m in manifests {
        let digest = m["digest"].as_str().unwrap();
        assert_eq!(raw(&staged, Some(digest)), raw(&promoted, Some(digest)));
    }
}
