//! The process isolation level: a container runs in a child of the shim, which is this
//! binary re-executed as
//! `containerd-shim-wasm-v1 __wasmpod-guest ID BUNDLE CGROUP NETNS|- [PROGRAM]`.
//!
//! The child joins its cgroup, loads the program (from the precompile cache the shim filled
//! at Create), confines itself while it still has one thread (the pod's network namespace,
//! a mount namespace of its own, the spec's user and capabilities, `no_new_privs`), then
//! runs the guest on a single-threaded runtime. Signals the shim forwards end the guest as
//! they would in the shared level (SIGTERM → 143); the shim reaps the child and reports
//! its status; a kill by the cgroup's OOM killer is reported as such.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use containerd_shim::monitor::{monitor_subscribe, monitor_unsubscribe, Subject, Topic};
use oci_spec::runtime::Spec;
use sandbox::{Cgroup, Confinement, RunPolicy};
use wasm_engine::{
    Engine, EngineConfig, KillHandle, ProgramLimits, Stdio, StdioStream, EXIT_CANNOT_START,
};

use crate::error::{Error, Result};

/// The hidden first argument that makes this binary run one guest instead of being a shim.
pub const GUEST_COMMAND: &str = "__wasmpod-guest";

/// The environment variable that tells the child its shim's pid.
const PARENT_ENV: &str = "WASMPOD_SHIM_PID";

/// The file a Wasm OCI artifact's program is written to in the bundle, for the child.
pub(crate) const PROGRAM_FILE: &str = "wasmpod-program.wasm";

/// What a process-level container holds between Create and Start.
#[derive(Debug)]
pub(crate) struct ProcessWorkload {
    /// The streams the child is given as its stdin, stdout and stderr.
    pub(crate) stdio: Stdio,
    /// The program file when it is not in the root filesystem.
    pub(crate) program: Option<PathBuf>,
    /// The pod's network namespace, when the spec names it through the sandbox's process.
    pub(crate) netns: Option<PathBuf>,
    /// Its port and network policy.
    pub(crate) network: sandbox::NetworkPlan,
    /// Whether the program is a `wasi:http` handler, served on the plan's port.
    pub(crate) serve: bool,
    /// The handler's program size limit, which the child reads the entrypoint under too
    /// (the file may have changed since Create).
    pub(crate) max_size: u64,
    /// What a served handler may hold of its server.
    pub(crate) http: wasm_engine::HttpLimits,
    /// An exec's process (a JSON file in the bundle), run instead of the spec's.
    pub(crate) exec: Option<PathBuf>,
    /// Who the guest runs as when its spec asks for root.
    pub(crate) guest_user: sandbox::GuestUser,
}

/// The environment variables that give the child its network plan.
const PORT_ENV: &str = "WASMPOD_PORT";
const OUTBOUND_ENV: &str = "WASMPOD_ALLOWED_OUTBOUND";
const SERVE_ENV: &str = "WASMPOD_SERVE";
const MAX_SIZE_ENV: &str = "WASMPOD_MAX_MODULE_SIZE";
const HTTP_LIMITS_ENV: &str = "WASMPOD_HTTP_LIMITS";
/// The file holding an exec's OCI process, which the child runs instead of the spec's.
const EXEC_ENV: &str = "WASMPOD_EXEC_PROCESS";
/// The handler's `guest_user`, `UID:GID`.
const GUEST_USER_ENV: &str = "WASMPOD_GUEST_USER";

/// The network namespace path of the pod a container belongs to, for one whose spec names
/// it as `/proc/<sandbox task pid>/ns/net`: containerd's CRI joins a pod's containers to
/// their sandbox's namespaces through its pid, which for a wasm sandbox is this shim's.
/// `sandbox_netns` is the path in the sandbox's own spec (CNI's). `None`: the spec's path
/// is used as it is.
pub(crate) fn pod_netns(
    spec: &Spec,
    sandbox_netns: impl FnOnce() -> Option<PathBuf>,
) -> Result<Option<PathBuf>> {
    let confinement =
        Confinement::from_spec(spec).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let sandbox::Network::Join(path) = confinement.network() else {
        return Ok(None);
    };
    let through_shim = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
    if *path != through_shim {
        return Ok(None);
    }
    sandbox_netns().map(Some).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the spec joins the network namespace of the pod sandbox ({}), but this shim \
             holds no sandbox of that pod",
            path.display()
        ))
    })
}

/// A subscription to the shim's reaper, taken before the child exists so that its exit
/// cannot be missed.
pub(crate) struct ExitWatch(containerd_shim::monitor::Subscription);

impl ExitWatch {
    pub(crate) async fn new() -> Result<Self> {
        monitor_subscribe(Topic::Pid)
            .await
            .map(ExitWatch)
            .map_err(|e| Error::Io {
                context: "watching for child exits".into(),
                source: std::io::Error::other(e.to_string()),
            })
    }

    /// Stops watching (the child was never started).
    pub(crate) async fn cancel(self) {
        let _ = monitor_unsubscribe(self.0.id).await;
    }

    /// Waits for `pid` to end; its exit status (128 + signal for a signal).
    pub(crate) async fn wait(mut self, pid: u32) -> i32 {
        let pid = i32::try_from(pid).unwrap_or(-1);
        let code = loop {
            match self.0.rx.recv().await {
                Some(e) if matches!(e.subject, Subject::Pid(p) if p == pid) => break e.exit_code,
                Some(_) => continue,
                None => break EXIT_CANNOT_START,
            }
        };
        let _ = monitor_unsubscribe(self.0.id).await;
        code
    }
}

pub(crate) fn child_stdio(stream: StdioStream) -> std::process::Stdio {
    match stream {
        StdioStream::File(f) => f.into(),
        StdioStream::Inherit => std::process::Stdio::inherit(),
        StdioStream::Null => std::process::Stdio::null(),
    }
}

/// Starts the child of container `id`; returns its pid.
pub(crate) fn spawn(
    id: &str,
    bundle: &Path,
    cgroup: &str,
    workload: ProcessWorkload,
) -> Result<u32> {
    let exe = std::env::current_exe().map_err(|e| Error::Io {
        context: "finding the shim's own binary".into(),
        source: e,
    })?;
    let ProcessWorkload {
        stdio,
        program,
        netns,
        network,
        serve,
        max_size,
        http,
        exec,
        guest_user,
    } = workload;
    let outbound: Vec<String> = network
        .policy
        .outbound
        .iter()
        .map(ToString::to_string)
        .collect();
    let netns = netns.map_or_else(|| "-".into(), |p| p.into_os_string());
    let mut command = Command::new(exe);
    command
        .arg(GUEST_COMMAND)
        .arg(id)
        .arg(bundle)
        .arg(cgroup)
        .arg(netns)
        .args(program.iter())
        .current_dir(bundle)
        .env(PARENT_ENV, std::process::id().to_string())
        .env(PORT_ENV, network.port.to_string())
        .env(OUTBOUND_ENV, outbound.join(","))
        .env(SERVE_ENV, if serve { "1" } else { "" })
        .env(MAX_SIZE_ENV, max_size.to_string())
        .env(HTTP_LIMITS_ENV, http.to_text())
        .env(GUEST_USER_ENV, guest_user.to_string())
        .env_remove(crate::bootstrap::LISTEN_FD_ENV)
        .env_remove(EXEC_ENV)
        .stdin(child_stdio(stdio.stdin))
        .stdout(child_stdio(stdio.stdout))
        .stderr(child_stdio(stdio.stderr));
    if let Some(exec) = exec {
        command.env(EXEC_ENV, exec);
    }
    let child = command.spawn().map_err(|e| Error::Io {
        context: format!("container {id}: starting its process"),
        source: e,
    })?;
    // The shim's reaper collects it; dropping `Child` neither waits nor kills.
    Ok(child.id())
}

/// Sends `signal` to the child `pid`.
pub(crate) fn signal(id: &str, pid: u32, signal: u32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).unwrap_or(0);
    let sig = libc::c_int::try_from(signal).unwrap_or(0);
    if let Err(e) = crate::sys::kill(pid, sig) {
        return Err(match e.raw_os_error() {
            Some(libc::ESRCH) => Error::NotFound(format!("{id}: process already finished")),
            _ => Error::Io {
                context: format!("container {id}: sending signal {signal}"),
                source: e,
            },
        });
    }
    Ok(())
}

/// The child: `__wasmpod-guest ID BUNDLE CGROUP NETNS|- [PROGRAM]`. Never returns.
pub fn guest_main(args: &[String]) -> ! {
    let code = match run_guest(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmpod: {e}");
            EXIT_CANNOT_START
        }
    };
    std::process::exit(code)
}

/// Ends this process with SIGKILL when its shim dies: nobody would report its exit, and
/// the dead shim's cleanup removes its cgroup.
fn die_with_parent() -> std::result::Result<(), String> {
    crate::sys::die_with_parent().map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    // The shim may have died before the line above.
    let expected = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok());
    let parent = crate::sys::parent_pid();
    if expected.is_some_and(|p: libc::pid_t| p != parent) {
        return Err("the shim that started this guest is gone".into());
    }
    Ok(())
}

/// After a shim died: kills whatever is left of container `id`'s process level (its cgroup
/// `path`) and removes the cgroup. Nothing to do for a shared-level container.
pub(crate) fn clean_up_after_dead_shim(id: &str, bundle: &Path) {
    let Ok(spec) = Spec::load(bundle.join("config.json")) else {
        return;
    };
    if let Ok(cgroup) = Cgroup::open_for(&spec, id) {
        if let Err(error) = cgroup.delete() {
            tracing::warn!(%id, %error, "removing the cgroup of a dead shim's container");
        }
    }
}

fn run_guest(args: &[String]) -> std::result::Result<i32, String> {
    die_with_parent()?;
    let [id, bundle, cgroup, netns, rest @ ..] = args else {
        return Err(format!(
            "usage: {GUEST_COMMAND} ID BUNDLE CGROUP NETNS|- [PROGRAM]"
        ));
    };
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: &dyn std::fmt::Display| format!("container {id}: {what}: {e}")
    };
    // While this process has one thread and all its privileges: the cgroup, the program.
    Cgroup::open(cgroup)
        .and_then(|c| c.join())
        .map_err(|e| fail("joining its cgroup")(&e))?;
    let bundle = Path::new(bundle);
    let mut spec =
        Spec::load(bundle.join("config.json")).map_err(|e| fail("reading config.json")(&e))?;
    // An exec: the container's spec (its mounts, environment, limits) with the exec's process.
    if let Some(exec) = std::env::var_os(EXEC_ENV) {
        let process = std::fs::read(&exec)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .map_err(|e| fail(&format!("reading its exec's process {exec:?}"))(&e))?;
        spec.set_process(Some(process));
    }
    let program_file = rest.first().map(PathBuf::from);
    let policy = match &program_file {
        Some(_) => RunPolicy::from_spec_with_program(&spec, bundle),
        None => RunPolicy::from_spec(&spec, bundle),
    }
    .map_err(|e| fail("policy")(&e))?;
    let bytes = match &program_file {
        Some(path) => std::fs::read(path).map_err(|e| fail("reading its program")(&e))?,
        None => {
            let max = std::env::var(MAX_SIZE_ENV)
                .ok()
                .and_then(|m| m.parse().ok())
                .unwrap_or(ProgramLimits::DEFAULT_MAX_SIZE);
            policy
                .read_entrypoint(max)
                .map_err(|e| fail("reading its entrypoint")(&e))?
        }
    };
    let serve = std::env::var(SERVE_ENV).is_ok_and(|v| v == "1");
    let http = wasm_engine::HttpLimits::parse(&std::env::var(HTTP_LIMITS_ENV).unwrap_or_default())
        .map_err(|e| fail(&format!("its {HTTP_LIMITS_ENV}"))(&e))?;
    // Already in the container's own process and cgroup (and usually a cache hit): a
    // compile child of its own would gain nothing.
    let mut config = EngineConfig::default()
        .cache_dir(crate::service::cache_dir())
        .compile_on_caller_thread(true);
    if serve {
        config = config.pooling(wasm_engine::Pooling::default());
    }
    let engine = Engine::new(config).map_err(|e| fail("starting the engine")(&e))?;
    // Create checked the program against the handler's limits and compiled it into the cache.
    let program = engine
        .load_limited(&bytes, Path::new(policy.entrypoint()), &ProgramLimits::NONE)
        .map_err(|e| fail("loading its program")(&e))?;
    drop(bytes);
    let mut confinement =
        Confinement::from_spec(&spec).map_err(|e| fail("confining its process")(&e))?;
    if netns != "-" {
        confinement.set_network(sandbox::Network::Join(netns.into()));
    }
    let guest_user = match std::env::var(GUEST_USER_ENV) {
        Ok(text) => sandbox::GuestUser::parse(&text, GUEST_USER_ENV)
            .map_err(|e| fail("its guest user")(&e))?,
        Err(_) => sandbox::GuestUser::NOBODY,
    };
    let mut hardening =
        sandbox::Hardening::from_spec(&spec).map_err(|e| fail("its seccomp profile")(&e))?;
    // Opened while this process may still look them up (the state directory is root's):
    // Landlock's rules, and the guest's directories, which the engine opens again through
    // this process's descriptors (`/proc/self/fd/N`) once it is nobody.
    let mut preopen_dirs = Vec::new();
    for preopen in policy.preopens() {
        hardening
            .allow(&preopen.host, !preopen.readonly)
            .map_err(|e| fail("restricting its files")(&e))?;
        let dir = std::fs::File::open(&preopen.host)
            .map_err(|e| fail(&format!("opening {}", preopen.host.display()))(&e))?;
        preopen_dirs.push(dir);
    }
    let cache = crate::service::cache_dir();
    if cache.is_dir() {
        hardening
            .allow(&cache, false)
            .map_err(|e| fail("restricting its files")(&e))?;
    }
    confinement
        .enter()
        .map_err(|e| fail("confining its process")(&e))?;
    let port = std::env::var(PORT_ENV)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(sandbox::DEFAULT_PORT);
    // In the pod's network namespace now, and still privileged: its port is the pod's, and
    // a port below 1024 needs no capability the guest keeps.
    let listener = match serve {
        true => Some(
            std::net::TcpListener::bind(("0.0.0.0", port))
                .map_err(|e| fail(&format!("listening on port {port}"))(&e))?,
        ),
        false => None,
    };
    confinement
        .drop_to(guest_user)
        .map_err(|e| fail("dropping its privileges")(&e))?;
    let hardened = hardening
        .apply()
        .map_err(|e| fail("restricting its system calls and files")(&e))?;
    let outbound = wasm_engine::NetworkPolicy::parse_outbound(
        &std::env::var(OUTBOUND_ENV).unwrap_or_default(),
    )
    .map_err(|e| fail("its network policy")(&e))?;
    let mut policy = policy;
    policy.set_network(wasm_engine::NetworkPolicy {
        listen_ports: vec![port],
        outbound,
        listen_any: false,
    });
    // What the runtime has to say about the guest (a connection the network policy
    // denied) goes to the container's stderr, where `kubectl logs` shows it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMPOD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
    for name in hardening.unknown_syscalls() {
        tracing::debug!(%id, name, "the seccomp profile names a system call this kernel lacks");
    }
    tracing::debug!(%id, filters = hardened.filters, landlock = hardened.landlock, "hardened");
    // At the filter's level, so that it is recorded: it names the container.
    let span = tracing::warn_span!("container", %id);
    let runtime = wasm_engine::guest_runtime(0).map_err(|e| fail("starting a runtime")(&e))?;
    runtime.block_on(tracing::Instrument::instrument(
        async move {
            let kill = KillHandle::new();
            forward_signals(&kill);
            let mut config = policy.run_config(Stdio::inherit(), kill);
            for (preopen, dir) in config.preopens.iter_mut().zip(&preopen_dirs) {
                preopen.host = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
            }
            // The cgroup holds the memory limit of the whole process: one limit, one OOM
            // killer, as for any other container; Update changes it.
            config.limits.memory = None;
            config.limits.oom_kill = false;
            // The cgroup's CFS quota holds its CPU too. The engine's budget counts the time
            // the guest is polled, which includes the time the kernel throttles it: both
            // together would hold a spinning guest well below its quota.
            config.cpu.set_budget(None, None);
            if let Some(listener) = listener {
                // SIGTERM drains (exit 0); SIGKILL ends the process.
                let mut config = wasm_engine::ServeConfig::from(config);
                config.http = http;
                let stats = engine
                    .serve(&program, listener, config)
                    .await
                    .map_err(|e| fail("serving")(&e))?;
                eprintln!(
                    "wasmpod: stopped after {} requests ({} failed)",
                    stats.requests, stats.failed
                );
                return Ok(0);
            }
            engine
                .run(&program, config)
                .await
                .map(|status| status.code())
                .map_err(|e| fail("starting the guest")(&e))
        },
        span,
    ))
}

/// Signals whose default action would end the process end the guest instead, with the
/// status the shared level gives them (128 + signal), so output is flushed and reported.
fn forward_signals(kill: &KillHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        let Ok(mut stream) = signal(SignalKind::from_raw(sig)) else {
            continue;
        };
        let kill = kill.clone();
        tokio::spawn(async move {
            if stream.recv().await.is_some() {
                kill.kill_with(128 + sig);
            }
        });
    }
}

/// The cgroup a process-level container holds from Create to Delete.
/// The real process level: cgroups under `/sys/fs/cgroup`, this binary re-executed as the
/// child, and the shim's reaper telling its exit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Children;

impl crate::task::Group for Cgroup {
    fn path(&self) -> &str {
        Cgroup::path(self)
    }

    fn stats(&self) -> sandbox::CgroupStats {
        Cgroup::stats(self)
    }

    fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> sandbox::Result<()> {
        Cgroup::update(self, resources)
    }

    fn delete(&self) -> sandbox::Result<()> {
        Cgroup::delete(self)
    }
}

#[async_trait::async_trait]
impl crate::task::ExitWait for ExitWatch {
    async fn wait(self: Box<Self>, pid: u32) -> i32 {
        ExitWatch::wait(*self, pid).await
    }

    async fn cancel(self: Box<Self>) {
        ExitWatch::cancel(*self).await;
    }
}

#[async_trait::async_trait]
impl crate::task::Processes for Children {
    fn create_group(
        &self,
        id: &str,
        path: &str,
        scope: Option<&sandbox::Scope>,
        resources: Option<&oci_spec::runtime::LinuxResources>,
    ) -> sandbox::Result<crate::task::SharedGroup> {
        let cgroup = match scope {
            Some(scope) => {
                Cgroup::create_scope(scope, &format!("wasmpod container {id}"), resources)?
            }
            None => Cgroup::create(path, resources)?,
        };
        Ok(Arc::new(cgroup))
    }

    async fn watch(&self) -> Result<Box<dyn crate::task::ExitWait>> {
        Ok(Box::new(ExitWatch::new().await?))
    }

    fn spawn(
        &self,
        id: &str,
        bundle: &Path,
        group: &dyn crate::task::Group,
        workload: ProcessWorkload,
    ) -> Result<u32> {
        spawn(id, bundle, group.path(), workload)
    }

    fn signal(&self, id: &str, pid: u32, sig: u32) -> Result<()> {
        signal(id, pid, sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_joining(path: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","linux":{{"namespaces":[{{"type":"network","path":"{path}"}}]}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_pod_netns_named_through_the_shim_is_the_sandboxs() {
        let ours = format!("/proc/{}/ns/net", std::process::id());
        let cni = PathBuf::from("/run/netns/cni-1");
        assert_eq!(
            pod_netns(&spec_joining(&ours), || Some(cni.clone())).unwrap(),
            Some(cni.clone())
        );
        // Any other path is joined as the spec gives it.
        assert_eq!(
            pod_netns(&spec_joining("/run/netns/other"), || Some(cni.clone())).unwrap(),
            None
        );
        let e = pod_netns(&spec_joining(&ours), || None).unwrap_err();
        assert!(e.to_string().contains("holds no sandbox"), "{e}");
    }
}
