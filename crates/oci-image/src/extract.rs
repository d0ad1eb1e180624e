//! Safe layer extraction into a root filesystem.
//!
//! Every file-system operation goes through a `cap_std::fs::Dir` opened on the root, so no
//! entry — whatever symlinks earlier entries planted — can reach outside it. On top of that:
//! paths with `..` are refused; absolute symlink targets are rewritten relative to the
//! entry (they mean the same inside the container and nothing outside it); relative
//! targets and hard links that climb above the root are refused; device nodes and FIFOs
//! are skipped; setuid, setgid and sticky bits are stripped; whiteouts are applied; and a
//! byte budget stops decompression bombs.
//!
//! Every entry is charged to the budget — its header and its whole size, whatever its type
//! — before a byte of it is read or written. The archive is read raw: GNU long names and
//! links and pax records (which the `tar` crate would read whole into memory before we
//! saw them) are read here, each under [`MAX_METADATA`] and charged like any entry.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _, Permissions, PermissionsExt as _};

use crate::error::{Error, Result};
use crate::media::LayerKind;

/// Overhead charged per entry, so millions of empty files also exhaust the budget.
const ENTRY_COST: u64 = 512;

/// The most a GNU long name or link, or a pax record set, may hold (Linux's `PATH_MAX` is
/// 4 KiB; pax records for one file are a few hundred bytes).
pub const MAX_METADATA: u64 = 64 << 10;

/// How much of an entry's name an error shows.
const SHOWN_NAME: usize = 256;

/// What GNU long-name/link and pax entries say about the entry after them.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.path.is_none() && self.link.is_none() && self.size.is_none()
    }
}

/// An entry's name as errors and logs show it: lossy UTF-8, at most [`SHOWN_NAME`] bytes.
fn shown(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(SHOWN_NAME)];
    let mut name = String::from_utf8_lossy(cut).into_owned();
    if raw.len() > SHOWN_NAME {
        name.push_str(&format!("… ({} bytes)", raw.len()));
    }
    name
}

/// What an extraction skipped (it never fails silently: these are logged too).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractReport {
    /// Device nodes and FIFOs not created.
    pub skipped_devices: usize,
    /// Absolute symlink targets rewritten to stay inside the root.
    pub rewritten_links: usize,
}

/// Unpacks one layer into `root`, charging `budget` for every byte written.
pub fn unpack_layer(
    root: &Dir,
    reader: impl Read,
    kind: LayerKind,
    layer: &str,
    budget: &mut u64,
    limit: u64,
) -> Result<ExtractReport> {
    let mut unpacker = Unpacker {
        root,
        layer,
        budget,
        limit,
        created: HashSet::new(),
        report: ExtractReport::default(),
    };
    match kind {
        LayerKind::Tar => unpacker.tar(reader)?,
        LayerKind::TarGzip => unpacker.tar(flate2::read::MultiGzDecoder::new(reader))?,
        LayerKind::TarZstd => {
            let decoder =
                zstd::stream::read::Decoder::new(reader).map_err(|e| unpacker.bad("", e))?;
            unpacker.tar(decoder)?
        }
        LayerKind::Wasm => {
            return Err(Error::invalid(layer, "a wasm layer is not a tar archive"));
        }
    }
    Ok(unpacker.report)
}

struct Unpacker<'a> {
    root: &'a Dir,
    layer: &'a str,
    budget: &'a mut u64,
    limit: u64,
    /// Paths this layer created: an opaque whiteout keeps them.
    created: HashSet<PathBuf>,
    report: ExtractReport,
}

impl Unpacker<'_> {
    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::UnsafeLayer {
            layer: self.layer.to_owned(),
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn bad(&self, entry: &str, e: impl std::fmt::Display) -> Error {
        self.unsafe_entry(entry, format!("cannot unpack: {e}"))
    }

    fn charge(&mut self, bytes: u64) -> Result<()> {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                *self.budget = left;
                Ok(())
            }
            None => Err(Error::TooLarge {
                layer: self.layer.to_owned(),
                limit: self.limit,
            }),
        }
    }

    fn tar(&mut self, reader: impl Read) -> Result<()> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.bad("", e))?.raw(true);
        let mut pending = Pending::default();
        let mut last = String::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| self.bad(&last, format!("after this entry: {e}")))?;
            let header_name = entry.path_bytes().into_owned();
            last = shown(&header_name);
            // Charged before any of it is read: its header and all its data, whatever it is
            // (the archive skips a device's or a directory's data by reading it too).
            self.charge(ENTRY_COST)?;
            self.charge(entry.size())?;
            let kind = entry.header().entry_type();
            if kind.is_gnu_longname()
                || kind.is_gnu_longlink()
                || kind.is_pax_local_extensions()
                || kind.is_pax_global_extensions()
            {
                let data = self.metadata(&mut entry, &last)?;
                if kind.is_gnu_longname() || kind.is_gnu_longlink() {
                    let slot = if kind.is_gnu_longname() {
                        &mut pending.path
                    } else {
                        &mut pending.link
                    };
                    if slot.is_some() {
                        return Err(self.unsafe_entry(&last, "two long names for one entry"));
                    }
                    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                    *slot = Some(data[..end].to_vec());
                } else if kind.is_pax_local_extensions() {
                    self.pax(&data, &mut pending, &last)?;
                }
                // Global pax records (`g`) say nothing a root filesystem keeps.
                continue;
            }
            let pending = std::mem::take(&mut pending);
            if let Some(size) = pending.size {
                if size != entry.size() {
                    // Parsers that disagree on where an entry ends see different archives.
                    return Err(self.unsafe_entry(
                        &last,
                        format!(
                            "its pax size {size} differs from its header's {}",
                            entry.size()
                        ),
                    ));
                }
            }
            let path = pending.path.unwrap_or(header_name);
            let link = pending
                .link
                .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
            last = shown(&path);
            self.entry(entry, &path, link)?;
        }
        if !pending.is_empty() {
            return Err(self.unsafe_entry(
                &last,
                "the archive ends with a long name or pax record that describes no entry",
            ));
        }
        Ok(())
    }

    /// The data of a long-name or pax entry, refused past [`MAX_METADATA`] before it is read.
    fn metadata<R: Read>(&self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Vec<u8>> {
        let size = entry.size();
        if size > MAX_METADATA {
            return Err(self.unsafe_entry(
                shown,
                format!(
                    "a long name or pax record of {size} bytes, over the limit of {MAX_METADATA}"
                ),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| self.bad(shown, e))?;
        if data.len() as u64 != size {
            return Err(self.bad(shown, "archive ends inside a long name or pax record"));
        }
        Ok(data)
    }

    /// Applies a pax record set's `path`, `linkpath` and `size` to the next entry.
    fn pax(&self, data: &[u8], pending: &mut Pending, shown: &str) -> Result<()> {
        for record in tar::PaxExtensions::new(data) {
            let record = record.map_err(|e| self.bad(shown, format!("pax record: {e}")))?;
            match record.key_bytes() {
                b"path" => pending.path = Some(record.value_bytes().to_vec()),
                b"linkpath" => pending.link = Some(record.value_bytes().to_vec()),
                b"size" => {
                    let size = record
                        .value()
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| self.bad(shown, "pax size is not a number"))?;
                    pending.size = Some(size);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        path_bytes: &[u8],
        link: Option<Vec<u8>>,
    ) -> Result<()> {
        let raw = shown(path_bytes);
        let path = self.clean_path(Path::new(std::ffi::OsStr::from_bytes(path_bytes)), &raw)?;
        let link = link.map(|l| PathBuf::from(std::ffi::OsStr::from_bytes(&l)));
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Ok(()); // the root itself
        };
        let parent = path.parent().unwrap_or(Path::new("")).to_owned();

        // Whiteouts: delete what lower layers put there; never create the marker.
        if name == ".wh..wh..opq" {
            return self.opaque(&parent, &raw);
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let target = parent.join(hidden);
            return self.remove(&target, &raw);
        }

        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| self.bad(&raw, e))? & 0o777;
        if !parent.as_os_str().is_empty() {
            self.root
                .create_dir_all(&parent)
                .map_err(|e| self.bad(&raw, e))?;
        }
        match kind {
            tar::EntryType::Directory => {
                if !self.is_dir(&path) {
                    self.remove(&path, &raw)?;
                    self.root.create_dir(&path).map_err(|e| self.bad(&raw, e))?;
                }
                // Keep the owner's rwx so later entries can be written into it.
                self.root
                    .set_permissions(&path, Permissions::from_mode(mode | 0o700))
                    .map_err(|e| self.bad(&raw, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                self.remove(&path, &raw)?;
                let mut file = self
                    .root
                    .open_with(
                        &path,
                        OpenOptions::new().write(true).create_new(true).mode(mode),
                    )
                    .map_err(|e| self.bad(&raw, e))?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(|e| self.bad(&raw, e))?;
                if copied != size {
                    return Err(self.bad(&raw, "archive ends inside the file"));
                }
                file.flush().map_err(|e| self.bad(&raw, e))?;
                // umask may have narrowed the mode: set it exactly (no setuid/setgid/sticky).
                self.root
                    .set_permissions(&path, Permissions::from_mode(mode))
                    .map_err(|e| self.bad(&raw, e))?;
            }
            tar::EntryType::Symlink => {
                let target =
                    link.ok_or_else(|| self.bad(&raw, "symbolic link without a target"))?;
                let target = self.link_target(&parent, &target, &raw)?;
                self.remove(&path, &raw)?;
                self.root
                    .symlink(&target, &path)
                    .map_err(|e| self.bad(&raw, e))?;
            }
            tar::EntryType::Link => {
                let target = link.ok_or_else(|| self.bad(&raw, "hard link without a target"))?;
                let shown_target = shown(target.as_os_str().as_bytes());
                let source = self.clean_path(&target, &raw).map_err(|_| {
                    self.unsafe_entry(
                        &raw,
                        format!("hard link to {shown_target:?} leaves the root filesystem"),
                    )
                })?;
                let meta = self
                    .root
                    .symlink_metadata(&source)
                    .map_err(|e| self.bad(&raw, format!("hard link to {shown_target:?}: {e}")))?;
                if !meta.is_file() {
                    return Err(self.unsafe_entry(
                        &raw,
                        format!("hard link to {shown_target:?}, which is not a regular file"),
                    ));
                }
                self.remove(&path, &raw)?;
                self.root
                    .hard_link(&source, self.root, &path)
                    .map_err(|e| self.bad(&raw, e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                tracing::warn!(layer = self.layer, entry = %raw, "skipping a device node or FIFO");
                self.report.skipped_devices += 1;
                return Ok(());
            }
            // Anything else (GNU sparse files, volume labels, …) carries nothing a wasm
            // guest can use; its data was charged all the same.
            other => {
                tracing::warn!(layer = self.layer, entry = %raw, kind = ?other, "skipping an unsupported tar entry");
                return Ok(());
            }
        }
        self.created.insert(path);
        Ok(())
    }

    /// A relative path with no `..`, `.` or root components; `..` is refused.
    fn clean_path(&self, path: &Path, raw: &str) -> Result<PathBuf> {
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(part) => out.push(part),
                Component::CurDir | Component::RootDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(raw, "path contains '..'"));
                }
            }
        }
        Ok(out)
    }

    /// Absolute targets become relative to the link's directory; relative targets may not
    /// climb above the root. Both count from where the link's directory really is — its
    /// path with the links already in the root resolved (`a -> .` makes `a/a/a` the root
    /// itself) — not from the path the entry was written under.
    fn link_target(&mut self, parent: &Path, target: &Path, raw: &str) -> Result<PathBuf> {
        let real = self
            .root
            .canonicalize(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })
            .map_err(|e| self.bad(raw, e))?;
        // The directories from the root down to it (`.` for the root itself).
        let parent: PathBuf = real
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let parent = parent.as_path();
        if target.is_absolute() {
            let inside = self.clean_path(target, raw).map_err(|_| {
                self.unsafe_entry(
                    raw,
                    format!(
                        "symbolic link to {} leaves the root filesystem",
                        shown(target.as_os_str().as_bytes())
                    ),
                )
            })?;
            let mut rel = PathBuf::new();
            for _ in parent.components() {
                rel.push("..");
            }
            rel.push(&inside);
            if rel.as_os_str().is_empty() {
                rel.push(".");
            }
            self.report.rewritten_links += 1;
            return Ok(rel);
        }
        let mut depth = parent.components().count() as isize;
        for c in target.components() {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            if depth < 0 {
                return Err(self.unsafe_entry(
                    raw,
                    format!(
                        "symbolic link to {} leaves the root filesystem",
                        shown(target.as_os_str().as_bytes())
                    ),
                ));
            }
        }
        Ok(target.to_owned())
    }

    /// Whether `path` is a directory (the empty path is the root, which always is).
    fn is_dir(&self, path: &Path) -> bool {
        path.as_os_str().is_empty() || self.root.symlink_metadata(path).is_ok_and(|m| m.is_dir())
    }

    /// Removes whatever is at `path` (a symlink itself, never its target).
    fn remove(&self, path: &Path, raw: &str) -> Result<()> {
        match self.root.symlink_metadata(path) {
            Ok(m) if m.is_dir() => self.root.remove_dir_all(path),
            Ok(_) => self.root.remove_file(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(|e| self.bad(raw, e))
    }

    /// An opaque directory: lower layers' contents go, this layer's stay.
    fn opaque(&mut self, dir: &Path, raw: &str) -> Result<()> {
        if !self.is_dir(dir) {
            if !dir.as_os_str().is_empty() {
                self.root
                    .create_dir_all(dir)
                    .map_err(|e| self.bad(raw, e))?;
            }
            return Ok(());
        }
        let entries = if dir.as_os_str().is_empty() {
            self.root.entries()
        } else {
            self.root.read_dir(dir)
        }
        .map_err(|e| self.bad(raw, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.bad(raw, e))?;
            let child = dir.join(entry.file_name());
            if !self.created.contains(&child) {
                self.remove(&child, raw)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
