//! How containerd starts this binary, in the form each containerd version uses: the flags,
//! `-v`/`--version` and `-info`, what `start` reads on stdin and answers on stdout, and the
//! serving shim's ttrpc server, which answers task API v2 and v3 alike.
//!
//! - stdin of `start`: containerd 2.3 and later write a protobuf
//!   `containerd.runtime.bootstrap.v1.BootstrapParams`, the handler's options inside it as
//!   an `Extension`; containerd 1.6 to 2.2 write the options as a bare `google.protobuf.Any`
//!   (or nothing). Both decode to one [`Launch`].
//! - stdout of `start`: containerd 1.x reads a plain socket address (task API v2); 2.0 to
//!   2.2 also read a JSON `{"version":3,"protocol":"ttrpc","address":…}`; 2.3 a protobuf
//!   `BootstrapResult`. [`Answer`] writes the newest form the caller reads: the protobuf to
//!   whoever sent `BootstrapParams`, JSON to a containerd whose version service says 2.x,
//!   the plain address otherwise (what every version understands).
//! - serving: the task service is registered as `containerd.task.v2.Task` and
//!   `containerd.task.v3.Task` (the two APIs have the same messages and methods).
//!
//! The `containerd-shim` crate (0.10, the newest that serves v2) does none of the 2.x
//! parts, so this module replaces its `run`; it still uses the crate's flags, socket
//! naming and reaper monitor. `start` binds the socket and starts the serving shim on it
//! itself ([`spawn_serving`]); events go through `events::Events`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use containerd_shim::asynchronous::monitor::monitor_notify_by_pid;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedInputStream, CodedOutputStream, Message};
use containerd_shim::protos::shim_async::create_task;
use containerd_shim::protos::ttrpc::r#async::Server;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use containerd_shim::Flags;
use oci_spec::runtime::Spec;
use sandbox::HandlerOptions;

use crate::error::{io, Error, Result};
use crate::service::Service;
use crate::{options, sys, RUNTIME_TYPE};

/// The ttrpc service names the task service is registered under.
const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";
/// containerd's environment variable naming its ttrpc socket (events go there).
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";
/// The descriptor of the listening socket `start` passes to the serving shim.
pub(crate) const LISTEN_FD_ENV: &str = "WASMPOD_LISTEN_FD";
/// How long an ending shim waits for its last events to reach containerd.
const EVENTS_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// The most `start` and `-info` read from stdin (containerd's own bound is 10 MiB).
const MAX_STDIN: u64 = 10 << 20;
/// How long `start` waits for containerd's version service before answering as to 1.x.
const VERSION_TIMEOUT: Duration = Duration::from_secs(2);
/// `BootstrapParams.log_level` at or below which the shim logs at debug (DEBUG is -4).
const LOG_LEVEL_DEBUG: i32 = -4;
/// The type URL containerd reads an OCI runtime features document under (JSON).
const FEATURES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// What this invocation was asked to do.
#[derive(Debug)]
enum Action {
    /// `-v`, `-version`, `--version`: print the version.
    Version,
    /// `-info`: print a `RuntimeInfo` protobuf.
    Info,
    /// `start`, `delete`, or serving (no action), with containerd's flags.
    Shim(Flags),
}

/// Reads the command line the way containerd's Go shims do: flags with one or two dashes.
fn parse_args(args: &[String]) -> Result<Action> {
    for arg in args {
        match arg.as_str() {
            "-v" | "--v" | "-version" | "--version" => return Ok(Action::Version),
            "-info" | "--info" => return Ok(Action::Info),
            _ => {}
        }
    }
    containerd_shim::parse(args)
        .map(Action::Shim)
        .map_err(|e| Error::InvalidArgument(format!("command line: {e}")))
}

/// Runs the binary as containerd (or a user) invoked it. Never returns: exits 0 when done,
/// 1 with the reason on stderr when not.
pub(crate) fn main(args: &[String]) -> ! {
    let result = match parse_args(args) {
        Ok(Action::Version) => {
            print!("{}", version_text());
            Ok(())
        }
        Ok(Action::Info) => info(),
        Ok(Action::Shim(flags)) => {
            // Before the runtime's threads: each would otherwise be free to take an arena.
            sys::single_malloc_arena();
            match wasm_engine::guest_runtime(2) {
                Ok(runtime) => runtime.block_on(shim(flags)),
                Err(e) => Err(io("starting the async runtime")(e)),
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{RUNTIME_TYPE}: {e}");
            std::process::exit(1)
        }
    }
}

/// What `-v` prints, in the shape of containerd's own shims.
fn version_text() -> String {
    format!(
        "containerd-shim-wasm-v1:\n  Version:  {}\n  Runtime:  {RUNTIME_TYPE}\n  Task API: v2, v3\n  wasmtime: {}\n",
        env!("CARGO_PKG_VERSION"),
        wasm_engine::WASMTIME_VERSION,
    )
}

/// Writes `bytes` (what containerd reads back) to stdout and flushes it.
fn write_stdout(bytes: &[u8], what: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(io(what))
}

/// Reads at most [`MAX_STDIN`] bytes of stdin.
fn read_stdin() -> Result<Vec<u8>> {
    let mut data = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN)
        .read_to_end(&mut data)
        .map_err(io("reading stdin"))?;
    Ok(data)
}

/// `-info`: the handler options on stdin (an `Any`, or nothing) are checked and echoed;
/// the `RuntimeInfo` protobuf goes to stdout.
fn info() -> Result<()> {
    let data = read_stdin()?;
    let options = if data.is_empty() {
        None
    } else {
        let any = Any::parse_from_bytes(&data)
            .map_err(|e| Error::InvalidArgument(format!("runtime options on stdin: {e}")))?;
        options::from_any(&any)?;
        Some(any)
    };
    let bytes = runtime_info(options)
        .write_to_bytes()
        .map_err(|e| Error::InvalidArgument(format!("encoding the runtime info: {e}")))?;
    write_stdout(&bytes, "writing the runtime info")
}

/// The shim's `RuntimeInfo`: name, version, the options it was given, the OCI features it
/// honours, and (as annotations) the handler options it accepts and its wasmtime.
fn runtime_info(options: Option<Any>) -> RuntimeInfo {
    let mut info = RuntimeInfo::new();
    info.name = RUNTIME_TYPE.to_owned();
    let mut version = RuntimeVersion::new();
    version.version = env!("CARGO_PKG_VERSION").to_owned();
    info.version = Some(version).into();
    info.options = options.into();
    let mut features = Any::new();
    features.type_url = FEATURES_TYPE.to_owned();
    features.value = features_json();
    info.features = Some(features).into();
    info.annotations = HashMap::from([
        (
            "io.containerd.wasm.v1.handler-options".to_owned(),
            HandlerOptions::KEYS.join(","),
        ),
        (
            "io.containerd.wasm.v1.wasmtime".to_owned(),
            wasm_engine::WASMTIME_VERSION.to_owned(),
        ),
        (
            "io.containerd.wasm.v1.task-api".to_owned(),
            "v2,v3".to_owned(),
        ),
    ]);
    info
}

/// The OCI runtime features document (`runtime-spec/features.md`) of what the shim reads
/// from a spec: no hooks, bind mounts (read-only or not), the wasmpod annotations.
fn features_json() -> Vec<u8> {
    let annotations = HashMap::from([(
        "io.containerd.wasm.v1.annotations".to_owned(),
        "wasmpod.io/*".to_owned(),
    )]);
    let features = oci_spec::runtime::FeaturesBuilder::default()
        .oci_version_min("1.0.0")
        .oci_version_max("1.2.1")
        .hooks(Vec::<String>::new())
        .mount_options(["bind", "rbind", "ro", "rw"].map(str::to_owned).to_vec())
        .annotations(annotations)
        .build()
        .expect("every field of the features document is set");
    serde_json::to_vec(&features).expect("a features document always serializes")
}

/// containerd 2.3's `BootstrapParams`, the fields the shim reads.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct BootstrapParams {
    pub(crate) instance_id: String,
    pub(crate) namespace: String,
    pub(crate) log_level: i32,
    pub(crate) containerd_version: String,
    pub(crate) ttrpc_address: String,
    pub(crate) grpc_address: String,
    pub(crate) containerd_binary: String,
    /// Each `Extension`'s `value`.
    pub(crate) extensions: Vec<Any>,
    pub(crate) socket_dir: Option<String>,
}

type ProtoResult<T> = std::result::Result<T, containerd_shim::protos::protobuf::Error>;

impl BootstrapParams {
    /// Decodes the protobuf; unknown fields are skipped, as any protobuf reader does.
    fn decode(bytes: &[u8]) -> ProtoResult<Self> {
        use containerd_shim::protos::protobuf::rt::WireType;
        let mut p = BootstrapParams::default();
        let mut input = CodedInputStream::from_bytes(bytes);
        while let Some(tag) = input.read_raw_tag_or_eof()? {
            let wire =
                WireType::new(tag & 7).ok_or(containerd_shim::protos::protobuf::Error::from(
                    std::io::Error::other(format!("bad wire type in tag {tag}")),
                ))?;
            let length_delimited = wire == WireType::LengthDelimited;
            match (tag >> 3, length_delimited) {
                (1, true) => p.instance_id = input.read_string()?,
                (2, true) => p.namespace = input.read_string()?,
                (3, false) if wire == WireType::Varint => p.log_level = input.read_int32()?,
                (4, true) => p.containerd_version = input.read_string()?,
                (5, true) => p.ttrpc_address = input.read_string()?,
                (6, true) => p.grpc_address = input.read_string()?,
                (7, true) => p.containerd_binary = input.read_string()?,
                (8, true) => {
                    let extension = input.read_bytes()?;
                    let mut ext = CodedInputStream::from_bytes(&extension);
                    while let Some(tag) = ext.read_raw_tag_or_eof()? {
                        if tag == (1 << 3) | 2 {
                            p.extensions
                                .push(Any::parse_from_bytes(&ext.read_bytes()?)?);
                        } else if let Some(w) = WireType::new(tag & 7) {
                            ext.skip_field(w)?;
                        }
                    }
                }
                (9, true) => p.socket_dir = Some(input.read_string()?),
                _ => input.skip_field(wire)?,
            }
        }
        Ok(p)
    }

    /// Encodes the fields set (the tests write what containerd 2.3 would).
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut o = CodedOutputStream::vec(&mut out);
            for (field, s) in [
                (1, &self.instance_id),
                (2, &self.namespace),
                (4, &self.containerd_version),
                (5, &self.ttrpc_address),
                (6, &self.grpc_address),
                (7, &self.containerd_binary),
            ] {
                if !s.is_empty() {
                    o.write_string(field, s).unwrap();
                }
            }
            if self.log_level != 0 {
                o.write_int32(3, self.log_level).unwrap();
            }
            for any in &self.extensions {
                let mut ext = Vec::new();
                {
                    let mut e = CodedOutputStream::vec(&mut ext);
                    e.write_bytes(1, &any.write_to_bytes().unwrap()).unwrap();
                    e.flush().unwrap();
                }
                o.write_bytes(8, &ext).unwrap();
            }
            if let Some(dir) = &self.socket_dir {
                o.write_string(9, dir).unwrap();
            }
            o.flush().unwrap();
        }
        out
    }
}

/// What containerd wrote on `start`'s stdin, whichever version it is.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Launch {
    /// The runtime handler's options (`runtimeoptions.v1.Options`, or another runtime's
    /// options, which [`options::from_any`] ignores).
    pub(crate) options: Option<Any>,
    /// containerd 2.3+'s parameters, when it sent them.
    pub(crate) params: Option<BootstrapParams>,
}

impl Launch {
    /// Decodes `stdin` for the shim started with `flags`. `BootstrapParams` is told from a
    /// bare `Any` (both are valid protobuf of two strings first) by its instance id and
    /// namespace, which containerd sets to the container's id and namespace — an `Any`'s
    /// first two fields are a type URL and a message.
    pub(crate) fn decode(stdin: &[u8], flags: &Flags) -> Result<Self> {
        if stdin.is_empty() {
            return Ok(Launch::default());
        }
        if let Ok(params) = BootstrapParams::decode(stdin) {
            let is_params = !params.instance_id.is_empty()
                && (flags.id.is_empty() || params.instance_id == flags.id)
                && (flags.namespace.is_empty() || params.namespace == flags.namespace);
            if is_params {
                let options = params
                    .extensions
                    .iter()
                    .find(|a| options::is_runtime_options(a))
                    .or(params.extensions.first())
                    .cloned();
                return Ok(Launch {
                    options,
                    params: Some(params),
                });
            }
        }
        let any = Any::parse_from_bytes(stdin)
            .map_err(|e| Error::InvalidArgument(format!("runtime options on stdin: {e}")))?;
        Ok(Launch {
            options: Some(any),
            params: None,
        })
    }

    /// The handler options in it (none when containerd sent none).
    pub(crate) fn handler_options(&self) -> Result<HandlerOptions> {
        self.options
            .as_ref()
            .map_or_else(|| Ok(HandlerOptions::default()), options::from_any)
    }
}

/// The form of `start`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The socket address alone: task API v2, read by every containerd.
    Address,
    /// JSON `BootstrapParams` of version 3 (containerd 2.0+).
    Json,
    /// Protobuf `BootstrapResult` of version 3 (containerd 2.3+).
    Protobuf,
}

impl Answer {
    /// The answer for a containerd whose version service said `version` (`None`: no
    /// answer), when it sent no `BootstrapParams`.
    pub(crate) fn for_version(version: Option<&str>) -> Self {
        let major = version.and_then(|v| {
            v.trim_start_matches('v')
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|m| m.parse::<u32>().ok())
        });
        if major.is_some_and(|m| m >= 2) {
            Answer::Json
        } else {
            Answer::Address
        }
    }

    /// The bytes written to stdout for a shim serving at `address`.
    pub(crate) fn encode(self, address: &str) -> Vec<u8> {
        match self {
            Answer::Address => address.as_bytes().to_vec(),
            Answer::Json => serde_json::json!({
                "version": 3,
                "address": address,
                "protocol": "ttrpc",
            })
            .to_string()
            .into_bytes(),
            Answer::Protobuf => {
                let mut out = Vec::new();
                let mut o = CodedOutputStream::vec(&mut out);
                o.write_int32(1, 3)
                    .and_then(|()| o.write_string(2, address))
                    .and_then(|()| o.write_string(3, "ttrpc"))
                    .and_then(|()| o.flush())
                    .expect("writing to a Vec cannot fail");
                drop(o);
                out
            }
        }
    }
}

/// The version containerd's version service reports, if it answers in time.
async fn containerd_version(grpc_address: &str) -> Option<String> {
    let path = grpc_address.trim_start_matches("unix://");
    let ask = async {
        let client = grpc_api::Client::connect(path).await.ok()?;
        let reply = client.version().version(()).await.ok()?;
        Some(reply.into_inner().version)
    };
    tokio::time::timeout(VERSION_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}

/// `start`, `delete` or serving.
async fn shim(mut flags: Flags) -> Result<()> {
    match flags.action.as_str() {
        "start" => {
            let launch = Launch::decode(&read_stdin()?, &flags)?;
            if let Some(p) = &launch.params {
                // The flags are marked for removal in favour of these.
                for (flag, value) in [
                    (&mut flags.id, &p.instance_id),
                    (&mut flags.namespace, &p.namespace),
                    (&mut flags.address, &p.grpc_address),
                    (&mut flags.publish_binary, &p.containerd_binary),
                ] {
                    if !value.is_empty() {
                        flag.clone_from(value);
                    }
                }
                flags.debug |= p.log_level <= LOG_LEVEL_DEBUG;
            }
            crate::logging::init(&flags);
            let answer = start(&flags, &launch)
                .instrument(tracing::debug_span!("phase", phase = "shim.start", otel.name = "shim.start", id = %flags.id))
                .await?;
            write_stdout(&answer, "writing the shim's address")
        }
        "delete" => {
            crate::logging::init(&flags);
            let response = Service::new(&flags).delete();
            let bytes = response
                .write_to_bytes()
                .map_err(|e| Error::InvalidArgument(format!("encoding Delete's answer: {e}")))?;
            write_stdout(&bytes, "writing Delete's answer")
        }
        "" => serve(flags)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "serving")),
        other => Err(Error::InvalidArgument(format!(
            "unknown action {other:?} (start, delete, or none to serve)"
        ))),
    }
}

/// `start`: finds the serving shim of the container's group, or binds its socket and
/// starts one on it, and returns the answer for containerd.
async fn start(flags: &Flags, launch: &Launch) -> Result<Vec<u8>> {
    let handler = launch.handler_options()?;
    // containerd runs `start` in the new container's bundle.
    let spec = Spec::load("config.json").ok();
    let group = crate::service::grouping(&flags.id, spec.as_ref(), &handler);
    let ttrpc_address = launch
        .params
        .as_ref()
        .map(|p| p.ttrpc_address.clone())
        .filter(|a| !a.is_empty())
        .or_else(|| std::env::var(TTRPC_ADDRESS).ok())
        .unwrap_or_default();
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &group);
    match listen(&address).await? {
        Some(listener) => spawn_serving(flags, &address, &ttrpc_address, listener)
            .map_err(io(format!("starting the serving shim of {group}")))?,
        None => tracing::debug!(%group, "the group's shim serves already"),
    }
    std::fs::write("address", &address).map_err(io("writing the bundle's address file"))?;
    let answer = match &launch.params {
        Some(_) => Answer::Protobuf,
        None => Answer::for_version(containerd_version(&flags.address).await.as_deref()),
    };
    tracing::debug!(id = %flags.id, %group, ?answer, "shim started");
    Ok(answer.encode(&address))
}

/// Starts the serving shim on `listener`, the socket `start` bound at `address`: this
/// binary again, with containerd's flags and `-socket`, the listener inherited at the
/// descriptor [`LISTEN_FD_ENV`] names. `start` does not wait for it: containerd's first
/// call queues on the bound socket until the new shim accepts it, so the shim's own
/// start-up overlaps containerd's reading of the answer. Its oom_score_adj is set one
/// above `start`'s parent's (containerd's), as containerd's own shims do.
fn spawn_serving(
    flags: &Flags,
    address: &str,
    ttrpc_address: &str,
    listener: std::os::unix::net::UnixListener,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    use std::process::{Command, Stdio};
    sys::set_cloexec(&listener, false)?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["-namespace", &flags.namespace, "-id", &flags.id])
        .args(["-address", &flags.address, "-socket", address])
        .args(flags.debug.then_some("-debug"))
        .env(TTRPC_ADDRESS, ttrpc_address)
        .env(LISTEN_FD_ENV, listener.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = command.spawn()?;
    if let Err(e) = containerd_shim::cgroup::adjust_oom_score(child.id()) {
        tracing::warn!(pid = child.id(), error = %e, "setting the serving shim's oom_score_adj");
    }
    // The child holds the socket now; dropping `Child` neither waits nor kills.
    Ok(())
}

/// The task service under both task API names.
fn task_services(
    task: Arc<dyn containerd_shim::Task + Send + Sync>,
) -> HashMap<String, containerd_shim::protos::ttrpc::r#async::Service> {
    let mut services = create_task(task.clone());
    if let Some(v3) = create_task(task).remove(TASK_V2) {
        services.insert(TASK_V3.to_owned(), v3);
    }
    services
}

/// Serving: the ttrpc server on `-socket` until the last container is gone.
async fn serve(flags: Flags) -> Result<()> {
    if flags.socket.is_empty() {
        return Err(Error::InvalidArgument(
            "a serving shim needs -socket (containerd runs `start`, which passes it)".into(),
        ));
    }
    crate::logging::init(&flags);
    let fd = std::env::var(LISTEN_FD_ENV).ok();
    let listener = inherited_listener(fd.as_deref(), &flags.socket)?;
    sys::set_child_subreaper().map_err(io("becoming a child subreaper"))?;
    // Its tenants' connections are descriptors: the soft limit (often 1024) would let one
    // tenant's connection cap take them all.
    if let Err(e) = sys::raise_descriptor_limit() {
        tracing::warn!(error = %e, "cannot raise the limit on open descriptors");
    }
    reap_children()?;
    let ttrpc_address = std::env::var(TTRPC_ADDRESS).map_err(|_| {
        Error::InvalidArgument(format!("{TTRPC_ADDRESS} is not set (containerd sets it)"))
    })?;
    let service = Service::new(&flags);
    let task_service = service.task_service(&ttrpc_address);
    let events = task_service.events();
    let task: Arc<dyn containerd_shim::Task + Send + Sync> = Arc::new(task_service);
    let ttrpc = |what: &'static str| {
        move |e: containerd_shim::protos::ttrpc::Error| Error::Io {
            context: what.into(),
            source: std::io::Error::other(e.to_string()),
        }
    };
    let mut server = Server::new()
        .add_listener(std::os::fd::IntoRawFd::into_raw_fd(listener))
        .map_err(ttrpc("listening"))?
        .set_domain_unix()
        .register_service(task_services(task));
    server
        .start()
        .await
        .map_err(ttrpc("starting the ttrpc server"))?;
    tracing::info!(socket = %flags.socket, "serving task API v2 and v3");
    service.wait().await;
    let _ = server.shutdown().await;
    // The last Delete's event may still be on its way.
    if tokio::time::timeout(EVENTS_FLUSH_TIMEOUT, events.flush())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?EVENTS_FLUSH_TIMEOUT, "events not sent before the shim ended");
    }
    crate::telemetry::shutdown(crate::telemetry::FLUSH_TIMEOUT).await;
    Ok(())
}

/// Makes the directory of shim sockets (`/run/containerd/s`) accessible to its owner
/// alone, as containerd's own shims make it: created 0700, and an existing one of ours
/// that others can enter is narrowed to 0700.
fn private_socket_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("creating {}", dir.display())))?;
    let meta = std::fs::metadata(dir).map_err(io(format!("reading {}", dir.display())))?;
    let mine = meta.uid() == sys::euid();
    if mine && meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("making {} private", dir.display())))?;
    }
    Ok(())
}

/// Binds the shim's socket; `None` when a live shim already serves on it (a shim of the
/// group, or two `start`s of one group at once). A dead shim's socket is replaced.
async fn listen(address: &str) -> Result<Option<std::os::unix::net::UnixListener>> {
    let path = Path::new(address.trim_start_matches("unix://"));
    if let Some(parent) = path.parent() {
        private_socket_dir(parent)?;
    }
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => return Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(e) => return Err(io(format!("listening on {}", path.display()))(e)),
    }
    for _ in 0..5 {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crate::service::remove_dead_socket(address);
    std::os::unix::net::UnixListener::bind(path)
        .map(Some)
        .map_err(io(format!("listening on {}", path.display())))
}

/// The listening socket `start` bound at `address` and passed down at the descriptor `fd`
/// (the value of [`LISTEN_FD_ENV`]; see [`spawn_serving`]), checked to be a Unix socket
/// bound there.
fn inherited_listener(fd: Option<&str>, address: &str) -> Result<std::os::unix::net::UnixListener> {
    let value = fd.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{LISTEN_FD_ENV} is not set: a serving shim takes its socket from `start` (containerd runs `start`)"
        ))
    })?;
    let fd = value.parse().map_err(|_| {
        Error::InvalidArgument(format!("{LISTEN_FD_ENV}={value:?} is not a descriptor"))
    })?;
    let listener = sys::take_inherited_fd(fd)
        .map(std::os::unix::net::UnixListener::from)
        .map_err(io(format!("taking the socket at {LISTEN_FD_ENV}={fd}")))?;
    let path = Path::new(address.trim_start_matches("unix://"));
    let bound = listener.local_addr().ok();
    if bound.as_ref().and_then(|a| a.as_pathname()) != Some(path) {
        return Err(Error::InvalidArgument(format!(
            "{LISTEN_FD_ENV}={fd} is not a socket bound at {} ({bound:?})",
            path.display()
        )));
    }
    Ok(listener)
}

/// Reaps every child that ends and tells the crate's monitor, whose subscribers are the
/// containers waiting for their process; SIGTERM, SIGINT and SIGPIPE are taken and ignored
/// (containerd ends a shim through Shutdown, not a signal).
fn reap_children() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut child = signal(SignalKind::child()).map_err(io("watching SIGCHLD"))?;
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::pipe(),
    ] {
        let mut s = signal(kind).map_err(io("taking signals"))?;
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                tracing::debug!(signal = kind.as_raw_value(), "signal ignored");
            }
        });
    }
    tokio::spawn(async move {
        while child.recv().await.is_some() {
            while let Some((pid, code)) = sys::reap_any() {
                if let Err(e) = monitor_notify_by_pid(pid, code).await {
                    tracing::warn!(pid, error = %e, "reporting a child's exit");
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests;
