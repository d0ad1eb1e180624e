//! Crafted layers against the extractor: each escape or abuse has its own archive.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::*;

/// Builds tar archives byte by byte, so entries the `tar` crate would refuse to write
/// (`..`, absolute paths, odd links) can be crafted.
struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }
}

impl Layer {
    fn entry(
        mut self,
        kind: tar::EntryType,
        name: &str,
        link: &str,
        mode: u32,
        data: &[u8],
    ) -> Self {
        let mut header = tar::Header::new_ustar();
        {
            let bytes = header.as_mut_bytes();
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            bytes[157..157 + link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }
    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(tar::EntryType::Regular, name, "", 0o644, data)
    }
    fn dir(self, name: &str) -> Self {
        self.entry(tar::EntryType::Directory, name, "", 0o755, b"")
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(tar::EntryType::Symlink, name, target, 0o777, b"")
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(tar::EntryType::Link, name, target, 0o644, b"")
    }
    fn bytes(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

struct Root {
    dir: tempfile::TempDir,
    cap: Dir,
}

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cap = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        Self { dir, cap }
    }
    fn unpack(&self, layer: &[u8], kind: LayerKind) -> Result<ExtractReport> {
        let mut budget = crate::DEFAULT_MAX_UNPACKED;
        unpack_layer(
            &self.cap,
            layer,
            kind,
            "sha256:test",
            &mut budget,
            crate::DEFAULT_MAX_UNPACKED,
        )
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

#[test]
fn files_directories_and_modes() {
    let root = Root::new();
    let layer = Layer::default()
        .dir("bin/")
        .entry(
            tar::EntryType::Regular,
            "bin/app.wasm",
            "",
            0o4755,
            b"\0asm",
        )
        .entry(tar::EntryType::Regular, "./etc/conf", "", 0o2640, b"x=1")
        .file("/abs/file", b"stays inside")
        .bytes();
    root.unpack(&layer, LayerKind::Tar).unwrap();
    assert_eq!(fs::read(root.path("bin/app.wasm")).unwrap(), b"\0asm");
    let mode = |p: &str| fs::metadata(root.path(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/app.wasm"), 0o755, "setuid stripped");
    assert_eq!(mode("etc/conf"), 0o640, "setgid stripped");
    assert_eq!(fs::read(root.path("abs/file")).unwrap(), b"stays inside");
}

#[test]
fn dot_dot_is_refused() {
    let root = Root::new();
    let layer = Layer::default().file("a/../../escape", b"x").bytes();
    let err = root.unpack(&layer, LayerKind::Tar).unwrap_err().to_string();
    assert!(
        err.contains("a/../../escape") && err.contains(".."),
        "{err}"
    );
    assert!(!root.dir.path().parent().unwrap().join("escape").exists());
}

#[test]
fn symlinks_cannot_lead_out() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().display().to_string();

    // A relative link climbing above the root is refused.
    let root = Root::new();
    let layer = Layer::default().symlink("a/up", "../../etc").bytes();
    let err = root.unpack(&layer, LayerKind::Tar).unwrap_err().to_string();
    assert!(err.contains("leaves the root filesystem"), "{err}");

    // An absolute link is rewritten to mean the same inside the root; writing through it
    // lands inside the root, never in the host directory it names.
    let root = Root::new();
    let layer = Layer::default()
        .symlink("evil", &target)
        .file("evil/pwned", b"x")
        .symlink("etc/passwd-link", "/etc/passwd")
        .bytes();
    let result = root.unpack(&layer, LayerKind::Tar);
    assert!(!outside.path().join("pwned").exists(), "{result:?}");
    if let Ok(report) = result {
        assert_eq!(report.rewritten_links, 2);
    }
    let link = fs::read_link(root.path("etc/passwd-link")).unwrap_or_default();
    assert!(
        link.as_os_str().is_empty() || link == Path::new("../etc/passwd"),
        "{}",
        link.display()
    );

    // A link planted in one layer does not let a later layer write outside either.
    let root = Root::new();
    let first = Layer::default().symlink("tmp", &target).bytes();
    root.unpack(&first, LayerKind::Tar).unwrap();
    let second = Layer::default().file("tmp/pwned", b"x").bytes();
    let _ = root.unpack(&second, LayerKind::Tar);
    assert!(!outside.path().join("pwned").exists());
    assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
}

/// A link's depth is where its directory really is: after `a -> .`, `a/a/…/a` is the root,
/// so `a/…/a/b -> ../…/outside` climbs out (it was counted from the written path, and
/// unpacked a link resolving outside the store); an absolute target is rewritten from
/// the real depth too.
#[test]
fn link_depth_follows_the_real_directory_chain() {
    let deep = ["a"; 12].join("/");
    let up = [".."; 12].join("/");
    let root = Root::new();
    let layer = Layer::default()
        .symlink("a", ".")
        .symlink(&format!("{deep}/b"), &format!("{up}/outside"))
        .bytes();
    let err = root.unpack(&layer, LayerKind::Tar).unwrap_err().to_string();
    assert!(err.contains("leaves the root filesystem"), "{err}");

    let root = Root::new();
    let layer = Layer::default()
        .symlink("a", ".")
        .symlink(&format!("{deep}/passwd"), "/etc/passwd")
        .bytes();
    root.unpack(&layer, LayerKind::Tar).unwrap();
    // Written through a/…/a, the link is in the root: its target climbs nothing.
    assert_eq!(
        fs::read_link(root.path("passwd")).unwrap(),
        Path::new("etc/passwd")
    );
}

#[test]
fn hard_links_stay_inside() {
    let root = Root::new();
    let layer = Layer::default()
        .file("data/a", b"shared")
        .hardlink("data/b", "data/a")
        .bytes();
    root.unpack(&layer, LayerKind::Tar).unwrap();
    assert_eq!(fs::read(root.path("data/b")).unwrap(), b"shared");

    let root = Root::new();
    let layer = Layer::default()
        .hardlink("passwd", "../../etc/passwd")
        .bytes();
    let err = root.unpack(&layer, LayerKind::Tar).unwrap_err().to_string();
    assert!(err.contains("leaves the root filesystem"), "{err}");

    // `/etc/passwd` means the root's own etc/passwd, which does not exist.
    let root = Root::new();
    let layer = Layer::default().hardlink("passwd", "/etc/passwd").bytes();
    let err = root.unpack(&layer, LayerKind::Tar).unwrap_err().to_string();
    assert!(err.contains("hard link to \"/etc/passwd\""), "{err}");
    assert!(!root.path("passwd").exists());
}

#[test]
fn device_nodes_are_skipped() {
    let root = Root::new();
    let layer = Layer::default()
        .entry(tar::EntryType::Char, "dev/null", "", 0o666, b"")
        .entry(tar::EntryType::Block, "dev/sda", "", 0o660, b"")
        .entry(tar::EntryType::Fifo, "fifo", "", 0o600, b"")
        .file("ok", b"1")
        .bytes();
    let report = root.unpack(&layer, LayerKind::Tar).unwrap();
    assert_eq!(report.skipped_devices, 3);
    assert!(!root.path("dev/null").exists() && !root.path("fifo").exists());
    assert!(root.path("ok").exists());
}

#[test]
fn whiteouts_and_opaque_directories() {
    let root = Root::new();
    let lower = Layer::default()
        .file("a/x", b"1")
        .file("a/y", b"2")
        .file("b/z", b"3")
        .file("c", b"4")
        .bytes();
    root.unpack(&lower, LayerKind::Tar).unwrap();
    let upper = Layer::default()
        .file("b/new", b"5")
        .file("a/.wh.x", b"")
        .file("b/.wh..wh..opq", b"")
        .file(".wh.c", b"")
        .bytes();
    root.unpack(&upper, LayerKind::Tar).unwrap();
    assert!(!root.path("a/x").exists() && root.path("a/y").exists());
    assert!(!root.path("b/z").exists() && root.path("b/new").exists());
    assert!(!root.path("c").exists());
    assert!(!root.path("a/.wh.x").exists() && !root.path("b/.wh..wh..opq").exists());
}

#[test]
fn compressed_layers_and_the_size_cap() {
    let layer = Layer::default().file("big", &vec![0; 4 << 20]).bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 64 << 10, "a bomb: {} bytes", gz.len());
    let zst = zstd::encode_all(&layer[..], 3).unwrap();

    let root = Root::new();
    root.unpack(&gz, LayerKind::TarGzip).unwrap();
    assert_eq!(fs::metadata(root.path("big")).unwrap().len(), 4 << 20);
    let root = Root::new();
    root.unpack(&zst, LayerKind::TarZstd).unwrap();
    assert_eq!(fs::metadata(root.path("big")).unwrap().len(), 4 << 20);

    let root = Root::new();
    let limit = 1 << 20;
    let mut budget = limit;
    let err = unpack_layer(
        &root.cap,
        &gz[..],
        LayerKind::TarGzip,
        "sha256:bomb",
        &mut budget,
        limit,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer sha256:bomb: unpacks to more than the limit of 1048576 bytes"
    );
    assert!(!root.path("big").exists(), "nothing written past the cap");
}

/// A layer that is `prefix` and then zeros without end, counting what the extractor read.
struct Endless {
    prefix: Vec<u8>,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let at = self.read.get() as usize;
        let n = buf.len();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.prefix.get(at + i).copied().unwrap_or(0);
        }
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// A header claiming `size` bytes of data, which the endless zeros then supply.
fn header_claiming(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_mtime(0);
    header.set_cksum();
    header.as_bytes().to_vec()
}

fn unpack_endless(prefix: Vec<u8>, limit: u64) -> (String, u64) {
    let root = Root::new();
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let layer = Endless {
        prefix,
        read: read.clone(),
    };
    let mut budget = limit;
    let err = unpack_layer(
        &root.cap,
        layer,
        LayerKind::Tar,
        "sha256:hostile",
        &mut budget,
        limit,
    )
    .unwrap_err()
    .to_string();
    (err, read.get())
}

/// Issue 17, finding 2: GNU long names and links and pax records claiming gigabytes are
/// refused from their headers, before their data is read (the `tar` crate read them whole:
/// a 3 MB layer took 15.8 GB), and the error line stays short.
#[test]
fn long_names_and_pax_records_are_bounded_before_they_are_read() {
    for kind in [
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
        tar::EntryType::XHeader,
        tar::EntryType::XGlobalHeader,
    ] {
        // Under a budget that would allow it, the metadata cap refuses it.
        let (err, read) = unpack_endless(
            header_claiming(kind, "././@LongLink", 3 << 30),
            u64::MAX / 2,
        );
        assert!(
            err.contains("a long name or pax record of 3221225472 bytes, over the limit of 65536"),
            "{kind:?}: {err}"
        );
        assert!(read < 1 << 20, "{kind:?}: read {read} bytes");
        // Under a small budget, the budget refuses it first.
        let (err, read) = unpack_endless(header_claiming(kind, "x", 3 << 30), 1 << 20);
        assert_eq!(
            err, "layer sha256:hostile: unpacks to more than the limit of 1048576 bytes",
            "{kind:?}"
        );
        assert!(read < 1 << 20, "{kind:?}: read {read} bytes");
    }
}

/// Entries the extractor skips still cost what the archive makes it read: a device node
/// claiming 16 GiB of data was skipped by reading (decompressing) all of it, uncharged.
#[test]
fn skipped_entries_are_charged_for_their_data() {
    for kind in [
        tar::EntryType::Char,
        tar::EntryType::Fifo,
        tar::EntryType::Directory,
        tar::EntryType::GNUSparse,
    ] {
        let (err, read) = unpack_endless(header_claiming(kind, "dev/x", 16 << 30), 1 << 30);
        assert_eq!(
            err, "layer sha256:hostile: unpacks to more than the limit of 1073741824 bytes",
            "{kind:?}"
        );
        assert!(read < 1 << 20, "{kind:?}: read {read} bytes");
    }
}

/// Long names written the usual ways (GNU `L` entries by `tar::Builder`, pax `path` and
/// `linkpath` records) still unpack, and parsers cannot be made to disagree on sizes.
#[test]
fn long_names_unpack_and_pax_sizes_must_agree() {
    let long = format!("{}/file", "d".repeat(150));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(2);
    header.set_mode(0o644);
    builder.append_data(&mut header, &long, &b"hi"[..]).unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    builder
        .append_link(&mut link, "short", format!("/{long}"))
        .unwrap();
    let mut pax = tar::Builder::new(Vec::new());
    let pax_name = format!("{}/p", "e".repeat(200));
    pax.append_pax_extensions([("path", pax_name.as_bytes())])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_size(1);
    header.set_mode(0o644);
    header.set_cksum();
    pax.append(&header, &b"p"[..]).unwrap();
    let root = Root::new();
    root.unpack(&builder.into_inner().unwrap(), LayerKind::Tar)
        .unwrap();
    root.unpack(&pax.into_inner().unwrap(), LayerKind::Tar)
        .unwrap();
    assert_eq!(fs::read(root.path(&long)).unwrap(), b"hi");
    assert_eq!(fs::read(root.path("short")).unwrap(), b"hi");
    assert_eq!(fs::read(root.path(&pax_name)).unwrap(), b"p");

    let mut lying = tar::Builder::new(Vec::new());
    lying
        .append_pax_extensions([("size", &b"1024"[..])])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("f").unwrap();
    header.set_size(1);
    header.set_mode(0o644);
    header.set_cksum();
    lying.append(&header, &b"f"[..]).unwrap();
    let err = Root::new()
        .unpack(&lying.into_inner().unwrap(), LayerKind::Tar)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f: its pax size 1024 differs from its header's 1"),
        "{err}"
    );

    let mut dangling = tar::Builder::new(Vec::new());
    dangling
        .append_pax_extensions([("path", &b"x"[..])])
        .unwrap();
    let err = Root::new()
        .unpack(&dangling.into_inner().unwrap(), LayerKind::Tar)
        .unwrap_err()
        .to_string();
    assert!(err.contains("describes no entry"), "{err}");
}

/// A refused entry's name appears cut short in the error, whatever its length.
#[test]
fn errors_show_at_most_the_start_of_a_name() {
    let name = format!("{}/../x", "n".repeat(60_000));
    let mut layer = tar::Builder::new(Vec::new());
    layer
        .append_pax_extensions([("path", name.as_bytes())])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("x").unwrap();
    header.set_size(0);
    header.set_cksum();
    layer.append(&header, &b""[..]).unwrap();
    let err = Root::new()
        .unpack(&layer.into_inner().unwrap(), LayerKind::Tar)
        .unwrap_err()
        .to_string();
    assert!(err.len() < 512, "{} bytes: {err:.600}", err.len());
    assert!(err.ends_with("(60005 bytes): path contains '..'"), "{err}");
}

/// An opaque whiteout at the top of a layer empties the root of what lower layers put
/// there (it was ignored).
#[test]
fn an_opaque_whiteout_at_the_root() {
    let root = Root::new();
    let lower = Layer::default().file("a/x", b"1").file("y", b"2").bytes();
    root.unpack(&lower, LayerKind::Tar).unwrap();
    let upper = Layer::default()
        .file("kept", b"3")
        .file(".wh..wh..opq", b"")
        .bytes();
    root.unpack(&upper, LayerKind::Tar).unwrap();
    assert!(!root.path("a").exists() && !root.path("y").exists());
    assert!(root.path("kept").exists() && !root.path(".wh..wh..opq").exists());
}
