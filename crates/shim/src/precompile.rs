//! `containerd-shim-wasm-v1 precompile`: the node's precompile agent. It compiles every wasm
//! image that reaches containerd into the precompile cache the shims load from, so a
//! container's Create finds its program compiled instead of compiling it while the pod
//! waits.
//!
//! It subscribes to containerd's image events (`/images/create`, `/images/update`: `ctr
//! image pull` and `import`, and the CRI's PullImage), then compiles the images already
//! there (the node's catch-up after a restart). For each image it reads the manifest (the
//! wasm platform's, for an index) and takes the program from its wasm layer, or, for an
//! image of files, from the entrypoint of its config, unpacked through `oci_image`'s safe
//! extraction into a scratch directory. Images that are not wasm (an `architecture` other
//! than `wasm` and an entrypoint not ending in `.wasm`) are left alone.
//!
//! Compiles run one at a time, each in a child of this binary under the same deadline and
//! memory cap as a Create's ([`wasm_engine::ProgramLimits`]), at a lowered CPU priority
//! (`-nice`, 10 by default) that the children inherit: the agent uses what containers
//! leave. A Create that arrives while its program compiles waits for that compile (the
//! cache's per-program lock) rather than starting a second one. The agent runs until
//! SIGTERM or SIGINT; containerd going away is retried every second.
//!
//! Its scratch directory holds nothing between images: each image's unpacked files and
//! snapshot view go when it is done, at a signal too, and what an agent killed outright
//! left behind (SIGKILL, OOM) is unmounted and removed when the next one starts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use grpc_api::containerd::services::events::v1::SubscribeRequest;
use grpc_api::containerd::services::images::v1::{ImageCreate, ListImagesRequest};
use grpc_api::containerd::services::namespaces::v1::ListNamespacesRequest;
use grpc_api::tonic::Request;
use grpc_api::{namespaced, Client};
use prost::Message as _;
use tracing::Instrument as _;
use wasm_engine::{Engine, EngineConfig, ProgramLimits};

use crate::content::{release_view, ContentStore};
use crate::error::{Error, Result};
use crate::logging::phase;

/// The first argument that selects this mode.
pub(crate) const COMMAND: &str = "precompile";

/// containerd's default socket.
const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// How long to wait before connecting again after containerd went away.
const RECONNECT: Duration = Duration::from_secs(1);

/// What `precompile` was asked to do.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    /// containerd's gRPC socket.
    address: PathBuf,
    /// The namespaces watched; every one when empty.
    namespaces: Vec<String>,
    /// Compile what is there, then exit (no subscription).
    once: bool,
    /// The nice value of the agent and its compiles.
    nice: i32,
}

const USAGE: &str = "usage: containerd-shim-wasm-v1 precompile [-address SOCKET] [-namespace NS]... [-once] [-nice N]";

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        address: PathBuf::from(DEFAULT_ADDRESS),
        namespaces: Vec::new(),
        once: false,
        nice: 10,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let flag = arg.trim_start_matches('-');
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| Error::InvalidArgument(format!("{arg} needs a value; {USAGE}")))
        };
        match flag {
            "address" | "a" => options.address = PathBuf::from(value()?),
            "namespace" | "n" => options.namespaces.push(value()?),
            "once" => options.once = true,
            "nice" => {
                let v = value()?;
                options.nice = v
                    .parse()
                    .ok()
                    .filter(|n| (-20..=19).contains(n))
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!("-nice {v}: expected -20 to 19"))
                    })?;
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown argument {arg:?}; {USAGE}"
                )))
            }
        }
    }
    Ok(options)
}

/// Runs the agent; never returns.
pub(crate) fn main(args: &[String]) -> ! {
    let result = parse(args).and_then(|options| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(crate::error::io("starting the async runtime"))?;
        runtime.block_on(async {
            // In the runtime: the span exporter's tasks run on it.
            crate::logging::init_stderr();
            if let Err(e) = crate::sys::set_nice(options.nice) {
                tracing::warn!(nice = options.nice, error = %e, "cannot lower the agent's priority");
            }
            let agent = Agent::new(options)?;
            let stop = stop_signal().map_err(crate::error::io("handling SIGTERM"))?;
            // At a signal the image in hand is dropped, and with it its scratch.
            let ran = tokio::select! {
                ran = agent.run() => ran,
                () = stop => {
                    tracing::info!("precompile agent: stopping");
                    Ok(())
                }
            };
            crate::telemetry::shutdown(crate::telemetry::FLUSH_TIMEOUT).await;
            ran
        })
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("containerd-shim-wasm-v1 precompile: {e}");
            std::process::exit(1)
        }
    }
}

/// Ends at the first SIGTERM or SIGINT.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Removes what earlier agents left in `scratch` (one killed mid-unpack leaves its files
/// and perhaps a mounted view); returns how many image directories went.
fn clean_scratch(scratch: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if !release_view(&path) {
            tracing::warn!(dir = %path.display(), "precompile: a snapshot view left by an earlier agent stays mounted");
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "precompile: removing an earlier agent's scratch")
            }
        }
    }
    removed
}

/// The agent: one engine on the shims' cache, compiling in children of this binary.
struct Agent {
    options: Options,
    engine: Engine,
    /// Where image files are unpacked while their entrypoint is read.
    scratch: PathBuf,
}

/// Ends the event subscription's task when the agent stops watching.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// What happened to one image.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Compiled,
    AlreadyCompiled,
    NotWasm(String),
}

impl Agent {
    fn new(options: Options) -> Result<Self> {
        let cache = crate::service::cache_dir();
        let engine = Engine::new(
            EngineConfig::default()
                .cache_dir(&cache)
                .compiler(wasm_engine::CompilerProcess::this_executable()),
        )
        .map_err(|e| Error::Internal {
            context: "starting the wasm engine".into(),
            reason: e.to_string(),
        })?;
        let scratch = cache.parent().unwrap_or(Path::new("/")).join("precompile");
        let removed = clean_scratch(&scratch);
        if removed > 0 {
            tracing::info!(removed, dir = %scratch.display(), "precompile: removed an earlier agent's scratch");
        }
        Ok(Self {
            options,
            engine,
            scratch,
        })
    }

    async fn run(self) -> Result<()> {
        loop {
            match self.watch().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "containerd: connecting again in a second");
                    tokio::time::sleep(RECONNECT).await;
                }
            }
        }
    }

    fn watched(&self, namespace: &str) -> bool {
        self.options.namespaces.is_empty() || self.options.namespaces.iter().any(|n| n == namespace)
    }

    /// Subscribes, compiles what is there, then what arrives; returns only with `-once`.
    async fn watch(&self) -> Result<()> {
        let address = &self.options.address;
        let client = Client::connect(address).await.map_err(|e| {
            Error::Content(format!(
                "connecting to containerd at {}: {e}",
                address.display()
            ))
        })?;
        fn grpc(what: &'static str) -> impl FnOnce(grpc_api::tonic::Status) -> Error {
            move |s| Error::Content(format!("containerd: {what}: {}", s.message()))
        }
        // Subscribed before the catch-up, so an image that arrives during it is not missed.
        // containerd answers the subscription only with its first event, so the stream is
        // read by a task of its own.
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let subscriber = (!self.options.once).then(|| {
            let mut service = client.events();
            tokio::spawn(async move {
                let request = SubscribeRequest {
                    filters: vec![
                        "topic==\"/images/create\"".into(),
                        "topic==\"/images/update\"".into(),
                    ],
                };
                let mut stream = match service.subscribe(request).await {
                    Ok(response) => response.into_inner(),
                    Err(s) => {
                        let _ = tx.send(Err(grpc("subscribing to image events")(s)));
                        return;
                    }
                };
                loop {
                    let next = match stream.message().await {
                        Ok(Some(envelope)) => Ok(envelope),
                        Ok(None) => Err(Error::Content("containerd ended the event stream".into())),
                        Err(s) => Err(grpc("image events")(s)),
                    };
                    let end = next.is_err();
                    if tx.send(next).is_err() || end {
                        return;
                    }
                }
            })
        });
        let _abort = AbortOnDrop(subscriber);
        tracing::info!(address = %address.display(), "precompile agent: watching containerd's images");
        let namespaces = client
            .namespaces()
            .list(Request::new(ListNamespacesRequest::default()))
            .await
            .map_err(grpc("listing namespaces"))?
            .into_inner()
            .namespaces;
        for namespace in namespaces.iter().map(|n| n.name.as_str()) {
            if !self.watched(namespace) {
                continue;
            }
            let images = client
                .images()
                .list(namespaced(ListImagesRequest::default(), namespace))
                .await
                .map_err(grpc("listing images"))?
                .into_inner()
                .images;
            for image in images {
                self.image(namespace, &image.name).await;
            }
        }
        if self.options.once {
            return Ok(());
        }
        loop {
            let envelope = events
                .recv()
                .await
                .ok_or_else(|| Error::Content("the event subscription ended".into()))??;
            if !self.watched(&envelope.namespace) {
                continue;
            }
            // ImageCreate and ImageUpdate both carry the image's name as field 1.
            let Some(name) = envelope
                .event
                .and_then(|any| ImageCreate::decode(&any.value[..]).ok())
                .map(|e| e.name)
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            self.image(&envelope.namespace, &name).await;
        }
    }

    /// Compiles image `name` of `namespace`, logging the outcome (a failure is logged, not
    /// returned: that container's Create reports it to whoever starts it).
    async fn image(&self, namespace: &str, name: &str) {
        let started = Instant::now();
        let span =
            tracing::info_span!("precompile", otel.name = "precompile", %namespace, image = %name);
        // An image can be listed, or announced, before all its blobs are in the content
        // store (containerd 1.6's import): a blob not found is asked for again a few times.
        let mut result = self.compile(namespace, name).instrument(span.clone()).await;
        for pause_ms in [250, 500, 1000, 1500] {
            match &result {
                Err(e) if e.to_string().ends_with(": not found") => {
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    result = self.compile(namespace, name).instrument(span.clone()).await;
                }
                _ => break,
            }
        }
        match result {
            Ok(Outcome::Compiled) => tracing::info!(
                namespace = %namespace,
                image = %name,
                elapsed = ?started.elapsed(),
                "precompiled"
            ),
            Ok(Outcome::AlreadyCompiled) => {
                tracing::info!(namespace = %namespace, image = %name, "already compiled")
            }
            Ok(Outcome::NotWasm(why)) => {
                tracing::debug!(namespace = %namespace, image = %name, %why, "not a wasm image")
            }
            Err(e) => {
                tracing::warn!(namespace = %namespace, image = %name, error = %e, "cannot precompile")
            }
        }
    }

    async fn compile(&self, namespace: &str, name: &str) -> Result<Outcome> {
        let store = ContentStore {
            address: self.options.address.clone(),
            namespace: namespace.to_owned(),
        };
        let limits = ProgramLimits::default();
        // `program` makes the scratch directory when it is not there.
        let program = store.program(name, &self.scratch, limits.max_size);
        let program = match program.instrument(phase("precompile.read")).await? {
            Ok(program) => program,
            Err(why) => return Ok(Outcome::NotWasm(why)),
        };
        let engine = self.engine.clone();
        let span = phase("precompile.compile");
        let compiled = tokio::task::spawn_blocking(move || {
            let _span = span.entered();
            engine
                .load_limited(&program.bytes, Path::new(&program.name), &limits)
                .map(|p| p.was_compiled())
        })
        .await
        .map_err(|e| Error::Internal {
            context: format!("compiling image {name}"),
            reason: e.to_string(),
        })?
        .map_err(|e| Error::Content(format!("image {name}: {e}")))?;
        Ok(if compiled {
            Outcome::Compiled
        } else {
            Outcome::AlreadyCompiled
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// What an agent killed mid-unpack leaves — unpacked files, a scratch file, and (as
    /// root) a view still mounted — is gone when the next one starts.
    #[test]
    fn an_earlier_agents_scratch_is_cleaned_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("precompile");
        let image = scratch.join("image-killed");
        std::fs::create_dir_all(image.join("rootfs/usr/lib")).unwrap();
        std::fs::write(image.join("rootfs/usr/lib/big"), vec![7u8; 1 << 20]).unwrap();
        std::fs::write(scratch.join("stray"), b"x").unwrap();
        let view = crate::rootfs::target(&image.join("snapshot"));
        std::fs::create_dir_all(&view).unwrap();
        let is_root = crate::sys::euid() == 0;
        if is_root {
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
                .arg(&view)
                .status()
                .unwrap();
            assert!(mounted.success());
            std::fs::write(view.join("in-the-view"), b"kept").unwrap();
        }
        assert_eq!(clean_scratch(&scratch), 1);
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
        assert!(!crate::rootfs::is_mounted(&image.join("snapshot")));
        // A scratch directory that is not there is nothing to clean.
        assert_eq!(clean_scratch(&dir.path().join("absent")), 0);
    }

    #[test]
    fn flags_in_containerd_s_style() {
        let o = parse(&args(&[
            "-address",
            "/tmp/c.sock",
            "-namespace",
            "k8s.io",
            "--namespace",
            "default",
            "-once",
            "-nice",
            "5",
        ]))
        .unwrap();
        assert_eq!(
            o,
            Options {
                address: "/tmp/c.sock".into(),
                namespaces: vec!["k8s.io".into(), "default".into()],
                once: true,
                nice: 5,
            }
        );
        assert_eq!(parse(&[]).unwrap().address, Path::new(DEFAULT_ADDRESS));
    }

    #[test]
    fn bad_flags_are_named() {
        let e = parse(&args(&["-nice", "40"])).unwrap_err().to_string();
        assert!(e.contains("-nice 40"), "{e}");
        let e = parse(&args(&["-address"])).unwrap_err().to_string();
        assert!(e.contains("-address needs a value"), "{e}");
        let e = parse(&args(&["--watch"])).unwrap_err().to_string();
        assert!(e.contains("\"--watch\""), "{e}");
    }
}
