//! The node installer: puts `containerd-shim-wasm-v1` where containerd finds it and adds
//! the `wasm` runtime handler to containerd's config (version 2 for containerd 1.6/1.7,
//! version 3 for 2.x), editing the file in place — comments and order kept, nothing
//! written when it already says the same, a backup of the previous file otherwise.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use toml_edit::{value, Array, DocumentMut, Item, Table, TableLike};

use crate::error::{Error, Result};

/// The runtime type our shim registers as.
pub const RUNTIME_TYPE: &str = "io.containerd.wasm.v1";
/// The shim's file name, which containerd derives from [`RUNTIME_TYPE`].
pub const SHIM_BINARY: &str = "containerd-shim-wasm-v1";
/// The annotations that containerd passes from pods and containers to the shim.
pub const ANNOTATIONS: &str = "wasmpod.io/*";

/// What to install where.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// containerd's config file (`/etc/containerd/config.toml`); created when missing.
    pub config: PathBuf,
    /// The runtime handler name (RuntimeClass `handler`), `wasm` by default.
    pub handler: String,
    /// The handler's options (`isolation = "process"`, `grouping = "node"`): written to
    /// [`options_file`] beside the config, which the handler's `options.ConfigPath` names
    /// (the one option key every containerd since 1.6 passes to a shim).
    pub runtime_options: Vec<(String, String)>,
    /// The shim binary to install; `None` installs no binary (config only).
    pub shim: Option<PathBuf>,
    /// Where the shim goes: a directory on containerd's PATH (`/usr/local/bin`).
    pub bin_dir: PathBuf,
    /// The config version to write when the file is missing or empty (2 for containerd
    /// 1.6/1.7, 3 for 2.x).
    pub new_config_version: i64,
}

/// What an install changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallReport {
    /// The shim binary was written (new or different).
    pub shim_installed: Option<PathBuf>,
    /// The config was rewritten.
    pub config_changed: bool,
    /// Where the previous config was saved, when there was one.
    pub backup: Option<PathBuf>,
    /// The config version found (or written).
    pub config_version: i64,
}

impl InstallReport {
    /// Whether containerd must be restarted to see the change.
    pub fn needs_restart(&self) -> bool {
        self.shim_installed.is_some() || self.config_changed
    }
}

/// Installs the shim and the runtime handler; see the module doc.
pub fn install(options: &InstallOptions) -> Result<InstallReport> {
    let mut report = InstallReport::default();
    if let Some(shim) = &options.shim {
        report.shim_installed = install_shim(shim, &options.bin_dir)?;
    }
    let path = &options.config;
    let original = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(path)(e)),
    };
    let text = original.clone().unwrap_or_default();
    let options_path =
        (!options.runtime_options.is_empty()).then(|| options_file(path, &options.handler));
    if let Some(file) = &options_path {
        let body: String = options
            .runtime_options
            .iter()
            .map(|(k, v)| format!("{k} = {}\n", value(v.as_str())))
            .collect();
        if std::fs::read_to_string(file).ok().as_deref() != Some(body.as_str()) {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
            }
            write_atomically(file, body.as_bytes(), 0o644)?;
            report.config_changed = true;
        }
    }
    let (updated, version) = add_runtime(
        path,
        &text,
        &options.handler,
        options_path.as_deref(),
        options.new_config_version,
    )?;
    report.config_version = version;
    if original.as_deref() == Some(updated.as_str()) {
        return Ok(report);
    }
    report.config_changed = true;
    if let Some(original) = &original {
        let backup = backup_path(path);
        write_atomically(&backup, original.as_bytes(), mode_of(path))?;
        report.backup = Some(backup);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
    }
    write_atomically(path, updated.as_bytes(), mode_of(path))?;
    Ok(report)
}

/// Where the options of `handler` live: `wasmpod-<handler>.toml` beside the config.
pub fn options_file(config: &Path, handler: &str) -> PathBuf {
    config.with_file_name(format!("wasmpod-{handler}.toml"))
}

/// `config.toml` → `config.toml.wasmpod-backup`.
fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".wasmpod-backup");
    path.with_file_name(name)
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777)
}

/// The config `text` with runtime `handler` → our shim, its `options.ConfigPath` naming
/// `options_file` when given; and its version. Pure, so the rules are tested on sample
/// configs.
pub fn add_runtime(
    path: &Path,
    text: &str,
    handler: &str,
    options_file: Option<&Path>,
    new_version: i64,
) -> Result<(String, i64)> {
    let bad = |reason: String| Error::Config {
        path: path.to_owned(),
        reason,
    };
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| bad(e.to_string()))?;
    let version = match doc.get("version") {
        Some(v) => v
            .as_integer()
            .ok_or_else(|| bad("version is not an integer".into()))?,
        None if doc.is_empty() => {
            doc.insert("version", value(new_version));
            new_version
        }
        None => 1,
    };
    let plugin = match version {
        2 => "io.containerd.grpc.v1.cri",
        3 => "io.containerd.cri.v1.runtime",
        1 => {
            return Err(bad(
                "has no `version`, so it is a version 1 config, which wasmpod does not edit: \
                 run `containerd config migrate` (containerd 1.7+) or add `version = 2` and \
                 move the CRI tables under plugins.\"io.containerd.grpc.v1.cri\""
                    .into(),
            ))
        }
        other => {
            return Err(bad(format!(
                "config version {other} is not known (2 and 3 are)"
            )))
        }
    };
    let plugins = table_at(doc.as_table_mut(), "plugins", path)?;
    let cri = table_at(plugins, plugin, path)?;
    let containerd = table_at(cri, "containerd", path)?;
    let runtimes = table_at(containerd, "runtimes", path)?;
    let runtime = table_at(runtimes, handler, path)?;
    set_if_different(runtime, "runtime_type", RUNTIME_TYPE);
    for key in ["pod_annotations", "container_annotations"] {
        let mut present: Vec<String> = runtime
            .get(key)
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !present.iter().any(|a| a == ANNOTATIONS) {
            present.push(ANNOTATIONS.to_owned());
            runtime.insert(key, value(present.into_iter().collect::<Array>()));
        }
    }
    if let Some(file) = options_file {
        let table = table_at(runtime, "options", path)?;
        set_if_different(table, "ConfigPath", &file.to_string_lossy());
    }
    Ok((doc.to_string(), version))
}

/// The table under `key`, created (as an implicit table, so no empty header is written)
/// when missing; an error when `key` holds something else.
fn table_at<'a>(
    parent: &'a mut dyn TableLike,
    key: &str,
    path: &Path,
) -> Result<&'a mut dyn TableLike> {
    let item = parent.entry(key).or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    let kind = item.type_name();
    item.as_table_like_mut().ok_or_else(|| Error::Config {
        path: path.to_owned(),
        reason: format!("{key} is a {kind}, not a table"),
    })
}

/// Sets `key` to the string `new` unless it already holds it (in whatever quoting).
fn set_if_different(table: &mut dyn TableLike, key: &str, new: &str) {
    if table.get(key).and_then(Item::as_str) != Some(new) {
        table.insert(key, value(new));
    }
}

/// Copies `shim` into `bin_dir` unless the same bytes are already there; returns the
/// destination when it wrote one.
fn install_shim(shim: &Path, bin_dir: &Path) -> Result<Option<PathBuf>> {
    let bytes = std::fs::read(shim).map_err(Error::io(shim))?;
    let dest = bin_dir.join(SHIM_BINARY);
    if std::fs::read(&dest).is_ok_and(|old| old == bytes) {
        return Ok(None);
    }
    std::fs::create_dir_all(bin_dir).map_err(Error::io(bin_dir))?;
    write_atomically(&dest, &bytes, 0o755)?;
    Ok(Some(dest))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`
/// (a running shim keeps its old inode).
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(Error::io(path))
}

#[cfg(test)]
mod tests;
