//! The layers applied to a thread of the test process (seccomp, Landlock and
//! `no_new_privs` belong to threads), and the calls each must refuse or allow.

use super::*;
use crate::sys::probe;

/// Runs `f` on a thread of its own with `hardening` applied to that thread alone (seccomp,
/// Landlock and `no_new_privs` belong to threads), and returns what it returned.
fn confined<T: Send + 'static>(
    hardening: Hardening,
    f: impl FnOnce(&Status) -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        assert_eq!(probe::no_new_privs(), 0, "PR_SET_NO_NEW_PRIVS");
        let status = hardening.apply().expect("applying the hardening");
        f(&status)
    })
    .join()
    .expect("the confined thread")
}

fn spec(json: &str) -> Spec {
    serde_json::from_str(json).unwrap()
}

#[test]
fn baseline_refuses_what_a_guest_never_needs() {
    let results = confined(Hardening::default(), |status| {
        assert_eq!(status.filters, 2);
        vec![
            (
                "unix socket",
                probe::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
            ),
            (
                "raw socket",
                probe::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
            ),
            (
                "netlink",
                probe::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0),
            ),
            ("kill 1", probe::kill0(1)),
            ("execve", probe::execve_nonexistent()),
            ("unshare user", probe::unshare(libc::CLONE_NEWUSER)),
            ("mount", probe::mount_nonexistent()),
            ("ptrace", probe::ptrace_attach(1)),
            ("setuid", probe::setuid_root()),
            ("init_module", probe::init_module_empty()),
            ("fork", probe::fork()),
            ("clone3", probe::clone3_empty()),
        ]
    });
    for (what, errno) in results {
        let want = if what == "clone3" {
            libc::ENOSYS
        } else {
            libc::EPERM
        };
        assert_eq!(errno, want, "{what}");
    }
}

#[test]
fn baseline_allows_what_the_runtime_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut hardening = Hardening::default();
    hardening.allow(dir.path(), true).unwrap();
    let path = dir.path().join("f");
    confined(hardening, move |_| {
        // Threads (clone3 refused, glibc falls back to clone), sockets, files, a runtime.
        let t = std::thread::spawn(|| 7).join().unwrap();
        assert_eq!(t, 7);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::net::TcpStream::connect(addr).unwrap();
        std::fs::write(&path, b"ok").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ok");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tokio::task::spawn_blocking(|| 1).await.unwrap()
        });
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(probe::kill0(me), 0);
    });
}

#[test]
fn landlock_bounds_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    let rw = dir.path().join("rw");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("f"), b"read me").unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"secret").unwrap();
    let mut hardening = Hardening::default();
    hardening.allow(&ro, false).unwrap();
    hardening.allow(&rw, true).unwrap();
    let (landlock, read, write_ro, write_rw, read_outside) = confined(hardening, move |status| {
        (
            status.landlock,
            std::fs::read(ro.join("f")).map_err(|e| e.raw_os_error()),
            std::fs::write(ro.join("g"), b"x").map_err(|e| e.raw_os_error()),
            std::fs::write(rw.join("g"), b"x").map_err(|e| e.raw_os_error()),
            std::fs::read(&outside).map_err(|e| e.raw_os_error()),
        )
    });
    assert_eq!(read.unwrap(), b"read me");
    assert!(write_rw.is_ok(), "{write_rw:?}");
    if landlock == "not enforced" {
        eprintln!("this kernel has no Landlock: only the seccomp layer was checked");
        return;
    }
    assert_eq!(write_ro, Err(Some(libc::EACCES)));
    assert_eq!(read_outside, Err(Some(libc::EACCES)));
}

#[test]
fn the_specs_profile_narrows_the_baseline() {
    // Docker's shape: everything allowed but mkdirat, which fails with EXDEV; personality
    // allowed only for two values (two conditions on one argument: either).
    let spec = spec(
        r#"{"ociVersion":"1.0.2","linux":{"seccomp":{
            "defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[
              {"names":["mkdirat","no_such_call"],"action":"SCMP_ACT_ERRNO","errnoRet":18},
              {"names":["personality"],"action":"SCMP_ACT_ERRNO",
               "args":[{"index":0,"value":0,"op":"SCMP_CMP_NE"},
                       {"index":0,"value":8,"op":"SCMP_CMP_NE"}]}
            ]}}}"#,
    );
    let mut h = Hardening::from_spec(&spec).unwrap();
    assert_eq!(h.unknown_syscalls(), ["no_such_call"]);
    let dir = tempfile::tempdir().unwrap();
    h.allow(dir.path(), true).unwrap();
    let target = dir.path().join("d");
    let (mkdir, filters) = confined(h, move |status| {
        // mkdirat, as cap-std makes directories (glibc's mkdir calls the legacy mkdir,
        // which the baseline refuses).
        (probe::mkdirat(&target), status.filters)
    });
    assert_eq!(mkdir, libc::EXDEV);
    // The baseline's two, and one for the ERRNO(18) action; the default is Allow.
    assert!(filters >= 3, "{filters}");

    // An allow list: what it does not name fails with the default's errno. (The thread
    // must still be able to end.)
    let spec_allow = spec_with(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
            "syscalls":[{"names":["getpid","exit","exit_group","futex","madvise","munmap",
                          "rt_sigprocmask","set_robust_list","rseq"],
                "action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let h = Hardening::from_spec(&spec_allow).unwrap();
    let (getpid, getppid) = confined(h, |_| probe::getpid_getppid());
    assert_eq!((getpid, getppid), (0, libc::ENOSYS));
}

fn spec_with(seccomp: &str) -> Spec {
    spec(&format!(
        r#"{{"ociVersion":"1.0.2","linux":{{"seccomp":{seccomp}}}}}"#
    ))
}

#[test]
fn a_profile_that_cannot_be_applied_is_named() {
    let e = Hardening::from_spec(&spec_with(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO"},
                        {"names":["getppid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    ))
    .unwrap_err();
    assert!(e.to_string().contains("linux.seccomp.syscalls[1]"), "{e}");
    let e = Hardening::from_spec(&spec_with(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO",
                         "args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
    ))
    .unwrap_err();
    assert!(e.to_string().contains("syscalls[0].args[0].index"), "{e}");
}

#[test]
fn the_documented_lists_are_the_code() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md"),
    )
    .unwrap();
    let section = |marker: &str| -> Vec<String> {
        let start = doc
            .find(&format!("<!-- {marker} -->"))
            .unwrap_or_else(|| panic!("docs/security.md has no <!-- {marker} --> list"));
        let end = start + doc[start..].find("<!-- end -->").expect("<!-- end -->");
        doc[start..end]
            .lines()
            .skip(1)
            .filter_map(|l| l.strip_prefix("- `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_owned)
            .collect()
    };
    let mut documented = section("seccomp-baseline");
    documented.sort();
    let mut code: Vec<String> = BASELINE
        .iter()
        .chain(BASELINE_LEGACY)
        .map(|s| (*s).to_owned())
        .collect();
    code.sort();
    assert_eq!(documented, code, "docs/security.md's baseline list");
    let conditional = section("seccomp-conditional");
    let code: Vec<&str> = BASELINE_CONDITIONAL.iter().map(|(n, _)| *n).collect();
    assert_eq!(conditional, code, "docs/security.md's conditional list");
    for name in BASELINE
        .iter()
        .chain(BASELINE_LEGACY)
        .chain(BASELINE_CONDITIONAL.iter().map(|(n, _)| n))
    {
        assert!(number(name).is_some(), "{name} is no system call here");
    }
}
