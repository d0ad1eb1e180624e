//! The local image store: content-addressed blobs, tags, unpacked root filesystems.
//!
//! ```text
//! <dir>/blobs/sha256/<hex>     verified content, written to a temp file and renamed
//! <dir>/ingest/<hex>           a download in progress (locked by its writer; resumed later)
//! <dir>/refs.json              image name → record; rewritten atomically under refs.lock
//! <dir>/rootfs/<hex>           the unpacked root filesystem of a manifest
//! ```
//!
//! Blobs are immutable once renamed into place, so concurrent readers need no locks;
//! writers of the same blob serialise on the ingest file's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::media::{self, digest_hex};
use crate::reference::ImageRef;

/// What a name in the store points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The digest the name resolves to: an index or a manifest.
    pub digest: String,
    /// The media type of that document.
    pub media_type: String,
    /// The manifest chosen for this host (equal to `digest` when there is no index).
    pub manifest: String,
    /// Total size of the manifest's config and layers, in bytes.
    pub size: u64,
}

/// What a [`Store::prune`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs: usize,
    /// Unpacked root filesystems deleted.
    pub rootfs: usize,
    /// Bytes freed by the blobs.
    pub bytes: u64,
}

/// A content-addressed image store under one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating, mode 0700) the store at `dir`, which must be private to this
    /// user ([`check_private_dir`](crate::check_private_dir)): what is in it is run.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        for sub in ["blobs/sha256", "ingest", "rootfs"] {
            let path = dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(Error::io(&path))?;
        }
        crate::check_private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a verified blob lives.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Reads a whole blob, checking it against its digest (for documents: manifests, configs).
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = fs::read(&path).map_err(Error::io(&path))?;
        let actual = media::sha256_digest(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                digest: digest.to_owned(),
                detail: format!("the stored copy hashes to {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Stores bytes under their digest; `expected` (a descriptor's digest and size) must
    /// match, or nothing is written.
    pub fn write_blob(&self, bytes: &[u8], expected: Option<(&str, u64)>) -> Result<String> {
        let digest = media::sha256_digest(bytes);
        if let Some((want, size)) = expected {
            verify(want, size, &digest, bytes.len() as u64)?;
        }
        let path = self.blob_path(&digest)?;
        if path.is_file() {
            return Ok(digest);
        }
        let ingest = self.dir.join("ingest");
        let mut tmp = tempfile::NamedTempFile::new_in(&ingest).map_err(Error::io(&ingest))?;
        tmp.write_all(bytes).map_err(Error::io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(Error::io(tmp.path()))?;
        tmp.persist(&path).map_err(|e| Error::io(&path)(e.error))?;
        Ok(digest)
    }

    /// Opens the ingest file for a blob, waiting for any other writer of the same blob.
    /// Returns `None` when the blob is already in the store.
    pub(crate) async fn ingest(&self, digest: &str) -> Result<Option<Ingest>> {
        let hex = digest_hex(digest)?;
        let path = self.dir.join("ingest").join(hex);
        let blob = self.blob_path(digest)?;
        loop {
            if blob.is_file() {
                return Ok(None);
            }
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(Error::io(&path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path)(e)),
            }
            let linked = fs::metadata(&path)
                .ok()
                .zip(file.metadata().ok())
                .is_some_and(|(a, b)| {
                    use std::os::unix::fs::MetadataExt;
                    a.ino() == b.ino() && a.dev() == b.dev()
                });
            // Under the lock: the previous holder may have finished (and renamed the file we
            // opened into the blob), so look again before appending anything. If our open
            // came after that rename it created a new, empty ingest file: remove it, or it
            // stays behind as an abandoned download (whoever else opened it looks again
            // under the lock, as here).
            if blob.is_file() {
                if linked {
                    let _ = fs::remove_file(&path);
                }
                return Ok(None);
            }
            if !linked {
                continue; // removed or replaced while we waited: open the current one
            }
            return Ok(Some(Ingest {
                file,
                path,
                blob,
                digest: digest.to_owned(),
                done: false,
            }));
        }
    }

    /// Records `name` → `record`.
    pub fn tag(&self, name: &ImageRef, record: ImageRecord) -> Result<()> {
        self.update_refs(|refs| {
            refs.insert(name.to_string(), record);
        })
    }

    /// What `name` points at, if it is in the store.
    pub fn resolve(&self, name: &ImageRef) -> Result<Option<ImageRecord>> {
        Ok(self.read_refs()?.remove(&name.to_string()))
    }

    /// All names and their records, sorted by name.
    pub fn images(&self) -> Result<BTreeMap<String, ImageRecord>> {
        self.read_refs()
    }

    /// Removes a name; its blobs go at the next [`Store::prune`]. Returns whether it existed.
    pub fn remove(&self, name: &ImageRef) -> Result<bool> {
        let mut existed = false;
        self.update_refs(|refs| existed = refs.remove(&name.to_string()).is_some())?;
        Ok(existed)
    }

    /// The directory an unpacked manifest lives in (it may not exist yet).
    pub fn rootfs_path(&self, manifest: &str) -> Result<PathBuf> {
        Ok(self.dir.join("rootfs").join(digest_hex(manifest)?))
    }

    /// Deletes blobs and root filesystems no name reaches, and abandoned downloads.
    pub fn prune(&self) -> Result<PruneReport> {
        let _lock = self.lock_refs()?;
        let refs = self.read_refs()?;
        let mut live = BTreeSet::new();
        let mut live_rootfs = BTreeSet::new();
        for record in refs.values() {
            self.mark(&record.digest, &record.media_type, &mut live)?;
            live_rootfs.insert(digest_hex(&record.manifest)?.to_owned());
        }
        let mut report = PruneReport::default();
        let blobs = self.dir.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(Error::io(&blobs))? {
            let entry = entry.map_err(Error::io(&blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(Error::io(entry.path()))?;
                report.blobs += 1;
            }
        }
        let rootfs = self.dir.join("rootfs");
        for entry in fs::read_dir(&rootfs).map_err(Error::io(&rootfs))? {
            let entry = entry.map_err(Error::io(&rootfs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live_rootfs.contains(&name) {
                fs::remove_dir_all(entry.path()).map_err(Error::io(entry.path()))?;
                report.rootfs += 1;
            }
        }
        // Downloads nobody holds: a locked file belongs to a pull in progress.
        let ingest = self.dir.join("ingest");
        for entry in fs::read_dir(&ingest).map_err(Error::io(&ingest))? {
            let entry = entry.map_err(Error::io(&ingest))?;
            if let Ok(file) = File::open(entry.path()) {
                if file.try_lock().is_ok() {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(report)
    }

    /// Checks the store's consistency and returns what is wrong, in words (empty when all
    /// is well): every blob hashes to its name, every name reaches a manifest whose config
    /// and layers are all present, and no half-written blob or root filesystem is in
    /// place. Downloads in progress (`ingest/`) are not blobs yet and are not checked.
    pub fn verify(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let blobs = self.dir.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(Error::io(&blobs))? {
            let entry = entry.map_err(Error::io(&blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut file = File::open(entry.path()).map_err(Error::io(entry.path()))?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher).map_err(Error::io(entry.path()))?;
            let actual = hex::encode(hasher.finalize());
            if actual != name {
                problems.push(format!("blob sha256:{name} hashes to sha256:{actual}"));
            }
        }
        for (name, record) in self.read_refs()? {
            let mut needed = vec![record.digest.clone(), record.manifest.clone()];
            if self.has_blob(&record.manifest) {
                match self.read_blob(&record.manifest).and_then(|bytes| {
                    serde_json::from_slice::<ImageManifest>(&bytes)
                        .map_err(|e| Error::invalid(&record.manifest, e))
                }) {
                    Ok(m) => {
                        needed.push(m.config().digest().to_string());
                        needed.extend(m.layers().iter().map(|l| l.digest().to_string()));
                    }
                    Err(e) => problems.push(format!("{name}: {e}")),
                }
            }
            for digest in needed {
                if !self.has_blob(&digest) {
                    problems.push(format!("{name}: blob {digest} is missing"));
                }
            }
        }
        let rootfs = self.dir.join("rootfs");
        for entry in fs::read_dir(&rootfs).map_err(Error::io(&rootfs))? {
            let entry = entry.map_err(Error::io(&rootfs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                problems.push(format!("rootfs/{name}: an unfinished unpack"));
            }
        }
        Ok(problems)
    }

    /// Marks a document and everything it references as live (hex digests).
    fn mark(&self, digest: &str, media_type: &str, live: &mut BTreeSet<String>) -> Result<()> {
        live.insert(digest_hex(digest)?.to_owned());
        if !self.has_blob(digest) {
            return Ok(());
        }
        let bytes = self.read_blob(digest)?;
        if is_index(media_type, &bytes) {
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| Error::invalid(digest, e))?;
            for m in index.manifests() {
                self.mark(m.digest().as_ref(), m.media_type().as_ref(), live)?;
            }
        } else {
            let manifest: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|e| Error::invalid(digest, e))?;
            live.insert(digest_hex(manifest.config().digest().as_ref())?.to_owned());
            for l in manifest.layers() {
                live.insert(digest_hex(l.digest().as_ref())?.to_owned());
            }
        }
        Ok(())
    }

    fn lock_refs(&self) -> Result<File> {
        let path = self.dir.join("refs.lock");
        let file = File::create(&path).map_err(Error::io(&path))?;
        file.lock().map_err(Error::io(&path))?;
        Ok(file)
    }

    fn read_refs(&self) -> Result<BTreeMap<String, ImageRecord>> {
        let path = self.dir.join("refs.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io(path)(e)),
        }
    }

    fn update_refs(&self, f: impl FnOnce(&mut BTreeMap<String, ImageRecord>)) -> Result<()> {
        let _lock = self.lock_refs()?;
        let mut refs = self.read_refs()?;
        f(&mut refs);
        let path = self.dir.join("refs.json");
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(Error::io(&self.dir))?;
        serde_json::to_writer_pretty(&mut tmp, &refs).map_err(|e| Error::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        tmp.as_file().sync_all().map_err(Error::io(tmp.path()))?;
        tmp.persist(&path).map_err(|e| Error::io(&path)(e.error))?;
        Ok(())
    }
}

#[derive(Deserialize)]
struct DocumentProbe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
}

/// A manifest document's own `mediaType`, or, when it has none (as OCI allows), a guess
/// from its shape: a `manifests` list is an index.
pub(crate) fn document_media_type(bytes: &[u8]) -> String {
    match serde_json::from_slice::<DocumentProbe>(bytes) {
        Ok(DocumentProbe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(DocumentProbe {
            manifests: Some(_), ..
        }) => media::OCI_INDEX.to_owned(),
        _ => media::OCI_MANIFEST.to_owned(),
    }
}

/// Whether a document is an index (by the media type recorded for it, or its own).
pub(crate) fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    let index = |m: &str| m == media::OCI_INDEX || m == media::DOCKER_MANIFEST_LIST;
    index(media_type) || index(&document_media_type(bytes))
}

fn verify(want: &str, size: u64, actual: &str, actual_size: u64) -> Result<()> {
    if actual_size != size {
        return Err(Error::DigestMismatch {
            digest: want.to_owned(),
            detail: format!("{actual_size} bytes, the descriptor says {size}"),
        });
    }
    if actual != want {
        return Err(Error::DigestMismatch {
            digest: want.to_owned(),
            detail: format!("received content hashes to {actual}"),
        });
    }
    Ok(())
}

/// A locked, partially written blob. Dropping it without [`Ingest::commit`] keeps the
/// partial content for a later pull to resume; [`Ingest::discard`] deletes it.
#[derive(Debug)]
pub(crate) struct Ingest {
    file: File,
    path: PathBuf,
    blob: PathBuf,
    digest: String,
    /// Committed or discarded: the path no longer belongs to this writer.
    done: bool,
}

impl Drop for Ingest {
    /// An abandoned download that got no bytes leaves nothing behind.
    fn drop(&mut self) {
        if !self.done && self.file.metadata().is_ok_and(|m| m.len() == 0) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Ingest {
    /// The bytes already present and their running hash.
    pub(crate) fn resume(&mut self) -> Result<(u64, Sha256)> {
        let mut hasher = Sha256::new();
        let mut file = File::open(&self.path).map_err(Error::io(&self.path))?;
        let mut buf = vec![0; 256 << 10];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(Error::io(&self.path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok((len, hasher))
    }

    /// Starts over from nothing.
    pub(crate) fn truncate(&mut self) -> Result<()> {
        self.file.set_len(0).map_err(Error::io(&self.path))
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(Error::io(&self.path))
    }

    /// Checks the content and moves it into the store; a mismatch deletes it.
    pub(crate) fn commit(mut self, hasher: Sha256, len: u64, size: u64) -> Result<()> {
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Err(e) = verify(&self.digest, size, &actual, len) {
            self.discard();
            return Err(e);
        }
        self.file.sync_all().map_err(Error::io(&self.path))?;
        fs::rename(&self.path, &self.blob).map_err(Error::io(&self.blob))?;
        self.done = true;
        Ok(())
    }

    /// Deletes the partial content.
    pub(crate) fn discard(mut self) {
        let _ = fs::remove_file(&self.path);
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.write_blob(b"hello", None).unwrap();
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        let err = store
            .write_blob(b"hellO", Some((&d, 5)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&d) && err.contains("nothing was stored"),
            "{err}"
        );
        let err = store.write_blob(b"hello", Some((&d, 6))).unwrap_err();
        assert!(err.to_string().contains("the descriptor says 6"), "{err}");
        // A blob corrupted on disk is caught when read.
        fs::write(store.blob_path(&d).unwrap(), b"jello").unwrap();
        assert!(matches!(
            store.read_blob(&d),
            Err(Error::DigestMismatch { .. })
        ));
    }

    /// Writers racing for one blob: whoever opens the ingest file after the winner renamed
    /// it into the store creates a new, empty one, which must not stay behind.
    #[test]
    fn racing_writers_of_one_blob_leave_no_ingest_file() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_time()
            .build()
            .unwrap();
        for round in 0..40u32 {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let bytes = format!("blob {round}").into_bytes();
            let digest = media::sha256_digest(&bytes);
            let writers: Vec<_> = (0..6)
                .map(|_| {
                    let (store, bytes, digest) = (store.clone(), bytes.clone(), digest.clone());
                    rt.spawn(async move {
                        if let Some(mut ingest) = store.ingest(&digest).await.unwrap() {
                            ingest.truncate().unwrap();
                            let mut hasher = Sha256::new();
                            hasher.update(&bytes);
                            ingest.write(&bytes).unwrap();
                            let len = bytes.len() as u64;
                            ingest.commit(hasher, len, len).unwrap();
                        }
                    })
                })
                .collect();
            for w in writers {
                rt.block_on(w).unwrap();
            }
            assert_eq!(store.read_blob(&digest).unwrap(), bytes);
            let left: Vec<_> = fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "round {round}: left in ingest/: {left:?}");
        }
    }

    #[test]
    fn refs_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let config = store.write_blob(b"{}", None).unwrap();
        let layer = store.write_blob(b"layer", None).unwrap();
        let orphan = store.write_blob(b"orphan", None).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config, "size": 2},
            "layers": [{"mediaType": media::WASM_LAYER, "digest": layer, "size": 5}],
        });
        let m = store
            .write_blob(&serde_json::to_vec(&manifest).unwrap(), None)
            .unwrap();
        let name = ImageRef::parse("localhost:5000/x:1").unwrap();
        let record = ImageRecord {
            digest: m.clone(),
            media_type: media::OCI_MANIFEST.to_owned(),
            manifest: m.clone(),
            size: 7,
        };
        store.tag(&name, record.clone()).unwrap();
        fs::create_dir(store.rootfs_path(&m).unwrap()).unwrap();
        fs::create_dir(store.rootfs_path(&orphan).unwrap()).unwrap();
        assert_eq!(store.resolve(&name).unwrap(), Some(record));
        let report = store.prune().unwrap();
        assert_eq!((report.blobs, report.rootfs, report.bytes), (1, 1, 6));
        assert!(store.has_blob(&m) && store.has_blob(&layer) && !store.has_blob(&orphan));
        assert!(store.remove(&name).unwrap());
        assert!(!store.remove(&name).unwrap());
        let report = store.prune().unwrap();
        assert_eq!((report.blobs, report.rootfs), (3, 1));
        assert!(store.images().unwrap().is_empty());
    }
}
