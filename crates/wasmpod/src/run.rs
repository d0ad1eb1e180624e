//! `wasmpod run FILE`: builds the OCI bundle and runtime spec containerd would, then runs
//! it through the sandbox policy and the engine — the same path the shim takes.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use oci_spec::runtime::Spec;
use sandbox::{ContainerSpec, RunPolicy, Volume};
use wasm_engine::{
    Engine, EngineConfig, ExitReason, KillHandle, Stdio, StdioStream, EXIT_CANNOT_START,
    EXIT_TERMINATED,
};

use crate::cli::{PullPolicy, RunArgs};
use crate::dirs::Dirs;

/// Exit status when wasmpod itself fails before the workload starts (as docker's 125).
const EXIT_WASMPOD_ERROR: i32 = 125;
/// Exit status when the file to run does not exist (as a shell's 127).
const EXIT_NOT_FOUND: i32 = 127;
/// Exit status after an interrupt (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

/// Runs the command and returns the process exit status; errors are printed as one line.
pub(crate) fn main(dirs: &Dirs, args: RunArgs) -> i32 {
    report(&args.label(), run(dirs, args, Mode::Run))
}

/// `wasmpod compile`: the program compiled into the cache (or found there), not run.
pub(crate) fn compile_main(dirs: &Dirs, args: RunArgs) -> i32 {
    report(
        &args.file().display().to_string(),
        run(dirs, args, Mode::Compile),
    )
}

/// Whether [`run`] runs the program or stops once it is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Compile,
}

/// The exit status of `outcome`, its error printed as one line naming `file`.
fn report(file: &str, outcome: Result<i32, Failure>) -> i32 {
    match outcome {
        Ok(code) => code,
        Err(Failure { code, error }) => {
            let line = one_line(&error);
            if line.starts_with(file) {
                eprintln!("wasmpod: {line}");
            } else {
                eprintln!("wasmpod: {file}: {line}");
            }
            code
        }
    }
}

struct Failure {
    code: i32,
    error: anyhow::Error,
}

fn fail(code: i32) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { code, error }
}

fn one_line(error: &anyhow::Error) -> String {
    let text = crate::messages::error_line(error);
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|");
    let mut out = lines.next().unwrap_or_default().to_owned();
    if let Some(location) = lines.next().filter(|l| l.starts_with("-->")) {
        out.push(' ');
        out.push_str(location);
    }
    out
}

/// What the container runs: a file from the host, or an image from the store.
enum Source {
    File,
    Image(Box<oci_image::Image>),
}

/// Finds the image in the store, pulling it as `--pull` says.
fn image(dirs: &Dirs, args: &RunArgs) -> anyhow::Result<oci_image::Image> {
    let reference = oci_image::ImageRef::parse(&args.file().to_string_lossy())?;
    let store = crate::images::store(dirs)?;
    let present = store.resolve(&reference)?.is_some();
    let pull = match args.pull {
        PullPolicy::Always => true,
        PullPolicy::Missing => !present,
        PullPolicy::Never => false,
    };
    if pull {
        let options = crate::images::options(&args.registry, false)?;
        Ok(crate::images::runtime()?.block_on(oci_image::pull(&store, &reference, &options))?)
    } else {
        Ok(oci_image::open(
            &store,
            &reference,
            &args.registry.limits(),
        )?)
    }
}

fn run(dirs: &Dirs, args: RunArgs, mode: Mode) -> Result<i32, Failure> {
    // From here on SIGINT/SIGTERM end the run through its cleanup (the bundle removed),
    // whenever they come: pulling, copying, compiling or running.
    let early = EarlySignal::install().map_err(fail(EXIT_WASMPOD_ERROR))?;
    if args.detach {
        return Err(fail(EXIT_WASMPOD_ERROR)(anyhow::anyhow!(
            "-d: wasmpod run stays in the foreground (it keeps no containers to come back \
             to): run it under a service manager, or detach a pod with `wasmpod pod run -d`"
        )));
    }
    let source = if args.is_image() {
        Source::Image(Box::new(
            image(dirs, &args).map_err(fail(EXIT_WASMPOD_ERROR))?,
        ))
    } else {
        let meta = fs::metadata(args.file()).map_err(|e| Failure {
            code: if e.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_START
            },
            error: e.into(),
        })?;
        if !meta.is_file() {
            return Err(fail(EXIT_CANNOT_START)(anyhow::anyhow!(
                "not a regular file"
            )));
        }
        // Before it is copied into the bundle: a 23 GB file was copied, then refused.
        args.program_limits()
            .check_size(args.file(), meta.len())
            .map_err(|e| fail(EXIT_CANNOT_START)(e.into()))?;
        Source::File
    };
    let bundle = Bundle::create(&dirs.state).map_err(fail(EXIT_WASMPOD_ERROR))?;
    let spec = bundle
        .prepare(&args, &source)
        .map_err(fail(EXIT_WASMPOD_ERROR))?;
    let policy = match &source {
        Source::File => RunPolicy::from_spec_with_program(&spec, bundle.path()),
        Source::Image(_) => RunPolicy::from_spec(&spec, bundle.path()),
    };
    let mut policy = policy
        .context("invalid container configuration")
        .map_err(fail(EXIT_WASMPOD_ERROR))?;
    policy.set_timeout(args.timeout);
    let handler = sandbox::HandlerOptions {
        allowed_outbound: args
            .allow_outbound
            .as_ref()
            .map(|o| o.0.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut network = sandbox::NetworkPlan::decide(&spec, &handler, &[])
        .context("invalid container configuration")
        .map_err(fail(EXIT_WASMPOD_ERROR))?
        .policy;
    if args.listen.is_some() {
        // The host owns the served port; the guest listens on nothing of its own.
        network.listen_ports.clear();
    }
    match args.allow_listen.as_ref().map(|l| &l.0) {
        Some(Some(ports)) => network.listen_ports.extend(ports),
        Some(None) => network.listen_any = true,
        None => {}
    }
    // -p for a command: the guest listens on the host's network, so its port is the
    // host's (a wasi:http component's -p is decided once the program is known).
    let mut published = network.clone();
    published
        .listen_ports
        .extend(args.publish.iter().map(|p| p.container));
    policy.set_network(published);
    tracing::debug!(?policy, "run policy");
    for warning in policy.warnings() {
        tracing::warn!("{warning}");
    }

    // Compiled in a child, so --compile-timeout and --compile-memory can stop it.
    let mut config = EngineConfig::default()
        .cache_dir(&dirs.cache)
        .compiler(wasm_engine::CompilerProcess::this_executable());
    if args.listen.is_some() || !args.publish.is_empty() {
        // A server instantiates per request: from slots kept ready.
        config = config.pooling(wasm_engine::Pooling::default());
    }
    let engine = Engine::new(config).map_err(|e| fail(EXIT_WASMPOD_ERROR)(e.into()))?;
    let max = args.program_limits().max_size;
    let bytes = match &source {
        Source::File => sandbox::read_file_limited(args.file(), max),
        Source::Image(_) => policy.read_entrypoint(max),
    }
    .map_err(|e| fail(EXIT_CANNOT_START)(e.into()))?;
    let (program, loaded) = crate::progress::load(
        &engine,
        &bytes,
        args.file(),
        &args.program_limits(),
        mode == Mode::Compile,
    )
    .map_err(|e| fail(EXIT_CANNOT_START)(e.into()))?;
    if mode == Mode::Compile {
        if loaded == crate::progress::Loaded::Cached {
            eprintln!(
                "wasmpod: {} ({}) is compiled already (precompile cache {})",
                args.file().display(),
                program.digest(),
                dirs.cache.display()
            );
        }
        return Ok(0);
    }
    if let Some(code) = early.received() {
        return Ok(code); // asked to stop before anything ran (the bundle goes with it)
    }
    if let Some(addr) = &args.listen {
        return serve(&engine, &program, &policy, &args, addr).map(|()| 0);
    }
    if let Some(publish) = args.publish.first() {
        if engine.serves_http(&program) {
            if args.publish.len() > 1 {
                return Err(fail(EXIT_WASMPOD_ERROR)(anyhow::anyhow!(
                    "a wasi:http component is served on one address: give one -p"
                )));
            }
            // The host owns the served port, as with --listen.
            network.listen_ports.clear();
            policy.set_network(network);
            let addr = publish.host.to_string();
            return serve(&engine, &program, &policy, &args, &addr).map(|()| 0);
        }
        if let Some(p) = args.publish.iter().find(|p| p.host.port() != p.container) {
            return Err(fail(EXIT_WASMPOD_ERROR)(anyhow::anyhow!(
                "-p {}:{}: the guest shares the host's network, so a command's port cannot \
                 be moved: publish it as -p {}:{} (a wasi:http component can be served on any port)",
                p.host.port(),
                p.container,
                p.container,
                p.container
            )));
        }
    }
    if let Err(e) = engine.check(&program) {
        let e = if engine.serves_http(&program) {
            anyhow::anyhow!(
                "a wasi:http/proxy component, not a command: serve it with --listen ADDR"
            )
        } else {
            e.into()
        };
        return Err(fail(EXIT_CANNOT_START)(e));
    }

    let stdio = Stdio {
        stdin: if args.interactive {
            StdioStream::Inherit
        } else {
            StdioStream::Null
        },
        stdout: StdioStream::Inherit,
        stderr: StdioStream::Inherit,
    };
    let kill = KillHandle::new();
    let config = policy.run_config(stdio, kill.clone());
    // The guests' runtime: signals and the deadline are seen within an epoch tick even
    // while the guest computes.
    let runtime = wasm_engine::guest_runtime(0)
        .context("starting the async runtime")
        .map_err(fail(EXIT_WASMPOD_ERROR))?;
    let status = runtime
        .block_on(async {
            forward_signals(&kill)?;
            if let Some(code) = early.received() {
                kill.kill_with(code);
            }
            engine
                .run(&program, config)
                .await
                .map_err(anyhow::Error::from)
        })
        .map_err(fail(EXIT_CANNOT_START))?;
    drop(bundle);
    if let ExitReason::OutOfMemory(why) = status.reason() {
        eprintln!("wasmpod: {}: killed: {why}", args.label());
    }
    if *status.reason() == ExitReason::TimedOut {
        if let Some(t) = args.timeout {
            eprintln!(
                "wasmpod: {}: killed after the --timeout of {}",
                args.label(),
                humantime::format_duration(t)
            );
        }
    }
    Ok(status.code())
}

/// `--listen ADDR`: serves the component until SIGTERM or Ctrl-C, which drain it.
fn serve(
    engine: &Engine,
    program: &wasm_engine::Program,
    policy: &RunPolicy,
    args: &RunArgs,
    addr: &str,
) -> Result<(), Failure> {
    if !engine.serves_http(program) {
        return Err(fail(EXIT_CANNOT_START)(anyhow::anyhow!(
            "--listen needs a wasi:http/proxy component (one exporting \
             wasi:http/incoming-handler); this is a command: run it without --listen"
        )));
    }
    let mut http = wasm_engine::HttpLimits::default();
    for pair in &args.http_limit {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        http = http
            .with(key.trim(), value)
            .map_err(|e| fail(EXIT_WASMPOD_ERROR)(anyhow::anyhow!("--http-limit {e}")))?;
    }
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--listen {addr}"))
        .map_err(fail(EXIT_WASMPOD_ERROR))?;
    let local = listener
        .local_addr()
        .context("the listening socket")
        .map_err(fail(EXIT_WASMPOD_ERROR))?;
    let shutdown = KillHandle::new();
    let mut config =
        wasm_engine::ServeConfig::from(policy.run_config(Stdio::inherit(), shutdown.clone()));
    config.http = http;
    let runtime = wasm_engine::guest_runtime(2)
        .context("starting the async runtime")
        .map_err(fail(EXIT_WASMPOD_ERROR))?;
    let stats = runtime
        .block_on(async {
            forward_signals(&shutdown)?;
            eprintln!(
                "wasmpod: serving {} on http://{local}",
                args.file().display()
            );
            engine
                .serve(program, listener, config)
                .await
                .map_err(anyhow::Error::from)
        })
        .map_err(fail(EXIT_CANNOT_START))?;
    eprintln!(
        "wasmpod: stopped after {} requests ({} failed)",
        stats.requests, stats.failed
    );
    Ok(())
}

/// SIGINT or SIGTERM received before the guest started (its exit code then), recorded by
/// handlers installed first thing, so that neither kills wasmpod before it cleaned up.
struct EarlySignal {
    code: &'static std::sync::atomic::AtomicI32,
}

impl EarlySignal {
    fn install() -> anyhow::Result<Self> {
        static CODE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
        for (signal, code) in [
            (libc::SIGINT, EXIT_INTERRUPTED),
            (libc::SIGTERM, EXIT_TERMINATED),
        ] {
            // An atomic store: async-signal-safe.
            crate::sys::on_signal(
                signal,
                |code| CODE.store(code, std::sync::atomic::Ordering::SeqCst),
                code,
            )
            .context("installing signal handlers")?;
        }
        Ok(Self { code: &CODE })
    }

    fn received(&self) -> Option<i32> {
        let code = self.code.load(std::sync::atomic::Ordering::SeqCst);
        (code != 0).then_some(code)
    }
}

/// SIGINT and SIGTERM stop the guest with 130 and 143, as they would a native process.
fn forward_signals(kill: &KillHandle) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, code) in [
        (SignalKind::interrupt(), EXIT_INTERRUPTED),
        (SignalKind::terminate(), EXIT_TERMINATED),
    ] {
        let mut stream = signal(kind).context("installing signal handlers")?;
        let kill = kill.clone();
        tokio::spawn(async move {
            if stream.recv().await.is_some() {
                kill.kill_with(code);
            }
        });
    }
    Ok(())
}

/// A bundle directory under the state directory, removed when dropped (like `--rm`).
struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    fn create(state: &Path) -> anyhow::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state)
            .with_context(|| format!("creating state directory {}", state.display()))?;
        // The bundle made here is run: nobody else may be able to swap it.
        oci_image::check_private_dir(state)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = state.join(format!("run-{}-{nanos:08x}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating bundle {}", dir.display()))?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes the root filesystem (a copy of the file or of the image's unpacked root, so
    /// the guest cannot change the original) and returns the runtime spec containerd
    /// would write for it.
    fn prepare(&self, args: &RunArgs, source: &Source) -> anyhow::Result<Spec> {
        let rootfs = self.dir.join("rootfs");
        // A bare file's guest gets exactly the environment it is given (as under
        // `wasmtime run`); an image's starts from the usual PATH and its config's Env.
        let mut env = Vec::new();
        let mut cwd = "/".to_owned();
        let process_args = match source {
            // A bare file is not a root filesystem: the guest sees the directories it is
            // given (`-v`; `-v DIR:/` for its root) and nothing else, as under `wasmtime
            // run`, and the program is read from the file itself.
            // Its argv[0] is the file's name, as `wasmtime run` passes it.
            Source::File => {
                let name = args
                    .file()
                    .file_name()
                    .context("the file has no name")?
                    .to_string_lossy()
                    .into_owned();
                let mut process_args = vec![name];
                process_args.extend(args.args().iter().cloned());
                process_args
            }
            Source::Image(image) => {
                env.push(
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                );
                copy_tree(&image.rootfs, &rootfs).context("copying the image's root filesystem")?;
                let argv = image.config.argv(args.args());
                if argv.is_empty() {
                    bail!("the image has no entrypoint or command, and none was given");
                }
                env.extend(image.config.env.iter().cloned());
                if let Some(dir) = &image.config.working_dir {
                    cwd.clone_from(dir);
                }
                argv
            }
        };
        let mut container = ContainerSpec::new(process_args);
        for e in env {
            container = container.env(e);
        }
        for e in &args.env {
            if e.contains('=') {
                container = container.env(e.clone());
            } else if let Ok(value) = std::env::var(e) {
                container = container.env(format!("{e}={value}"));
            }
        }
        container = container.cwd(args.workdir.clone().unwrap_or(cwd));
        if let Some((uid, gid)) = args.user {
            container = container.user(uid, gid);
        }
        for v in &args.volumes {
            container = container.volume(Volume::parse(v)?);
        }
        if let Some(limit) = args.memory {
            container = container.memory_limit(limit);
        }
        if matches!(source, Source::Image(_)) {
            container = container.root("rootfs", args.read_only);
        }
        let spec = container.to_spec()?;
        Ok(spec)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(bundle = %self.dir.display(), error = %e, "cannot remove the bundle");
        }
    }
}

/// Copies a directory tree (files with their modes, directories, symlinks as links).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir(to).with_context(|| to.display().to_string())?;
    for entry in fs::read_dir(from).with_context(|| from.display().to_string())? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst).with_context(|| src.display().to_string())?;
        }
    }
    Ok(())
}
