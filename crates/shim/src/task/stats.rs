//! State, Stats and Update: the task as containerd shows it, its figures as containerd's
//! cgroup v1 metrics and new resources, each as its [`Instance`](super::instance::Instance)
//! gives or takes them.

use containerd_shim::api::{self, Status};
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
                State::Created => Status::CREATED,
                State::Running => Status::RUNNING,
                State::Stopped(_) => Status::STOPPED,
            });
            if let Some(exit) = c.exit() {
                resp.exit_status = exit.code;
                resp.exited_at = Some(timestamp(exit.at)).into();
            }
            Ok(resp)
        })
    }

    /// Stats: the instance's figures (its cgroup's, or the engine's for a guest in the
    /// shim).
    pub(super) fn stats_of(&self, req: &api::StatsRequest) -> Result<api::StatsResponse> {
        let instance = self.with(&req.id, |c| Ok(c.instance.clone()))?;
        let value = instance
            .metrics()
            .write_to_bytes()
            .map_err(|e| Error::Internal {
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

    /// Update: new resources, as the instance takes them (a cgroup's memory, CPU and pids;
    /// a guest's memory cap at its next growth and its CPU budget; `runc update` for a native
    /// container).
    pub(super) async fn update_resources(&self, req: &api::UpdateTaskRequest) -> Result<()> {
        let resources = resources_of(req)?;
        let instance = self.with(&req.id, |c| Ok(c.instance.clone()))?;
        instance.update(&req.id, &resources).await
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
