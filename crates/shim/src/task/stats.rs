//! State, Stats and Update: the task as containerd shows it, its figures as containerd's
//! cgroup v1 metrics (the cgroup's in the process level, the engine's in the shared one),
//! and new resources (the cgroup's, or the guest's memory cap and CPU budget).

use containerd_shim::api::{self, Status};
use containerd_shim::protos::cgroups::metrics::{MemoryEntry, MemoryStat, Metrics};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;

use super::TaskService;
use crate::container::State;
use crate::error::{Error, Result};
use crate::events::timestamp;

impl TaskService {
    /// State: where the task is in its life, and its stdio.
    pub(super) fn state_of(&self, req: &api::StateRequest) -> Result<api::StateResponse> {
        Self::no_exec(&req.exec_id, &req.id)?;
        self.with(&req.id, |c| {
            let mut resp = api::StateResponse {
                id: c.id.clone(),
                bundle: c.bundle.display().to_string(),
                pid: c.pid(),
                stdin: c.stdio.stdin.clone(),
                stdout: c.stdio.stdout.clone(),
                stderr: c.stdio.stderr.clone(),
                terminal: c.stdio.terminal,
                ..Default::default()
            };
            resp.set_status(match c.state() {
                State::Created(_) => Status::CREATED,
                State::Running(_) => Status::RUNNING,
                State::Stopped(_) => Status::STOPPED,
            });
            if let Some(exit) = c.exit() {
                resp.exit_status = exit.code;
                resp.exited_at = Some(timestamp(exit.at)).into();
            }
            Ok(resp)
        })
    }

    /// Stats: the cgroup's figures in the process level, the engine's gauge and meter in
    /// the shared one.
    pub(super) fn stats_of(&self, req: &api::StatsRequest) -> Result<api::StatsResponse> {
        let (cgroup, usage, limit, cpu) = self.with(&req.id, |c| {
            Ok((
                c.cgroup.clone(),
                c.memory.bytes(),
                c.memory.limit(),
                c.cpu.used(),
            ))
        })?;
        let metrics = match cgroup {
            Some(cgroup) => cgroup_metrics(&cgroup.stats()),
            // The shared level: the engine's figures for this guest alone.
            None => Metrics {
                memory: Some(MemoryStat {
                    usage: Some(MemoryEntry {
                        usage,
                        limit: limit.unwrap_or(u64::MAX),
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                })
                .into(),
                cpu: Some(containerd_shim::protos::cgroups::metrics::CPUStat {
                    usage: Some(containerd_shim::protos::cgroups::metrics::CPUUsage {
                        total: u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX),
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
        };
        let value = metrics.write_to_bytes().map_err(|e| Error::Internal {
            context: format!("container {}: encoding its metrics", req.id),
            reason: e.to_string(),
        })?;
        Ok(api::StatsResponse {
            stats: Some(Any {
                type_url: "io.containerd.cgroups.v1.Metrics".into(),
                value,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
    }

    /// Update: a process-level container's cgroup takes the new resources (memory, CPU,
    /// pids); a shared-level guest takes a new memory limit at its next growth (CPU and
    /// pids are logged as not enforced there).
    pub(super) fn update_resources(&self, req: &api::UpdateTaskRequest) -> Result<()> {
        let resources = resources_of(req)?;
        if let Some(cgroup) = self.with(&req.id, |c| Ok(c.cgroup.clone()))? {
            cgroup.update(&resources).map_err(|source| Error::Cgroup {
                id: req.id.clone(),
                source,
            })?;
            tracing::info!(cgroup = cgroup.path(), "resources updated");
            return Ok(());
        }
        if let Some(memory) = resources.memory().as_ref().and_then(|m| m.limit()) {
            // OCI: a limit of -1 (or none) is no limit.
            let cap = u64::try_from(memory).ok().filter(|c| *c > 0);
            self.with(&req.id, |c| {
                c.set_memory_limit(cap);
                Ok(())
            })?;
            tracing::info!(?cap, "memory limit updated");
        }
        if let Some(cpu) = resources.cpu() {
            if cpu.quota().is_some() || cpu.period().is_some() {
                let micros = |v: u64| std::time::Duration::from_micros(v);
                let quota = cpu.quota().and_then(|q| u64::try_from(q).ok()).map(micros);
                let period = cpu.period().filter(|p| *p > 0).map(micros);
                self.with(&req.id, |c| {
                    c.cpu.set_budget(quota, period);
                    Ok(())
                })?;
                tracing::info!(?quota, ?period, "cpu budget updated");
            }
        }
        if resources.pids().is_some()
            || resources
                .cpu()
                .as_ref()
                .is_some_and(|c| c.shares().is_some())
        {
            tracing::info!(
                "cpu shares and pids limits are not enforced in the shared level: ignored \
                 (wasmpod.io/isolation: process enforces them)"
            );
        }
        Ok(())
    }
}

/// A process-level container's cgroup figures as containerd's cgroup v1 metrics (which its
/// CRI reads on v1 and v2 hosts alike): memory usage, limit and working-set inputs, CPU
/// time and throttling, pids.
fn cgroup_metrics(s: &sandbox::CgroupStats) -> Metrics {
    use containerd_shim::protos::cgroups::metrics::{CPUStat, CPUUsage, PidsStat, Throttle};
    Metrics {
        memory: Some(MemoryStat {
            usage: Some(MemoryEntry {
                usage: s.memory_usage,
                limit: s.memory_limit.unwrap_or(u64::MAX),
                ..Default::default()
            })
            .into(),
            total_inactive_file: s.memory_inactive_file,
            ..Default::default()
        })
        .into(),
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: s.cpu_usage_ns,
                user: s.cpu_user_ns,
                kernel: s.cpu_system_ns,
                ..Default::default()
            })
            .into(),
            throttling: Some(Throttle {
                periods: s.cpu_periods,
                throttled_periods: s.cpu_throttled_periods,
                throttled_time: s.cpu_throttled_ns,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        pids: Some(PidsStat {
            current: s.pids_current,
            limit: s.pids_limit.unwrap_or(0),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// The `LinuxResources` (JSON, as containerd's typeurl marshals runtime-spec types) of an
/// Update request.
fn resources_of(req: &api::UpdateTaskRequest) -> Result<oci_spec::runtime::LinuxResources> {
    let any = req
        .resources
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument(format!("Update {}: no resources", req.id)))?;
    if !any.type_url.ends_with("LinuxResources") {
        return Err(Error::InvalidArgument(format!(
            "Update {}: resources of type {:?}, not LinuxResources",
            req.id, any.type_url
        )));
    }
    serde_json::from_slice(&any.value)
        .map_err(|e| Error::InvalidArgument(format!("Update {}: LinuxResources: {e}", req.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update_request(type_url: &str, json: &str) -> api::UpdateTaskRequest {
        let mut any = Any::new();
        any.type_url = type_url.to_owned();
        any.value = json.as_bytes().to_vec();
        api::UpdateTaskRequest {
            id: "c1".into(),
            resources: Some(any).into(),
            ..Default::default()
        }
    }

    #[test]
    fn update_reads_containerds_linux_resources() {
        let url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
        let r = resources_of(&update_request(
            url,
            r#"{"memory":{"limit":33554432},"cpu":{"shares":512}}"#,
        ))
        .unwrap();
        assert_eq!(r.memory().as_ref().and_then(|m| m.limit()), Some(32 << 20));
        let e = resources_of(&update_request("types.containerd.io/other", "{}")).unwrap_err();
        assert!(e.to_string().contains("not LinuxResources"), "{e}");
        let e = resources_of(&update_request(url, "{nope")).unwrap_err();
        assert!(e.to_string().contains("Update c1: LinuxResources"), "{e}");
        let e = resources_of(&api::UpdateTaskRequest {
            id: "c1".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("no resources"), "{e}");
    }
}
