//! `wasmpod cri pods | ps | logs | exec | attach | pull | stats | update | inspect | stop |
//! rm`: crictl's everyday verbs over the same CRI client, for nodes without crictl.

use std::time::{Duration, SystemTime};

use anyhow::bail;
use cri::{api, short, Cri, LogReader};

use crate::cli::{
    CriAttachArgs, CriCommand, CriExecArgs, CriLogsArgs, CriPsArgs, CriStatsArgs, EndpointArgs,
};
use crate::dirs::Dirs;

/// Runs one `wasmpod cri` verb.
pub(crate) fn main(dirs: &Dirs, command: CriCommand) -> anyhow::Result<()> {
    crate::images::runtime()?.block_on(async {
        match command {
            CriCommand::Pods(args) => pods(&connect(&args.endpoint).await?, args.quiet).await,
            CriCommand::Ps(args) => ps(&connect(&args.list.endpoint).await?, &args).await,
            CriCommand::Logs(args) => logs(&connect(&args.endpoint).await?, &args).await,
            CriCommand::Exec(args) => exec(&connect(&args.endpoint).await?, &args).await,
            CriCommand::Attach(args) => attach(&connect(&args.endpoint).await?, &args).await,
            CriCommand::Pull(args) => {
                let cri = connect(&args.endpoint).await?;
                let auth =
                    crate::pod::pull_credentials(&args.image, &[], args.docker_config.as_deref())?;
                let resolved = cri.pull_image(&args.image, auth, None).await?;
                println!("Image is up to date for {resolved}");
                Ok(())
            }
            CriCommand::Stats(args) => stats(&connect(&args.list.endpoint).await?, &args).await,
            CriCommand::Update(args) => {
                let cri = connect(&args.target.endpoint).await?;
                let memory = i64::try_from(args.memory)?;
                for id in &args.target.ids {
                    let c = cri::find_container(&cri, id).await?;
                    let (status, _) = cri.container_status(&c.id).await?;
                    // Keep the container's other resources as they are.
                    let mut resources = status.resources.and_then(|r| r.linux).unwrap_or_default();
                    resources.memory_limit_in_bytes = memory;
                    // As the kubelet does with swap off: memory+swap (cgroup v1's memsw,
                    // which containerd set equal to the limit at creation) moves with the
                    // limit; runc's kernel refuses a limit above the old memory+swap.
                    if resources.memory_swap_limit_in_bytes != 0 {
                        resources.memory_swap_limit_in_bytes = memory;
                    }
                    cri.update_container_resources(&c.id, resources).await?;
                    println!("{id}");
                }
                Ok(())
            }
            CriCommand::Inspect(args) => {
                let cri = connect(&args.endpoint).await?;
                for id in &args.ids {
                    inspect(&cri, id).await?;
                }
                Ok(())
            }
            CriCommand::Stop(args) => {
                let cri = connect(&args.target.endpoint).await?;
                for id in &args.target.ids {
                    match target(&cri, id).await? {
                        Target::Container(c) => {
                            cri.stop_container(&c.id, args.stop_timeout).await?
                        }
                        Target::Pod(p) => cri.stop_pod_sandbox(&p.id).await?,
                    }
                    println!("{id}");
                }
                Ok(())
            }
            CriCommand::Rm(args) => {
                let cri = connect(&args.endpoint).await?;
                for id in &args.ids {
                    match target(&cri, id).await? {
                        Target::Container(c)
                            if c.state == api::ContainerState::ContainerRunning as i32 =>
                        {
                            bail!(
                                "container {} is running: stop it first (wasmpod cri stop {id})",
                                short(&c.id)
                            )
                        }
                        Target::Container(c) => cri.remove_container(&c.id).await?,
                        Target::Pod(p) => {
                            cri::remove_pods(&cri, &[p], 0, &crate::pod::pods_dir(dirs)).await?;
                        }
                    }
                    println!("{id}");
                }
                Ok(())
            }
        }
    })
}

async fn connect(endpoint: &EndpointArgs) -> cri::Result<Cri> {
    Cri::connect_within(&endpoint.runtime_endpoint, endpoint.timeout).await
}

/// What an ID names.
enum Target {
    Container(api::Container),
    Pod(api::PodSandbox),
}

/// A container by ID/prefix/name, else a pod sandbox by ID/prefix/name.
async fn target(cri: &Cri, what: &str) -> anyhow::Result<Target> {
    match cri::find_container(cri, what).await {
        Ok(c) => return Ok(Target::Container(c)),
        Err(cri::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    match cri::find_pods(cri, what).await {
        Ok(mut pods) if pods.len() == 1 => Ok(Target::Pod(pods.remove(0))),
        Ok(pods) => bail!(
            "{what:?} names {} pod sandboxes ({}): give an ID",
            pods.len(),
            pods.iter()
                .map(|p| short(&p.id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(cri::Error::NotFound { what, .. }) => Err(cri::Error::NotFound {
            kind: "pod sandbox or container",
            what,
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// `1 minute ago`-style age of a CRI timestamp (nanoseconds since the epoch).
fn age(nanos: i64) -> String {
    let then = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    let secs = SystemTime::now()
        .duration_since(then)
        .map_or(0, |d| d.as_secs());
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3600 => (secs / 60, "minute"),
        3600..86400 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Prints rows as columns padded to their widest cell.
fn table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn sandbox_state(state: i32) -> &'static str {
    match api::PodSandboxState::try_from(state) {
        Ok(api::PodSandboxState::SandboxReady) => "Ready",
        _ => "NotReady",
    }
}

fn container_state(state: i32) -> &'static str {
    match api::ContainerState::try_from(state) {
        Ok(api::ContainerState::ContainerCreated) => "Created",
        Ok(api::ContainerState::ContainerRunning) => "Running",
        Ok(api::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

async fn pods(cri: &Cri, quiet: bool) -> anyhow::Result<()> {
    let mut all = cri.list_pod_sandboxes(None).await?;
    all.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    if quiet {
        all.iter().for_each(|s| println!("{}", s.id));
        return Ok(());
    }
    let mut rows = vec![[
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]
    .map(String::from)
    .to_vec()];
    for s in &all {
        let m = s.metadata.clone().unwrap_or_default();
        rows.push(vec![
            short(&s.id),
            age(s.created_at),
            sandbox_state(s.state).into(),
            m.name,
            m.namespace,
            m.attempt.to_string(),
            if s.runtime_handler.is_empty() {
                "(default)".into()
            } else {
                s.runtime_handler.clone()
            },
        ]);
    }
    table(&rows);
    Ok(())
}

async fn ps(cri: &Cri, args: &CriPsArgs) -> anyhow::Result<()> {
    let mut filter = api::ContainerFilter::default();
    if let Some(pod) = &args.pod {
        filter.pod_sandbox_id = one_pod(cri, pod).await?.id;
    }
    if !args.all {
        filter.state = Some(api::ContainerStateValue {
            state: api::ContainerState::ContainerRunning as i32,
        });
    }
    let mut all = cri.list_containers(Some(filter)).await?;
    all.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    if args.list.quiet {
        all.iter().for_each(|c| println!("{}", c.id));
        return Ok(());
    }
    let mut rows = vec![[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
    ]
    .map(String::from)
    .to_vec()];
    for c in &all {
        let m = c.metadata.clone().unwrap_or_default();
        let image = c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        rows.push(vec![
            short(&c.id),
            short(image.trim_start_matches("sha256:")),
            age(c.created_at),
            container_state(c.state).into(),
            m.name,
            m.attempt.to_string(),
            short(&c.pod_sandbox_id),
            c.labels
                .get(cri::POD_NAME_LABEL)
                .cloned()
                .unwrap_or_default(),
        ]);
    }
    table(&rows);
    Ok(())
}

/// The one pod sandbox `what` names.
async fn one_pod(cri: &Cri, what: &str) -> anyhow::Result<api::PodSandbox> {
    let mut pods = cri::find_pods(cri, what).await?;
    if pods.len() != 1 {
        bail!("{what:?} names {} pod sandboxes: give an ID", pods.len());
    }
    Ok(pods.remove(0))
}

/// Bytes as `12.3MiB`.
fn bytes(n: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    format!("{:.1}MiB", n as f64 / MIB)
}

async fn stats(cri: &Cri, args: &CriStatsArgs) -> anyhow::Result<()> {
    let mut filter = api::ContainerStatsFilter::default();
    if let Some(pod) = &args.pod {
        filter.pod_sandbox_id = one_pod(cri, pod).await?.id;
    }
    let mut all = cri.list_container_stats(Some(filter)).await?;
    all.sort_by(|a, b| {
        let name = |s: &api::ContainerStats| {
            s.attributes
                .as_ref()
                .and_then(|a| a.metadata.as_ref())
                .map(|m| m.name.clone())
        };
        name(a).cmp(&name(b))
    });
    if args.list.quiet {
        all.iter()
            .filter_map(|s| s.attributes.as_ref())
            .for_each(|a| println!("{}", a.id));
        return Ok(());
    }
    let mut rows = vec![
        ["CONTAINER", "NAME", "POD", "CPU TIME", "MEM (WORKING SET)"]
            .map(String::from)
            .to_vec(),
    ];
    for s in &all {
        let attributes = s.attributes.clone().unwrap_or_default();
        let value = |v: Option<&api::UInt64Value>| v.map(|v| v.value);
        let cpu = value(
            s.cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds.as_ref()),
        );
        let mem = value(s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref()));
        rows.push(vec![
            short(&attributes.id),
            attributes.metadata.map(|m| m.name).unwrap_or_default(),
            attributes
                .labels
                .get(cri::POD_NAME_LABEL)
                .cloned()
                .unwrap_or_default(),
            cpu.map_or_else(|| "-".into(), |ns| format!("{:.3}s", ns as f64 / 1e9)),
            mem.map_or_else(|| "-".into(), bytes),
        ]);
    }
    table(&rows);
    Ok(())
}

/// `cri exec CONTAINER -- CMD...`: the command's output on ours, and its exit code as ours.
async fn exec(cri: &Cri, args: &CriExecArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let container = cri::find_container(cri, &args.container).await?;
    if args.interactive || args.tty {
        // A terminal always asks for a stdin, even one never written: containerd stops
        // copying a terminal's output as soon as its stdin ends, and a streaming server
        // asked for none ends it at once, racing the output.
        let url = cri
            .exec(
                &container.id,
                &args.command,
                args.interactive || args.tty,
                args.tty,
            )
            .await?;
        let what = format!("exec {}", args.container);
        let code = stream(&what, &url, args.interactive, args.tty).await?;
        // Not through the runtime's drop: a read of stdin may still be waiting.
        std::process::exit(code.clamp(0, 255));
    }
    let out = cri
        .exec_sync(
            &container.id,
            &args.command,
            Duration::from_secs(args.exec_timeout),
        )
        .await?;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(&out.stderr)?;
    if out.exit_code != 0 {
        std::process::exit(out.exit_code.clamp(1, 255));
    }
    Ok(())
}

async fn logs(cri: &Cri, args: &CriLogsArgs) -> anyhow::Result<()> {
    let container = cri::find_container(cri, &args.container).await?;
    let (status, _) = cri.container_status(&container.id).await?;
    if status.log_path.is_empty() {
        bail!("container {} has no log file", short(&container.id));
    }
    let mut reader = LogReader::new(&status.log_path);
    let print = |e: &cri::Entry| {
        let line = if args.timestamps {
            format!("{} {}", e.time, e.message)
        } else {
            e.message.clone()
        };
        match e.stream {
            cri::Stream::Stdout => println!("{line}"),
            cri::Stream::Stderr => eprintln!("{line}"),
        }
    };
    let first = reader.read_new()?;
    let skip = args.tail.map_or(0, |n| first.len().saturating_sub(n));
    first.iter().skip(skip).for_each(print);
    if !args.follow {
        reader.flush().iter().for_each(print);
        return Ok(());
    }
    loop {
        let (status, _) = cri.container_status(&container.id).await?;
        reader.read_new()?.iter().for_each(print);
        if status.state == api::ContainerState::ContainerExited as i32 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            reader.read_new()?.iter().for_each(print);
            reader.flush().iter().for_each(print);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The runtime's verbose info map, with JSON values parsed.
fn info_json(info: std::collections::HashMap<String, String>) -> serde_json::Value {
    info.into_iter()
        .map(|(k, v)| {
            (
                k,
                serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v)),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

async fn inspect(cri: &Cri, what: &str) -> anyhow::Result<()> {
    let json = match target(cri, what).await? {
        Target::Container(c) => {
            let (status, info) = cri.container_status(&c.id).await?;
            serde_json::json!({ "status": status, "info": info_json(info) })
        }
        Target::Pod(p) => {
            let (status, info) = cri.pod_sandbox_status(&p.id).await?;
            serde_json::json!({ "status": status, "info": info_json(info) })
        }
    };
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// Relays this process's stdio to and from the streaming session at `url` (Exec or
/// Attach); its exit code. With a terminal, this one's (if stdin is one) goes raw and its
/// size follows the window's.
async fn stream(what: &str, url: &str, stdin: bool, tty: bool) -> anyhow::Result<i32> {
    use std::io::IsTerminal as _;
    let raw = match tty && stdin && std::io::stdin().is_terminal() {
        true => Some(crate::sys::RawTerminal::enter()?),
        false => None,
    };
    let sizes = tty.then(|| {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let size = || {
            crate::sys::terminal_size()
                .map(|(width, height)| cri::stream::TerminalSize { width, height })
        };
        if let Some(first) = size() {
            let _ = tx.try_send(first);
            if let Ok(mut changes) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            {
                tokio::spawn(async move {
                    while changes.recv().await.is_some() {
                        if let Some(now) = size() {
                            if tx.send(now).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        }
        rx
    });
    let io = cri::stream::StreamIo {
        stdin: stdin.then(|| Box::new(tokio::io::stdin()) as Box<_>),
        stdout: Box::new(tokio::io::stdout()),
        stderr: Box::new(tokio::io::stderr()),
        sizes,
    };
    let code = cri::stream::run(what, url, io).await;
    drop(raw);
    Ok(code?)
}

async fn attach(cri: &Cri, args: &CriAttachArgs) -> anyhow::Result<()> {
    let container = cri::find_container(cri, &args.container).await?;
    // As for exec: a terminal's stdin stays open while attached.
    let url = cri
        .attach(&container.id, args.interactive || args.tty, args.tty)
        .await?;
    let what = format!("attach {}", args.container);
    let code = stream(&what, &url, args.interactive, args.tty).await?;
    std::process::exit(code.clamp(0, 255));
}
