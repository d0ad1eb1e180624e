//! [`RunPolicy`]: an OCI runtime spec turned into what the engine is given.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptionsExt as _};
use oci_spec::runtime::{Mount, Spec};
use wasm_engine::{KillHandle, Limits, NetworkPolicy, Preopen, RunConfig, Stdio};

use crate::error::{Error, Result};
use crate::paths;

/// Something in the spec that the guest cannot be given; the run goes on without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The spec field at fault, as the OCI runtime spec names it (`mounts[/proc]`,
    /// `linux.resources.cpu`).
    pub field: String,
    /// What happens instead.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What one container is allowed: the answer to "what may this guest see and use?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPolicy {
    entrypoint: String,
    /// Where `process.args[0]` lives on the host; `None` when the program comes from
    /// elsewhere (a Wasm OCI artifact's layer).
    entrypoint_host: Option<(PathBuf, String)>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    preopens: Vec<Preopen>,
    limits: Limits,
    /// `linux.resources.cpu.quota` and `.period`, as the guest's CPU budget.
    cpu_budget: Option<(Duration, Option<Duration>)>,
    /// Sockets and outgoing requests; nothing until [`set_network`](Self::set_network).
    network: NetworkPolicy,
    warnings: Vec<Warning>,
}

impl RunPolicy {
    /// Decides the policy for `spec`, whose relative paths (the root filesystem) are
    /// relative to `bundle`.
    ///
    /// Errors name the part at fault: no `process.args`, a root filesystem or bind-mount
    /// source that is missing, or an entrypoint that is not a file inside the container.
    pub fn from_spec(spec: &Spec, bundle: &Path) -> Result<Self> {
        Self::build(spec, bundle, true)
    }

    /// As [`from_spec`](Self::from_spec), for a program that does not come from the
    /// container's files (the wasm layer of a Wasm OCI artifact): `process.args[0]` is only
    /// the name the guest sees, and [`read_entrypoint`](Self::read_entrypoint) refuses.
    pub fn from_spec_with_program(spec: &Spec, bundle: &Path) -> Result<Self> {
        Self::build(spec, bundle, false)
    }

    fn build(spec: &Spec, bundle: &Path, entrypoint_in_files: bool) -> Result<Self> {
        let mut warnings = Vec::new();
        let mut warn = |field: &str, message: String| {
            warnings.push(Warning {
                field: field.to_owned(),
                message,
            });
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::Spec("no `process` section".into()))?;
        let args = process.args().clone().unwrap_or_default();
        let Some(entrypoint) = args.first().cloned() else {
            return Err(Error::Spec(
                "`process.args` is empty: nothing names the wasm file to run".into(),
            ));
        };

        let mut env = Vec::new();
        for entry in process.env().iter().flatten() {
            match entry.split_once('=') {
                Some((k, v)) if !k.is_empty() => env.push((k.to_owned(), v.to_owned())),
                _ => warn(
                    "process.env",
                    format!("entry {entry:?} is not KEY=VALUE; left out"),
                ),
            }
        }

        let cwd_raw = process.cwd().to_string_lossy().into_owned();
        let cwd = paths::normalize(&cwd_raw).ok_or_else(|| {
            Error::Spec(format!("`process.cwd` {cwd_raw:?} is not an absolute path"))
        })?;

        if cwd != "/" {
            warn(
                "process.cwd",
                format!(
                    "{cwd} is offered as wasi:cli/environment's initial-cwd, but WASI \
                     preview 1 has no working directory: programs built with wasi-libc \
                     resolve relative paths from /"
                ),
            );
        }

        let mut preopens = Vec::new();
        match spec.root() {
            Some(root) => {
                let path = if root.path().is_absolute() {
                    root.path().clone()
                } else {
                    bundle.join(root.path())
                };
                if !path.is_dir() {
                    return Err(Error::Root {
                        path,
                        reason: "not a directory".into(),
                    });
                }
                preopens.push(Preopen {
                    host: path,
                    guest: "/".into(),
                    readonly: root.readonly().unwrap_or(false),
                });
            }
            // A program from elsewhere (an artifact's layer, a bare file) needs none.
            None if entrypoint_in_files => warn(
                "root",
                "no root filesystem: the guest sees only its mounts".into(),
            ),
            None => {}
        }
        for mount in spec.mounts().iter().flatten() {
            if let Some(preopen) = mount_preopen(mount, &mut warn)? {
                // A later mount at the same place replaces an earlier one; a bind mount
                // at `/` is the guest's root (`wasmtime run --dir DIR::/`).
                preopens.retain(|p: &Preopen| p.guest != preopen.guest);
                preopens.push(preopen);
            }
        }
        // The root is the first preopen (fd 3), wherever it came from.
        preopens.sort_by_key(|p| p.guest != "/");

        // `linux.resources.memory.limit` is a memory cgroup's limit: a guest past it is
        // OOM-killed (137), as the kernel would kill a process, so the runtime reports it.
        let mut limits = Limits::default().oom_kill(true);
        limits.memory = memory_limit(spec);
        let cpu_budget = cpu_budget(spec);
        unhonoured(spec, &mut warn);

        let guest_entry = if entrypoint.contains('/') {
            paths::join(&cwd, &entrypoint)
        } else {
            search_path(&entrypoint, &env, &cwd, &preopens)
        };
        let entrypoint_host = if entrypoint_in_files {
            Some(
                locate(&guest_entry, &preopens).ok_or_else(|| Error::Entrypoint {
                    path: entrypoint.clone(),
                    reason: "outside every directory the container can see".into(),
                })?,
            )
        } else {
            None
        };

        Ok(Self {
            entrypoint,
            entrypoint_host,
            args,
            env,
            cwd,
            preopens,
            limits,
            cpu_budget,
            network: NetworkPolicy::default(),
            warnings,
        })
    }

    /// `process.args[0]` as the spec gives it.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// Arguments, `args[0]` included.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Environment variables.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The guest's working directory (absolute, normalised).
    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    /// Directories the guest sees; nothing else of the host is reachable.
    pub fn preopens(&self) -> &[Preopen] {
        &self.preopens
    }

    /// Memory cap and deadline.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Sets the wall-clock deadline (the spec has no field for it).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.limits.timeout = timeout;
    }

    /// Everything in the spec the guest could not be given.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Reads the wasm file named by `process.args[0]`, resolved inside the container's
    /// directories: a symlink or `..` that would lead out of them is refused. A file of
    /// more than `max_size` bytes (the program size limit) is refused before anything is
    /// read — by its length, and again while reading, should it grow — so a tenant's
    /// sparse 40 GiB file costs nothing.
    pub fn read_entrypoint(&self, max_size: u64) -> Result<Vec<u8>> {
        let (file, len) = self.open_entrypoint()?;
        read_limited(file, len, max_size).map_err(|reason| self.entrypoint_error(reason))
    }

    /// What the file named by `process.args[0]` is, by its first bytes, resolved inside
    /// the container's directories as [`read_entrypoint`](Self::read_entrypoint) resolves
    /// it: a wasm binary, or a program for Linux (ELF, or a `#!` script) that a native
    /// runtime runs.
    pub fn entrypoint_kind(&self) -> Result<EntrypointKind> {
        let (file, _) = self.open_entrypoint()?;
        let mut head = Vec::with_capacity(4);
        file.take(4)
            .read_to_end(&mut head)
            .map_err(|e| self.entrypoint_error(e.to_string()))?;
        Ok(EntrypointKind::of(&head))
    }

    fn entrypoint_error(&self, reason: String) -> Error {
        Error::Entrypoint {
            path: self.entrypoint.clone(),
            reason,
        }
    }

    /// Opens the entrypoint, a regular file inside the container's directories; its length.
    fn open_entrypoint(&self) -> Result<(cap_std::fs::File, u64)> {
        let err = |reason: String| self.entrypoint_error(reason);
        let Some((host_dir, rel)) = &self.entrypoint_host else {
            return Err(err(
                "the program does not come from the container's files".into()
            ));
        };
        let dir = Dir::open_ambient_dir(host_dir, ambient_authority())
            .map_err(|e| err(format!("cannot open {}: {e}", host_dir.display())))?;
        // Links in the image mean what they would inside the container: an absolute
        // target starts from its root (cap-std refuses to follow one at all).
        let rel = resolve_in_root(&dir, Path::new(rel)).map_err(|e| err(e.to_string()))?;
        // What the tenant put there is looked at before it is opened: a FIFO would block
        // the open for good, and a device's open can act (a watchdog), so neither is.
        let io_err = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => err("no such file in the container".into()),
            _ => err(e.to_string()),
        };
        let kind = dir.symlink_metadata(&rel).map_err(io_err)?.file_type();
        if !kind.is_file() {
            return Err(err(format!("not a regular file ({})", file_kind(&kind))));
        }
        // Should it be swapped for something else in between: no link is followed, and a
        // FIFO's open returns at once; the descriptor's own type is checked again.
        let mut options = cap_std::fs::OpenOptions::new();
        options
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY);
        let file = dir.open_with(&rel, &options).map_err(io_err)?;
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err(format!(
                "not a regular file ({}, since it was looked at)",
                file_kind(&meta.file_type())
            )));
        }
        Ok((file, meta.len()))
    }

    /// Sets what the guest may do on the network (see [`NetworkPlan`](crate::NetworkPlan)).
    pub fn set_network(&mut self, network: NetworkPolicy) {
        self.network = network;
    }

    /// What the guest may do on the network.
    pub fn network(&self) -> &NetworkPolicy {
        &self.network
    }

    /// The engine's run configuration for this policy.
    pub fn run_config(&self, stdio: Stdio, kill: KillHandle) -> RunConfig {
        let cpu = wasm_engine::CpuMeter::default();
        if let Some((quota, period)) = self.cpu_budget {
            cpu.set_budget(Some(quota), period);
        }
        let mut config = RunConfig::default()
            .args(self.args.clone())
            .stdio(stdio)
            .limits(self.limits.clone())
            .kill(kill)
            .cpu(cpu)
            .network(self.network.clone());
        config.env.clone_from(&self.env);
        config.preopens.clone_from(&self.preopens);
        // `/` is where a WASI guest starts anyway: no initial-cwd, as `wasmtime run`
        // gives none (WASI 0.3's cli-env test asks for exactly that).
        if self.cwd != "/" {
            config = config.cwd(self.cwd.clone());
        }
        config
    }

    /// The warnings that hold at `isolation`: the process level honours the spec's user,
    /// CPU shares, pids limit and block I/O, which the shared level cannot.
    pub fn warnings_at(&self, isolation: crate::Isolation) -> impl Iterator<Item = &Warning> {
        self.warnings.iter().filter(move |w| {
            isolation == crate::Isolation::Shared
                || !matches!(
                    w.field.as_str(),
                    "process.user"
                        | "linux.resources.cpu"
                        | "linux.resources.pids"
                        | "linux.resources.blockIO"
                )
        })
    }
}

/// The kernel filesystems containerd's default spec mounts into every container (and the
/// CRI's `/dev/shm` and cgroup mounts), by destination and type.
const DEFAULT_MOUNTS: &[(&str, &[&str])] = &[
    ("/proc", &["proc"]),
    ("/dev", &["tmpfs"]),
    ("/dev/pts", &["devpts"]),
    ("/dev/shm", &["tmpfs", "shm"]),
    ("/dev/mqueue", &["mqueue"]),
    ("/sys", &["sysfs"]),
    ("/sys/fs/cgroup", &["cgroup", "cgroup2"]),
    ("/run", &["tmpfs"]),
];

/// The files the CRI bind-mounts into every container of a pod.
const DEFAULT_FILE_MOUNTS: &[&str] = &[
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev/termination-log",
];

fn is_default_mount(destination: &str, typ: &str) -> bool {
    DEFAULT_MOUNTS
        .iter()
        .any(|(dest, types)| *dest == destination && types.contains(&typ))
}

/// Turns one OCI mount into a preopen, or a warning when it cannot be one.
fn mount_preopen(mount: &Mount, warn: &mut impl FnMut(&str, String)) -> Result<Option<Preopen>> {
    let dest_raw = mount.destination().to_string_lossy().into_owned();
    let field = format!("mounts[{dest_raw}]");
    let options = mount.options().clone().unwrap_or_default();
    let typ = mount.typ().clone().unwrap_or_default();
    let is_bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
    if !is_bind {
        if is_default_mount(&dest_raw, &typ) {
            // What containerd and the CRI give every container (`ctr run` adds all seven):
            // nothing a guest could use, and nothing anyone asked for, so not worth a warning.
            tracing::debug!(destination = %dest_raw, %typ, "standard container mount: not mounted");
            return Ok(None);
        }
        let typ = if typ.is_empty() { "untyped" } else { &typ };
        warn(
            &field,
            format!("{typ} mounts are not available to WebAssembly guests; not mounted"),
        );
        return Ok(None);
    }
    let destination = paths::normalize(&dest_raw).ok_or_else(|| Error::Mount {
        destination: dest_raw.clone(),
        reason: "the destination is not an absolute path".into(),
    })?;
    let source = mount.source().clone().ok_or_else(|| Error::Mount {
        destination: dest_raw.clone(),
        reason: "a bind mount needs a source".into(),
    })?;
    let meta = std::fs::metadata(&source).map_err(|e| Error::Mount {
        destination: dest_raw.clone(),
        reason: format!("source {}: {e}", source.display()),
    })?;
    if !meta.is_dir() {
        if DEFAULT_FILE_MOUNTS.contains(&dest_raw.as_str()) {
            tracing::debug!(destination = %dest_raw, "the CRI's file mount: not mounted");
            return Ok(None);
        }
        warn(
            &field,
            format!(
                "{} is a file; WASI can only give directories to a guest; not mounted",
                source.display()
            ),
        );
        return Ok(None);
    }
    for option in &options {
        if !matches!(
            option.as_str(),
            "bind"
                | "rbind"
                | "ro"
                | "rw"
                | "nosuid"
                | "nodev"
                | "noexec"
                | "private"
                | "rprivate"
                | "slave"
                | "rslave"
                | "shared"
                | "rshared"
                | "relatime"
                | "norelatime"
                | "strictatime"
                | "noatime"
        ) {
            warn(&field, format!("mount option {option:?} is not honoured"));
        }
    }
    Ok(Some(Preopen {
        host: source,
        guest: destination,
        readonly: options.iter().any(|o| o == "ro"),
    }))
}

/// The memory cap from `linux.resources.memory.limit`; zero or negative means none.
fn memory_limit(spec: &Spec) -> Option<u64> {
    let limit = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .memory()
        .as_ref()?
        .limit()?;
    u64::try_from(limit).ok().filter(|l| *l > 0)
}

/// The CPU budget from `linux.resources.cpu.quota` (microseconds per `period`); zero or
/// negative means none.
fn cpu_budget(spec: &Spec) -> Option<(Duration, Option<Duration>)> {
    let cpu = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .cpu()
        .as_ref()?;
    let quota = u64::try_from(cpu.quota()?).ok().filter(|q| *q > 0)?;
    let period = cpu.period().filter(|p| *p > 0).map(Duration::from_micros);
    Some((Duration::from_micros(quota), period))
}

/// Warns about every field that asks for something a guest cannot be given.
fn unhonoured(spec: &Spec, warn: &mut impl FnMut(&str, String)) {
    if let Some(process) = spec.process() {
        if process.terminal() == Some(true) {
            warn(
                "process.terminal",
                "wasm guests get no TTY; stdio is used as given".into(),
            );
        }
        let user = process.user();
        if user.uid() != 0 || user.gid() != 0 || user.additional_gids().is_some() {
            warn(
                "process.user",
                format!(
                    "WASI has no users: files are accessed as the runtime's user, not uid {} gid {}",
                    user.uid(),
                    user.gid()
                ),
            );
        }
        for rlimit in process.rlimits().iter().flatten() {
            warn(
                "process.rlimits",
                format!("{:?} is not enforced on wasm guests", rlimit.typ()),
            );
        }
        if process.oom_score_adj().is_some() {
            warn(
                "process.oomScoreAdj",
                "applies to processes; the guest shares its runtime's process".into(),
            );
        }
    }
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        warn(
            "hostname",
            format!("WASI has no hostname; {hostname:?} is not visible to the guest"),
        );
    }
    if spec.hooks().is_some() {
        warn("hooks", "hooks are not run for wasm containers".into());
    }
    let Some(linux) = spec.linux() else { return };
    if linux.sysctl().as_ref().is_some_and(|s| !s.is_empty()) {
        warn("linux.sysctl", "sysctls do not apply to wasm guests".into());
    }
    let Some(res) = linux.resources() else { return };
    if let Some(mem) = res.memory() {
        for (name, set) in [
            ("reservation", mem.reservation().is_some_and(|v| v > 0)),
            ("kernel", mem.kernel().is_some_and(|v| v > 0)),
            ("kernelTCP", mem.kernel_tcp().is_some_and(|v| v > 0)),
            ("swappiness", mem.swappiness().is_some()),
            ("disableOOMKiller", mem.disable_oom_killer() == Some(true)),
        ] {
            if set {
                warn(
                    &format!("linux.resources.memory.{name}"),
                    "not enforced; only memory.limit is".into(),
                );
            }
        }
    }
    // A quota is enforced in both levels (a CPU budget in the shared one).
    let cpu_set = res.cpu().as_ref().is_some_and(|c| {
        c.shares().is_some()
            || c.cpus().as_ref().is_some_and(|s| !s.is_empty())
            || c.realtime_runtime().is_some()
    });
    for (name, set) in [
        ("cpu", cpu_set),
        ("pids", res.pids().is_some()),
        ("blockIO", res.block_io().is_some()),
        (
            "hugepageLimits",
            res.hugepage_limits()
                .as_ref()
                .is_some_and(|h| !h.is_empty()),
        ),
        ("network", res.network().is_some()),
        ("rdma", res.rdma().as_ref().is_some_and(|r| !r.is_empty())),
        (
            "unified",
            res.unified().as_ref().is_some_and(|u| !u.is_empty()),
        ),
    ] {
        if set {
            // A shared-level guest's tasks and block I/O are the shim's: only the process
            // level's cgroup of its own limits them.
            let why = match name {
                "pids" | "blockIO" => {
                    "enforced at the process isolation level only (annotation \
                     wasmpod.io/isolation=process)"
                }
                _ => "not enforced for wasm guests in this isolation level",
            };
            warn(&format!("linux.resources.{name}"), why.into());
        }
    }
}

/// Looks a bare program name up in `PATH`, then in the working directory.
fn search_path(name: &str, env: &[(String, String)], cwd: &str, preopens: &[Preopen]) -> String {
    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        let candidate = paths::join(dir, name);
        if let Some((host, rel)) = locate(&candidate, preopens) {
            // Links resolve as inside the container (`/bin/sh -> /bin/busybox`).
            let found = Dir::open_ambient_dir(&host, ambient_authority()).is_ok_and(|d| {
                resolve_in_root(&d, Path::new(&rel))
                    .is_ok_and(|r| d.metadata(&r).is_ok_and(|m| m.is_file()))
            });
            if found {
                return candidate;
            }
        }
    }
    paths::join(cwd, name)
}

/// The preopen holding a guest path (the deepest one), and the path relative to it.
fn locate(guest: &str, preopens: &[Preopen]) -> Option<(PathBuf, String)> {
    preopens
        .iter()
        .filter_map(|p| paths::strip(guest, &p.guest).map(|rel| (p, rel)))
        .max_by_key(|(p, _)| p.guest.len())
        .map(|(p, rel)| (p.host.clone(), rel.to_owned()))
}

/// `path` inside `root` with every symbolic link resolved as it would be with `root` as
/// the file system's root: an absolute target starts again from `root`, `..` stops at it.
/// The result names no link; opening it through `root` cannot leave it either way.
fn resolve_in_root(root: &Dir, path: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    /// As Linux's limit on links followed while resolving one path.
    const MAX_LINKS: usize = 40;
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut done = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&part);
        let is_link = root
            .symlink_metadata(&next)
            .is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            done = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(std::io::Error::other(format!(
                "more than {MAX_LINKS} symbolic links on the way"
            )));
        }
        let target = root.read_link_contents(&next)?;
        if target.is_absolute() {
            done = PathBuf::new();
        }
        for c in target.components().rev() {
            match c {
                Component::Normal(p) => todo.push(p.to_owned()),
                Component::ParentDir => todo.push("..".into()),
                _ => {}
            }
        }
    }
    Ok(done)
}

/// Reads the program file at `path` (a bare `.wasm`/`.wat` run by `wasmpod run`) unless
/// it holds more than `max` bytes: refused from its length first, and cut at the limit
/// while reading.
pub fn read_file_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    let err = |reason: String| Error::Entrypoint {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let len = file.metadata().map_err(|e| err(e.to_string()))?.len();
    read_limited(file, len, max).map_err(err)
}

/// Reads `file`, whose length is `len`, unless it holds more than `max` bytes.
/// What kind of file `kind` is, for an error.
fn file_kind(kind: &cap_std::fs::FileType) -> &'static str {
    use cap_std::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// What a container's entrypoint is, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrypointKind {
    /// A wasm module or component (`\0asm`).
    Wasm,
    /// A Linux executable (ELF).
    Elf,
    /// A script for an interpreter (`#!`).
    Script,
    /// Anything else.
    Unknown,
}

impl EntrypointKind {
    /// The kind of a file that starts with `head`.
    pub fn of(head: &[u8]) -> Self {
        if head.starts_with(b"\0asm") {
            Self::Wasm
        } else if head.starts_with(b"\x7fELF") {
            Self::Elf
        } else if head.starts_with(b"#!") {
            Self::Script
        } else {
            Self::Unknown
        }
    }

    /// Whether a native (Linux) runtime runs it rather than the wasm engine.
    pub fn is_native(self) -> bool {
        matches!(self, Self::Elf | Self::Script)
    }
}

fn read_limited(file: impl Read, len: u64, max: u64) -> std::result::Result<Vec<u8>, String> {
    let over = |size: String| format!("{size} bytes, over the limit of {max} bytes for a program");
    if len > max {
        return Err(over(len.to_string()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(over(format!("more than {max}")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
