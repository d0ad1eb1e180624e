//! The on-disk precompile cache.
//!
//! An entry is keyed by the sha256 of the wasm binary and the engine's precompile
//! compatibility hash (wasmtime version, target and settings). It is two files in
//! `<cache_dir>/<compat>/`: `<digest>.<kind>.cwasm`, the native code, and
//! `<digest>.<kind>.sum`, a one-line record of the key the entry was stored under and the
//! sha256 and length of the code. Both are written to temporary files and renamed into
//! place. On a hit the record and the code are checked against each other and the key, the
//! files must belong to this user and be writable by nobody else, and only then is the code
//! memory-mapped. Anything else is discarded and recompiled: precompiled code is native
//! code, so a cache entry is never trusted blindly.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::program::{Code, ProgramKind};
use crate::sys;

const RECORD_MAGIC: &str = "wasmpod-precompiled-v1";

/// What [`clear_cache`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCleared {
    /// Compiled programs removed.
    pub entries: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// Removes every compiled program from the precompile cache under `root` (the directory
/// given as [`EngineConfig::cache_dir`](crate::EngineConfig::cache_dir)), for every engine
/// version and setting that wrote there: they are compiled again when next run. Only the
/// cache's own files (`*.cwasm`, `*.sum`, compile locks and unfinished writes) are removed, and a
/// directory is left where anything else is in it.
pub fn clear_cache(root: &Path) -> std::io::Result<CacheCleared> {
    let mut cleared = CacheCleared::default();
    let dirs = match fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cleared),
        Err(e) => return Err(e),
    };
    for dir in dirs {
        let dir = dir?;
        if !dir.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(dir.path())? {
            let file = file?;
            let name = file.file_name().to_string_lossy().into_owned();
            let ours = name.ends_with(".cwasm")
                || name.ends_with(".sum")
                || name.ends_with(".lock")
                || name.contains(".tmp");
            if !ours || !file.file_type()?.is_file() {
                continue;
            }
            let len = file.metadata()?.len();
            fs::remove_file(file.path())?;
            cleared.bytes += len;
            if name.ends_with(".cwasm") {
                cleared.entries += 1;
            }
        }
        // Left in place when something else is in it.
        let _ = fs::remove_dir(dir.path());
    }
    Ok(cleared)
}

/// The compile lock of one program, held until dropped (the kernel releases it if the
/// holder dies).
#[derive(Debug)]
pub(crate) struct CompileLock {
    _file: fs::File,
    /// Whether another compile of the program held it first.
    pub(crate) waited: bool,
}

/// A precompile cache directory that passed the ownership checks.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    compat: String,
}

/// The lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Feeds a `Hash` value into sha256, so the key is stable across processes.
struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the sha256 of the written bytes is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn compat_hash(engine: &wasmtime::Engine) -> String {
    use std::hash::Hash;
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

/// Creates `dir` with mode 0700 if needed and checks that only this user can write it.
fn private_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    if meta.uid() != sys::euid() {
        return Err(format!(
            "it belongs to uid {}, not to this process's uid {}",
            meta.uid(),
            sys::euid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make it private (mode 0700): {e}"))?;
    }
    Ok(())
}

impl Cache {
    /// Opens (creating if needed) the cache under `root` for this engine's settings.
    /// Returns `None`, with a warning naming the reason, when the directory cannot be
    /// made private to this user.
    pub(crate) fn open(root: PathBuf, engine: &wasmtime::Engine) -> Option<Self> {
        let compat = compat_hash(engine);
        let dir = root.join(&compat);
        for d in [&root, &dir] {
            if let Err(reason) = private_dir(d) {
                tracing::warn!(dir = %d.display(), %reason, "precompile cache disabled");
                return None;
            }
        }
        Some(Self { dir, compat })
    }

    fn paths(&self, digest: &str, kind: ProgramKind) -> (PathBuf, PathBuf) {
        let stem = format!("{digest}.{}", kind_tag(kind));
        (
            self.dir.join(format!("{stem}.cwasm")),
            self.dir.join(format!("{stem}.sum")),
        )
    }

    fn record(&self, digest: &str, kind: ProgramKind, code: &[u8]) -> String {
        format!(
            "{RECORD_MAGIC} {} {digest} {} {} {}\n",
            kind_tag(kind),
            self.compat,
            code.len(),
            sha256_hex(code)
        )
    }

    /// Takes the compile lock of a program: one compile of it at a time, across every
    /// process sharing the cache (a pull's precompile, the shims of a node), so that one
    /// that finds it being compiled waits for that compile and then loads its result
    /// instead of compiling it a second time. `None` when the lock file cannot be made
    /// (then compiles are not shared, which costs time, not correctness).
    pub(crate) fn lock(&self, digest: &str, kind: ProgramKind) -> Option<CompileLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(format!("{digest}.{}.lock", kind_tag(kind)));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| tracing::debug!(lock = %path.display(), error = %e, "no compile lock"))
            .ok()?;
        let waited = match file.try_lock() {
            Ok(()) => false,
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!(%digest, "waiting for a compile of the same program under way");
                file.lock()
                    .map_err(
                        |e| tracing::debug!(lock = %path.display(), error = %e, "no compile lock"),
                    )
                    .ok()?;
                true
            }
            Err(fs::TryLockError::Error(e)) => {
                tracing::debug!(lock = %path.display(), error = %e, "no compile lock");
                return None;
            }
        };
        Some(CompileLock {
            _file: file,
            waited,
        })
    }

    /// Loads a verified entry, or returns `None` (discarding a bad entry).
    pub(crate) fn get(
        &self,
        engine: &wasmtime::Engine,
        digest: &str,
        kind: ProgramKind,
    ) -> Option<Code> {
        let (code_path, sum_path) = self.paths(digest, kind);
        match self.verify(digest, kind, &code_path, &sum_path) {
            Ok(None) => return None,
            Ok(Some(())) => {}
            Err(reason) => {
                tracing::warn!(entry = %code_path.display(), %reason, "discarding precompile cache entry");
                discard(&code_path, &sum_path);
                return None;
            }
        }
        // Only now, with the file's ownership, modes, length and sha256 checked above.
        let loaded = sys::load_own_code_file(engine, kind, &code_path);
        match loaded {
            Ok(code) => Some(code),
            Err(e) => {
                tracing::warn!(entry = %code_path.display(), reason = %e, "discarding precompile cache entry");
                discard(&code_path, &sum_path);
                None
            }
        }
    }

    /// `Ok(None)` for a plain miss, `Err` for an entry that must be discarded.
    fn verify(
        &self,
        digest: &str,
        kind: ProgramKind,
        code_path: &Path,
        sum_path: &Path,
    ) -> Result<Option<()>, String> {
        let record = match fs::read_to_string(sum_path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match fs::symlink_metadata(code_path) {
                    Ok(_) => Err("code without a record".into()),
                    Err(_) => Ok(None),
                };
            }
            Err(e) => return Err(format!("unreadable record: {e}")),
        };
        for path in [code_path, sum_path] {
            let meta = fs::symlink_metadata(path).map_err(|e| format!("{e}"))?;
            if !meta.file_type().is_file() {
                return Err(format!("{} is not a regular file", path.display()));
            }
            if meta.uid() != sys::euid() {
                return Err(format!("{} belongs to uid {}", path.display(), meta.uid()));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(format!(
                    "{} is writable by others (mode {:o})",
                    path.display(),
                    meta.mode() & 0o777
                ));
            }
        }
        let code = fs::read(code_path).map_err(|e| format!("unreadable code: {e}"))?;
        if record != self.record(digest, kind, &code) {
            return Err("code does not match the record stored with it".into());
        }
        Ok(Some(()))
    }

    /// Stores compiled code; failures only cost a recompile later, so they are logged.
    pub(crate) fn put(&self, digest: &str, code: &Code) {
        let kind = match code {
            Code::Module(_) => ProgramKind::Module,
            Code::Component(_) => ProgramKind::Component,
        };
        let bytes = match code.serialize() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(reason = %e, "cannot serialize compiled code for the cache");
                return;
            }
        };
        let (code_path, sum_path) = self.paths(digest, kind);
        let record = self.record(digest, kind, &bytes);
        let result = write_atomic(&code_path, &bytes)
            .and_then(|()| write_atomic(&sum_path, record.as_bytes()));
        if let Err(e) = result {
            tracing::warn!(entry = %code_path.display(), reason = %e, "cannot store precompile cache entry");
            discard(&code_path, &sum_path);
        }
    }
}

fn kind_tag(kind: ProgramKind) -> &'static str {
    match kind {
        ProgramKind::Module => "module",
        ProgramKind::Component => "component",
    }
}

fn discard(code_path: &Path, sum_path: &Path) {
    let _ = fs::remove_file(sum_path);
    let _ = fs::remove_file(code_path);
}

/// Writes `bytes` to a new private temporary file beside `path`, then renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests;
