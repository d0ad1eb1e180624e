//! The cgroup of a process-level container: created from the spec's `linux.cgroupsPath` and
//! `linux.resources`, updated while it runs, read for stats, removed after it.
//!
//! cgroup v1 (one hierarchy per controller, as on hybrid hosts) and v2 (the unified
//! hierarchy) both go through `cgroups-rs`, which picks the version the host mounts.

use std::collections::HashMap;
use std::path::PathBuf;

use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuacct::CpuAcctController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{CgroupPid, Controller, MaxValue};
use oci_spec::runtime::{LinuxResources, Spec};

use crate::error::{Error, Result};

/// The controllers a process-level container is placed in (`cpuacct` exists on v1 only).
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// Where a container's cgroup lives when the spec names none: `/wasmpod/<id>`.
const DEFAULT_PARENT: &str = "/wasmpod";

/// A container's cgroup, in every hierarchy of the controllers it is limited by.
pub struct Cgroup {
    inner: cgroups_rs::Cgroup,
    path: String,
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup")
            .field("path", &self.path)
            .field("v2", &self.inner.v2())
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
        let inner = cgroups_rs::Cgroup::new_with_specified_controllers(
            hierarchy,
            relative,
            Some(CONTROLLERS.iter().map(|c| c.to_string()).collect()),
        )
        .map_err(|e| Error::Cgroup {
            path: path.to_owned(),
            reason: format!("cannot create it: {e}"),
        })?;
        let cgroup = Cgroup {
            inner,
            path: path.to_owned(),
        };
        let missing: Vec<&str> = [
            ("memory", cgroup.memory().is_none()),
            ("cpu", cgroup.cpu().is_none()),
            ("pids", cgroup.pids().is_none()),
        ]
        .iter()
        .filter(|(_, absent)| *absent)
        .map(|(name, _)| *name)
        .collect();
        if !missing.is_empty() {
            let _ = cgroup.inner.delete();
            return Err(Error::Cgroup {
                path: path.to_owned(),
                reason: format!(
                    "the host's cgroup hierarchy has no {} controller; the process isolation \
                     level needs memory, cpu and pids",
                    missing.join(", ")
                ),
            });
        }
        if let Some(resources) = resources {
            if let Err(e) = cgroup.update(resources) {
                let _ = cgroup.inner.delete();
                return Err(e);
            }
        }
        Ok(cgroup)
    }

    /// The existing cgroup at `path`, as [`create`](Self::create) made it (for the
    /// container's own process to join, or to read after a restart).
    pub fn open(path: &str) -> Result<Self> {
        let inner = cgroups_rs::Cgroup::load_with_specified_controllers(
            cgroups_rs::hierarchies::auto(),
            path.trim_start_matches('/'),
            CONTROLLERS.iter().map(|c| c.to_string()).collect(),
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
            _ => None,
        }
    }

    /// Applies `resources` (containerd's Update, or the spec at creation): memory limit,
    /// CPU shares (v2: weight), CFS quota and period, pids limit. A limit of zero or less
    /// removes it.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
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
        }
        stats
    }

    /// Kills every process left in the cgroup, then removes it from every hierarchy.
    pub fn delete(&self) -> Result<()> {
        for pid in self.processes() {
            // A process already gone, or a pid out of range, leaves nothing to kill.
            let _ = crate::sys::kill_now(libc::pid_t::try_from(pid).unwrap_or(0));
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

    #[test]
    fn stat_files_parse() {
        let kv = key_values("nr_periods 12\nnr_throttled 3\nthrottled_time 4500\nbad\n");
        assert_eq!(kv.get("nr_periods"), Some(&12));
        assert_eq!(kv.get("throttled_time"), Some(&4500));
        assert_eq!(kv.len(), 3);
    }
}
