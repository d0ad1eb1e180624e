//! The bodies of the fuzz targets, each with the property it checks beyond "does not
//! panic". `fuzz_targets/*.rs` hand libFuzzer's input to them.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use oci_image::media::LayerKind;
use oci_image::{ImageRef, Store};

/// An image reference parses, or is refused; one that parses prints as text that parses
/// to the same print.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = ImageRef::parse(text) {
        let printed = r.to_string();
        let again = ImageRef::parse(&printed).unwrap_or_else(|e| {
            panic!("{text:?} parsed, printed as {printed:?}, which does not parse: {e}")
        });
        assert_eq!(
            again.to_string(),
            printed,
            "{text:?}: printing is not stable"
        );
    }
}

/// A manifest or index, then (after a NUL byte) an image config, read as a pull reads
/// them.
pub fn documents(data: &[u8]) {
    static STORE: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
    let (_, store) = STORE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("images")).unwrap();
        (dir, store)
    });
    let (document, config) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    oci_image::fuzzing::documents(store, document, config);
}

/// A layer (first byte: 0 tar, 1 gzip, 2 zstd) unpacked into an empty root: it may fail,
/// but nothing lands outside the root, no link leads out of it, and no setuid, setgid,
/// device or FIFO is made.
pub fn layer(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let kind = match kind % 3 {
        0 => LayerKind::Tar,
        1 => LayerKind::TarGzip,
        _ => LayerKind::TarZstd,
    };
    let base = tempfile::tempdir().unwrap();
    let root_path = base.path().join("root");
    std::fs::create_dir(&root_path).unwrap();
    let root =
        cap_std::fs::Dir::open_ambient_dir(&root_path, cap_std::ambient_authority()).unwrap();
    let limit = 8 << 20;
    let mut budget = limit;
    let _ = oci_image::unpack_layer(&root, bytes, kind, "sha256:fuzz", &mut budget, limit);
    let outside: Vec<_> = std::fs::read_dir(base.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "root")
        .collect();
    assert!(outside.is_empty(), "written outside the root: {outside:?}");
    check_tree(&root_path, &root_path);
}

fn check_tree(root: &Path, dir: &Path) {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let t = meta.file_type();
        assert!(
            !(t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket()),
            "{}: a special file was made",
            path.display()
        );
        if t.is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            assert!(
                target.is_relative(),
                "{}: absolute link target {}",
                path.display(),
                target.display()
            );
            let resolved = lexical(&path.parent().unwrap().join(&target));
            assert!(
                resolved.starts_with(root),
                "{}: link to {} leads out of the root",
                path.display(),
                target.display()
            );
            continue;
        }
        assert_eq!(
            meta.permissions().mode() & 0o7000,
            0,
            "{}: setuid, setgid or sticky bit kept",
            path.display()
        );
        if t.is_dir() {
            check_tree(root, &path);
        }
    }
}

/// `..` and `.` taken away without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// An OCI runtime spec (`config.json`) turned into a policy, an isolation selection, a
/// network plan and a confinement (not applied), and the same bytes as handler options:
/// every preopen is the bundle's root filesystem (or inside it) or a mount's source.
pub fn spec(data: &[u8]) {
    static BUNDLE: OnceLock<tempfile::TempDir> = OnceLock::new();
    let bundle = BUNDLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/data")).unwrap();
        std::fs::write(dir.path().join("rootfs/app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        dir
    });
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sandbox::HandlerOptions::from_toml(text, "fuzz");
    }
    let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) else {
        return;
    };
    let handler = sandbox::HandlerOptions::default();
    let _ = sandbox::Selection::decide(&spec, &handler);
    let _ = sandbox::NetworkPlan::decide(&spec, &handler, &[8080]);
    let _ = sandbox::Confinement::from_spec(&spec);
    let sources: Vec<PathBuf> = spec
        .mounts()
        .iter()
        .flatten()
        .filter_map(|m| m.source().clone())
        .collect();
    for policy in [
        sandbox::RunPolicy::from_spec(&spec, bundle.path()),
        sandbox::RunPolicy::from_spec_with_program(&spec, bundle.path()),
    ]
    .into_iter()
    .flatten()
    {
        let rootfs = bundle.path().join("rootfs");
        for p in policy.preopens() {
            let host = lexical(&p.host);
            assert!(
                host.starts_with(&rootfs)
                    || spec
                        .root()
                        .as_ref()
                        .is_some_and(|r| host.starts_with(lexical(&bundle.path().join(r.path()))))
                    || sources.iter().any(|s| host.starts_with(lexical(s))),
                "preopen {} (guest {}) is neither the root filesystem nor a mount",
                p.host.display(),
                p.guest
            );
        }
    }
}

/// Kubernetes manifests planned as `wasmpod pod run` plans them: whatever the pod's
/// names, uid and volumes say, the pod's directories stay under the node's pods and log
/// directories, and volume files under their volume.
pub fn pod(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut manifests = cri::Manifests::default();
    if manifests.add("fuzz", text).is_err() {
        return;
    }
    let options = cri::PlanOptions {
        log_dir: PathBuf::from("/fuzz/logs"),
        pods_dir: PathBuf::from("/fuzz/pods"),
        uid: "fuzz-uid".into(),
    };
    for pod in &manifests.pods {
        let Ok(plan) = cri::PodPlan::new(pod, &manifests, &options) else {
            continue;
        };
        let inside = |path: &Path, base: &Path, what: &str| {
            assert!(
                path.starts_with(base)
                    && path != base
                    && path
                        .components()
                        .all(|c| matches!(c, Component::Normal(_) | Component::RootDir)),
                "{what} {} is not inside {}",
                path.display(),
                base.display()
            );
        };
        inside(
            &plan.state_dir,
            &options.pods_dir,
            "the pod's state directory",
        );
        inside(
            Path::new(&plan.sandbox.log_directory),
            &options.log_dir,
            "the pod's log directory",
        );
        for c in &plan.containers {
            let log = Path::new(&plan.sandbox.log_directory).join(&c.config.log_path);
            inside(
                &log,
                Path::new(&plan.sandbox.log_directory),
                "a container's log",
            );
        }
        for v in &plan.volumes {
            match v {
                cri::VolumeSetup::EmptyDir { path } => inside(path, &plan.state_dir, "an emptyDir"),
                cri::VolumeSetup::Files { path, files } => {
                    inside(path, &plan.state_dir, "a volume");
                    for name in files.keys() {
                        inside(&path.join(name), path, "a volume's file");
                    }
                }
                cri::VolumeSetup::HostPath { .. } => {}
            }
        }
    }
}
