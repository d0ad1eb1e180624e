//! Tests of spec → policy with sample specs.

use super::*;
use serde_json::{json, Value};
use std::os::unix::fs::symlink;

/// A bundle with `rootfs/hello.wasm`, and a spec built from `extra` merged over a minimal one.
struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("rootfs/hello.wasm"), b"\0asm\x01\0\0\0").unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn spec(&self, extra: Value) -> Spec {
        let mut base = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/hello.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        });
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap()
    }

    fn policy(&self, extra: Value) -> Result<RunPolicy> {
        RunPolicy::from_spec(&self.spec(extra), self.path())
    }
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn warning_fields(policy: &RunPolicy) -> Vec<&str> {
    policy.warnings().iter().map(|w| w.field.as_str()).collect()
}

#[test]
fn minimal_spec() {
    let b = Bundle::new();
    let p = b
        .policy(json!({"process": {"args": ["/hello.wasm", "a b"], "env": ["A=1", "B=x=y"]}}))
        .unwrap();
    assert_eq!(p.args(), ["/hello.wasm", "a b"]);
    assert_eq!(
        p.env(),
        [("A".into(), "1".into()), ("B".into(), "x=y".into())]
    );
    assert_eq!(p.cwd(), "/");
    assert_eq!(
        p.preopens(),
        [Preopen {
            host: b.path().join("rootfs"),
            guest: "/".into(),
            readonly: false
        }]
    );
    // No cap; were one set, passing it would be an OOM kill, as under a memory cgroup.
    assert_eq!(p.limits(), &Limits::default().oom_kill(true));
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    assert_eq!(p.read_entrypoint(u64::MAX).unwrap(), b"\0asm\x01\0\0\0");
}

#[test]
fn readonly_root() {
    let b = Bundle::new();
    let p = b.policy(json!({"root": {"readonly": true}})).unwrap();
    assert!(p.preopens()[0].readonly);
}

#[test]
fn bind_mounts_become_preopens_with_ro_honoured() {
    let b = Bundle::new();
    let data = tempfile::tempdir().unwrap();
    let p = b
        .policy(json!({"mounts": [
            {"destination": "/data", "type": "bind", "source": data.path(), "options": ["rbind", "ro"]},
            {"destination": "/scratch/", "source": data.path(), "options": ["bind", "rw"]},
        ]}))
        .unwrap();
    let mounts: Vec<_> = p.preopens()[1..]
        .iter()
        .map(|p| (p.guest.as_str(), p.readonly))
        .collect();
    assert_eq!(mounts, [("/data", true), ("/scratch", false)]);
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
}

/// The mounts containerd gives every container pass quietly; a kernel mount anyone asked
/// for is named in a warning.
#[test]
fn kernel_mounts_other_than_containerds_own_are_named_in_warnings() {
    let b = Bundle::new();
    let p = b
        .policy(json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/proc-again", "type": "proc", "source": "proc"},
        ]}))
        .unwrap();
    assert_eq!(
        warning_fields(&p),
        ["mounts[/scratch]", "mounts[/proc-again]"]
    );
    assert!(p.warnings()[0].message.contains("tmpfs mounts"));
    assert_eq!(p.preopens().len(), 1);
}

#[test]
fn file_bind_mount_is_a_warning_except_the_cris_own() {
    let b = Bundle::new();
    let file = b.path().join("hosts");
    std::fs::write(&file, "127.0.0.1 localhost\n").unwrap();
    let p = b
        .policy(json!({"mounts": [
            {"destination": "/etc/hosts", "type": "bind", "source": file, "options": ["rbind", "ro"]},
            {"destination": "/etc/app.conf", "type": "bind", "source": file, "options": ["rbind", "ro"]},
        ]}))
        .unwrap();
    assert_eq!(warning_fields(&p), ["mounts[/etc/app.conf]"]);
    assert!(p.warnings()[0].message.contains("is a file"));
}

#[test]
fn missing_mount_source_is_an_error_naming_it() {
    let b = Bundle::new();
    let err = b
        .policy(json!({"mounts": [{"destination": "/data", "type": "bind", "source": "/nonexistent/wasmpod"}]}))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("mount /data") && msg.contains("/nonexistent/wasmpod"),
        "{msg}"
    );
}

/// A bind mount at `/` is the guest's root (as `wasmtime run --dir DIR::/`): it replaces
/// the root filesystem's preopen, stays the first preopen (fd 3) and keeps `ro`.
#[test]
fn a_bind_mount_at_the_root_is_the_root() {
    let b = Bundle::new();
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("hello.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let data = tempfile::tempdir().unwrap();
    let p = b
        .policy(json!({"mounts": [
            {"destination": "/data", "type": "bind", "source": data.path(), "options": ["rbind"]},
            {"destination": "/", "type": "bind", "source": site.path(), "options": ["rbind", "ro"]}
        ]}))
        .unwrap();
    let preopens: Vec<_> = p
        .run_config(Default::default(), Default::default())
        .preopens
        .iter()
        .map(|o| (o.guest.clone(), o.host.clone(), o.readonly))
        .collect();
    assert_eq!(
        preopens,
        [
            ("/".to_owned(), site.path().to_owned(), true),
            ("/data".to_owned(), data.path().to_owned(), false)
        ]
    );
    assert_eq!(p.read_entrypoint(64).unwrap(), b"\0asm\x01\0\0\0");
}

#[test]
fn memory_limit_is_the_cap() {
    let b = Bundle::new();
    let p = b
        .policy(json!({"linux": {"resources": {"memory": {"limit": 67108864}}}}))
        .unwrap();
    assert_eq!(p.limits().memory, Some(64 << 20));
    let p = b
        .policy(json!({"linux": {"resources": {"memory": {"limit": -1}}}}))
        .unwrap();
    assert_eq!(p.limits().memory, None);
}

#[test]
fn unenforced_resources_are_named() {
    let b = Bundle::new();
    let p = b
        .policy(json!({"linux": {"resources": {
            "cpu": {"shares": 1024},
            "pids": {"limit": 10},
            "blockIO": {"weight": 500}
        }}}))
        .unwrap();
    assert_eq!(
        warning_fields(&p),
        [
            "linux.resources.cpu",
            "linux.resources.pids",
            "linux.resources.blockIO"
        ]
    );
    // The process level enforces all three.
    assert_eq!(p.warnings_at(crate::Isolation::Process).count(), 0);
    assert_eq!(p.warnings_at(crate::Isolation::Shared).count(), 3);
}

#[test]
fn a_cpu_quota_is_the_guests_budget() {
    let b = Bundle::new();
    let p = b
        .policy(json!({"linux": {"resources": {"cpu": {"quota": 20000, "period": 50000}}}}))
        .unwrap();
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    let config = p.run_config(Default::default(), Default::default());
    assert_eq!(
        config.cpu.budget(),
        Some((Duration::from_millis(20), Duration::from_millis(50)))
    );
    let p = b
        .policy(json!({"linux": {"resources": {"cpu": {"quota": 30000}}}}))
        .unwrap();
    let config = p.run_config(Default::default(), Default::default());
    assert_eq!(
        config.cpu.budget(),
        Some((Duration::from_millis(30), Duration::from_millis(100)))
    );
    let p = b
        .policy(json!({"linux": {"resources": {"cpu": {"quota": -1}}}}))
        .unwrap();
    let config = p.run_config(Default::default(), Default::default());
    assert_eq!(config.cpu.budget(), None);
}

#[test]
fn process_fields_that_cannot_be_honoured() {
    let b = Bundle::new();
    let p = b
        .policy(json!({
            "hostname": "web-1",
            "process": {
                "terminal": true,
                "user": {"uid": 1000, "gid": 1000},
                "env": ["NOEQUALS"],
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            }
        }))
        .unwrap();
    assert_eq!(
        warning_fields(&p),
        [
            "process.env",
            "process.terminal",
            "process.user",
            "process.rlimits",
            "hostname"
        ]
    );
}

#[test]
fn restrictions_a_guest_cannot_reach_need_no_warning() {
    let b = Bundle::new();
    let p = b
        .policy(json!({
            "process": {"noNewPrivileges": true, "capabilities": {"bounding": ["CAP_CHOWN"]}},
            "linux": {
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"],
                "namespaces": [{"type": "mount"}],
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            }
        }))
        .unwrap();
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
}

#[test]
fn empty_args_is_an_error() {
    let b = Bundle::new();
    let err = b.policy(json!({"process": {"args": []}})).unwrap_err();
    assert!(err.to_string().contains("process.args"), "{err}");
}

#[test]
fn relative_cwd_is_an_error() {
    let b = Bundle::new();
    let err = b.policy(json!({"process": {"cwd": "app"}})).unwrap_err();
    assert!(err.to_string().contains("process.cwd"), "{err}");
}

#[test]
fn missing_root_is_an_error_naming_it() {
    let b = Bundle::new();
    let err = b.policy(json!({"root": {"path": "nope"}})).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn missing_entrypoint_is_named() {
    let b = Bundle::new();
    let p = b
        .policy(json!({"process": {"args": ["/missing.wasm"]}}))
        .unwrap();
    let err = p.read_entrypoint(u64::MAX).unwrap_err().to_string();
    assert!(
        err.contains("/missing.wasm") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn entrypoint_relative_to_cwd_and_by_path() {
    let b = Bundle::new();
    std::fs::create_dir(b.path().join("rootfs/bin")).unwrap();
    std::fs::write(b.path().join("rootfs/bin/tool.wasm"), b"tool").unwrap();
    let p = b
        .policy(json!({"process": {"args": ["tool.wasm"], "env": ["PATH=/usr/bin:/bin"]}}))
        .unwrap();
    assert_eq!(p.read_entrypoint(u64::MAX).unwrap(), b"tool");
    let p = b
        .policy(json!({"process": {"args": ["./tool.wasm"], "cwd": "/bin"}}))
        .unwrap();
    assert_eq!(p.read_entrypoint(u64::MAX).unwrap(), b"tool");
    assert_eq!(warning_fields(&p), ["process.cwd"]);
    let p = b
        .policy(json!({"process": {"args": ["hello.wasm"]}}))
        .unwrap();
    assert_eq!(p.read_entrypoint(u64::MAX).unwrap(), b"\0asm\x01\0\0\0");
}

#[test]
fn entrypoint_inside_a_mount() {
    let b = Bundle::new();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("app.wasm"), b"app").unwrap();
    let p = b
        .policy(json!({
            "process": {"args": ["/opt/app.wasm"]},
            "mounts": [{"destination": "/opt", "type": "bind", "source": data.path(), "options": ["ro"]}]
        }))
        .unwrap();
    assert_eq!(p.read_entrypoint(u64::MAX).unwrap(), b"app");
}

#[test]
fn entrypoint_symlink_out_of_the_root_is_refused() {
    let b = Bundle::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.wasm"), b"secret").unwrap();
    symlink(
        outside.path().join("secret.wasm"),
        b.path().join("rootfs/abs.wasm"),
    )
    .unwrap();
    let depth = b.path().join("rootfs").components().count();
    let up = "../".repeat(depth);
    symlink(
        format!("{up}{}", outside.path().join("secret.wasm").display()),
        b.path().join("rootfs/rel.wasm"),
    )
    .unwrap();
    for name in [
        "/abs.wasm",
        "/rel.wasm",
        "/../../../../../../../../etc/passwd",
    ] {
        let p = b.policy(json!({"process": {"args": [name]}})).unwrap();
        assert!(
            p.read_entrypoint(u64::MAX).is_err(),
            "{name} was read from outside the root"
        );
    }
}

#[test]
fn a_containerd_default_spec() {
    // The shape `ctr run` produces: default mounts, capabilities, rlimits-free.
    let b = Bundle::new();
    let p = b
        .policy(json!({
            "process": {
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
                "noNewPrivileges": true
            },
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            ],
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}, "namespaces": [{"type": "pid"}]}
        }))
        .unwrap();
    assert_eq!(warning_fields(&p), Vec::<&str>::new());
    assert_eq!(p.env()[0].0, "PATH");
}

#[test]
fn an_artifact_program_needs_no_file_in_the_root() {
    let b = Bundle::new();
    let spec = b.spec(json!({"process": {"args": ["app.wasm", "x"]}}));
    // In the container's files, a name that is nowhere cannot be read...
    let from_files =
        RunPolicy::from_spec(&spec, b.path()).and_then(|p| p.read_entrypoint(u64::MAX));
    assert!(from_files.unwrap_err().to_string().contains("app.wasm"));
    // ...but the wasm layer of an artifact only borrows args[0] as its name.
    let p = RunPolicy::from_spec_with_program(&spec, b.path()).unwrap();
    assert_eq!(p.args(), ["app.wasm", "x"]);
    assert_eq!(p.preopens().len(), 1);
    let err = p.read_entrypoint(u64::MAX).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not come from the container's files"),
        "{err}"
    );
}

/// A tenant's sparse 40 GiB file named as an entrypoint is refused by its length, before
/// any memory is committed to it (it used to be read whole, aborting a node-grouped shim).
#[test]
fn an_entrypoint_over_the_size_limit_is_refused_before_it_is_read() {
    let b = Bundle::new();
    let big = std::fs::File::create(b.path().join("rootfs/big.wasm")).unwrap();
    big.set_len(40 << 30).unwrap();
    let p = b
        .policy(json!({"process": {"args": ["/big.wasm"]}}))
        .unwrap();
    let started = std::time::Instant::now();
    let e = p.read_entrypoint(256 << 20).unwrap_err().to_string();
    assert!(
        e.contains("/big.wasm")
            && e.contains("42949672960 bytes, over the limit of 268435456 bytes for a program"),
        "{e}"
    );
    // Refused from the length alone: no 40 GiB read (which takes minutes, if memory lasts).
    assert!(started.elapsed() < Duration::from_secs(5));
    // At the limit exactly, the file is read.
    assert_eq!(
        b.policy(json!({})).unwrap().read_entrypoint(8).unwrap(),
        b"\0asm\x01\0\0\0"
    );
    assert!(b.policy(json!({})).unwrap().read_entrypoint(7).is_err());
}

/// A file that holds more than its length said (it grew, or lied) stops at the limit.
#[test]
fn reading_stops_at_the_limit_whatever_the_length_said() {
    let e = read_limited(&b"0123456789"[..], 4, 8).unwrap_err();
    assert_eq!(
        e,
        "more than 8 bytes, over the limit of 8 bytes for a program"
    );
    assert_eq!(read_limited(&b"01234567"[..], 4, 8).unwrap(), b"01234567");
}

/// Links in the image mean what they mean inside the container: an absolute link to the
/// program (`/usr/bin/app -> /opt/app/app.wasm`, as images have them) is followed from
/// the container's root — under the shim it failed, while `wasmpod run` (whose store
/// rewrites such links) ran it — and no link leads out of the root.
#[test]
fn entrypoint_links_resolve_inside_the_root() {
    use std::os::unix::fs::symlink;
    let b = Bundle::new();
    let root = b.path().join("rootfs");
    std::fs::create_dir_all(root.join("opt/app")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("opt/app/app.wasm"), b"\0asm\x01\0\0\0").unwrap();
    symlink("/opt/app/app.wasm", root.join("usr/bin/app")).unwrap();
    symlink("../../opt/app", root.join("usr/bin/dir")).unwrap();
    symlink("/usr/bin", root.join("bin")).unwrap();
    for entrypoint in ["/usr/bin/app", "/bin/app", "/bin/dir/app.wasm"] {
        let p = b
            .policy(json!({"process": {"args": [entrypoint]}}))
            .unwrap();
        assert_eq!(
            p.read_entrypoint(64).unwrap(),
            b"\0asm\x01\0\0\0",
            "{entrypoint}"
        );
    }
    // Climbing out of the root ends at the root, as `/..` does.
    symlink("../../../../../../opt/app/app.wasm", root.join("climb")).unwrap();
    let p = b.policy(json!({"process": {"args": ["/climb"]}})).unwrap();
    assert_eq!(p.read_entrypoint(64).unwrap(), b"\0asm\x01\0\0\0");
    // A loop is an error naming the entrypoint.
    symlink("/loop", root.join("loop")).unwrap();
    let p = b.policy(json!({"process": {"args": ["/loop"]}})).unwrap();
    let e = p.read_entrypoint(64).unwrap_err().to_string();
    assert!(e.contains("/loop") && e.contains("symbolic links"), "{e}");
}

/// `read_entrypoint` in a thread of its own: a hang (an open that blocks for good) fails
/// the test instead of stopping it.
fn read_without_hanging(p: RunPolicy) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(p.read_entrypoint(u64::MAX));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("read_entrypoint blocked on the tenant's file")
}

#[test]
fn a_named_pipe_as_the_entrypoint_is_refused_without_blocking() {
    let b = Bundle::new();
    let fifo = b.path().join("rootfs/fifo.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Also behind a link, which resolves inside the root to the pipe.
    symlink("/fifo.wasm", b.path().join("rootfs/link.wasm")).unwrap();
    for program in ["/fifo.wasm", "/link.wasm"] {
        let p = b.policy(json!({"process": {"args": [program]}})).unwrap();
        let err = read_without_hanging(p).unwrap_err().to_string();
        assert!(
            err.contains(program) && err.contains("not a regular file (a named pipe)"),
            "{err}"
        );
    }
}

#[test]
fn a_device_or_a_directory_as_the_entrypoint_is_refused_unopened() {
    let b = Bundle::new();
    std::fs::create_dir(b.path().join("rootfs/dir.wasm")).unwrap();
    let p = b
        .policy(json!({"process": {"args": ["/dir.wasm"]}}))
        .unwrap();
    let err = read_without_hanging(p).unwrap_err().to_string();
    assert!(err.contains("not a regular file (a directory)"), "{err}");
    // A character device (1:5, /dev/zero's numbers) needs root to make.
    let dev = b.path().join("rootfs/dev.wasm");
    let made = std::process::Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "5"])
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED the device case: mknod needs root");
        return;
    }
    let p = b
        .policy(json!({"process": {"args": ["/dev.wasm"]}}))
        .unwrap();
    let err = read_without_hanging(p).unwrap_err().to_string();
    assert!(
        err.contains("/dev.wasm") && err.contains("not a regular file (a character device)"),
        "{err}"
    );
}

#[test]
fn entrypoint_kind_tells_native_programs_from_wasm_inside_the_root() {
    let b = Bundle::new();
    let bin = b.path().join("rootfs/bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("busybox"), b"\x7fELF\x02\x01\x01").unwrap();
    symlink("/bin/busybox", bin.join("sh")).unwrap();
    std::fs::write(bin.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(bin.join("notes"), b"hello").unwrap();
    let kind = |args: Value| {
        b.policy(json!({"process": {"args": args, "env": ["PATH=/bin"]}}))
            .unwrap()
            .entrypoint_kind()
    };
    assert_eq!(kind(json!(["hello.wasm"])).unwrap(), EntrypointKind::Wasm);
    // An absolute link resolves from the container's root, as it would inside it.
    assert_eq!(
        kind(json!(["sh", "-c", "true"])).unwrap(),
        EntrypointKind::Elf
    );
    assert_eq!(
        kind(json!(["/bin/run.sh"])).unwrap(),
        EntrypointKind::Script
    );
    assert_eq!(kind(json!(["notes"])).unwrap(), EntrypointKind::Unknown);
    assert!(EntrypointKind::Elf.is_native() && EntrypointKind::Script.is_native());
    assert!(!EntrypointKind::Wasm.is_native() && !EntrypointKind::Unknown.is_native());
    // A link out of the root resolves inside it, and names what is missing.
    symlink("../../../../usr/bin/env", bin.join("escape")).unwrap();
    let err = kind(json!(["/bin/escape"])).unwrap_err().to_string();
    assert!(err.contains("/bin/escape"), "{err}");
}
