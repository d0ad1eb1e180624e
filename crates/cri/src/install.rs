//! The node installer: puts `containerd-shim-wasm-v1` where containerd finds it and adds
//! the `wasm` runtime handler to containerd's config (version 2 for containerd 1.6/1.7,
//! version 3 for 2.0–2.2, version 4 — the same CRI tables as 3 — for 2.3+); [`uninstall`]
//! takes both away again.
//!
//! Where the config imports a drop-in directory (`imports = ['/etc/containerd/conf.d/*.toml']`,
//! the default of containerd 2.3), the handler goes into a file of its own there,
//! `wasmpod-<handler>.toml`, and the main config is not touched; otherwise the main config
//! is edited in place. Either way comments and order are kept, nothing is written when the
//! file already says the same, and the config as it was before wasmpod first changed it is
//! kept once, as `config.toml.wasmpod-orig`. k3s and RKE2 regenerate their `config.toml`
//! from a Go template: there the handler goes into `config.toml.tmpl` (or containerd 2.x's
//! `config-v3.toml.tmpl`) as a block of its own after `{{ template "base" . }}`.
//!
//! Paths are the host's, as containerd sees them; under a DaemonSet, where the host's `/`
//! is mounted at (say) `/host`, [`InstallOptions::host_root`] names that mount and the
//! files are reached through it. A change leaves a restart pending (a marker beside the
//! config) until [`restarted`] records that containerd was restarted, so a failed restart
//! is retried by the next run.

use std::io::{BufRead, BufReader, Write};
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
    /// containerd's config file as containerd sees it (`/etc/containerd/config.toml`);
    /// created when missing. A relative path is taken from the current directory (an
    /// error under [`Self::host_root`]).
    pub config: PathBuf,
    /// The runtime handler name (RuntimeClass `handler`), `wasm` by default.
    pub handler: String,
    /// The handler's options (`isolation = "process"`, `grouping = "node"`): written to
    /// [`options_file`] beside the config, which the handler's `options.ConfigPath` names
    /// (the one option key every containerd since 1.6 passes to a shim).
    pub runtime_options: Vec<(String, String)>,
    /// The shim binary to install, a path of this process's filesystem; `None` installs
    /// no binary (config only).
    pub shim: Option<PathBuf>,
    /// Where the shim goes: a directory on containerd's PATH (`/usr/local/bin`), as the
    /// host sees it.
    pub bin_dir: PathBuf,
    /// The config version to write when the file is missing or empty (2 for containerd
    /// 1.6/1.7, 3 for 2.0–2.2, 4 for 2.3+).
    pub new_config_version: i64,
    /// Where the host's root directory is mounted in this process's filesystem, when the
    /// installer runs in a container (`/host`); `None`: this is the host.
    pub host_root: Option<PathBuf>,
    /// Replace a handler of the same name that runs another runtime (otherwise an error).
    pub force: bool,
}

/// What an install changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallReport {
    /// The shim binary was written (new or different), at this host path.
    pub shim_installed: Option<PathBuf>,
    /// The config was rewritten.
    pub config_changed: bool,
    /// Where the original config was saved, when this run saved it (once, the first time
    /// wasmpod changed the file).
    pub backup: Option<PathBuf>,
    /// The config version found (or written).
    pub config_version: i64,
    /// The file that holds the handler (host path): the main config, the drop-in file or
    /// the k3s template.
    pub config_file: PathBuf,
    /// Whether [`Self::config_file`] is a drop-in file the main config imports.
    pub drop_in: bool,
    /// Whether [`Self::config_file`] is a k3s/RKE2 template.
    pub template: bool,
    /// An earlier run changed something and containerd has not been restarted since.
    pub restart_pending: bool,
}

impl InstallReport {
    /// Whether containerd must be restarted to see the change (this run's or an earlier
    /// one's whose restart failed or was skipped).
    pub fn needs_restart(&self) -> bool {
        self.shim_installed.is_some() || self.config_changed || self.restart_pending
    }
}

/// Host paths and the files behind them.
#[derive(Debug, Clone)]
struct Host {
    root: Option<PathBuf>,
}

impl Host {
    fn of(options: &InstallOptions) -> Self {
        Self {
            root: options.host_root.clone(),
        }
    }

    /// `path` as an absolute host path: under a host root it must be absolute already
    /// (`what` names the flag in the error); otherwise it is taken from the current
    /// directory.
    fn absolute(&self, path: &Path, what: &str) -> Result<PathBuf> {
        if path.is_absolute() {
            return Ok(path.to_owned());
        }
        if self.root.is_some() {
            return Err(Error::Config {
                path: path.to_owned(),
                reason: format!(
                    "{what} must be an absolute path on the host (it is written into containerd's config as it is)"
                ),
            });
        }
        let absolute = std::path::absolute(path).map_err(Error::io(path))?;
        // `..` resolved where the directory exists, so that containerd's config names the
        // file plainly.
        match (absolute.parent(), absolute.file_name()) {
            (Some(dir), Some(name)) => Ok(dir
                .canonicalize()
                .map_or_else(|_| absolute.clone(), |dir| dir.join(name))),
            _ => Ok(absolute),
        }
    }

    /// Where host path `path` is in this process's filesystem. Under a host root it is
    /// resolved as the host would, inside the root: an absolute link starts again at the
    /// root, `..` stops there as it does at `/`, and a relative link that climbs above
    /// the root is refused, so nothing is read or written outside it.
    fn local(&self, path: &Path) -> Result<PathBuf> {
        match &self.root {
            Some(root) => in_root(root, path),
            None => Ok(path.to_owned()),
        }
    }
}

/// `path` (a host path) resolved inside `root`; see [`Host::local`].
fn in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    const MAX_LINKS: usize = 40;
    let refuse = |reason: String| Error::Config {
        path: path.to_owned(),
        reason,
    };
    // A path's names and `..`s, without its `/` and `.`s.
    fn steps(path: &Path) -> impl DoubleEndedIterator<Item = std::ffi::OsString> + '_ {
        path.components().filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
    }
    let mut pending: std::collections::VecDeque<std::ffi::OsString> = steps(path).collect();
    // The components resolved so far, below the root.
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            // As at the host's `/`: the root's parent is the root.
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let local = root.join(&candidate);
        let is_link = std::fs::symlink_metadata(&local).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            resolved = candidate;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(refuse(format!(
                "more than {MAX_LINKS} symbolic links under the host root {}",
                root.display()
            )));
        }
        let target = std::fs::read_link(&local).map_err(Error::io(&local))?;
        if target.is_absolute() {
            // The host's `/` is the root.
            resolved = PathBuf::new();
        } else {
            // A relative link must stay below the root however far it climbs.
            let mut depth = resolved.components().count();
            for c in target.components() {
                match c {
                    Component::ParentDir if depth == 0 => {
                        return Err(refuse(format!(
                            "the link {} points to {}, which leaves the host root {}",
                            Path::new("/").join(&candidate).display(),
                            target.display(),
                            root.display()
                        )))
                    }
                    Component::ParentDir => depth -= 1,
                    Component::Normal(_) => depth += 1,
                    _ => {}
                }
            }
        }
        for step in steps(&target).rev() {
            pending.push_front(step);
        }
    }
    Ok(root.join(resolved))
}

/// Where the handler lives: resolved from the options and the files on the node.
#[derive(Debug)]
struct Target {
    host: Host,
    /// The main config (host path).
    config: PathBuf,
    /// The file that holds the handler (host path) and its current text.
    file: PathBuf,
    text: Option<String>,
    /// Its config version (the one to write, for a missing file).
    version: i64,
    drop_in: bool,
    template: bool,
}

impl Target {
    fn resolve(options: &InstallOptions) -> Result<Self> {
        let host = Host::of(options);
        let mut config = host.absolute(&options.config, "--containerd-config")?;
        let mut main = read_config(&host.local(&config)?)?;
        // k3s and RKE2 regenerate config.toml at every start: their template is the file
        // to change.
        if let Some(text) = &main {
            if is_k3s_generated(text) {
                let version = toml_version(text).unwrap_or(2);
                let name = if version >= 3 {
                    "config-v3.toml.tmpl"
                } else {
                    "config.toml.tmpl"
                };
                config = config.with_file_name(name);
                main = read_config(&host.local(&config)?)?;
            }
        }
        if is_template(&config) {
            let version = template_version(&config);
            return Ok(Self {
                host,
                file: config.clone(),
                config,
                text: main,
                version,
                drop_in: false,
                template: true,
            });
        }
        let drop_in = drop_in_file(&config, main.as_deref(), &options.handler)?;
        let (file, text, version, drop_in) = match drop_in {
            Some((file, version)) => {
                let text = read_config(&host.local(&file)?)?;
                (file, text, version, true)
            }
            None => (config.clone(), main, options.new_config_version, false),
        };
        Ok(Self {
            host,
            config,
            file,
            text,
            version,
            drop_in,
            template: false,
        })
    }

    /// Leaves a restart pending until [`restarted`]: `verb` (install, uninstall) changed
    /// what containerd reads.
    fn mark_restart_pending(&self, handler: &str, verb: &str) -> Result<()> {
        let text =
            format!("containerd has not been restarted since wasmpod {verb} changed its config\n");
        write_atomically(&self.restart_marker(handler)?, text.as_bytes(), 0o644)
    }

    /// The pending-restart marker (local path), beside the main config.
    fn restart_marker(&self, handler: &str) -> Result<PathBuf> {
        self.host.local(
            &self
                .config
                .with_file_name(format!("wasmpod-{handler}.restart-pending")),
        )
    }
}

/// Installs the shim and the runtime handler; see the module doc.
pub fn install(options: &InstallOptions) -> Result<InstallReport> {
    let target = Target::resolve(options)?;
    let host = &target.host;
    let mut report = InstallReport {
        restart_pending: target.restart_marker(&options.handler)?.exists(),
        config_file: target.file.clone(),
        drop_in: target.drop_in,
        template: target.template,
        ..InstallReport::default()
    };
    let options_path = (!options.runtime_options.is_empty())
        .then(|| options_file(&target.config, &options.handler));
    let text = target.text.clone().unwrap_or_default();
    // Everything is checked before anything is written: a refused config leaves the
    // node as it was.
    let (updated, version) = if target.template {
        let updated = add_runtime_to_template(
            &target.file,
            &text,
            &options.handler,
            options_path.as_deref(),
            target.version,
        )?;
        (updated, target.version)
    } else {
        add_runtime(
            &target.file,
            &text,
            &options.handler,
            options_path.as_deref(),
            target.version,
            options.force,
        )?
    };
    report.config_version = version;
    let bin_dir = host.absolute(&options.bin_dir, "--bin-dir")?;
    if let Some(shim) = &options.shim {
        let dest = host.local(&bin_dir.join(SHIM_BINARY))?;
        if install_shim(shim, &dest)? {
            report.shim_installed = Some(bin_dir.join(SHIM_BINARY));
        }
    }
    if let Some(file) = &options_path {
        let body: String = options
            .runtime_options
            .iter()
            .map(|(k, v)| format!("{k} = {}\n", value(v.as_str())))
            .collect();
        let local = host.local(file)?;
        if std::fs::read_to_string(&local).ok().as_deref() != Some(body.as_str()) {
            if let Some(parent) = local.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
            }
            write_atomically(&local, body.as_bytes(), 0o644)?;
            report.config_changed = true;
        }
    }
    if target.text.as_deref() != Some(updated.as_str()) {
        report.config_changed = true;
        let local = host.local(&target.file)?;
        if let Some(original) = &target.text {
            let backup = original_path(&local);
            if !backup.exists() {
                write_atomically(&backup, original.as_bytes(), mode_of(&local))?;
                report.backup = Some(original_path(&target.file));
            }
        }
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        }
        write_atomically(&local, updated.as_bytes(), mode_of(&local))?;
    }
    if report.shim_installed.is_some() || report.config_changed {
        target.mark_restart_pending(&options.handler, "install")?;
    }
    Ok(report)
}

/// Records that containerd was restarted after [`install`] or [`uninstall`]: the pending
/// restart is cleared.
pub fn restarted(options: &InstallOptions) -> Result<()> {
    let target = Target::resolve(options)?;
    remove_if_present(&target.restart_marker(&options.handler)?).map(drop)
}

/// What an uninstall removed (host paths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UninstallReport {
    /// The shim binary, when it was there.
    pub shim_removed: Option<PathBuf>,
    /// Files that held only wasmpod's handler or options, deleted.
    pub files_removed: Vec<PathBuf>,
    /// The config the handler was taken out of, when it was edited.
    pub config_edited: Option<PathBuf>,
    /// Whether a restart is owed (this run's change, or an earlier one's).
    pub restart_pending: bool,
}

impl UninstallReport {
    /// Whether containerd must be restarted.
    pub fn needs_restart(&self) -> bool {
        self.restart_pending
    }
}

/// Takes away what [`install`] added: the handler (its table, drop-in file or template
/// block), its options file and, when `options.shim` is not `None`, the shim binary in
/// `bin_dir`. A handler of the same name that runs another runtime is left alone. The
/// rest of the config — edits made since the install included — is kept; the
/// `.wasmpod-orig` copy stays for reference.
pub fn uninstall(options: &InstallOptions) -> Result<UninstallReport> {
    let target = Target::resolve(options)?;
    let host = &target.host;
    let mut report = UninstallReport::default();
    let mut changed = false;
    if let Some(text) = &target.text {
        let local = host.local(&target.file)?;
        let updated = if target.template {
            remove_template_block(text, &options.handler)
        } else {
            remove_runtime(&target.file, text, &options.handler)?
        };
        if updated != *text {
            changed = true;
            let only_ours =
                updated.trim().is_empty() || (target.drop_in && is_only_version(&updated));
            if only_ours {
                std::fs::remove_file(&local).map_err(Error::io(&local))?;
                report.files_removed.push(target.file.clone());
            } else {
                write_atomically(&local, updated.as_bytes(), mode_of(&local))?;
                report.config_edited = Some(target.file.clone());
            }
        }
    }
    let options_path = options_file(&target.config, &options.handler);
    if remove_if_present(&host.local(&options_path)?)? {
        changed = true;
        report.files_removed.push(options_path);
    }
    if options.shim.is_some() {
        let bin_dir = host.absolute(&options.bin_dir, "--bin-dir")?;
        let shim = bin_dir.join(SHIM_BINARY);
        if remove_if_present(&host.local(&shim)?)? {
            changed = true;
            report.shim_removed = Some(shim);
        }
    }
    if changed {
        target.mark_restart_pending(&options.handler, "uninstall")?;
    }
    report.restart_pending = target.restart_marker(&options.handler)?.exists();
    Ok(report)
}

fn remove_if_present(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Whether config `text` says nothing but its version.
fn is_only_version(text: &str) -> bool {
    text.parse::<DocumentMut>()
        .is_ok_and(|doc| doc.iter().all(|(key, _)| key == "version"))
}

/// The first line k3s and RKE2 write into the config they generate.
fn is_k3s_generated(text: &str) -> bool {
    let first = text.lines().next().unwrap_or_default();
    first.starts_with("# File generated by k3s") || first.starts_with("# File generated by rke2")
}

/// The `version` of a config's text, when it parses.
fn toml_version(text: &str) -> Option<i64> {
    text.parse::<DocumentMut>()
        .ok()?
        .get("version")?
        .as_integer()
}

/// Whether `path` is a Go template (k3s/RKE2's `config.toml.tmpl`).
fn is_template(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tmpl")
}

/// The config version a k3s template renders: `config-v3.toml.tmpl` is containerd 2.x's
/// (version 3 tables), `config.toml.tmpl` 1.7's (version 2).
fn template_version(path: &Path) -> i64 {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name.starts_with("config-v3") {
        3
    } else {
        2
    }
}

/// The lines that open and close the handler's block in a k3s template.
fn template_markers(handler: &str) -> (String, String) {
    (
        format!("# BEGIN wasmpod handler {handler:?} (written by wasmpod install; wasmpod uninstall removes it)"),
        format!("# END wasmpod handler {handler:?}"),
    )
}

/// A k3s/RKE2 template with the handler's block (replacing an earlier one) at its end; a
/// new template starts from k3s's `{{ template "base" . }}`. A template that defines the
/// handler itself, outside the block, is refused (even with `--force`: a second table of
/// the same name would break containerd's config).
pub fn add_runtime_to_template(
    path: &Path,
    text: &str,
    handler: &str,
    options_file: Option<&Path>,
    version: i64,
) -> Result<String> {
    let rest = remove_template_block(text, handler);
    let header = |quoted: &str| format!("runtimes.{quoted}]");
    let defines = rest.lines().any(|l| {
        let l = l.trim();
        l.starts_with('[')
            && (l.ends_with(&header(handler))
                || l.ends_with(&header(&format!("{handler:?}")))
                || l.ends_with(&header(&format!("'{handler}'"))))
    });
    if defines {
        return Err(Error::Config {
            path: path.to_owned(),
            reason: format!(
                "defines runtimes.{handler} itself: take that table out (or name another handler with --handler)"
            ),
        });
    }
    let (tables, _) = add_runtime(
        path,
        &format!("version = {version}\n"),
        handler,
        options_file,
        version,
        false,
    )?;
    let tables = tables
        .lines()
        .skip_while(|l| l.starts_with("version") || l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let (begin, end) = template_markers(handler);
    let mut out = if rest.trim().is_empty() {
        "{{ template \"base\" . }}\n".to_owned()
    } else {
        format!("{}\n", rest.trim_end_matches('\n'))
    };
    out.push_str(&format!("\n{begin}\n{tables}\n{end}\n"));
    Ok(out)
}

/// Template `text` without the handler's block (and the blank line before it).
fn remove_template_block(text: &str, handler: &str) -> String {
    let (begin, end) = template_markers(handler);
    let Some(start) = text.find(&begin) else {
        return text.to_owned();
    };
    let Some(stop) = text[start..].find(&end).map(|i| start + i + end.len()) else {
        return text.to_owned();
    };
    let before = text[..start].trim_end_matches('\n');
    let after = text[stop..].trim_start_matches('\n');
    match (before.is_empty(), after.is_empty()) {
        (true, _) => after.to_owned(),
        (false, true) => format!("{before}\n"),
        (false, false) => format!("{before}\n\n{after}"),
    }
}

/// The largest config file the installer reads: containerd's own are a few KiB, and the
/// installer runs in an init container with a 64 MiB memory limit.
pub const MAX_CONFIG: u64 = 1 << 20;

/// The text of config file `path`; `None` when there is none. Only a regular file of at
/// most [`MAX_CONFIG`] bytes is read, and its type is looked at before it is opened (a
/// named pipe there cannot hold the installer).
fn read_config(path: &Path) -> Result<Option<String>> {
    use std::io::Read as _;
    let bad = |reason: String| Error::Config {
        path: path.to_owned(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path)(e)),
    };
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > MAX_CONFIG {
        return Err(bad(format!(
            "{} bytes, more than a containerd config may be ({MAX_CONFIG} bytes)",
            meta.len()
        )));
    }
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut text = String::new();
    file.take(MAX_CONFIG + 1)
        .read_to_string(&mut text)
        .map_err(Error::io(path))?;
    if text.len() as u64 > MAX_CONFIG {
        return Err(bad(format!(
            "more than a containerd config may be ({MAX_CONFIG} bytes)"
        )));
    }
    Ok(Some(text))
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

/// `config.toml` → `config.toml.wasmpod-orig`: the file as it was before wasmpod first
/// changed it.
pub fn original_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".wasmpod-orig");
    path.with_file_name(name)
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777)
}

/// The config `text` with runtime `handler` → our shim, its `options.ConfigPath` naming
/// `options_file` when given; and its version. A handler of that name that runs another
/// runtime is an error unless `force` (then it is replaced whole). Pure, so the rules are
/// tested on sample configs.
pub fn add_runtime(
    path: &Path,
    text: &str,
    handler: &str,
    options_file: Option<&Path>,
    new_version: i64,
    force: bool,
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
    let other = runtimes
        .get(handler)
        .and_then(|r| r.get("runtime_type"))
        .and_then(Item::as_str)
        .filter(|t| *t != RUNTIME_TYPE)
        .map(str::to_owned);
    if let Some(other) = other {
        if !force {
            return Err(bad(format!(
                "runtime handler {handler:?} already runs {other}: pass --force to replace it, or name another handler with --handler"
            )));
        }
        runtimes.remove(handler);
    }
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

/// Config `text` without runtime `handler`, when it is ours (another runtime's handler of
/// that name is left alone), and without the tables that held only it. Pure, as
/// [`add_runtime`].
pub fn remove_runtime(path: &Path, text: &str, handler: &str) -> Result<String> {
    if text.trim().is_empty() {
        return Ok(text.to_owned());
    }
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let version = config_version(&doc, path)?;
    let keys = ["plugins", cri_plugin(version), "containerd", "runtimes"];
    let Some(runtimes) = nested(doc.as_table_mut(), &keys) else {
        return Ok(text.to_owned());
    };
    let ours = runtimes
        .get(handler)
        .and_then(|r| r.get("runtime_type"))
        .and_then(Item::as_str)
        == Some(RUNTIME_TYPE);
    if !ours {
        return Ok(text.to_owned());
    }
    runtimes.remove(handler);
    // Innermost first: a table left empty by the removal goes too.
    for depth in (1..=keys.len()).rev() {
        let (parent, last) = (&keys[..depth - 1], keys[depth - 1]);
        let Some(table) = nested(doc.as_table_mut(), parent) else {
            break;
        };
        let empty = table
            .get(last)
            .and_then(Item::as_table_like)
            .is_some_and(|t| t.is_empty());
        if !empty {
            break;
        }
        table.remove(last);
    }
    Ok(doc.to_string())
}

/// The table at `keys` under `table`, when each is a table.
fn nested<'a>(table: &'a mut dyn TableLike, keys: &[&str]) -> Option<&'a mut dyn TableLike> {
    let mut at = table;
    for key in keys {
        at = at.get_mut(key)?.as_table_like_mut()?;
    }
    Some(at)
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

/// Copies `shim` into `bin_dir` unless the same bytes are already there; returns whether
/// it wrote one. Both files are streamed (compared a block at a time, copied by the
/// kernel), so memory stays bounded whatever the binary's size: the installer runs in an
/// init container with a 64 MiB limit.
fn install_shim(shim: &Path, dest: &Path) -> Result<bool> {
    let bin_dir = dest.parent().unwrap_or(Path::new("."));
    if dest.is_file() && same_contents(shim, dest)? {
        return Ok(false);
    }
    std::fs::create_dir_all(bin_dir).map_err(Error::io(bin_dir))?;
    let mut source = std::fs::File::open(shim).map_err(Error::io(shim))?;
    write_atomically_with(dest, 0o755, |file| {
        std::io::copy(&mut source, file).map(drop)
    })?;
    Ok(true)
}

/// Whether files `a` and `b` hold the same bytes (`b` missing: no), read a block at a time.
fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| std::fs::File::open(p).map_err(Error::io(p));
    let fa = open(a)?;
    let fb = match std::fs::File::open(b) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(b)(e)),
    };
    let len = |f: &std::fs::File, p: &Path| f.metadata().map(|m| m.len()).map_err(Error::io(p));
    if len(&fa, a)? != len(&fb, b)? {
        return Ok(false);
    }
    const BLOCK: usize = 256 * 1024;
    let (mut ra, mut rb) = (
        BufReader::with_capacity(BLOCK, fa),
        BufReader::with_capacity(BLOCK, fb),
    );
    loop {
        let ba = ra.fill_buf().map_err(Error::io(a))?;
        let bb = rb.fill_buf().map_err(Error::io(b))?;
        let n = ba.len().min(bb.len());
        if n == 0 {
            return Ok(ba.is_empty() && bb.is_empty());
        }
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        ra.consume(n);
        rb.consume(n);
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`
/// (a running shim keeps its old inode).
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomically_with(path, mode, |file| file.write_all(bytes))
}

/// [`write_atomically`] of what `fill` writes.
fn write_atomically_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        fill(&mut file)?;
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
