//! Faults during a pull: a registry connection cut in the middle of a blob, and the disk
//! filling up while downloading or unpacking. After each, the store holds nothing corrupt
//! ([`Store::verify`]) and the next pull finishes the job.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use oci_image::{BuildFormat, Error, ImageRef, Store};

use crate::registry::Registry;
use crate::{anonymous, build, module, rt, store};

/// A TCP relay to a registry that, while `cuts` lasts, drops the connection once
/// `cut_after` bytes of the answer to a request naming `target` have gone to the client.
struct CuttingProxy {
    port: u16,
    cuts: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: String, target: String, cut_after: usize, cuts: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicUsize::new(cuts));
        let left = cuts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = TcpStream::connect(&upstream).unwrap();
                // Bytes of the armed answer sent so far; `None` when not armed.
                let armed = Arc::new(Mutex::new(None::<usize>));
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (target, left, arm) = (target.clone(), left.clone(), armed.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 << 10];
                    while let Ok(n @ 1..) = c_in.read(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if text.starts_with("GET ") && text.contains(&target) {
                            let take = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                n.checked_sub(1)
                            });
                            *arm.lock().unwrap() = take.is_ok().then_some(0);
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 << 10];
                    while let Ok(n @ 1..) = s_in.read(&mut buf) {
                        let mut armed = armed.lock().unwrap();
                        if let Some(sent) = armed.as_mut() {
                            let room = cut_after.saturating_sub(*sent).min(n);
                            let _ = c_out.write_all(&buf[..room]);
                            *sent += room;
                            if *sent >= cut_after {
                                let _ = c_out.shutdown(Shutdown::Both);
                                let _ = s_in.shutdown(Shutdown::Both);
                                return;
                            }
                            continue;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Write);
                });
            }
        });
        Self { port, cuts }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn assert_consistent(store: &Store) {
    assert_eq!(
        store.verify().unwrap(),
        Vec::<String>::new(),
        "the store is consistent"
    );
}

/// Pushes `wasm` as `name:v1` (artifact: the layer is the wasm, uncompressed).
fn push(registry: &str, name: &str, format: BuildFormat, wasm: &[u8]) -> ImageRef {
    let reference = ImageRef::parse(&format!("{registry}/{name}:v1")).unwrap();
    let (_d, local) = store();
    build(&local, &reference, format, wasm);
    rt().block_on(oci_image::push(
        &local,
        &reference,
        &reference,
        &anonymous(),
    ))
    .unwrap();
    reference
}

#[test]
fn a_connection_cut_mid_blob_fails_cleanly_and_the_next_pull_resumes() {
    let registry = Registry::start();
    let wasm = module(2 << 20);
    push(&registry.host(), "cut", BuildFormat::Artifact, &wasm);
    let layer = wasm_oci::digest::sha256(&wasm);
    // Cut 1 MiB into the layer's answer (headers included), once.
    let proxy = CuttingProxy::start(registry.host(), layer.clone(), 1 << 20, 1);
    let reference = ImageRef::parse(&format!("{}/cut:v1", proxy.host())).unwrap();
    let (_d, fresh) = store();
    let rt = rt();

    let err = rt
        .block_on(oci_image::pull(&fresh, &reference, &anonymous()))
        .unwrap_err();
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 0, "the cut happened");
    assert!(matches!(err, Error::Registry { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{reference}: downloading {layer}: "))
            && text.ends_with("(the pull resumes from here)"),
        "{text}"
    );
    // Nothing half-written is a blob or a name; the part that arrived waits in ingest/.
    assert_consistent(&fresh);
    assert!(!fresh.has_blob(&layer));
    assert_eq!(fresh.resolve(&reference).unwrap(), None);
    let hex = layer.strip_prefix("sha256:").unwrap();
    let partial = std::fs::metadata(fresh.dir().join("ingest").join(hex))
        .unwrap()
        .len();
    assert!(
        partial > 0 && partial < wasm.len() as u64,
        "{partial} bytes kept"
    );

    let image = rt
        .block_on(oci_image::pull(&fresh, &reference, &anonymous()))
        .unwrap();
    assert_eq!(std::fs::read(image.rootfs.join("app.wasm")).unwrap(), wasm);
    assert_consistent(&fresh);
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A tmpfs of `size` mounted on a temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs on {}", dir.path().display());
        Self(dir)
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "resizing the tmpfs");
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn is_enospc(err: &Error) -> bool {
    let text = err.to_string();
    text.contains("No space left on device")
}

#[test]
fn a_full_disk_during_the_download_is_a_clear_error_and_nothing_corrupt() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let registry = Registry::start();
    let wasm = module(3 << 20);
    let reference = push(&registry.host(), "full", BuildFormat::Artifact, &wasm);
    let disk = Tmpfs::mount("1m");
    let store = Store::open(disk.path().join("images")).unwrap();
    let rt = rt();
    let err = rt
        .block_on(oci_image::pull(&store, &reference, &anonymous()))
        .unwrap_err();
    assert!(is_enospc(&err), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}/", store.dir().display())),
        "names the file: {err}"
    );
    assert_consistent(&store);
    assert_eq!(store.resolve(&reference).unwrap(), None);

    // Room again: the same pull completes from what arrived.
    disk.resize("16m");
    let image = rt
        .block_on(oci_image::pull(&store, &reference, &anonymous()))
        .unwrap();
    assert_eq!(std::fs::read(image.rootfs.join("app.wasm")).unwrap(), wasm);
    assert_consistent(&store);
}

#[test]
fn a_full_disk_during_the_unpack_leaves_no_partial_root_filesystem() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let registry = Registry::start();
    // A compat image: its gzip layer is small, the file it unpacks to is 3 MiB.
    let wasm = module(3 << 20);
    let reference = push(&registry.host(), "unpack", BuildFormat::Compat, &wasm);
    let disk = Tmpfs::mount("2m");
    let store = Store::open(disk.path().join("images")).unwrap();
    let rt = rt();
    let err = rt
        .block_on(oci_image::pull(&store, &reference, &anonymous()))
        .unwrap_err();
    assert!(is_enospc(&err), "{err}");
    assert_consistent(&store);
    let rootfs = std::fs::read_dir(store.dir().join("rootfs"))
        .unwrap()
        .count();
    assert_eq!(rootfs, 0, "no root filesystem, finished or partial");
    assert_eq!(
        store.resolve(&reference).unwrap(),
        None,
        "a pull that failed at unpack tags nothing"
    );

    // The verified blobs stay; with room, the same pull unpacks and tags it.
    disk.resize("16m");
    let image = rt
        .block_on(oci_image::pull(&store, &reference, &anonymous()))
        .unwrap();
    assert!(store.resolve(&reference).unwrap().is_some());
    assert_eq!(std::fs::read(image.rootfs.join("app.wasm")).unwrap(), wasm);
    assert_consistent(&store);
}
