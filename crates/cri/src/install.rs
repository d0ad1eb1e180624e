//! The node installer: puts `containerd-shim-wasm-v1` where containerd finds it and adds
//! the `wasm` runtime handler to containerd's config (version 2 for containerd 1.6/1.7,
//! version 3 for 2.0–2.2, version 4 — the same CRI tables as 3 — for 2.3+).
//!
//! Where the config imports a drop-in directory (`imports = ['/etc/containerd/conf.d/*.toml']`,
//! the default of containerd 2.3), the handler goes into a file of its own there,
//! `wasmpod-<handler>.toml`, and the main config is not touched; otherwise the main config
//! is edited in place. Either way comments and order are kept, nothing is written when the
//! file already says the same, and the previous file is kept as a backup.

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
    /// 1.6/1.7, 3 for 2.0–2.2, 4 for 2.3+).
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
    /// The file that holds the handler: the main config, or the drop-in file.
    pub config_file: PathBuf,
    /// Whether [`Self::config_file`] is a drop-in file the main config imports.
    pub drop_in: bool,
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
    let main = read_config(&options.config)?;
    let (path, original, version) =
        match drop_in_file(&options.config, main.as_deref(), &options.handler)? {
            Some((file, version)) => {
                report.drop_in = true;
                let text = read_config(&file)?;
                (file, text, version)
            }
            None => (options.config.clone(), main, options.new_config_version),
        };
    let path = &path;
    report.config_file = path.clone();
    let text = original.clone().unwrap_or_default();
    let options_path = (!options.runtime_options.is_empty())
        .then(|| options_file(&options.config, &options.handler));
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
        version,
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

/// The text of config file `path`; `None` when there is none.
fn read_config(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// The drop-in file for `handler` and the version it is written in, when the main config
/// at `path` (text `main`) imports a directory of drop-ins and does not already define
/// the handler itself (an earlier install edited it in place: that entry is kept up to
/// date instead). Imports are resolved against the main config's directory, as
/// containerd does; the first whose pattern takes `wasmpod-<handler>.toml` is used.
pub fn drop_in_file(
    path: &Path,
    main: Option<&str>,
    handler: &str,
) -> Result<Option<(PathBuf, i64)>> {
    let Some(text) = main.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let bad = |reason: String| Error::Config {
        path: path.to_owned(),
        reason,
    };
    let doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| bad(e.to_string()))?;
    let version = config_version(&doc, path)?;
    let defined = doc
        .get("plugins")
        .and_then(|p| p.get(cri_plugin(version)))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get(handler))
        .is_some();
    if defined {
        return Ok(None);
    }
    let name = drop_in_name(handler);
    let base = path.parent().unwrap_or(Path::new("."));
    let imports = doc.get("imports").and_then(Item::as_array);
    for import in imports.into_iter().flatten().filter_map(|v| v.as_str()) {
        let import = base.join(import);
        let (Some(dir), Some(pattern)) = (import.parent(), import.file_name()) else {
            continue;
        };
        let pattern = pattern.to_string_lossy();
        let dir_is_plain = !dir.to_string_lossy().contains(['*', '?', '[']);
        if dir_is_plain && pattern.contains(['*', '?']) && glob_matches(&pattern, &name) {
            return Ok(Some((dir.join(&name), version)));
        }
    }
    Ok(None)
}

/// `wasmpod-<handler>.toml`: the drop-in file of a handler.
fn drop_in_name(handler: &str) -> String {
    format!("wasmpod-{handler}.toml")
}

/// Whether `name` matches the glob `pattern` of `*` and `?` (a pattern with a bracket
/// expression matches nothing here: the installer does not guess at one).
fn glob_matches(pattern: &str, name: &str) -> bool {
    if pattern.contains('[') {
        return false;
    }
    fn matches(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => matches(&p[1..], n) || (!n.is_empty() && matches(p, &n[1..])),
            (Some('?'), Some(_)) => matches(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => matches(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    matches(&p, &n)
}

/// The version of config `doc`: its `version` key (a file without one is version 1).
fn config_version(doc: &DocumentMut, path: &Path) -> Result<i64> {
    let bad = |reason: String| Error::Config {
        path: path.to_owned(),
        reason,
    };
    let version = match doc.get("version") {
        Some(v) => v
            .as_integer()
            .ok_or_else(|| bad("version is not an integer".into()))?,
        None => 1,
    };
    match version {
        2..=4 => Ok(version),
        1 => Err(bad(
            "has no `version`, so it is a version 1 config, which wasmpod does not edit: \
             run `containerd config migrate` (containerd 1.7+) or add `version = 2` and \
             move the CRI tables under plugins.\"io.containerd.grpc.v1.cri\""
                .into(),
        )),
        other => Err(bad(format!(
            "config version {other} is not known (2, 3 and 4 are)"
        ))),
    }
}

/// The plugin whose `containerd.runtimes` table holds runtime handlers in a config of
/// `version` (3 and 4 share their CRI tables).
fn cri_plugin(version: i64) -> &'static str {
    if version >= 3 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    }
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
    let version = if doc.get("version").is_none() && doc.is_empty() {
        doc.insert("version", value(new_version));
        new_version
    } else {
        config_version(&doc, path)?
    };
    let plugin = cri_plugin(version);
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
