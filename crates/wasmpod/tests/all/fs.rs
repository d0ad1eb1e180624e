//! Preopened directories: listing, reading, writing, read-only mounts and confinement.

use super::*;
use std::os::unix::fs::symlink;

/// A host directory with a file, to mount into the guest.
fn host_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeting.txt"), "hello from the host\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    dir
}

fn volume(dir: &Path, guest: &str, mode: &str) -> String {
    format!("{}:{guest}:{mode}", dir.display())
}

#[test]
fn list_and_read_a_mounted_directory() {
    let w = Wasmpod::new();
    let data = host_dir();
    let v = volume(data.path(), "/data", "ro");
    let out = w.run(&["-v", &v, probe(), "ls", "/data"]);
    assert_code(&out, 0);
    let mut names: Vec<_> = stdout(&out).lines().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["greeting.txt", "sub"]);
    let out = w.run(&["-v", &v, probe(), "cat", "/data/greeting.txt"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "hello from the host\n");
}

#[test]
fn write_to_a_read_write_mount() {
    let w = Wasmpod::new();
    let data = host_dir();
    let v = volume(data.path(), "/data", "rw");
    let out = w.run(&[
        "-v",
        &v,
        probe(),
        "write",
        "/data/sub/out.txt",
        "written by wasm",
    ]);
    assert_code(&out, 0);
    assert_eq!(
        std::fs::read_to_string(data.path().join("sub/out.txt")).unwrap(),
        "written by wasm"
    );
}

#[test]
fn read_only_mount_refuses_writes() {
    let w = Wasmpod::new();
    let data = host_dir();
    let v = volume(data.path(), "/data", "ro");
    for target in ["/data/new.txt", "/data/greeting.txt"] {
        let out = w.run(&["-v", &v, probe(), "write", target, "overwritten"]);
        assert_code(&out, 1);
        assert!(
            stdout(&out).starts_with(&format!("open {target}: ")),
            "{}",
            stdout(&out)
        );
    }
    assert!(!data.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(data.path().join("greeting.txt")).unwrap(),
        "hello from the host\n"
    );
}

#[test]
fn a_bare_file_sees_only_the_directories_it_is_given() {
    // As under `wasmtime run`: no preopen unless asked, so `/` is not there at all.
    let w = Wasmpod::new();
    let out = w.run(&[probe(), "ls", "/"]);
    assert_code(&out, 1);
    assert!(stdout(&out).starts_with("opendir /: "), "{}", stdout(&out));
    // `-v DIR:/` makes DIR the guest's root (`wasmtime run --dir DIR::/`).
    let site = host_dir();
    let out = w.run(&["-v", &volume(site.path(), "/", "ro"), probe(), "ls", "/"]);
    assert_code(&out, 0);
    let listing = stdout(&out);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["greeting.txt", "sub"]);
}

#[test]
fn a_host_directory_as_the_root_honours_ro() {
    let w = Wasmpod::new();
    let site = host_dir();
    let out = w.run(&[
        "-v",
        &volume(site.path(), "/", "ro"),
        probe(),
        "write",
        "/scratch.txt",
        "x",
    ]);
    assert_code(&out, 1);
    assert!(!site.path().join("scratch.txt").exists());
    let out = w.run(&[
        "-v",
        &volume(site.path(), "/", "rw"),
        probe(),
        "write",
        "/scratch.txt",
        "x",
    ]);
    assert_code(&out, 0);
    assert_eq!(
        std::fs::read_to_string(site.path().join("scratch.txt")).unwrap(),
        "x"
    );
    // The program file itself is not in the guest's view: it cannot change it.
    let original = std::fs::read(probe()).unwrap();
    assert!(original.starts_with(b"\0asm"));
}

#[test]
fn dot_dot_and_absolute_paths_stay_inside() {
    let w = Wasmpod::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "host secret").unwrap();
    let data = host_dir();
    let v = volume(data.path(), "/data", "rw");
    let secret = outside.path().join("secret.txt");
    let up = "../".repeat(16);
    for path in [
        format!("/..{}", secret.display()),
        format!("/data/{up}{}", secret.display()),
        format!("{up}{}", secret.display()),
        secret.display().to_string(),
        "/../../etc/passwd".to_owned(),
        "/data/../../../etc/passwd".to_owned(),
    ] {
        let out = w.run(&["-v", &v, probe(), "cat", &path]);
        assert_code(&out, 1);
        assert!(!stdout(&out).contains("host secret") && !stdout(&out).contains("root:"));
    }
}

#[test]
fn symlinks_cannot_lead_out_of_a_mount() {
    let w = Wasmpod::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "host secret").unwrap();
    let data = host_dir();
    let depth = data.path().components().count();
    symlink(outside.path(), data.path().join("abs")).unwrap();
    symlink(
        format!("{}{}", "../".repeat(depth), outside.path().display()),
        data.path().join("rel"),
    )
    .unwrap();
    symlink("/etc/passwd", data.path().join("passwd")).unwrap();
    symlink("greeting.txt", data.path().join("inside")).unwrap();
    let v = volume(data.path(), "/data", "rw");
    for path in [
        "/data/abs/secret.txt",
        "/data/rel/secret.txt",
        "/data/passwd",
    ] {
        let out = w.run(&["-v", &v, probe(), "cat", path]);
        assert_code(&out, 1);
        assert!(!stdout(&out).contains("host secret") && !stdout(&out).contains("root:"));
    }
    // Writing through an escaping symlink is refused too, and creates nothing outside.
    let out = w.run(&["-v", &v, probe(), "write", "/data/abs/planted.txt", "x"]);
    assert_code(&out, 1);
    assert!(!outside.path().join("planted.txt").exists());
    // A symlink that stays inside works.
    let out = w.run(&["-v", &v, probe(), "cat", "/data/inside"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "hello from the host\n");
}

#[test]
fn the_entrypoint_is_not_followed_out_of_the_root_either() {
    let w = Wasmpod::new();
    let data = host_dir();
    let v = volume(data.path(), "/data", "ro");
    let out = w.run(&["-v", &v, "-w", "/data", probe(), "ls", "/data/sub"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("process.cwd"),
        "cwd limitation is reported: {}",
        stderr(&out)
    );
}
