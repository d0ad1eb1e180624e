//! `wasmpod pod run | rm`: Pod manifests through a CRI runtime, as the kubelet would run
//! them, with the logs on this terminal.

use std::io::Write as _;

use anyhow::{bail, Context};
use cri::{api, Cri, Manifests, PlanOptions, PodPlan};
use oci_image::{Credentials, ImageRef};

use crate::cli::{PodRmArgs, PodRunArgs};
use crate::dirs::Dirs;

/// `wasmpod pod run`: exits with the first non-zero container exit code, else 0; 1 when
/// the pod cannot run.
pub(crate) fn run(dirs: &Dirs, args: PodRunArgs) -> i32 {
    match run_pod(dirs, &args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmpod: {}", crate::messages::error_line(&e));
            1
        }
    }
}

fn run_pod(dirs: &Dirs, args: &PodRunArgs) -> anyhow::Result<i32> {
    let manifests = Manifests::load(&args.files)?;
    let pod = pick_pod(&manifests, args.pod.as_deref())?;
    let mut options = PlanOptions::new(
        args.log_dir.clone(),
        pods_dir(dirs),
        new_uid()?,
        cri::hostname(),
    );
    if let Some(driver) = args.cgroup_driver {
        options = options.with_cgroup_driver(driver.into());
    }
    let plan = PodPlan::new(pod, &manifests, &options)?;
    let credentials =
        |image: &str| pull_credentials(image, &plan.pull_secrets, args.docker_config.as_deref());
    let many = plan.containers.len() > 1;
    let detach = args.detach;
    let mut sink = |name: &str, entry: &cri::Entry| {
        if detach {
            return; // detached: only the sandbox ID goes to stdout; logs stay in their files
        }
        let prefix = if many {
            format!("[{name}] ")
        } else {
            String::new()
        };
        let line = format!("{prefix}{}\n", entry.message);
        let _ = match entry.stream {
            cri::Stream::Stdout => std::io::stdout().write_all(line.as_bytes()),
            cri::Stream::Stderr => std::io::stderr().write_all(line.as_bytes()),
        };
    };
    crate::images::runtime()?.block_on(async {
        let cri =
            Cri::connect_within(&args.endpoint.runtime_endpoint, args.endpoint.timeout).await?;
        let result = cri::run_pod(
            &cri,
            &plan,
            &credentials,
            args.detach,
            &mut sink,
            stop_signal(),
        )
        .await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                // Nothing of a pod that could not start keeps running.
                cleanup_failed(&cri, &plan, args.rm, dirs).await;
                return Err(e.into());
            }
        };
        if args.detach {
            println!("{}", outcome.sandbox_id);
            return Ok(0);
        }
        for (name, code) in &outcome.exit_codes {
            tracing::info!(container = %name, ?code, "finished");
        }
        if args.rm {
            let sandboxes = cri::find_pods(&cri, &outcome.sandbox_id).await?;
            remove_pods(&cri, &sandboxes, plan.grace_period, dirs).await?;
        }
        Ok(outcome.exit_code())
    })
}

/// The pod to run: the one named, or the only one.
fn pick_pod<'a>(manifests: &'a Manifests, name: Option<&str>) -> anyhow::Result<&'a cri::Pod> {
    let names: Vec<&str> = manifests
        .pods
        .iter()
        .map(|p| p.metadata.name.as_deref().unwrap_or(""))
        .collect();
    match (name, manifests.pods.len()) {
        (_, 0) => bail!("no Pod in the manifests given"),
        (None, 1) => Ok(&manifests.pods[0]),
        (None, _) => bail!(
            "the manifests hold {} pods ({}): pick one with --pod",
            names.len(),
            names.join(", ")
        ),
        (Some(n), _) => manifests
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))
            .with_context(|| format!("no Pod named {n:?} (there are: {})", names.join(", "))),
    }
}

/// Where pod volumes live: `<state>/pods/<uid>`.
pub(crate) fn pods_dir(dirs: &Dirs) -> std::path::PathBuf {
    dirs.state.join("pods")
}

/// A random RFC 4122 version 4 uid, as the API server gives pods.
fn new_uid() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .context("reading /dev/urandom")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Credentials for `image`: the pod's imagePullSecrets first, then the docker config.
pub(crate) fn pull_credentials(
    image: &str,
    secrets: &[Vec<u8>],
    docker_config: Option<&std::path::Path>,
) -> cri::Result<Option<api::AuthConfig>> {
    let Ok(reference) = ImageRef::parse(image) else {
        return Ok(None); // the runtime names a bad reference itself
    };
    let registry = reference.registry();
    let fail = |e: oci_image::Error| cri::Error::Manifest {
        source_name: format!("credentials for {image}"),
        reason: e.to_string(),
    };
    let mut found = Credentials::Anonymous;
    for secret in secrets {
        found = Credentials::from_docker_config_json(secret, registry, "imagePullSecrets")
            .map_err(fail)?;
        if found != Credentials::Anonymous {
            break;
        }
    }
    if found == Credentials::Anonymous {
        found = match docker_config {
            Some(path) => Credentials::from_docker_config_file(path, registry),
            None => Credentials::from_docker_config(registry),
        }
        .map_err(fail)?;
    }
    Ok(match found {
        Credentials::Anonymous => None,
        // No server_address: these are already this image's registry's, and containerd
        // reads that field as a URL, comparing its host with the one it pulls from.
        Credentials::Basic { username, password } => Some(api::AuthConfig {
            username,
            password,
            ..Default::default()
        }),
    })
}

/// Stops (and with `--rm` removes) the sandbox of a pod whose run failed.
async fn cleanup_failed(cri: &Cri, plan: &PodPlan, remove: bool, dirs: &Dirs) {
    let filter = api::PodSandboxFilter {
        label_selector: [(cri::POD_UID_LABEL.to_owned(), plan.uid.clone())].into(),
        ..Default::default()
    };
    let Ok(sandboxes) = cri.list_pod_sandboxes(Some(filter)).await else {
        return;
    };
    if remove {
        let _ = remove_pods(cri, &sandboxes, 0, dirs).await;
    } else {
        for s in &sandboxes {
            let _ = cri.stop_pod_sandbox(&s.id).await;
        }
        if !sandboxes.is_empty() {
            eprintln!(
                "wasmpod: the pod's sandbox is stopped and kept: `wasmpod pod rm {}` removes it",
                plan.pod
            );
        }
    }
}

/// Removes the pods as the kubelet does ([`cri::remove_pods`]), then each one's cgroup
/// when its plan named a parent ([`cri::CGROUP_PARENT_ANNOTATION`]): the kubelet, not the
/// runtime, removes a pod's cgroup. Returns the removed sandbox IDs.
async fn remove_pods(
    cri: &Cri,
    sandboxes: &[api::PodSandbox],
    grace: i64,
    dirs: &Dirs,
) -> anyhow::Result<Vec<String>> {
    let removed = cri::remove_pods(cri, sandboxes, grace, &pods_dir(dirs)).await?;
    for s in sandboxes.iter().filter(|s| removed.contains(&s.id)) {
        if let Some(parent) = s.annotations.get(cri::CGROUP_PARENT_ANNOTATION) {
            sandbox::remove_pod_cgroup(parent)
                .with_context(|| format!("pod sandbox {}: its cgroup", cri::short(&s.id)))?;
        }
    }
    Ok(removed)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `wasmpod pod rm`: prints each removed sandbox ID.
pub(crate) fn rm(dirs: &Dirs, args: PodRmArgs) -> anyhow::Result<()> {
    crate::images::runtime()?.block_on(async {
        let cri =
            Cri::connect_within(&args.endpoint.runtime_endpoint, args.endpoint.timeout).await?;
        for what in &args.pods {
            let sandboxes = cri::find_pods(&cri, what).await?;
            for id in remove_pods(&cri, &sandboxes, args.grace_period, dirs).await? {
                println!("{id}");
            }
        }
        Ok(())
    })
}
