//! Running a [`PodPlan`] as the kubelet would: volumes, RunPodSandbox, image pulls, init
//! containers to completion, then the containers, restarted as `restartPolicy` says, with
//! their logs followed; and removing pods again.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use grpc_api::cri::v1 as api;

use crate::client::Cri;
use crate::error::{Error, Result};
use crate::logs::{Entry, LogReader};
use crate::plan::{
    ContainerPlan, PodPlan, PullPolicy, RestartPolicy, POD_NAMESPACE_LABEL, POD_NAME_LABEL,
    POD_UID_LABEL,
};

/// How often a waiting runner asks for container status and reads logs.
const POLL: Duration = Duration::from_millis(100);
/// The first restart delay; it doubles up to [`MAX_BACKOFF`], as the kubelet's.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Credentials for pulling `image`, if any: the CLI looks in the pod's pull secrets and
/// the user's docker config.
pub type Credentials<'a> = &'a (dyn Fn(&str) -> Result<Option<api::AuthConfig>> + Sync);

/// Where followed log lines go: `(container name, entry)`.
pub type LogSink<'a> = &'a mut (dyn FnMut(&str, &Entry) + Send);

/// How a pod run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOutcome {
    /// The sandbox ID.
    pub sandbox_id: String,
    /// Each container's last exit code, by name (none: still running when detached or
    /// stopped).
    pub exit_codes: Vec<(String, Option<i32>)>,
    /// Whether the run was stopped from outside (Ctrl-C, SIGTERM).
    pub stopped: bool,
}

impl PodOutcome {
    /// The status `wasmpod pod run` exits with: 130 when stopped from outside (as a
    /// Ctrl-C'd `docker run`), else the first non-zero container exit code, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.stopped {
            return 130;
        }
        self.exit_codes
            .iter()
            .filter_map(|(_, c)| *c)
            .find(|c| *c != 0)
            .unwrap_or(0)
    }
}

/// A container of a running pod.
struct Running {
    plan: ContainerPlan,
    id: String,
    attempt: u32,
    log: LogReader,
    exit: Option<i32>,
    /// When set, the time to restart it.
    restart_at: Option<tokio::time::Instant>,
}

/// Runs `plan` through `cri`. With `detach`, returns once the containers run; otherwise
/// waits for them as `restartPolicy` says, following logs into `sink`, until they are done
/// or `stop` resolves (then they are stopped with the pod's grace period).
#[tracing::instrument(name = "pod", skip_all, fields(sandbox = %plan.pod))]
pub async fn run_pod(
    cri: &Cri,
    plan: &PodPlan,
    credentials: Credentials<'_>,
    detach: bool,
    sink: LogSink<'_>,
    stop: impl Future<Output = ()>,
) -> Result<PodOutcome> {
    crate::volumes::prepare(&plan.volumes)?;
    let sandbox_id = cri.run_pod_sandbox(&plan.sandbox, &plan.handler).await?;
    tracing::info!(%sandbox_id, handler = %plan.handler, "pod sandbox running");
    let mut stop = std::pin::pin!(stop);
    let log_dir = PathBuf::from(&plan.sandbox.log_directory);

    // Images first, each once.
    let mut pulled = std::collections::HashSet::new();
    for c in &plan.containers {
        if pulled.insert(c.image.clone()) {
            ensure_image(cri, plan, c, credentials).await?;
        }
    }

    // Init containers, one after another, each to success.
    for c in plan.containers.iter().filter(|c| c.init) {
        let mut attempt = 0;
        loop {
            let mut running = start(cri, plan, &sandbox_id, c, attempt, &log_dir).await?;
            let code = tokio::select! {
                code = wait_exit(cri, &mut running, sink) => code?,
                () = &mut stop => {
                    stop_all(cri, plan, &sandbox_id, std::slice::from_ref(&running)).await;
                    return Ok(PodOutcome { sandbox_id, exit_codes: vec![(c.name.clone(), None)], stopped: true });
                }
            };
            if code == 0 {
                break;
            }
            if plan.restart == RestartPolicy::Never {
                let _ = cri.stop_pod_sandbox(&sandbox_id).await;
                return Ok(PodOutcome {
                    sandbox_id,
                    exit_codes: vec![(c.name.clone(), Some(code))],
                    stopped: false,
                });
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    let mut running = Vec::new();
    for c in plan.containers.iter().filter(|c| !c.init) {
        running.push(start(cri, plan, &sandbox_id, c, 0, &log_dir).await?);
    }
    let outcome = |running: &[Running], stopped| PodOutcome {
        sandbox_id: sandbox_id.clone(),
        exit_codes: running
            .iter()
            .map(|r| (r.plan.name.clone(), r.exit))
            .collect(),
        stopped,
    };
    if detach {
        return Ok(outcome(&running, false));
    }

    let mut ticker = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut stop => {
                drain_logs(&mut running, sink);
                stop_all(cri, plan, &sandbox_id, &running).await;
                drain_logs(&mut running, sink);
                return Ok(outcome(&running, true));
            }
        }
        drain_logs(&mut running, sink);
        for r in &mut running {
            if let Some(at) = r.restart_at {
                if tokio::time::Instant::now() >= at {
                    let next = r.attempt + 1;
                    let _ = cri.remove_container(&r.id).await;
                    *r = start(cri, plan, &sandbox_id, &r.plan, next, &log_dir).await?;
                }
                continue;
            }
            if r.exit.is_some() {
                continue;
            }
            let (status, _) = cri.container_status(&r.id).await?;
            if status.state != api::ContainerState::ContainerExited as i32 {
                continue;
            }
            let code = status.exit_code;
            flush_log(r, sink);
            r.exit = Some(code);
            tracing::info!(container = %r.plan.name, code, reason = %status.reason, "container exited");
            let again = match plan.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => code != 0,
                RestartPolicy::Never => false,
            };
            if again {
                let delay = backoff(r.attempt);
                tracing::info!(container = %r.plan.name, ?delay, "restarting");
                r.restart_at = Some(tokio::time::Instant::now() + delay);
            }
        }
        if running
            .iter()
            .all(|r| r.exit.is_some() && r.restart_at.is_none())
        {
            // Done, as a completed pod: its sandbox is stopped (network and pause freed)
            // and kept for inspection until `wasmpod pod rm`.
            cri.stop_pod_sandbox(&sandbox_id).await?;
            return Ok(outcome(&running, false));
        }
    }
}

/// The kubelet's crash-loop back-off after `attempt` restarts.
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.min(8))
        .min(MAX_BACKOFF)
}

/// Pulls `c`'s image as its pull policy says.
async fn ensure_image(
    cri: &Cri,
    plan: &PodPlan,
    c: &ContainerPlan,
    credentials: Credentials<'_>,
) -> Result<()> {
    let present = || async { cri.image_status(&c.image).await.map(|i| i.is_some()) };
    let pull = match c.pull_policy {
        PullPolicy::Always => true,
        PullPolicy::IfNotPresent => !present().await?,
        PullPolicy::Never => {
            if !present().await? {
                return Err(Error::Pod {
                    pod: plan.pod.clone(),
                    field: format!("container {} image", c.name),
                    reason: format!(
                        "{} is not on the node and imagePullPolicy is Never",
                        c.image
                    ),
                });
            }
            false
        }
    };
    if pull {
        let auth = credentials(&c.image)?;
        let resolved = cri.pull_image(&c.image, auth, Some(&plan.sandbox)).await?;
        tracing::info!(image = %c.image, %resolved, "pulled");
    }
    Ok(())
}

/// Creates and starts attempt `attempt` of container `c`.
async fn start(
    cri: &Cri,
    plan: &PodPlan,
    sandbox_id: &str,
    c: &ContainerPlan,
    attempt: u32,
    log_dir: &Path,
) -> Result<Running> {
    let mut config = c.config.clone();
    if let Some(m) = config.metadata.as_mut() {
        m.attempt = attempt;
    }
    config.log_path = format!("{}/{attempt}.log", c.name);
    config.annotations.insert(
        "io.kubernetes.container.restartCount".into(),
        attempt.to_string(),
    );
    let id = cri
        .create_container(sandbox_id, &config, &plan.sandbox)
        .await?;
    cri.start_container(&id).await?;
    tracing::info!(container = %c.name, %id, attempt, "container started");
    Ok(Running {
        plan: c.clone(),
        id,
        attempt,
        log: LogReader::new(log_dir.join(&config.log_path)),
        exit: None,
        restart_at: None,
    })
}

/// Waits for one container to exit, following its log; returns its exit code.
async fn wait_exit(cri: &Cri, r: &mut Running, sink: LogSink<'_>) -> Result<i32> {
    loop {
        drain_logs(std::slice::from_mut(r), sink);
        let (status, _) = cri.container_status(&r.id).await?;
        if status.state == api::ContainerState::ContainerExited as i32 {
            flush_log(r, sink);
            r.exit = Some(status.exit_code);
            return Ok(status.exit_code);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn drain_logs(running: &mut [Running], sink: LogSink<'_>) {
    for r in running {
        match r.log.read_new() {
            Ok(entries) => entries.iter().for_each(|e| sink(&r.plan.name, e)),
            Err(error) => tracing::debug!(%error, "reading a container log"),
        }
    }
}

/// Reads the rest of an exited container's log (the runtime may still be writing it).
fn flush_log(r: &mut Running, sink: LogSink<'_>) {
    drain_logs(std::slice::from_mut(r), sink);
    r.log.flush().iter().for_each(|e| sink(&r.plan.name, e));
}

/// Stops the containers (SIGTERM, then SIGKILL after the grace period) and the sandbox.
async fn stop_all(cri: &Cri, plan: &PodPlan, sandbox_id: &str, running: &[Running]) {
    let stops = running
        .iter()
        .filter(|r| r.exit.is_none())
        .map(|r| cri.stop_container(&r.id, plan.grace_period));
    for result in futures_util::future::join_all(stops).await {
        if let Err(error) = result {
            tracing::warn!(%error, "stopping a container");
        }
    }
    if let Err(error) = cri.stop_pod_sandbox(sandbox_id).await {
        tracing::warn!(%error, "stopping the pod sandbox");
    }
}

/// The sandboxes `what` names: an ID or unique ID prefix, or a pod name (`name` or
/// `namespace/name`, every attempt of it).
pub async fn find_pods(cri: &Cri, what: &str) -> Result<Vec<api::PodSandbox>> {
    let all = cri.list_pod_sandboxes(None).await?;
    let (namespace, name) = match what.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, what),
    };
    let by_name: Vec<_> = all
        .iter()
        .filter(|s| {
            s.labels.get(POD_NAME_LABEL).map(String::as_str) == Some(name)
                || s.metadata.as_ref().is_some_and(|m| m.name == name)
        })
        .filter(|s| {
            namespace.is_none_or(|ns| {
                s.labels.get(POD_NAMESPACE_LABEL).map(String::as_str) == Some(ns)
                    || s.metadata.as_ref().is_some_and(|m| m.namespace == ns)
            })
        })
        .cloned()
        .collect();
    if !by_name.is_empty() {
        return Ok(by_name);
    }
    let by_id: Vec<_> = all.into_iter().filter(|s| s.id.starts_with(what)).collect();
    match by_id.len() {
        0 => Err(Error::NotFound {
            kind: "pod sandbox",
            what: what.to_owned(),
        }),
        1 => Ok(by_id),
        _ if by_id.iter().any(|s| s.id == what) => {
            Ok(by_id.into_iter().filter(|s| s.id == what).collect())
        }
        _ => Err(Error::Ambiguous {
            what: what.to_owned(),
            matches: by_id
                .iter()
                .map(|s| short(&s.id))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The container `what` names: an ID or unique ID prefix, or a container name.
pub async fn find_container(cri: &Cri, what: &str) -> Result<api::Container> {
    let all = cri.list_containers(None).await?;
    let mut matches: Vec<_> = all.iter().filter(|c| c.id == what).cloned().collect();
    if matches.is_empty() {
        matches = all
            .iter()
            .filter(|c| c.id.starts_with(what))
            .cloned()
            .collect();
    }
    if matches.is_empty() {
        matches = all
            .iter()
            .filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == what))
            .cloned()
            .collect();
        // By name, the newest attempt.
        matches.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        matches.truncate(1);
    }
    match matches.len() {
        0 => Err(Error::NotFound {
            kind: "container",
            what: what.to_owned(),
        }),
        1 => Ok(matches.remove(0)),
        _ => Err(Error::Ambiguous {
            what: what.to_owned(),
            matches: matches
                .iter()
                .map(|c| short(&c.id))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The first 13 characters of an ID, as crictl shows them.
pub fn short(id: &str) -> String {
    id.chars().take(13).collect()
}

/// Removes pod sandboxes as the kubelet does: stops each running container with
/// `grace` seconds between SIGTERM and SIGKILL, stops and removes the sandbox, and
/// deletes the pod's volumes under `pods_dir`. Returns the removed sandbox IDs.
pub async fn remove_pods(
    cri: &Cri,
    sandboxes: &[api::PodSandbox],
    grace: i64,
    pods_dir: &Path,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for s in sandboxes {
        let filter = api::ContainerFilter {
            pod_sandbox_id: s.id.clone(),
            ..Default::default()
        };
        let containers = cri.list_containers(Some(filter)).await?;
        let stops = containers
            .iter()
            .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
            .map(|c| cri.stop_container(&c.id, grace));
        for result in futures_util::future::join_all(stops).await {
            result?;
        }
        match cri.stop_pod_sandbox(&s.id).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
        match cri.remove_pod_sandbox(&s.id).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
        let uid = s
            .labels
            .get(POD_UID_LABEL)
            .cloned()
            .or_else(|| s.metadata.as_ref().map(|m| m.uid.clone()));
        if let Some(uid) = uid.filter(|u| !u.is_empty() && !u.contains('/') && u != "..") {
            let dir = pods_dir.join(uid);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
            }
        }
        removed.push(s.id.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(10));
        assert_eq!(backoff(1), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(160));
        assert_eq!(backoff(5), Duration::from_secs(300));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }

    #[test]
    fn outcome_exit_codes() {
        let o = |codes: &[Option<i32>], stopped| PodOutcome {
            sandbox_id: "s".into(),
            exit_codes: codes.iter().map(|c| ("c".to_owned(), *c)).collect(),
            stopped,
        };
        assert_eq!(o(&[Some(0), Some(0)], false).exit_code(), 0);
        assert_eq!(o(&[Some(0), Some(3)], false).exit_code(), 3);
        assert_eq!(o(&[None], true).exit_code(), 130);
        assert_eq!(o(&[Some(1)], true).exit_code(), 130);
    }
}
