//! `cargo xtask e2e`: the shim under a real containerd. Runs every check on three containerds
//! from Debian's archive — 2.x from sid (the primary pass) and 1.7 from trixie, both fetched
//! into a cache outside the checkout (`debian.rs`), then the machine's own 1.6 — each with a private root, state, sockets and config that registers
//! `io.containerd.wasm.v1` through `wasmpod install`, and Debian's docker-registry on
//! loopback; builds the test image with `wasmpod build`; then checks what `ctr` and CRI
//! users see. Everything is torn down afterwards, also when a check fails.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

pub(crate) use test_support::registry::Registry;

use crate::util::{cargo, have, output_ok, root, run as sh};

use basic::*;
pub(crate) use daemon::*;

pub(crate) mod basic;
pub(crate) mod conformance;
pub(crate) mod cri;
mod daemon;
pub(crate) mod debian;
pub(crate) mod escape;
pub(crate) mod faults;
pub(crate) mod http;
pub(crate) mod isolation;
pub(crate) mod kind;
pub(crate) mod load;
pub(crate) mod native;
pub(crate) mod precompile;
pub(crate) mod trace;
pub(crate) mod vm;

/// The runtime type of our shim.
pub(crate) const RUNTIME: &str = "io.containerd.wasm.v1";
/// The containerd namespace the checks use.
pub(crate) const NAMESPACE: &str = "wasmpod-e2e";
/// The test image as `wasmpod build` tags and `ctr image import` names it.
pub(crate) const IMAGE: &str = "localhost/wasmpod-e2e/probe:v1";

/// One e2e check against the running containerd.
pub(crate) type Check = fn(&Containerd) -> anyhow::Result<()>;

/// Which containerd a pass runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Flavor {
    /// containerd 2.x from Debian sid (`containerd/sid`, unpacked into a cache): config
    /// version 3 with a drop-in directory, the CRI plugin as `io.containerd.cri.v1.runtime`
    /// and `.images`, task API v3, the JSON bootstrap answer.
    #[default]
    V2,
    /// containerd 1.7 from Debian trixie (`containerd/trixie`): config version 2.
    V1_7,
    /// Debian bookworm's own containerd 1.6 (`apt-get install containerd`): config version 2.
    V1_6,
}

impl Flavor {
    /// Every pass, primary first.
    pub(crate) const ALL: [Flavor; 3] = [Flavor::V2, Flavor::V1_7, Flavor::V1_6];

    /// The name a pass is printed under and `--containerd` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavor::V2 => "2",
            Flavor::V1_7 => "1.7",
            Flavor::V1_6 => "1.6",
        }
    }

    /// The Debian suite its containerd is fetched from (`None`: the machine's own).
    pub(crate) fn suite(self) -> Option<&'static str> {
        match self {
            Flavor::V2 => Some("sid"),
            Flavor::V1_7 => Some("trixie"),
            Flavor::V1_6 => None,
        }
    }

    /// A 1.x containerd: config version 2, the CRI plugin as `io.containerd.grpc.v1.cri`.
    pub(crate) fn is_1x(self) -> bool {
        self != Flavor::V2
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "2" | "2.x" | "sid" => Ok(Flavor::V2),
            "1.7" | "trixie" => Ok(Flavor::V1_7),
            "1.6" | "bookworm" => Ok(Flavor::V1_6),
            other => bail!("--containerd {other}: 2, 1.7 or 1.6"),
        }
    }
}

/// Runs every check on each containerd (2.x from sid, 1.7 from trixie, the machine's 1.6);
/// `--containerd 2|1.7|1.6` picks one pass (again for more), other arguments pick checks
/// by name.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().is_some_and(|f| f == "--kind") {
        return kind::run();
    }
    if args.first().is_some_and(|f| f == "--cgroup2") {
        return vm::run(&args[1..]);
    }
    let mut flavors = Vec::new();
    let mut filter = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--containerd" {
            let name = args.next().context("--containerd needs 2, 1.7 or 1.6")?;
            flavors.push(Flavor::parse(name)?);
        } else {
            filter.push(arg.clone());
        }
    }
    if flavors.is_empty() {
        flavors = Flavor::ALL.to_vec();
    }
    let mut failed = Vec::new();
    for flavor in flavors {
        let started = Instant::now();
        match run_pass(flavor, &filter) {
            Ok(()) => eprintln!(
                "e2e on containerd {}: all checks ok in {:.0?}",
                flavor.name(),
                started.elapsed()
            ),
            Err(e) => {
                eprintln!("e2e on containerd {}: {e:#}", flavor.name());
                failed.push(flavor.name());
            }
        }
    }
    if !failed.is_empty() {
        bail!("e2e failed on containerd {}", failed.join(", "));
    }
    Ok(())
}

/// One pass of the checks on `flavor`.
fn run_pass(flavor: Flavor, filter: &[String]) -> anyhow::Result<()> {
    for (program, package) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("docker-registry", "docker-registry"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("cc", "gcc"),
    ] {
        if !have(program) {
            bail!("the e2e needs {program}: apt-get install {package} (.ci/run does this)");
        }
    }
    crate::util::require_wasm_toolchain()?;
    let bins = build_binaries()?;
    let env = Containerd::start_flavor(&bins, flavor)?;
    eprintln!(
        "e2e: containerd {} ({}) in {}",
        flavor.name(),
        env.version()?,
        env.dir.display()
    );
    env.prepare_image()?;
    cri::import_pause_image(&env)?;
    let checks: &[(&str, Check)] = &[
        ("output-and-exit-codes", check_output_and_exit_codes),
        ("env", check_env),
        ("bind-mounts", check_bind_mounts),
        ("stdin", check_stdin),
        ("kill", check_kill),
        ("memory-limit", check_memory_limit),
        ("not-wasm", check_not_wasm),
        ("pod-sandbox", check_pod_sandbox),
        ("events-and-metrics", check_events_and_metrics),
        ("registry-pull", check_registry_pull),
        ("artifact", check_artifact),
        ("containerd-restart", check_containerd_restart),
        ("shim-killed", check_shim_killed),
        (
            "containerd-killed-in-create",
            faults::check_containerd_killed_during_create,
        ),
        ("hostile-entrypoint", faults::check_hostile_entrypoint),
        (
            "precompile-on-arrival",
            precompile::check_precompile_on_arrival,
        ),
        ("hostile-compile", faults::check_hostile_compile),
        ("blast-radius", faults::check_blast_radius),
        ("shim-socket", check_shim_socket),
        ("cycles", check_cycles),
        ("otel-trace", trace::check_otel_trace),
        ("load", load::check_load),
        ("process-level", isolation::check_process_level),
        ("escape", escape::check_escape),
        ("wasm-features", isolation::check_wasm_features),
        ("own-conformance", conformance::check_own_conformance),
        ("wasi-testsuite", conformance::check_wasi_testsuite),
        ("wasi-testsuite-p3", conformance::check_wasi_testsuite_p3),
        ("process-oom", isolation::check_process_oom),
        ("cpu-quota", isolation::check_cpu_quota),
        ("pids-blockio", isolation::check_pids_blockio),
        ("systemd-driver", isolation::check_systemd_driver),
        ("pod-run", cri::check_pod_run),
        ("pod-exit-code", cri::check_pod_exit_code),
        ("pod-two-containers", cri::check_pod_two_containers),
        ("pod-restart", cri::check_pod_restart),
        ("pod-oom", cri::check_pod_oom),
        ("pod-update", cri::check_pod_update),
        ("pod-process", cri::check_pod_process),
        ("pod-cgroup-parent", isolation::check_pod_cgroup_parent),
        ("pod-node-grouping", cri::check_pod_node_grouping),
        ("pod-pull-secret", cri::check_pod_pull_secret),
        ("pod-unknown-handler", cri::check_pod_unknown_handler),
        ("pod-artifact", cri::check_pod_artifact),
        ("pod-mixed", native::check_pod_mixed),
        ("pod-native-oom", native::check_pod_native_oom),
        ("pod-native-tty", native::check_pod_native_tty),
        (
            "pod-mixed-host-network",
            native::check_pod_mixed_host_network,
        ),
        ("pod-mixed-shim-killed", native::check_pod_mixed_shim_killed),
        (
            "pod-mixed-node-grouped",
            native::check_pod_mixed_node_grouped,
        ),
        ("pod-nginx-sidecar", native::check_pod_nginx_sidecar),
        ("http-serve", http::check_http_serve),
        ("http-slowloris", http::check_http_slowloris),
        ("pod-http", http::check_pod_http),
        ("static-site", http::check_static_site),
    ];
    let sockets_before = shim_sockets();
    let mut failed = Vec::new();
    for (name, check) in checks {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let version = flavor.name();
        match check(&env) {
            Ok(()) => eprintln!("e2e {name} [{version}]: ok ({:.1?})", started.elapsed()),
            Err(e) => {
                eprintln!("e2e {name} [{version}]: FAILED: {e:#}");
                failed.push(*name);
            }
        }
        env.clean_namespace();
    }
    // Every shim removes its socket when it ends, or `shim delete` does after it died.
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left: Vec<String> = shim_sockets()
            .difference(&sockets_before)
            .cloned()
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if left.is_empty() {
        eprintln!("e2e shim-sockets: ok (no socket left under {SHIM_SOCKETS})");
    } else {
        eprintln!("e2e shim-sockets: FAILED: sockets left under {SHIM_SOCKETS}: {left:?}");
        failed.push("shim-sockets");
    }
    // Nothing the shim did may show as an error in containerd's log.
    match shim_errors_in_log(&env) {
        Ok(()) => eprintln!("e2e containerd-log [{}]: ok", flavor.name()),
        Err(e) => {
            eprintln!("e2e containerd-log [{}]: FAILED: {e:#}", flavor.name());
            failed.push("containerd-log");
        }
    }
    if !failed.is_empty() {
        eprintln!(
            "containerd's log: {}",
            env.dir.join("containerd.log").display()
        );
        env.keep_log();
        bail!("e2e checks failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Every error containerd logged over the pass: none may come from the shim's side. The
/// only ones allowed are those a check provokes on purpose, each matched exactly.
fn shim_errors_in_log(env: &Containerd) -> anyhow::Result<()> {
    /// (the check, the parts of what containerd logs for it), for every version alike.
    const EXPECTED: &[(&str, &[&str])] = &[
        // A RuntimeClass whose handler containerd does not know.
        (
            "pod-unknown-handler",
            &["msg=\"RunPodSandbox for ", "nohandler", "failed, error"],
        ),
        // The anonymous pull of a private image.
        (
            "pod-pull-secret",
            &["msg=\"PullImage \\\"", "/private/probe:v1\\\" failed\""],
        ),
        // 1.6 refuses an artifact at pull.
        (
            "pod-artifact",
            &[
                "/e2e/probe-artifact:v1\\\" failed\"",
                "mismatched image rootfs and manifest layers",
            ],
        ),
        // containerd 2.x, stopped with tracing on, shuts its tracer down with a context it
        // has already cancelled.
        (
            "otel-trace",
            &["msg=\"failed to close plugin\" error=\"context canceled\" id=io.containerd.internal.v1.tracing"],
        ),
        // containerd 1.6, stopped (SIGTERM) by a check that restarts it while its garbage
        // collection runs, cancels that collection and logs it (then panics in its GC
        // scheduler on the way out: containerd's own shutdown race, seen once in otel-trace
        // right after a Delete had scheduled a collection).
        (
            "otel-trace",
            &["msg=\"garbage collection failed\" error=\"context canceled\""],
        ),
        // containerd, killed inside a Create, finds after its restart that the shim it
        // had started ended (the Create failed with nobody to tell).
        (
            "containerd-killed-in-create",
            &["msg=\"failed to delete task\" error=\"ttrpc: closed\" id=slow"],
        ),
        // The check polls the restarting container by name (list, then status): when the
        // runner removes it in between, containerd's CRI logs the status it could not
        // give. Kubelet's own polling races the same way; nothing of the shim's.
        (
            "pod-restart",
            &[
                "msg=\"ContainerStatus for \\\"",
                "code = NotFound desc = failed to get verbose container info",
            ],
        ),
        // The same race, worded by the lookup rather than the verbose info.
        (
            "pod-restart",
            &[
                "msg=\"ContainerStatus for \\\"",
                "code = NotFound desc = an error occurred when try to find container",
            ],
        ),
        // A mixed pod's shim, killed on purpose: containerd asks the dead shim for its
        // tasks' exits and deletes, and its copy of their output ends.
        (
            "pod-mixed-shim-killed",
            &["msg=\"failed to get task exit status for ", "ttrpc: closed"],
        ),
        (
            "pod-mixed-shim-killed",
            &[
                "msg=\"failed to handle ",
                " TaskExit event ",
                "failed to delete task: ttrpc: closed",
            ],
        ),
        (
            "pod-mixed-shim-killed",
            &["msg=\"Failed to pipe std", "file already closed"],
        ),
        (
            "pod-mixed-shim-killed",
            &[
                "msg=\"RemovePodSandbox for \\\"",
                "container is still running, to stop first",
            ],
        ),
        // A native program's exec into a wasm container, refused on purpose.
        (
            "pod-mixed",
            &[
                "msg=\"ExecSync for \\\"",
                "\\\"ls\\\" cannot run in a wasm container (",
                "execs wasm programs",
            ],
        ),
        // An exec of an image that is not on the node, refused on purpose.
        (
            "pod-mixed",
            &[
                "msg=\"ExecSync for \\\"",
                "/e2e/absent:v1\\\": content store: image ",
                "is not on this node (containerd namespace k8s.io): pull it first",
            ],
        ),
        // containerd's copy of a shim's log, whose pipe containerd itself closed while it
        // cleaned up after a failed Create (not-wasm): its own race.
        (
            "not-wasm",
            &["msg=\"copy shim log\" error=\"read /proc/self/fd/"],
        ),
    ];
    let log = fs::read_to_string(env.dir.join("containerd.log"))?;
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("level=error") || l.contains("level=fatal"))
        .filter(|l| {
            !EXPECTED
                .iter()
                .any(|(_, parts)| parts.iter().all(|p| l.contains(p)))
        })
        .collect();
    ensure!(
        bad.is_empty(),
        "{} unexpected error lines in containerd's log:\n{}",
        bad.len(),
        bad.join("\n")
    );
    Ok(())
}

/// Where the shim library puts shims' ttrpc sockets, whatever containerd's own root.
const SHIM_SOCKETS: &str = "/run/containerd/s";

/// The socket files under [`SHIM_SOCKETS`].
fn shim_sockets() -> std::collections::BTreeSet<String> {
    fs::read_dir(SHIM_SOCKETS)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The binaries under test.
pub(crate) struct Binaries {
    pub(crate) shim: PathBuf,
    pub(crate) wasmpod: PathBuf,
    /// `crates/shim/examples/run-via-api.rs`: a container through containerd's gRPC API.
    pub(crate) run_via_api: PathBuf,
    /// `examples/embed`: an image pulled and run with the crates, no containerd.
    pub(crate) embed_example: PathBuf,
}

/// Builds the shim and the CLI (debug, as `cargo test` does) and finds them.
/// The environment variable that stretches the e2e's time bounds: how many times slower
/// than a host this machine runs (the cgroup v2 guest, emulated by QEMU, sets it).
pub(crate) const SLOWDOWN_ENV: &str = "WASMPOD_E2E_SLOWDOWN";

/// `d` stretched by [`SLOWDOWN_ENV`] (1 when unset): for the bounds and waits that a
/// slower CPU would miss though the behaviour under test is right. [`retry`] and
/// `Containerd::wait_status` stretch their limits with it.
pub(crate) fn scaled(d: Duration) -> Duration {
    let factor = std::env::var(SLOWDOWN_ENV)
        .ok()
        .and_then(|f| f.parse::<u32>().ok())
        .filter(|f| *f > 0)
        .unwrap_or(1);
    d * factor
}

/// `attempt`, again every `every` until it succeeds or `limit` has passed: then its last
/// error. For what the node does on its own time (a log written, a process gone).
pub(crate) fn retry<T>(
    limit: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + scaled(limit);
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(every),
        }
    }
}

pub(crate) fn build_binaries() -> anyhow::Result<Binaries> {
    build_binaries_in("debug", &[])
}

/// Builds the shim and the CLI in `profile` (`debug` or `release`).
pub(crate) fn build_binaries_in(profile: &str, flags: &[&str]) -> anyhow::Result<Binaries> {
    // In the cgroup v2 guest the host built them, and there is no cargo to ask.
    if std::env::var_os(vm::PREBUILT_ENV).is_none() {
        sh(build_command().args(flags))?;
    }
    let mut bins = Binaries::in_dir(&crate::util::target_dir().join(profile));
    // Another shim binary under the same checks (a release build, a wrapper).
    if let Some(shim) = std::env::var_os("WASMPOD_E2E_SHIM") {
        bins.shim = PathBuf::from(shim);
    }
    Ok(bins)
}

/// The one build of the workspace's binaries and examples: the same features as `cargo
/// test --workspace` resolves (a build of `-p shim -p wasmpod` alone would resolve others
/// and compile wasmtime again). Not xtask: that would relink the running binary, which
/// some checks start again (`current_exe`).
pub(crate) fn build_command() -> Command {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--quiet",
        "--workspace",
        "--exclude",
        "xtask",
        "--bins",
        "--examples",
    ]);
    cmd
}

impl Binaries {
    /// The binaries a build put in `dir` (`<target>/<profile>`).
    pub(crate) fn in_dir(dir: &Path) -> Self {
        Self {
            shim: dir.join("containerd-shim-wasm-v1"),
            wasmpod: dir.join("wasmpod"),
            run_via_api: dir.join("examples/run-via-api"),
            embed_example: dir.join("embed-example"),
        }
    }
}

/// Compiles `tests/fixtures/<name>.c` to wasm32-wasi into `out`.
pub(crate) fn compile_fixture(name: &str, out: &Path) -> anyhow::Result<()> {
    let src = root().join("tests/fixtures").join(format!("{name}.c"));
    sh(
        Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
            .args(["--target=wasm32-wasi", "-O2", "-o"])
            .arg(out)
            .arg(src),
    )
}
