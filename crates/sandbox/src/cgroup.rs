//! The cgroup of a process-level container: created from the spec's `linux.cgroupsPath` and
//! `linux.resources`, updated while it runs, read for stats, removed after it.
//!
//! cgroup v1 (one hierarchy per controller, as on hybrid hosts) and v2 (the unified
//! hierarchy) both go through `cgroups-rs`, which picks the version the host mounts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cgroups_rs::blkio::BlkIoController;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuacct::CpuAcctController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{CgroupPid, Controller, MaxValue};
use oci_spec::runtime::{LinuxBlockIo, LinuxResources, Spec};

use crate::error::{Error, Result};
use crate::systemd::{Scope, Systemd};

/// The controllers a process-level container is placed in: `cpuacct` exists on v1 only
/// (v2's `cpu` accounts too), and naming it on v2 fails the whole cgroup. v1's `blkio` is
/// joined where it is mounted; v2's `io` is enabled by [`Cgroup::update`] only when the spec
/// limits block I/O (cgroups-rs cannot name it on v2).
fn controllers(v2: bool) -> Vec<String> {
    let names: &[&str] = if v2 {
        &["memory", "cpu", "pids"]
    } else {
        &["memory", "cpu", "cpuacct", "pids", "blkio"]
    };
    names.iter().map(|c| (*c).to_owned()).collect()
}

/// Where a container's cgroup lives when the spec names none: `/wasmpod/<id>`.
const DEFAULT_PARENT: &str = "/wasmpod";

/// A container's cgroup, in every hierarchy of the controllers it is limited by.
pub struct Cgroup {
    inner: cgroups_rs::Cgroup,
    path: String,
    /// The transient scope systemd made the cgroup for, under the systemd driver.
    scope: Option<Kept>,
}

/// A systemd scope and its keeper: a sleeping process that stays in it from Create to
/// Delete, since systemd ends an empty scope and removes its cgroup at once, which would
/// lose a container's OOM kill and figures the moment its process exits. The keeper is
/// one task more in the cgroup, which the pids limit and Stats leave out.
#[derive(Debug)]
struct Kept {
    unit: String,
    keeper: u32,
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup")
            .field("path", &self.path)
            .field("v2", &self.inner.v2())
            .field("scope", &self.scope)
            .finish()
    }
}

/// What a cgroup's files say now: the figures `ctr task metrics` and the kubelet read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Memory charged to the cgroup (`memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_usage: u64,
    /// Memory that could be reclaimed at once (inactive file pages).
    pub memory_inactive_file: u64,
    /// The memory limit, `None` for none.
    pub memory_limit: Option<u64>,
    /// Processes the kernel's OOM killer ended in this cgroup.
    pub oom_kills: u64,
    /// CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Of which in user mode, nanoseconds.
    pub cpu_user_ns: u64,
    /// Of which in the kernel, nanoseconds.
    pub cpu_system_ns: u64,
    /// CFS periods elapsed with a quota in force.
    pub cpu_periods: u64,
    /// Of those, the periods in which the cgroup was throttled.
    pub cpu_throttled_periods: u64,
    /// Time spent throttled, nanoseconds.
    pub cpu_throttled_ns: u64,
    /// Tasks (threads) in the cgroup.
    pub pids_current: u64,
    /// The pids limit, `None` for none.
    pub pids_limit: Option<u64>,
}

/// Expands a systemd slice name into its path, as systemd nests them:
/// `kubepods-burstable.slice` → `/kubepods.slice/kubepods-burstable.slice`.
fn expand_slice(slice: &str) -> Result<String> {
    let name = slice
        .strip_suffix(".slice")
        .ok_or_else(|| Error::Spec(format!("linux.cgroupsPath: {slice:?} is not a .slice")))?;
    if name == "-" || name.is_empty() {
        return Ok(String::new());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if part.is_empty() {
            return Err(Error::Spec(format!(
                "linux.cgroupsPath: invalid slice name {slice:?}"
            )));
        }
        prefix = if prefix.is_empty() {
            part.to_owned()
        } else {
            format!("{prefix}-{part}")
        };
        path.push_str(&format!("/{prefix}.slice"));
    }
    Ok(path)
}

/// Removes a pod's cgroup once its sandbox is gone, as the kubelet does: under the systemd
/// driver the slice `parent` names last (`/kubepods.slice/…/kubepods-besteffort-pod<uid>.slice`)
/// is stopped, and systemd kills what is left in it and removes it; a cgroupfs `parent`
/// (`/kubepods/besteffort/pod<uid>`) is removed from every hierarchy, empty children first.
/// A parent already gone is removed; one that still holds processes is an error naming it.
pub fn remove_pod_cgroup(parent: &str) -> Result<()> {
    let bad = |reason: &str| Error::Cgroup {
        path: parent.to_owned(),
        reason: reason.to_owned(),
    };
    if parent.split('/').any(|c| c == "..") || !parent.starts_with('/') {
        return Err(bad(
            "a pod's cgroup parent is an absolute path without \"..\"",
        ));
    }
    let last = parent.rsplit('/').next().unwrap_or_default();
    if last.ends_with(".slice") {
        expand_slice(last).map_err(|_| bad("not a systemd slice's name"))?;
        return Systemd::connect()?.stop(last);
    }
    let relative = parent.trim_start_matches('/');
    if relative.is_empty() {
        return Err(bad("the root cgroup is no pod's"));
    }
    let hierarchy = cgroups_rs::hierarchies::auto();
    if hierarchy.v2() {
        let dir = hierarchy.root().join(relative);
        remove_tree(&dir).map_err(|e| bad(&format!("removing {}: {e}", dir.display())))
    } else {
        // Every v1 hierarchy the host mounts; cgroups-rs removes children first.
        cgroups_rs::Cgroup::load(hierarchy, relative)
            .delete()
            .map_err(|e| bad(&format!("removing it: {e}")))
    }
}

/// Removes the cgroup directory `dir` and the cgroups under it, deepest first.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The cgroup path of container `id`: `linux.cgroupsPath` in cgroupfs form (`/k8s.io/abc`,
/// relative paths taken from the root), or systemd's `slice:prefix:name` laid out as systemd
/// would (`/system.slice/prefix-name.scope`); `/wasmpod/<id>` when the spec names none.
pub fn cgroup_path(spec: &Spec, id: &str) -> Result<String> {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty());
    let Some(given) = given else {
        return Ok(format!("{DEFAULT_PARENT}/{id}"));
    };
    let parts: Vec<&str> = given.split(':').collect();
    let path = match parts.as_slice() {
        [path] => format!("/{}", path.trim_start_matches('/')),
        [slice, prefix, name] => {
            let slice = if slice.is_empty() {
                "system.slice"
            } else {
                slice
            };
            let unit = if name.ends_with(".slice") {
                return Ok(format!("{}{}", expand_slice(slice)?, expand_slice(name)?));
            } else if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            format!("{}/{unit}", expand_slice(slice)?)
        }
        _ => {
            return Err(Error::Spec(format!(
                "linux.cgroupsPath {given:?}: expected a path or slice:prefix:name"
            )))
        }
    };
    if path.split('/').any(|c| c == "..") {
        return Err(Error::Spec(format!(
            "linux.cgroupsPath {given:?}: must not contain \"..\""
        )));
    }
    Ok(path)
}

/// cgroup v2's `cpu.weight` (1–10000) for v1's `cpu.shares` (2–262144), as runc converts.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// cgroup v2's `io.weight` (1–10000) for the spec's blkio weight (10–1000), as runc converts.
pub(crate) fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (u64::from(weight.clamp(10, 1000)) - 10) * 9999 / 990
}

/// The file writes that give a cgroup `linux.resources.blockIO`, in order, for a
/// hierarchy whose files `has` reports. Weights go to BFQ's files when the host's
/// scheduler has them, else to v1's CFQ `blkio.weight` or v2's `io.weight` (converted);
/// throttles to `blkio.throttle.*` (v1) or `io.max` (v2, where a rate of 0 lifts the
/// limit). Leaf weights exist on v1 only and are ignored on v2, as runc does. The error
/// names the field no file of this host can take.
pub(crate) fn block_io_writes(
    io: &LinuxBlockIo,
    v2: bool,
    has: impl Fn(&str) -> bool,
) -> std::result::Result<Vec<(&'static str, String)>, String> {
    let pick = |field: &str, files: &[&'static str]| {
        files.iter().copied().find(|f| has(f)).ok_or_else(|| {
            let why = if field.starts_with("throttle") {
                "no throttling in its kernel"
            } else {
                "its disks' I/O scheduler takes no weights"
            };
            format!(
                "linux.resources.blockIO.{field}: this host's block I/O controller has none of \
                 {} ({why})",
                files.join(", ")
            )
        })
    };
    // A weight for the cgroup (`target` None) or for one device (`MAJOR:MINOR`).
    let weighted = |field: &str, target: Option<String>, weight: u16| {
        let files: &[&'static str] = match (v2, &target) {
            (true, _) => &["io.bfq.weight", "io.weight"],
            (false, None) => &["blkio.bfq.weight", "blkio.weight"],
            (false, Some(_)) => &["blkio.bfq.weight_device", "blkio.weight_device"],
        };
        let file = pick(field, files)?;
        let value = match file {
            "io.weight" => blkio_weight_to_io_weight(weight),
            _ => u64::from(weight),
        };
        let text = match (v2, target) {
            (_, Some(device)) => format!("{device} {value}"),
            (true, None) => format!("default {value}"),
            (false, None) => value.to_string(),
        };
        Ok::<_, String>((file, text))
    };
    let mut writes = Vec::new();
    if let Some(weight) = io.weight().filter(|w| *w > 0) {
        writes.push(weighted("weight", None, weight)?);
    }
    if !v2 {
        if let Some(leaf) = io.leaf_weight().filter(|w| *w > 0) {
            let file = pick("leafWeight", &["blkio.leaf_weight"])?;
            writes.push((file, leaf.to_string()));
        }
    }
    for device in io.weight_device().iter().flatten() {
        if let Some(weight) = device.weight().filter(|w| *w > 0) {
            let target = format!("{}:{}", device.major(), device.minor());
            writes.push(weighted("weightDevice", Some(target), weight)?);
        }
    }
    let throttles = [
        (
            "throttleReadBpsDevice",
            io.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "rbps",
        ),
        (
            "throttleWriteBpsDevice",
            io.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "wbps",
        ),
        (
            "throttleReadIOPSDevice",
            io.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "riops",
        ),
        (
            "throttleWriteIOPSDevice",
            io.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "wiops",
        ),
    ];
    for (field, devices, v1_file, v2_key) in throttles {
        for device in devices.iter().flatten() {
            let (major, minor, rate) = (device.major(), device.minor(), device.rate());
            if v2 {
                let rate = match rate {
                    0 => "max".to_owned(),
                    r => r.to_string(),
                };
                writes.push((
                    pick(field, &["io.max"])?,
                    format!("{major}:{minor} {v2_key}={rate}"),
                ));
            } else {
                writes.push((pick(field, &[v1_file])?, format!("{major}:{minor} {rate}")));
            }
        }
    }
    Ok(writes)
}

/// `resources` with room for a scope's keeper: a pids limit one higher, so that the
/// container's own processes get the limit the spec gives.
fn with_keeper(resources: &LinuxResources) -> LinuxResources {
    let mut counted = resources.clone();
    if let Some(pids) = counted.pids().as_ref() {
        if pids.limit() > 0 {
            let mut pids = *pids;
            pids.set_limit(pids.limit() + 1);
            counted.set_pids(Some(pids));
        }
    }
    counted
}

/// Kills a scope's keeper (0: none) and reaps it, unless the parent's own reaper does
/// first.
fn end_keeper(keeper: u32) {
    let Ok(pid) = libc::pid_t::try_from(keeper) else {
        return;
    };
    if pid <= 0 || crate::sys::kill_now(pid).is_err() {
        return;
    }
    for _ in 0..100 {
        // Reaped here, or by another (which leaves no child of that pid: ECHILD).
        if crate::sys::reap(pid) || !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Parses `key value` lines (`cpu.stat`, `memory.events`).
fn key_values(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

impl Cgroup {
    /// Creates the cgroup at `path` (see [`cgroup_path`]) and applies `resources`. Errors
    /// name the cgroup and what is missing: a host without the memory, cpu or pids
    /// controller cannot give containers the process level.
    pub fn create(path: &str, resources: Option<&LinuxResources>) -> Result<Self> {
        let hierarchy = cgroups_rs::hierarchies::auto();
        let relative = path.trim_start_matches('/');
        let wanted = controllers(hierarchy.v2());
        let inner =
            cgroups_rs::Cgroup::new_with_specified_controllers(hierarchy, relative, Some(wanted))
                .map_err(|e| Error::Cgroup {
                path: path.to_owned(),
                reason: format!("cannot create it: {e}"),
            })?;
        let cgroup = Cgroup {
            inner,
            path: path.to_owned(),
            scope: None,
        };
        cgroup.check_controllers()?;
        if let Some(resources) = resources {
            if let Err(e) = cgroup.write_resources(resources) {
                let _ = cgroup.inner.delete();
                return Err(e);
            }
        }
        Ok(cgroup)
    }

    /// The cgroup of a container whose spec asks for the systemd driver: a transient
    /// scope that systemd starts with a keeper process in it (see `Kept`), delegated,
    /// with `resources` as its properties and in its files.
    pub fn create_scope(
        scope: &Scope,
        description: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<Self> {
        let v2 = cgroups_rs::hierarchies::is_cgroup2_unified_mode();
        let systemd = Systemd::connect()?;
        let keeper = crate::sys::fork_keeper().map_err(|e| Error::Cgroup {
            path: scope.unit.clone(),
            reason: format!("forking the process that keeps the scope: {e}"),
        })?;
        let pid = u32::try_from(keeper).unwrap_or_default();
        let end_keeper = || end_keeper(pid);
        let counted = resources.map(with_keeper);
        let path = match systemd.start_scope(scope, pid, description, counted.as_ref(), v2) {
            Ok(path) => path,
            Err(e) => {
                end_keeper();
                let _ = systemd.stop(&scope.unit);
                return Err(e);
            }
        };
        let made = Cgroup::open(&path).and_then(|mut cgroup| {
            cgroup.scope = Some(Kept {
                unit: scope.unit.clone(),
                keeper: pid,
            });
            cgroup.check_controllers()?;
            if let Some(resources) = resources {
                cgroup.write_resources(resources)?;
            }
            Ok(cgroup)
        });
        if made.is_err() {
            end_keeper();
            let _ = systemd.stop(&scope.unit);
        }
        made
    }

    /// The cgroup of container `id` as its spec places it: the systemd scope's (asked of
    /// systemd) under the systemd driver, else [`cgroup_path`]. For a cgroup that another
    /// made (runc, or a dead shim).
    pub fn open_for(spec: &Spec, id: &str) -> Result<Self> {
        match Scope::of(spec)? {
            Some(scope) => {
                let path = Systemd::connect()?
                    .control_group(&scope.unit)
                    .ok_or_else(|| Error::Cgroup {
                        path: scope.unit.clone(),
                        reason: "systemd has no such unit".into(),
                    })?;
                let mut cgroup = Cgroup::open(&path)?;
                cgroup.scope = Some(Kept {
                    unit: scope.unit,
                    keeper: 0,
                });
                Ok(cgroup)
            }
            None => Cgroup::open(&cgroup_path(spec, id)?),
        }
    }

    /// Errors when the host's hierarchy lacks a controller the process level needs.
    fn check_controllers(&self) -> Result<()> {
        let missing: Vec<&str> = [
            ("memory", self.memory().is_none()),
            ("cpu", self.cpu().is_none()),
            ("pids", self.pids().is_none()),
        ]
        .iter()
        .filter(|(_, absent)| *absent)
        .map(|(name, _)| *name)
        .collect();
        if !missing.is_empty() {
            if self.scope.is_none() {
                let _ = self.inner.delete();
            }
            return Err(Error::Cgroup {
                path: self.path.clone(),
                reason: format!(
                    "the host's cgroup hierarchy has no {} controller; the process isolation \
                     level needs memory, cpu and pids",
                    missing.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// The existing cgroup at `path`, as [`create`](Self::create) made it (for the
    /// container's own process to join, or to read after a restart).
    pub fn open(path: &str) -> Result<Self> {
        let hierarchy = cgroups_rs::hierarchies::auto();
        let wanted = controllers(hierarchy.v2());
        let inner = cgroups_rs::Cgroup::load_with_specified_controllers(
            hierarchy,
            path.trim_start_matches('/'),
            wanted,
        );
        if !inner.exists() {
            return Err(Error::Cgroup {
                path: path.to_owned(),
                reason: "does not exist".into(),
            });
        }
        Ok(Cgroup {
            inner,
            path: path.to_owned(),
            scope: None,
        })
    }

    /// Moves the calling process into the cgroup.
    pub fn join(&self) -> Result<()> {
        self.add_process(std::process::id())
    }

    /// The cgroup's path as the spec (or the default) gave it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this is cgroup v2.
    pub fn v2(&self) -> bool {
        self.inner.v2()
    }

    fn memory(&self) -> Option<&MemController> {
        self.inner.controller_of()
    }

    fn cpu(&self) -> Option<&CpuController> {
        self.inner.controller_of()
    }

    fn cpuacct(&self) -> Option<&CpuAcctController> {
        self.inner.controller_of()
    }

    fn pids(&self) -> Option<&PidController> {
        self.inner.controller_of()
    }

    /// The directory that holds the cgroup's block I/O files: v1's `blkio` hierarchy, or
    /// v2's one directory.
    fn block_io_dir(&self) -> Option<PathBuf> {
        if self.v2() {
            self.memory().map(|c| c.path().to_path_buf())
        } else {
            let blkio: Option<&BlkIoController> = self.inner.controller_of();
            blkio.map(|c| c.path().to_path_buf())
        }
    }

    /// Enables v2's `io` controller from the root down to this cgroup's parent, so that
    /// its `io.*` files exist. A root that does not offer `io` is named in the error.
    fn enable_io(&self, dir: &Path) -> Result<()> {
        let relative = self.path.trim_start_matches('/');
        let depth = relative.split('/').filter(|c| !c.is_empty()).count();
        let mut root = dir.to_path_buf();
        for _ in 0..depth {
            root.pop();
        }
        let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if !offered.split_whitespace().any(|c| c == "io") {
            return Err(self.failed(
                "limiting block I/O",
                format!(
                    "the cgroup v2 root {} offers no io controller (cgroup.controllers: {:?})",
                    root.display(),
                    offered.trim()
                ),
            ));
        }
        let mut parent = root;
        for component in relative.split('/').filter(|c| !c.is_empty()) {
            let control = parent.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "io") {
                std::fs::write(&control, "+io").map_err(|e| {
                    self.failed(
                        "limiting block I/O",
                        format!("enabling io in {}: {e}", control.display()),
                    )
                })?;
            }
            parent.push(component);
        }
        Ok(())
    }

    /// Applies `linux.resources.blockIO` (see [`block_io_writes`]).
    fn set_block_io(&self, io: &LinuxBlockIo) -> Result<()> {
        let dir = self.block_io_dir().ok_or_else(|| {
            self.failed(
                "limiting block I/O",
                "the host mounts no blkio controller for it",
            )
        })?;
        if self.v2() {
            self.enable_io(&dir)?;
        }
        let writes = block_io_writes(io, self.v2(), |file| dir.join(file).exists())
            .map_err(|e| self.failed("limiting block I/O", e))?;
        for (file, value) in writes {
            std::fs::write(dir.join(file), &value).map_err(|e| {
                self.failed(
                    "limiting block I/O",
                    format!("writing {value:?} to {file}: {e} (is the device a block device of this host?)"),
                )
            })?;
        }
        Ok(())
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Cgroup {
            path: self.path.clone(),
            reason: format!("{what}: {e}"),
        }
    }

    /// The directory of one controller's cgroup (for tests and diagnostics).
    pub fn controller_dir(&self, controller: &str) -> Option<PathBuf> {
        let path = |c: &dyn Controller| c.path().to_path_buf();
        match controller {
            "memory" => self.memory().map(|c| path(c)),
            "cpu" => self.cpu().map(|c| path(c)),
            "cpuacct" => self.cpuacct().map(|c| path(c)),
            "pids" => self.pids().map(|c| path(c)),
            "blkio" | "io" => self.block_io_dir(),
            _ => None,
        }
    }

    /// Applies `resources` (containerd's Update): see `write_resources`.
    /// A systemd scope takes them as unit properties too, so that systemd keeps them.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        if let Some(kept) = &self.scope {
            let counted = self.counted(resources);
            Systemd::connect()?.set_properties(&kept.unit, &counted, self.v2())?;
        }
        self.write_resources(resources)
    }

    /// `resources` as this cgroup takes them: with room for a keeper when it has one.
    fn counted(&self, resources: &LinuxResources) -> LinuxResources {
        if self.has_keeper() {
            with_keeper(resources)
        } else {
            resources.clone()
        }
    }

    /// Whether a keeper of this shim's sits in the cgroup (a scope it made, not one it
    /// opened).
    fn has_keeper(&self) -> bool {
        self.scope.as_ref().is_some_and(|k| k.keeper != 0)
    }

    /// Writes `resources` to the cgroup's files: memory limit, CPU shares (v2: weight),
    /// CFS quota and period, pids limit, block I/O weights and throttles. A limit of zero
    /// or less removes it.
    fn write_resources(&self, resources: &LinuxResources) -> Result<()> {
        let counted = self.counted(resources);
        let resources = &counted;
        if let Some(limit) = resources.memory().as_ref().and_then(|m| m.limit()) {
            let limit = if limit > 0 { limit } else { -1 };
            self.memory()
                .map(|m| m.set_limit(limit))
                .transpose()
                .map_err(|e| self.failed("setting the memory limit", e))?;
        }
        if let (Some(cpu), Some(ctl)) = (resources.cpu().as_ref(), self.cpu()) {
            if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
                let value = if self.v2() {
                    shares_to_weight(shares)
                } else {
                    shares
                };
                ctl.set_shares(value)
                    .map_err(|e| self.failed("setting cpu shares", e))?;
            }
            let quota = cpu.quota().map(|q| if q > 0 { q } else { -1 });
            if quota.is_some() || cpu.period().is_some() {
                ctl.set_cfs_quota_and_period(quota, cpu.period())
                    .map_err(|e| self.failed("setting the cpu quota", e))?;
            }
        }
        if let (Some(pids), Some(ctl)) = (resources.pids().as_ref(), self.pids()) {
            let max = if pids.limit() > 0 {
                MaxValue::Value(pids.limit())
            } else {
                MaxValue::Max
            };
            ctl.set_pid_max(max)
                .map_err(|e| self.failed("setting the pids limit", e))?;
        }
        if let Some(io) = resources.block_io() {
            self.set_block_io(io)?;
        }
        Ok(())
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        self.inner
            .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
            .map_err(|e| self.failed(&format!("adding process {pid}"), e))
    }

    /// Processes in the cgroup now.
    pub fn processes(&self) -> Vec<u32> {
        self.inner
            .procs()
            .into_iter()
            .filter_map(|p| u32::try_from(p.pid).ok())
            .collect()
    }

    /// Reads the cgroup's figures.
    pub fn stats(&self) -> CgroupStats {
        let mut stats = CgroupStats::default();
        if let Some(memory) = self.memory() {
            let m = memory.memory_stat();
            stats.memory_usage = m.usage_in_bytes;
            stats.memory_inactive_file = if self.v2() {
                m.stat.inactive_file
            } else {
                m.stat.total_inactive_file
            };
            // v1 shows "no limit" as a page-rounded i64::MAX.
            stats.memory_limit = u64::try_from(m.limit_in_bytes)
                .ok()
                .filter(|l| *l > 0 && *l < (i64::MAX as u64) & !0xfff);
            stats.oom_kills = if self.v2() {
                std::fs::read_to_string(memory.path().join("memory.events"))
                    .map(|t| key_values(&t).get("oom_kill").copied().unwrap_or(0))
                    .unwrap_or(0)
            } else {
                m.oom_control.oom_kill
            };
        }
        if let Some(cpu) = self.cpu() {
            let stat = cpu.cpu().stat;
            let kv = key_values(&stat);
            let get = |k: &str| kv.get(k).copied().unwrap_or(0);
            stats.cpu_periods = get("nr_periods");
            stats.cpu_throttled_periods = get("nr_throttled");
            if self.v2() {
                stats.cpu_throttled_ns = get("throttled_usec") * 1000;
                stats.cpu_usage_ns = get("usage_usec") * 1000;
                stats.cpu_user_ns = get("user_usec") * 1000;
                stats.cpu_system_ns = get("system_usec") * 1000;
            } else {
                stats.cpu_throttled_ns = get("throttled_time");
            }
        }
        if let Some(acct) = self.cpuacct() {
            let a = acct.cpuacct();
            stats.cpu_usage_ns = a.usage;
            // cpuacct.stat counts USER_HZ ticks (100 a second on Linux).
            let kv = key_values(&a.stat);
            stats.cpu_user_ns = kv.get("user").copied().unwrap_or(0) * 10_000_000;
            stats.cpu_system_ns = kv.get("system").copied().unwrap_or(0) * 10_000_000;
        }
        if let Some(pids) = self.pids() {
            stats.pids_current = pids.get_pid_current().unwrap_or(0);
            stats.pids_limit = match pids.get_pid_max() {
                Ok(MaxValue::Value(v)) => u64::try_from(v).ok(),
                _ => None,
            };
            // A scope's keeper is not the container's.
            if self.has_keeper() {
                stats.pids_current = stats.pids_current.saturating_sub(1);
                stats.pids_limit = stats.pids_limit.map(|l| l.saturating_sub(1));
            }
        }
        stats
    }

    /// Kills every process left in the cgroup, then removes it from every hierarchy. A
    /// systemd scope is stopped, and systemd removes its cgroup.
    pub fn delete(&self) -> Result<()> {
        for pid in self.processes() {
            // A process already gone, or a pid out of range, leaves nothing to kill.
            let _ = crate::sys::kill_now(libc::pid_t::try_from(pid).unwrap_or(0));
        }
        if let Some(kept) = &self.scope {
            end_keeper(kept.keeper);
            Systemd::connect()?.stop(&kept.unit)?;
            if !self.inner.exists() {
                return Ok(());
            }
        }
        // A killed process leaves the cgroup once the kernel has reaped it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match self.inner.delete() {
                Ok(()) => return Ok(()),
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(self.failed("removing it", e))
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_cgroup_parent_outside_the_tree_is_refused_before_anything_is_removed() {
        for parent in [
            "kubepods/besteffort/pod1",
            "/kubepods/../etc",
            "/",
            "/a/b--c.slice",
        ] {
            let err = remove_pod_cgroup(parent).unwrap_err().to_string();
            assert!(
                err.contains(parent.rsplit('/').next().unwrap()),
                "{parent}: {err}"
            );
        }
        // A cgroupfs parent that no host has is already removed.
        remove_pod_cgroup("/wasmpod-test-absent/podnone").unwrap();
    }

    fn spec_with_path(path: Option<&str>) -> Spec {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(path.map(PathBuf::from));
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn cgroup_paths_follow_the_spec() {
        assert_eq!(
            cgroup_path(&spec_with_path(None), "c1").unwrap(),
            "/wasmpod/c1"
        );
        assert_eq!(
            cgroup_path(&spec_with_path(Some("/default/c1")), "c1").unwrap(),
            "/default/c1"
        );
        assert_eq!(
            cgroup_path(&spec_with_path(Some("k8s.io/abc")), "abc").unwrap(),
            "/k8s.io/abc"
        );
        assert_eq!(
            cgroup_path(
                &spec_with_path(Some("kubepods-burstable-pod1.slice:cri-containerd:abc")),
                "abc"
            )
            .unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            cgroup_path(&spec_with_path(Some(":wasmpod:c1")), "c1").unwrap(),
            "/system.slice/wasmpod-c1.scope"
        );
        let e = cgroup_path(&spec_with_path(Some("/a/../../etc")), "c1").unwrap_err();
        assert!(e.to_string().contains("must not contain"), "{e}");
        let e = cgroup_path(&spec_with_path(Some("a:b")), "c1").unwrap_err();
        assert!(e.to_string().contains("slice:prefix:name"), "{e}");
        let e = cgroup_path(&spec_with_path(Some("bad:p:n")), "c1").unwrap_err();
        assert!(e.to_string().contains("not a .slice"), "{e}");
    }

    #[test]
    fn shares_convert_to_weights_as_runc_does() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 0);
    }

    fn block_io(json: &str) -> LinuxBlockIo {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn block_io_goes_to_v1_and_v2_files() {
        let io = block_io(
            r#"{"weight": 500, "leafWeight": 300,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteIOPSDevice": [{"major": 7, "minor": 1, "rate": 0}]}"#,
        );
        // v1 with CFQ's files.
        let v1 = block_io_writes(&io, false, |_| true).unwrap();
        assert_eq!(
            v1,
            vec![
                ("blkio.bfq.weight", "500".to_owned()),
                ("blkio.leaf_weight", "300".to_owned()),
                ("blkio.bfq.weight_device", "8:0 200".to_owned()),
                ("blkio.throttle.read_bps_device", "8:0 1048576".to_owned()),
                ("blkio.throttle.write_iops_device", "7:1 0".to_owned()),
            ]
        );
        // v2 without BFQ: io.weight in its own range; a zero rate lifts the limit.
        let v2 = block_io_writes(&io, true, |f| f != "io.bfq.weight").unwrap();
        assert_eq!(
            v2,
            vec![
                ("io.weight", "default 4950".to_owned()),
                ("io.weight", "8:0 1920".to_owned()),
                ("io.max", "8:0 rbps=1048576".to_owned()),
                ("io.max", "7:1 wiops=max".to_owned()),
            ]
        );
        // v2 with BFQ keeps the spec's units.
        let bfq = block_io_writes(&io, true, |_| true).unwrap();
        assert_eq!(bfq[0], ("io.bfq.weight", "default 500".to_owned()));
    }

    #[test]
    fn a_weight_the_host_cannot_take_is_named() {
        let io = block_io(r#"{"weight": 500}"#);
        // A v1 host whose disks run mq-deadline: only the throttle files exist.
        let e = block_io_writes(&io, false, |f| f.starts_with("blkio.throttle")).unwrap_err();
        assert!(
            e.contains("blockIO.weight") && e.contains("blkio.weight"),
            "{e}"
        );
        // Throttles alone need no weight file.
        let io = block_io(r#"{"throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 10}]}"#);
        let ok = block_io_writes(&io, false, |f| f.starts_with("blkio.throttle")).unwrap();
        assert_eq!(
            ok,
            vec![("blkio.throttle.write_bps_device", "8:0 10".to_owned())]
        );
    }

    #[test]
    fn blkio_weights_convert_as_runc_does() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(100), 910);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(0), 0);
    }

    #[test]
    fn stat_files_parse() {
        let kv = key_values("nr_periods 12\nnr_throttled 3\nthrottled_time 4500\nbad\n");
        assert_eq!(kv.get("nr_periods"), Some(&12));
        assert_eq!(kv.get("throttled_time"), Some(&4500));
        assert_eq!(kv.len(), 3);
    }
}
