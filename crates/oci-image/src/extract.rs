//! Safe layer extraction into a root filesystem.
//!
//! Every file-system operation goes through a `cap_std::fs::Dir` opened on the root, so no
//! entry — whatever symlinks earlier entries planted — can reach outside it. On top of that:
//! paths with `..` are refused; absolute symlink targets are rewritten relative to the
//! entry (they mean the same inside the container and nothing outside it); relative
//! targets and hard links that climb above the root are refused; device nodes and FIFOs
//! are skipped; setuid, setgid and sticky bits are stripped; whiteouts are applied; and a
//! byte budget stops decompression bombs.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _, Permissions, PermissionsExt as _};

use crate::error::{Error, Result};
use crate::media::LayerKind;

/// Overhead charged per entry, so millions of empty files also exhaust the budget.
const ENTRY_COST: u64 = 512;

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
        let entries = archive.entries().map_err(|e| self.bad("", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.bad("", e))?;
            self.entry(entry)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry
            .path()
            .map_err(|e| self.bad("", e))?
            .to_string_lossy()
            .into_owned();
        self.charge(ENTRY_COST)?;
        let path = self.clean(&raw)?;
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
                self.charge(size)?;
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
                let target = entry
                    .link_name()
                    .map_err(|e| self.bad(&raw, e))?
                    .ok_or_else(|| self.bad(&raw, "symbolic link without a target"))?
                    .into_owned();
                let target = self.link_target(&parent, &target, &raw)?;
                self.remove(&path, &raw)?;
                self.root
                    .symlink(&target, &path)
                    .map_err(|e| self.bad(&raw, e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.bad(&raw, e))?
                    .ok_or_else(|| self.bad(&raw, "hard link without a target"))?
                    .to_string_lossy()
                    .into_owned();
                let source = self.clean(&target).map_err(|_| {
                    self.unsafe_entry(
                        &raw,
                        format!("hard link to {target:?} leaves the root filesystem"),
                    )
                })?;
                let meta = self
                    .root
                    .symlink_metadata(&source)
                    .map_err(|e| self.bad(&raw, format!("hard link to {target:?}: {e}")))?;
                if !meta.is_file() {
                    return Err(self.unsafe_entry(
                        &raw,
                        format!("hard link to {target:?}, which is not a regular file"),
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
            // Metadata-only entries (pax, GNU long names) are consumed by the tar crate;
            // anything else carries nothing a wasm guest can use.
            other => {
                tracing::warn!(layer = self.layer, entry = %raw, kind = ?other, "skipping an unsupported tar entry");
                return Ok(());
            }
        }
        self.created.insert(path);
        Ok(())
    }

    /// A relative path with no `..`, `.` or root components; `..` is refused.
    fn clean(&self, raw: &str) -> Result<PathBuf> {
        let mut out = PathBuf::new();
        for c in Path::new(raw).components() {
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
            let inside = self.clean(&target.to_string_lossy()).map_err(|_| {
                self.unsafe_entry(
                    raw,
                    format!(
                        "symbolic link to {} leaves the root filesystem",
                        target.display()
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
                        target.display()
                    ),
                ));
            }
        }
        Ok(target.to_owned())
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.root.symlink_metadata(path).is_ok_and(|m| m.is_dir())
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
