//! The bodies of the fuzz targets, each with the property it checks beyond "does not
//! panic". `fuzz_targets/*.rs` hand libFuzzer's input to them.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use oci_image::{ImageRef, Store};
use wasm_oci::media::LayerKind;

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
        // The HTTP limits as a parent hands them to its child: what reads back is what
        // was written.
        if let Ok(limits) = wasm_engine::HttpLimits::parse(text) {
            assert_eq!(
                wasm_engine::HttpLimits::parse(&limits.to_text()),
                Ok(limits),
                "{text:?}"
            );
        }
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
    let options = cri::PlanOptions::new("/fuzz/logs", "/fuzz/pods", "fuzz-uid", "fuzz-node");
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

/// A 512-byte ustar header of type `kind` for `name`, claiming `size` bytes of data.
fn tar_header(kind: u8, name: &[u8], size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let name = &name[..name.len().min(99)];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    let size = format!("{:011o}\0", size.min(0o77777777777));
    h[124..136].copy_from_slice(size.as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// What [`tar_headers`] reads past its input: zeros, counted, up to a bound that only a
/// broken budget reaches.
struct Counted<'a> {
    data: &'a [u8],
    read: u64,
}

impl std::io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        const CAP: u64 = 256 << 20;
        let at = self.read as usize;
        let n = buf.len().min((CAP - self.read.min(CAP)) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.data.get(at + i).copied().unwrap_or(0);
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// Crafted tar headers — GNU long names and links, pax records, devices, sparse files,
/// each claiming a size its data need not have — built from records of the input
/// (type, size, name, data), followed by as many zeros as anything asks for. Whatever
/// the headers claim, the extractor reads no more than its budget allows (4 × the limit
/// plus a little: headers, padding and end blocks, each entry charged at least 512
/// bytes), and the tree it leaves keeps the `layer` target's properties.
pub fn tar_headers(data: &[u8]) {
    const KINDS: &[u8] = b"0125346SLKxgV";
    let mut archive = Vec::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let (record, tail) = rest.split_at(4);
        let kind = KINDS[record[0] as usize % KINDS.len()];
        // Sizes from a few bytes up to tens of gigabytes.
        let size = u64::from(record[1]) << (u32::from(record[2]) % 36);
        let name_len = (record[3] % 32) as usize;
        let (name, tail) = tail.split_at(name_len.min(tail.len()));
        archive.extend_from_slice(&tar_header(kind, name, size));
        // Some data, rarely as much as claimed.
        let present = (size as usize).min(tail.len()).min(4096);
        archive.extend_from_slice(&tail[..present]);
        archive.resize(archive.len().next_multiple_of(512), 0);
        rest = &tail[present..];
    }
    let base = tempfile::tempdir().unwrap();
    let root_path = base.path().join("root");
    std::fs::create_dir(&root_path).unwrap();
    let root =
        cap_std::fs::Dir::open_ambient_dir(&root_path, cap_std::ambient_authority()).unwrap();
    let limit = 1 << 20;
    let mut budget = limit;
    let mut reader = Counted {
        data: &archive,
        read: 0,
    };
    let _ = oci_image::unpack_layer(
        &root,
        &mut reader,
        LayerKind::Tar,
        "sha256:fuzz",
        &mut budget,
        limit,
    );
    assert!(
        reader.read <= 4 * limit + (64 << 10),
        "read {} bytes under a {limit}-byte budget",
        reader.read
    );
    check_tree(&root_path, &root_path);
}

/// A program file of the input's bytes (or, first byte odd, a sparse file of a size the
/// input picks, up to a terabyte) read as a container's entrypoint under a size limit the
/// input picks: it is refused past the limit and otherwise read exactly, never more.
pub fn entrypoint(data: &[u8]) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let Some((&limit_byte, content)) = rest.split_first() else {
        return;
    };
    let bundle = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let program = rootfs.join("prog.wasm");
    let length = if shape % 2 == 1 {
        let length = u64::from(shape) << (u32::from(limit_byte) % 33);
        std::fs::File::create(&program)
            .unwrap()
            .set_len(length)
            .unwrap();
        length
    } else {
        std::fs::write(&program, content).unwrap();
        content.len() as u64
    };
    let max = u64::from(limit_byte) * 64;
    let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/prog.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"}
    }))
    .unwrap();
    let policy = sandbox::RunPolicy::from_spec(&spec, bundle.path()).unwrap();
    match policy.read_entrypoint(max) {
        Ok(bytes) => {
            assert!(
                length <= max,
                "a {length}-byte file read under a {max}-byte limit"
            );
            assert_eq!(bytes.len() as u64, length);
            if shape % 2 == 0 {
                assert_eq!(bytes, content);
            }
        }
        Err(e) => assert!(
            length > max,
            "a {length}-byte file refused under a {max}-byte limit: {e}"
        ),
    }
}
