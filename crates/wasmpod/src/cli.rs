//! The command line: flags follow docker and podman wherever they have an equivalent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use sandbox::parse_bytes;

/// Run WebAssembly workloads as containers.
#[derive(Debug, Parser)]
#[command(name = "wasmpod", version, about)]
pub(crate) struct Cli {
    /// Directory for the precompile cache and image store
    /// [default: /var/lib/wasmpod as root, else $XDG_CACHE_HOME/wasmpod and $XDG_DATA_HOME/wasmpod]
    #[arg(long, global = true, env = "WASMPOD_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,

    /// Directory for run state [default: /run/wasmpod as root, else $XDG_RUNTIME_DIR/wasmpod]
    #[arg(long, global = true, env = "WASMPOD_STATE", value_name = "DIR")]
    pub(crate) state: Option<PathBuf>,

    /// Log filter for wasmpod's own messages (WASMPOD_LOG overrides it)
    #[arg(long, global = true, default_value = "warn", value_name = "FILTER")]
    pub(crate) log_level: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a .wasm/.wat file or an image as a container; the guest's exit status becomes wasmpod's
    Run(RunArgs),
    /// Compile a .wasm/.wat file or an image's program into the precompile cache, so that
    /// its first run starts at once (takes run's flags: the program is found and limited
    /// as `run` would)
    Compile(RunArgs),
    /// Pull an image from a registry into the local store
    Pull(PullArgs),
    /// Build a wasm image from a .wasm or .wat file
    Build(BuildArgs),
    /// Push an image from the local store to a registry
    Push(PushArgs),
    /// List the images in the local store
    Images,
    /// Remove images from the local store
    Rmi(RmiArgs),
    /// Delete blobs and unpacked images no tag refers to (and, with --cache, all compiled code)
    Prune(PruneArgs),
    /// Run Pod manifests through a CRI runtime (containerd), as the kubelet would
    #[command(subcommand)]
    Pod(PodCommand),
    /// crictl-like views and actions over a CRI runtime
    #[command(subcommand)]
    Cri(CriCommand),
    /// Install the shim on this node and add the wasm runtime to containerd's config
    Install(InstallArgs),
    /// Take away what `install` added: the runtime handler, its options file and the shim
    Uninstall(UninstallArgs),
    /// Print a shell completion script: wasmpod completions bash > /etc/bash_completion.d/wasmpod
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// Where the CRI runtime listens (shared by `pod` and `cri`).
#[derive(Debug, Args, Clone)]
pub(crate) struct EndpointArgs {
    /// The CRI endpoint, as crictl's
    #[arg(
        short = 'r',
        long,
        env = "CONTAINER_RUNTIME_ENDPOINT",
        default_value = cri::DEFAULT_ENDPOINT,
        value_name = "unix:///PATH"
    )]
    pub(crate) runtime_endpoint: String,

    /// How long to wait for the runtime to answer, as crictl's --timeout
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PodCommand {
    /// Run a Pod: sandbox, image pulls, containers; follow logs until it completes
    Run(PodRunArgs),
    /// Stop and remove pods (their containers, sandboxes and volumes)
    Rm(PodRmArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PodRunArgs {
    /// Manifest files: the Pod, and any RuntimeClass, ConfigMap and Secret it uses
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,

    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,

    /// Return once the containers run, leaving the pod running
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,

    /// Remove the pod once it completes
    #[arg(long, conflicts_with = "detach")]
    pub(crate) rm: bool,

    /// Which Pod to run when the files hold several
    #[arg(long, value_name = "NAME")]
    pub(crate) pod: Option<String>,

    /// Directory of the pods' logs, as the kubelet's
    #[arg(long, default_value = "/var/log/pods", value_name = "DIR")]
    pub(crate) log_dir: PathBuf,

    /// Docker config with registry credentials, after the pod's imagePullSecrets
    /// [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json]
    #[arg(long, value_name = "FILE")]
    pub(crate) docker_config: Option<PathBuf>,

    /// The node's cgroup driver, as the kubelet's: the pod's cgroup parent is named for
    /// its QoS class (/kubepods/besteffort/podUID, or kubepods-besteffort-podUID.slice
    /// under systemd) and removed with the pod [default: none; containerd places the
    /// containers]
    #[arg(long, value_enum, value_name = "DRIVER")]
    pub(crate) cgroup_driver: Option<CgroupDriver>,
}

/// The kubelet's `--cgroup-driver`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum CgroupDriver {
    /// cgroup paths under each hierarchy's root
    Cgroupfs,
    /// slices and scopes that systemd starts
    Systemd,
}

impl From<CgroupDriver> for cri::CgroupDriver {
    fn from(driver: CgroupDriver) -> Self {
        match driver {
            CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
            CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct PodRmArgs {
    /// Pod names (`NAME` or `NAMESPACE/NAME`) or sandbox IDs (or unique ID prefixes)
    #[arg(required = true, value_name = "POD")]
    pub(crate) pods: Vec<String>,

    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,

    /// Seconds each running container gets between SIGTERM and SIGKILL
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub(crate) grace_period: i64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CriCommand {
    /// List pod sandboxes
    Pods(CriListArgs),
    /// List containers (running ones; -a for all)
    Ps(CriPsArgs),
    /// Print a container's log
    Logs(CriLogsArgs),
    /// Run a command in a running container and exit with its code (ExecSync)
    Exec(CriExecArgs),
    /// Attach to a running container's own process (CRI Attach, streamed)
    Attach(CriAttachArgs),
    /// Pull an image into the runtime's store (PullImage), as crictl pull
    Pull(CriPullArgs),
    /// Memory and CPU use of running containers, as the kubelet reads them
    Stats(CriStatsArgs),
    /// Change the memory limit of running containers (UpdateContainerResources)
    Update(CriUpdateArgs),
    /// Print the status of containers or pod sandboxes as JSON
    Inspect(CriTargetArgs),
    /// Stop containers or pod sandboxes
    Stop(CriStopArgs),
    /// Remove containers, or pod sandboxes with their containers and volumes
    Rm(CriTargetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CriListArgs {
    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,

    /// Print only IDs
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CriPsArgs {
    #[command(flatten)]
    pub(crate) list: CriListArgs,

    /// Show exited containers too
    #[arg(short, long)]
    pub(crate) all: bool,

    /// Only the containers of this pod sandbox (ID or prefix)
    #[arg(short, long, value_name = "ID")]
    pub(crate) pod: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CriStatsArgs {
    #[command(flatten)]
    pub(crate) list: CriListArgs,

    /// Only the containers of this pod sandbox (ID, prefix or name)
    #[arg(short, long, value_name = "POD")]
    pub(crate) pod: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CriUpdateArgs {
    #[command(flatten)]
    pub(crate) target: CriTargetArgs,

    /// The new memory limit (64Mi, 1g, 1048576)
    #[arg(short, long, value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) memory: u64,
}

#[derive(Debug, Args)]
pub(crate) struct CriLogsArgs {
    /// The container (ID, unique ID prefix, or name)
    pub(crate) container: String,

    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,

    /// Keep printing new lines until the container exits
    #[arg(short, long)]
    pub(crate) follow: bool,

    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub(crate) tail: Option<usize>,

    /// Prefix each line with its timestamp
    #[arg(short, long)]
    pub(crate) timestamps: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CriExecArgs {
    /// The container (ID, unique ID prefix, or name)
    pub(crate) container: String,

    /// Keep stdin open and send this one's to the command (CRI Exec, streamed)
    #[arg(short, long)]
    pub(crate) interactive: bool,

    /// Run the command on a terminal (CRI Exec, streamed)
    #[arg(short, long)]
    pub(crate) tty: bool,

    /// The command and its arguments
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<String>,

    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,

    /// Seconds the command may run (0: no limit); `--timeout` is the CRI endpoint's
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub(crate) exec_timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct CriAttachArgs {
    /// The container (ID, unique ID prefix, or name)
    pub(crate) container: String,

    /// Send this one's stdin to the container's (it must have been created with stdin)
    #[arg(short, long)]
    pub(crate) interactive: bool,

    /// The container has a terminal (it was created with `tty: true`)
    #[arg(short, long)]
    pub(crate) tty: bool,

    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CriPullArgs {
    /// The image: `NAME[:TAG][@DIGEST]` (`docker.io/library/` is implied for bare names)
    pub(crate) image: String,

    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,

    /// Docker config with registry credentials
    /// [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json]
    #[arg(long, value_name = "FILE")]
    pub(crate) docker_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CriTargetArgs {
    /// Container or pod sandbox IDs (or unique prefixes, or names)
    #[arg(required = true, value_name = "ID")]
    pub(crate) ids: Vec<String>,

    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CriStopArgs {
    #[command(flatten)]
    pub(crate) target: CriTargetArgs,

    /// Seconds between SIGTERM and SIGKILL (crictl stop's -t; --timeout is the runtime's answer time)
    #[arg(
        short = 't',
        long = "stop-timeout",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub(crate) stop_timeout: i64,
}

/// Where containerd and the shim are on this node, and how containerd is restarted
/// (shared by `install` and `uninstall`).
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// containerd's config file (created by install when missing)
    #[arg(
        long,
        default_value = "/etc/containerd/config.toml",
        value_name = "FILE"
    )]
    pub(crate) containerd_config: PathBuf,

    /// The runtime handler name (the RuntimeClass handler)
    #[arg(long, default_value = "wasm", value_name = "NAME")]
    pub(crate) handler: String,

    /// Where the shim goes: a directory on containerd's PATH
    #[arg(long, default_value = "/usr/local/bin", value_name = "DIR")]
    pub(crate) bin_dir: PathBuf,

    /// The command that restarts containerd, run only when something changed
    #[arg(
        long,
        default_value = "systemctl restart containerd",
        value_name = "CMD"
    )]
    pub(crate) restart_command: String,

    /// Never restart containerd (the operator does it: nothing stays pending)
    #[arg(long)]
    pub(crate) no_restart: bool,

    /// Where the host's / is mounted when this runs in a container (the DaemonSet's /host): paths are the host's, reached through DIR
    #[arg(long, value_name = "DIR")]
    pub(crate) host_root: Option<PathBuf>,

    /// This Kubernetes node, labelled through the API (in a pod: its service account): install sets wasmpod.io/runtime=ready once installed and containerd restarted; uninstall first removes the label
    #[arg(long, env = "WASMPOD_NODE_NAME", value_name = "NODE")]
    pub(crate) label_node: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    #[command(flatten)]
    pub(crate) node: NodeArgs,

    /// A handler option, repeatable: isolation=shared|process, grouping=pod|node
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub(crate) options: Vec<String>,

    /// The shim to install [default: containerd-shim-wasm-v1 beside this wasmpod]
    #[arg(long, value_name = "FILE")]
    pub(crate) shim: Option<PathBuf>,

    /// Only edit the config; install no shim binary
    #[arg(long, conflicts_with = "shim")]
    pub(crate) config_only: bool,

    /// Config version for a new file: 2 (containerd 1.6/1.7) or 3 (2.x) [default: from `containerd --version`, else 2]
    #[arg(long, value_parser = clap::value_parser!(i64).range(2..=3), value_name = "N")]
    pub(crate) config_version: Option<i64>,

    /// Replace a handler of the same name that runs another runtime
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {
    #[command(flatten)]
    pub(crate) node: NodeArgs,

    /// Keep the shim binary (another handler may still use it)
    #[arg(long)]
    pub(crate) keep_shim: bool,
}

/// How to reach a registry (shared by run, pull and push).
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct RegistryArgs {
    /// An insecure registry, as docker's: plain HTTP, certificates unchecked (loopback registries use HTTP without it)
    #[arg(long)]
    pub(crate) insecure: bool,

    /// User name for the registry (otherwise ~/.docker/config.json `auths`); on `run`, -u is the container's user, as docker's
    #[arg(long, env = "WASMPOD_REGISTRY_USERNAME", value_name = "USER")]
    pub(crate) username: Option<String>,

    /// Read the registry password from standard input
    #[arg(long, requires = "username")]
    pub(crate) password_stdin: bool,

    /// Cap on the unpacked size of an image (1Gi by default)
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) max_unpacked: Option<u64>,

    /// Cap on the size of a manifest, index or image config (4Mi by default)
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) max_manifest_size: Option<u64>,

    /// Cap on the number of layers of an image (128 by default)
    #[arg(long, value_name = "N")]
    pub(crate) max_layers: Option<usize>,

    /// Stop a pull or push that takes longer than this in all ("30m" by default; "0" for
    /// no limit). Whatever it is, a download that brings less than 64 KiB in a minute stops
    #[arg(long, value_name = "DURATION", value_parser = parse_deadline)]
    pub(crate) pull_timeout: Option<Duration>,
}

/// `--pull-timeout`: a duration; 0 is no limit (`Duration::ZERO`, read as none).
fn parse_deadline(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text.trim())
            .map_err(|e| format!("{text:?} is not a duration (like \"30m\" or \"90s\"): {e}")),
    }
}

impl RegistryArgs {
    /// The image limits these flags set, defaults elsewhere.
    pub(crate) fn limits(&self) -> oci_image::ImageLimits {
        let default = oci_image::ImageLimits::default();
        oci_image::ImageLimits {
            max_document: self.max_manifest_size.unwrap_or(default.max_document),
            max_layers: self.max_layers.unwrap_or(default.max_layers),
            max_unpacked: self.max_unpacked.unwrap_or(default.max_unpacked),
        }
    }

    /// The deadline of a pull or push: `--pull-timeout`, else the default; 0 is none.
    pub(crate) fn deadline(&self) -> Option<Duration> {
        match self.pull_timeout {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(oci_image::DEFAULT_DEADLINE),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The image: `NAME[:TAG][@DIGEST]` (`docker.io/library/` is implied for bare names)
    pub(crate) image: String,

    #[command(flatten)]
    pub(crate) registry: RegistryArgs,

    /// Print only the digest
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,

    /// Do not compile the image's program ahead into the precompile cache (by default a
    /// pull compiles it, so that its first run starts without compiling)
    #[arg(long)]
    pub(crate) no_compile: bool,
}

/// The packaging `wasmpod build` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// CNCF TAG Runtime wasm artifact (application/wasm layer)
    Artifact,
    /// An ordinary image: tar layer with the .wasm, for any containerd
    Compat,
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The .wasm or .wat file
    pub(crate) file: PathBuf,

    /// The image name to tag
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub(crate) tag: String,

    /// The packaging
    #[arg(long, value_enum, default_value = "compat")]
    pub(crate) format: Format,

    /// Also write the image as an OCI layout directory, or an archive when the name ends in .tar
    #[arg(short = 'o', long, value_name = "PATH")]
    pub(crate) output: Option<PathBuf>,

    /// Add an annotation to the manifest (KEY=VALUE)
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub(crate) annotations: Vec<String>,

    /// Copy a host directory's contents into the image at DEST (compat format), e.g. a
    /// static site's files: ./public:/site
    #[arg(long = "add", value_name = "DIR:DEST", value_parser = parse_add)]
    pub(crate) add: Vec<(PathBuf, String)>,

    /// Declare a TCP port the image serves on (its ExposedPorts; where the shim serves a
    /// wasi:http handler)
    #[arg(long = "expose", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) expose: Vec<u16>,
}

fn parse_add(value: &str) -> Result<(PathBuf, String), String> {
    let (dir, dest) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("{value:?}: expected DIR:DEST"))?;
    if !dest.starts_with('/') {
        return Err(format!(
            "{value:?}: the destination must be an absolute path"
        ));
    }
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    Ok((dir, dest.to_owned()))
}

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The image in the local store
    pub(crate) image: String,

    /// Where to push it, if not to its own name
    pub(crate) destination: Option<String>,

    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Also empty the precompile cache (every engine version's compiled code; programs are
    /// compiled again when next run, or ahead of time with `wasmpod compile`)
    #[arg(long)]
    pub(crate) cache: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RmiArgs {
    /// The images to remove
    #[arg(required = true)]
    pub(crate) images: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Set an environment variable (KEY=VALUE, or KEY to pass this process's value)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,

    /// Bind a host directory into the container: HOST:GUEST[:ro|rw]
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]")]
    pub(crate) volumes: Vec<String>,

    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub(crate) workdir: Option<String>,

    /// Memory limit over all linear memories and tables (64Mi, 64m, 1g, 1048576)
    #[arg(short = 'm', long, value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) memory: Option<u64>,

    /// Kill the workload (status 137) after this long (500ms, 10s, 2m)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<Duration>,

    /// Mount the container's root filesystem read-only
    #[arg(long)]
    pub(crate) read_only: bool,

    /// Serve a wasi:http/proxy component on this address (127.0.0.1:8080, 0.0.0.0:80), a
    /// fresh instance per request, until SIGTERM or Ctrl-C (which drain requests in flight)
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,

    /// A limit of the --listen server, KEY=VALUE, repeatable: http_max_connections (1024),
    /// http_header_timeout (10s), http_idle_timeout (60s), http_request_timeout (5m),
    /// http_max_instances (100), http_reserved_instances (8)
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) http_limit: Vec<String>,

    /// Let a component connect and send to these destinations (host:port,...; `*` for
    /// any host or port), as the wasmpod.io/allowed-outbound annotation does; by default
    /// every outbound connection and request is refused
    #[arg(long, value_name = "LIST", value_parser = parse_outbound)]
    pub(crate) allow_outbound: Option<Outbound>,

    /// Let the guest also bind and listen on these ports (PORT,...), or on any port, an
    /// ephemeral one included, with `*` (as wasmtime's -Sinherit-network); by default only
    /// on its own port ($PORT, else 8080; none with --listen)
    #[arg(long, value_name = "PORTS", value_parser = parse_listen)]
    pub(crate) allow_listen: Option<Listen>,

    /// Refuse a program larger than this (256Mi by default)
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) max_module_size: Option<u64>,

    /// Refuse a program defining more functions than this (200000 by default)
    #[arg(long, value_name = "N")]
    pub(crate) max_functions: Option<u32>,

    /// Stop compiling a program after this long (5m by default; 0 for no deadline)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) compile_timeout: Option<Duration>,

    /// Cap a compile's memory (4Gi by default)
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) compile_memory: Option<u64>,

    /// Keep standard input attached (otherwise the guest reads end-of-file)
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,

    /// When to pull an image: missing, always or never
    #[arg(long, value_enum, default_value = "missing")]
    pub(crate) pull: PullPolicy,

    /// Publish a port, as docker's -p HOST:CONTAINER, IP:HOST:CONTAINER or PORT: a wasi:http component is
    /// served on IP:HOST (IP 0.0.0.0 by default, as docker's); a command may listen on
    /// CONTAINER, which must equal HOST (the guest shares the host's network)
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CONTAINER", value_parser = parse_publish)]
    pub(crate) publish: Vec<Publish>,

    /// The container's user, as docker's -u UID or UID:GID: written into its runtime spec. WASI
    /// has no users, so files are still opened as wasmpod's own user (said as a warning)
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]", value_parser = parse_user)]
    pub(crate) user: Option<(u32, u32)>,

    /// A name for the run, shown in its messages (docker's --name)
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// Remove the container when it exits: what wasmpod run always does (accepted for docker's habit)
    #[arg(long)]
    pub(crate) rm: bool,

    /// Detach, as docker's -d: refused with the reason (wasmpod run keeps no containers to come back to)
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,

    #[command(flatten)]
    pub(crate) registry: RegistryArgs,

    /// The .wasm/.wat file or image to run, then the arguments passed to it
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        value_name = "FILE|IMAGE [ARGS]"
    )]
    command: Vec<String>,
}

impl RunArgs {
    /// The program limits these flags set, defaults elsewhere.
    pub(crate) fn program_limits(&self) -> wasm_engine::ProgramLimits {
        let default = wasm_engine::ProgramLimits::default();
        wasm_engine::ProgramLimits {
            max_size: self.max_module_size.unwrap_or(default.max_size),
            max_functions: self.max_functions.unwrap_or(default.max_functions),
            compile_timeout: match self.compile_timeout {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => default.compile_timeout,
            },
            compile_memory: self.compile_memory.unwrap_or(default.compile_memory),
        }
    }
}

/// `--pull`, as podman's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PullPolicy {
    /// Pull when the image is not in the local store
    Missing,
    /// Pull every time
    Always,
    /// Never pull
    Never,
}

impl RunArgs {
    /// The file (or image) to run.
    pub(crate) fn file(&self) -> &Path {
        Path::new(&self.command[0])
    }

    /// Whether the first word names an image rather than a file: it is not an existing
    /// path and does not end in `.wasm` or `.wat`.
    pub(crate) fn is_image(&self) -> bool {
        let word = &self.command[0];
        !(Path::new(word).exists()
            || word.ends_with(".wasm")
            || word.ends_with(".wat")
            || word.starts_with('.')
            || word.starts_with('/'))
    }

    /// What messages call the run: its `--name`, else the file or image.
    pub(crate) fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.file().display().to_string())
    }

    /// The arguments after the file.
    pub(crate) fn args(&self) -> &[String] {
        &self.command[1..]
    }
}

/// One `-p`: where to listen on the host, and the guest's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publish {
    /// The host address (`0.0.0.0` unless given) and port.
    pub(crate) host: std::net::SocketAddr,
    /// The port inside the container.
    pub(crate) container: u16,
}

fn parse_publish(value: &str) -> Result<Publish, String> {
    let bad = |why: &str| format!("{value:?}: {why} (expected [IP:]HOST:CONTAINER or PORT)");
    let spec = match value.split_once('/') {
        Some((spec, "tcp")) => spec,
        Some((_, proto)) => return Err(bad(&format!("{proto} is not served: only tcp"))),
        None => value,
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(&format!("{p:?} is not a port (1-65535)")))
    };
    let (ip, host, container) = match spec.rsplitn(3, ':').collect::<Vec<_>>()[..] {
        [c] => ("0.0.0.0", port(c)?, port(c)?),
        [c, h] => ("0.0.0.0", port(h)?, port(c)?),
        [c, h, ip] => (
            ip.trim_start_matches('[').trim_end_matches(']'),
            port(h)?,
            port(c)?,
        ),
        _ => return Err(bad("too many parts")),
    };
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| bad(&format!("{ip:?} is not an IP address")))?;
    Ok(Publish {
        host: std::net::SocketAddr::new(ip, host),
        container,
    })
}

fn parse_user(value: &str) -> Result<(u32, u32), String> {
    let id = |s: &str| {
        s.parse::<u32>().map_err(|_| {
            format!(
                "{value:?}: a numeric UID[:GID] (a guest has no /etc/passwd to look names up in)"
            )
        })
    };
    match value.split_once(':') {
        Some((uid, gid)) => Ok((id(uid)?, id(gid)?)),
        None => id(value).map(|uid| (uid, 0)),
    }
}

/// The ports of `--allow-listen`: `None` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listen(pub(crate) Option<Vec<u16>>);

fn parse_listen(list: &str) -> Result<Listen, String> {
    if list.trim() == "*" {
        return Ok(Listen(None));
    }
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p:?} is not a port (1-65535), or * for any"))
        })
        .collect::<Result<Vec<u16>, String>>()
        .map(|ports| Listen(Some(ports)))
}

/// The destinations of `--allow-outbound`.
#[derive(Debug, Clone)]
pub(crate) struct Outbound(pub(crate) Vec<wasm_engine::Destination>);

fn parse_outbound(list: &str) -> Result<Outbound, String> {
    wasm_engine::NetworkPolicy::parse_outbound(list).map(Outbound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn guest_flags_after_the_file_go_to_the_guest() {
        let cli = Cli::try_parse_from([
            "wasmpod", "run", "-e", "A=1", "-m", "64Mi", "x.wasm", "-e", "--help",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.env, ["A=1"]);
        assert_eq!(args.memory, Some(64 << 20));
        assert_eq!(args.file(), Path::new("x.wasm"));
        assert_eq!(args.args(), ["-e", "--help"]);
        assert!(!args.is_image());
    }

    #[test]
    fn allow_listen_takes_ports_or_any() {
        assert_eq!(parse_listen("*"), Ok(Listen(None)));
        assert_eq!(parse_listen("80, 8080"), Ok(Listen(Some(vec![80, 8080]))));
        assert_eq!(
            parse_listen("80,0"),
            Err("\"0\" is not a port (1-65535), or * for any".into())
        );
        assert!(parse_listen("http").unwrap_err().contains("\"http\""));
    }

    #[test]
    fn images_and_files() {
        let parse = |word: &str| {
            let cli = Cli::try_parse_from(["wasmpod", "run", word]).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("not run")
            };
            args.is_image()
        };
        assert!(parse("localhost:5000/hello:v1"));
        assert!(parse("hello"));
        assert!(!parse("app.wasm"));
        assert!(!parse("./hello"));
        assert!(!parse("/srv/app"));
    }
}
