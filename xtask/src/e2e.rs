//! `cargo xtask e2e`: the shim under a real containerd. Starts containerd 2.3.4 (from
//! `../shared/containerd/`, unpacked into the test's directory), then Debian's 1.6 as the
//! legacy pass, each with a private root, state, sockets and config that registers
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

use crate::util::{cargo, have, output_ok, root, run as sh, Registry};

pub(crate) mod conformance;
pub(crate) mod cri;
pub(crate) mod faults;
pub(crate) mod http;
pub(crate) mod isolation;
pub(crate) mod kind;
pub(crate) mod load;

/// The runtime type of our shim.
pub(crate) const RUNTIME: &str = "io.containerd.wasm.v1";
/// The containerd namespace the checks use.
pub(crate) const NAMESPACE: &str = "wasmpod-e2e";
/// The test image as `wasmpod build` tags and `ctr image import` names it.
pub(crate) const IMAGE: &str = "localhost/wasmpod-e2e/probe:v1";

/// One e2e check against the running containerd.
type Check = fn(&Containerd) -> anyhow::Result<()>;

/// Which containerd a pass runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Flavor {
    /// containerd 2.3.4 from `../shared/containerd/`: its default config (version 4), a drop-in
    /// directory, the CRI plugin as `io.containerd.cri.v1.runtime`/`.images`.
    #[default]
    V2,
    /// Debian's containerd 1.6 (`apt-get install containerd`): config version 2.
    V1,
}

impl Flavor {
    /// The name a pass is printed under and `--containerd` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavor::V2 => "2.3.4",
            Flavor::V1 => "1.6",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "2" | "2.3" | "2.3.4" => Ok(Flavor::V2),
            "1" | "1.6" => Ok(Flavor::V1),
            other => bail!("--containerd {other}: 2.3.4 or 1.6"),
        }
    }
}

/// The containerd 2.3.4 release archive: `$WASMPOD_CONTAINERD2_TGZ`, else
/// `shared/containerd/` beside the checkout or beside any directory above it, else
/// `/work/shared/containerd/`.
pub(crate) fn containerd2_archive() -> anyhow::Result<PathBuf> {
    const NAME: &str = "containerd-2.3.4-linux-amd64.tgz";
    if let Some(p) = std::env::var_os("WASMPOD_CONTAINERD2_TGZ") {
        let p = PathBuf::from(p);
        ensure!(
            p.is_file(),
            "WASMPOD_CONTAINERD2_TGZ={}: no such file",
            p.display()
        );
        return Ok(p);
    }
    let root = root();
    let candidates: Vec<PathBuf> = root
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("shared/containerd").join(NAME))
        .chain([PathBuf::from("/work/shared/containerd").join(NAME)])
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "containerd 2.3.4 ({NAME}) is not in shared/containerd/ beside {} or above it, \
             nor in /work/shared/containerd/: set WASMPOD_CONTAINERD2_TGZ",
                root.display()
            )
        })
}

/// Runs every check, on containerd 2.3.4 and then 1.6; `--containerd 2.3.4|1.6` picks one
/// pass, other arguments pick checks by name.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().is_some_and(|f| f == "--kind") {
        return kind::run();
    }
    let mut flavors = vec![Flavor::V2, Flavor::V1];
    let mut chosen = false;
    let mut filter = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--containerd" {
            let name = args.next().context("--containerd needs 2.3.4 or 1.6")?;
            flavors = vec![Flavor::parse(name)?];
            chosen = true;
        } else {
            filter.push(arg.clone());
        }
    }
    let mut failed = Vec::new();
    for flavor in flavors {
        if flavor == Flavor::V2 && !chosen {
            if let Err(e) = containerd2_archive() {
                // Said loudly, and the 1.6 pass still runs: the archive is part of the
                // machine, not of the checkout.
                eprintln!("e2e on containerd 2.3.4: SKIPPED: {e:#}");
                continue;
            }
        }
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
        bail!("e2e failed on containerd {}", failed.join(" and "));
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
        ("hostile-compile", faults::check_hostile_compile),
        ("blast-radius", faults::check_blast_radius),
        ("shim-socket", check_shim_socket),
        ("cycles", check_cycles),
        ("load", load::check_load),
        ("process-level", isolation::check_process_level),
        ("wasm-features", isolation::check_wasm_features),
        ("wasi-testsuite", conformance::check_wasi_testsuite),
        ("wasi-testsuite-p3", conformance::check_wasi_testsuite_p3),
        ("process-oom", isolation::check_process_oom),
        ("cpu-quota", isolation::check_cpu_quota),
        ("pod-run", cri::check_pod_run),
        ("pod-exit-code", cri::check_pod_exit_code),
        ("pod-two-containers", cri::check_pod_two_containers),
        ("pod-restart", cri::check_pod_restart),
        ("pod-oom", cri::check_pod_oom),
        ("pod-update", cri::check_pod_update),
        ("pod-process", cri::check_pod_process),
        ("pod-node-grouping", cri::check_pod_node_grouping),
        ("pod-pull-secret", cri::check_pod_pull_secret),
        ("pod-unknown-handler", cri::check_pod_unknown_handler),
        ("pod-artifact", cri::check_pod_artifact),
        ("http-serve", http::check_http_serve),
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
    /// (the check, the parts of what containerd logs for it), for 2.3.4 and 1.6 alike.
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
}

/// Builds the shim and the CLI (debug, as `cargo test` does) and finds them.
pub(crate) fn build_binaries() -> anyhow::Result<Binaries> {
    build_binaries_in("debug", &[])
}

/// Builds the shim and the CLI in `profile` (`debug` or `release`).
pub(crate) fn build_binaries_in(profile: &str, flags: &[&str]) -> anyhow::Result<Binaries> {
    // One build: two (`-p shim` alone for the example) would resolve different features
    // and compile wasmtime twice.
    sh(cargo()
        .args(["build", "--quiet", "-p", "shim", "-p", "wasmpod", "--bins"])
        .args(["--example", "run-via-api"])
        .args(flags))?;
    let target = crate::util::target_dir();
    let dir = target.join(profile);
    Ok(Binaries {
        // Another shim binary under the same checks (a release build, a wrapper).
        shim: std::env::var_os("WASMPOD_E2E_SHIM")
            .map_or_else(|| dir.join("containerd-shim-wasm-v1"), PathBuf::from),
        wasmpod: dir.join("wasmpod"),
        run_via_api: dir.join("examples/run-via-api"),
    })
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

/// containerd's config: private root, state, sockets; the CRI plugin with a sandbox image
/// of the test's own, CNI from Debian's plugins with a bridge config in `dir`, pod network
/// namespaces under the state directory, registry hosts from `dir/certs.d`, and the
/// adjustments these VMs need (`restrict_oom_score_adj`). 1.6 reads version 2, written
/// here; 2.3.4's is what its `containerd config default` prints (version 4, importing
/// `conf.d/*.toml`, where `wasmpod install` puts the handlers), with only its paths and
/// those settings changed (`default` is that text).
fn config_toml(dir: &Path, flavor: Flavor, default: &str) -> anyhow::Result<String> {
    let d = dir.display();
    let pause = cri::PAUSE_IMAGE;
    match flavor {
        Flavor::V1 => Ok(format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{d}/cni/net.d"
  max_conf_num = 1
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{d}/certs.d"
"#
        )),
        Flavor::V2 => {
            let mut text = default.to_owned();
            // (what the default says, what the test's containerd needs), each exactly once.
            let edits = [
                ("root = '/var/lib/containerd'".to_owned(), format!("root = '{d}/root'")),
                ("state = '/run/containerd'".to_owned(), format!("state = '{d}/state'")),
                (
                    "imports = ['/etc/containerd/conf.d/*.toml']".to_owned(),
                    format!("imports = ['{d}/conf.d/*.toml']"),
                ),
                (
                    "disabled_plugins = []".to_owned(),
                    "disabled_plugins = ['io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.erofs']".to_owned(),
                ),
                (
                    "sandbox = 'registry.k8s.io/pause:3.10.2'".to_owned(),
                    format!("sandbox = '{pause}'"),
                ),
                ("config_path = ''\n\n    [plugins.'io.containerd.cri.v1.images'.image_decryption]".to_owned(),
                    format!("config_path = '{d}/certs.d'\n\n    [plugins.'io.containerd.cri.v1.images'.image_decryption]")),
                ("restrict_oom_score_adj = false".to_owned(), "restrict_oom_score_adj = true".to_owned()),
                (
                    "netns_mounts_under_state_dir = false".to_owned(),
                    "netns_mounts_under_state_dir = true".to_owned(),
                ),
                ("enable_cdi = true".to_owned(), "enable_cdi = false".to_owned()),
                // NRI's socket is the node's, not the test's.
                ("disable = false".to_owned(), "disable = true".to_owned()),
                ("bin_dirs = ['/opt/cni/bin']".to_owned(), "bin_dirs = ['/usr/lib/cni']".to_owned()),
                ("conf_dir = '/etc/cni/net.d'".to_owned(), format!("conf_dir = '{d}/cni/net.d'")),
                ("path = '/opt/containerd'".to_owned(), format!("path = '{d}/opt'")),
                (
                    "address = '/run/containerd/containerd.sock'".to_owned(),
                    format!("address = '{d}/containerd.sock'"),
                ),
                (
                    "address = '/run/containerd/containerd.sock.ttrpc'".to_owned(),
                    format!("address = '{d}/containerd.sock.ttrpc'"),
                ),
            ];
            for (old, new) in edits {
                ensure!(
                    text.matches(&old).count() == 1,
                    "containerd config default: expected {old:?} once"
                );
                text = text.replace(&old, &new);
            }
            Ok(text)
        }
    }
}

/// A private containerd: its own root, state, sockets and config, stopped on drop.
pub(crate) struct Containerd {
    pub(crate) dir: PathBuf,
    /// Which containerd this is.
    pub(crate) flavor: Flavor,
    /// Where its `containerd`, `ctr` and `containerd-shim-runc-v2` are (`None`: on PATH).
    bin: Option<PathBuf>,
    /// The `wasmpod` binary under test.
    pub(crate) wasmpod: PathBuf,
    /// The gRPC client example (see [`Binaries::run_via_api`]).
    pub(crate) run_via_api: PathBuf,
    child: std::cell::RefCell<Option<Child>>,
    keep_log: std::cell::Cell<bool>,
    /// The loopback registry the CRI checks pull from, started on first use.
    registry: std::cell::OnceCell<(Registry, String)>,
}

impl Containerd {
    /// Starts containerd 2.3.4 in a new temporary directory, with `bins.shim` on its PATH.
    pub(crate) fn start(bins: &Binaries) -> anyhow::Result<Self> {
        Self::start_flavor(bins, Flavor::default())
    }

    /// Starts containerd `flavor` in a new temporary directory, with `bins.shim` on its
    /// PATH.
    pub(crate) fn start_flavor(bins: &Binaries, flavor: Flavor) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "wasmpod-e2e-{}-{}",
            std::process::id(),
            flavor.name()
        ));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(dir.join("bin"))?;
        symlink(&bins.shim, dir.join("bin/containerd-shim-wasm-v1"))?;
        let bin = match flavor {
            Flavor::V1 => None,
            Flavor::V2 => {
                let bin = dir.join("containerd-2.3.4");
                fs::create_dir_all(&bin)?;
                sh(Command::new("tar")
                    .arg("xzf")
                    .arg(containerd2_archive()?)
                    .arg("-C")
                    .arg(&bin))?;
                Some(bin)
            }
        };
        let default = match &bin {
            Some(bin) => {
                output_ok(Command::new(bin.join("containerd")).args(["config", "default"]))?
            }
            None => String::new(),
        };
        fs::write(
            dir.join("config.toml"),
            config_toml(&dir, flavor, &default)?,
        )?;
        // The runtime handlers go in as users add them: by `wasmpod install`. Besides
        // `wasm`, one per handler option: the process level, and one shim per node. A
        // second round must find nothing to change.
        for round in 0..2 {
            for extra in [
                &[][..],
                &["--handler", "wasm-process", "--option", "isolation=process"],
                &["--handler", "wasm-node", "--option", "grouping=node"],
            ] {
                let out = output_ok(
                    Command::new(&bins.wasmpod)
                        .args([
                            "install",
                            "--config-only",
                            "--no-restart",
                            "--containerd-config",
                        ])
                        .arg(dir.join("config.toml"))
                        .args(extra),
                )?;
                eprint!("{out}");
                ensure!(
                    (round == 0) != out.contains("nothing changed"),
                    "wasmpod install {extra:?}, round {}: {out}",
                    round + 1
                );
            }
        }
        cri::write_cni_config(&dir)?;
        let env = Self {
            dir,
            flavor,
            bin,
            wasmpod: bins.wasmpod.clone(),
            run_via_api: bins.run_via_api.clone(),
            child: std::cell::RefCell::new(None),
            keep_log: std::cell::Cell::new(false),
            registry: std::cell::OnceCell::new(),
        };
        env.launch()?;
        Ok(env)
    }

    fn launch(&self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))?;
        let mut path = format!("{}:", self.dir.join("bin").display());
        if let Some(bin) = &self.bin {
            path.push_str(&format!("{}:", bin.display()));
        }
        path.push_str(&std::env::var("PATH").unwrap_or_default());
        let child = Command::new(self.program("containerd"))
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .env("PATH", path)
            .env("WASMPOD_ROOT", self.dir.join("wasmpod"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        *self.child.borrow_mut() = Some(child);
        // A restart reconnects to every shim still running and reloads the CRI state: on 2
        // busy cores that has taken over 20 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.socket().exists() && self.ctr(&["version"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .borrow_mut()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "containerd exited at start ({status}); see {}",
                    self.dir.join("containerd.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within 60 s; see {}",
                    self.dir.join("containerd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops containerd (SIGTERM, as systemd does) and waits for it; shims keep running.
    pub(crate) fn stop_daemon(&self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.borrow_mut().take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Kills containerd outright (SIGKILL), as a crash or the OOM killer would.
    pub(crate) fn kill_daemon(&self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.borrow_mut().take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts containerd again after [`Self::kill_daemon`] or [`Self::stop_daemon`].
    pub(crate) fn relaunch(&self) -> anyhow::Result<()> {
        self.launch()
    }

    /// Restarts containerd with the same config.
    pub(crate) fn restart(&self) -> anyhow::Result<()> {
        self.stop_daemon()?;
        self.launch()
    }

    /// containerd's pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.borrow().as_ref().map(Child::id)
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// `name` (`containerd`, `ctr`) of this containerd's release.
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.bin
            .as_ref()
            .map_or_else(|| PathBuf::from(name), |b| b.join(name))
    }

    /// The daemon's version, as its version service reports it.
    pub(crate) fn version(&self) -> anyhow::Result<String> {
        let out = self.ctr_ok(&["version"])?;
        let server = out.split("Server:").nth(1).unwrap_or(&out);
        Ok(server
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default())
    }

    fn keep_log(&self) {
        self.keep_log.set(true);
    }

    /// `ctr` against this containerd, in the e2e namespace.
    pub(crate) fn ctr_cmd(&self, args: &[&str]) -> Command {
        self.ctr_cmd_in(NAMESPACE, args)
    }

    /// `ctr` against this containerd, in `namespace`.
    pub(crate) fn ctr_cmd_in(&self, namespace: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.program("ctr"));
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr` in `namespace` and fails unless it succeeds; returns stdout.
    pub(crate) fn ctr_in(&self, namespace: &str, args: &[&str]) -> anyhow::Result<String> {
        output_ok(&mut self.ctr_cmd_in(namespace, args))
    }

    /// Runs `ctr` and returns its output, whatever its status.
    pub(crate) fn ctr(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.ctr_cmd(args)
            .output()
            .with_context(|| format!("running ctr {}", args.join(" ")))
    }

    /// Runs `ctr` and fails unless it succeeds; returns stdout.
    pub(crate) fn ctr_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.ctr_in(NAMESPACE, args)
    }

    /// `ctr events`, started and given time to subscribe before anything it should see.
    pub(crate) fn watch_events(&self) -> anyhow::Result<EventWatch> {
        let child = self
            .ctr_cmd(&["events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(EventWatch(child))
    }

    /// `ctr run --rm` of the test image under our runtime: `(exit code, stdout, stderr)`.
    pub(crate) fn run_wasm(
        &self,
        id: &str,
        flags: &[&str],
        args: &[&str],
    ) -> anyhow::Result<(i32, String, String)> {
        let mut all = vec!["run", "--rm", "--runtime", RUNTIME];
        all.extend_from_slice(flags);
        all.extend_from_slice(&[IMAGE, id, "/probe.wasm"]);
        all.extend_from_slice(args);
        let out = self.ctr(&all)?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Starts a detached task of the test image; waits until it runs.
    pub(crate) fn run_detached(
        &self,
        id: &str,
        flags: &[&str],
        args: &[&str],
    ) -> anyhow::Result<()> {
        let mut all = vec!["run", "-d", "--runtime", RUNTIME];
        all.extend_from_slice(flags);
        all.extend_from_slice(&[IMAGE, id, "/probe.wasm"]);
        all.extend_from_slice(args);
        self.ctr_ok(&all)?;
        self.wait_status(id, "RUNNING", Duration::from_secs(10))
    }

    /// `(pid, status)` of a task as `ctr task ls` shows it.
    pub(crate) fn task(&self, id: &str) -> anyhow::Result<Option<(u32, String)>> {
        let out = self.ctr_ok(&["task", "ls"])?;
        Ok(out.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 3 && f[0] == id).then(|| (f[1].parse().unwrap_or(0), f[2].to_owned()))
        }))
    }

    /// Waits until `ctr task ls` shows `id` in `status`.
    pub(crate) fn wait_status(
        &self,
        id: &str,
        status: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.task(id)?;
            if now.as_ref().is_some_and(|(_, s)| s == status) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("task {id} is {now:?}, not {status}, after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Builds the probe and imports it as [`IMAGE`].
    pub(crate) fn prepare_image(&self) -> anyhow::Result<()> {
        let wasm = self.dir.join("probe.wasm");
        compile_fixture("probe", &wasm)?;
        self.import(&wasm, IMAGE, "compat")
    }

    /// `wasmpod build --format FORMAT` of `wasm` as `image`, then `ctr image import` of the
    /// archive. Artifacts are imported without unpacking: their layer is not a tar.
    pub(crate) fn import(&self, wasm: &Path, image: &str, format: &str) -> anyhow::Result<()> {
        let tar = wasm.with_extension(format!("{format}.tar"));
        sh(Command::new(&self.wasmpod)
            .arg("--root")
            .arg(self.dir.join("wasmpod"))
            .arg("build")
            .arg(wasm)
            .args(["--format", format, "-t", image, "-o"])
            .arg(&tar))?;
        let tar = tar.to_string_lossy();
        let mut args = vec!["image", "import"];
        if format == "artifact" {
            args.extend(["--no-unpack", "--all-platforms"]);
        }
        args.push(&tar);
        self.ctr_ok(&args)?;
        let images = self.ctr_ok(&["image", "ls", "-q"])?;
        ensure!(
            images.lines().any(|l| l == image),
            "import did not create {image}: {images}"
        );
        Ok(())
    }

    /// The loopback registry for CRI pulls (started on first use, known to containerd
    /// through `certs.d/HOST/hosts.toml`); returns `127.0.0.1:PORT`.
    pub(crate) fn registry(&self) -> anyhow::Result<&str> {
        if self.registry.get().is_none() {
            let dir = self.dir.join("cri-registry");
            fs::create_dir_all(&dir)?;
            let (registry, host) = Registry::start(&dir)?;
            self.trust_registry(&host)?;
            let _ = self.registry.set((registry, host));
        }
        Ok(&self.registry.get().context("registry")?.1)
    }

    /// Tells containerd's CRI plugin to reach `host` (`127.0.0.1:PORT`) over plain HTTP.
    pub(crate) fn trust_registry(&self, host: &str) -> anyhow::Result<()> {
        let hosts = self.dir.join("certs.d").join(host);
        fs::create_dir_all(&hosts)?;
        fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )?;
        Ok(())
    }

    /// `wasmpod` with this environment's store, state and CRI endpoint.
    pub(crate) fn wasmpod(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.wasmpod);
        cmd.arg("--root")
            .arg(self.dir.join("wasmpod"))
            .arg("--state")
            .arg(self.dir.join("wasmpod-state"))
            .args(args)
            .env(
                "CONTAINER_RUNTIME_ENDPOINT",
                format!("unix://{}", self.socket().display()),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// Imports `dir/rootfs` as a one-layer native image named `image` (command `cmd`) into
    /// `namespace`, through an OCI archive.
    pub(crate) fn import_rootfs(
        &self,
        namespace: &str,
        dir: &Path,
        image: &str,
        cmd: &[&str],
    ) -> anyhow::Result<()> {
        let cmd = format!(
            "[{}]",
            cmd.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let layout = dir.join("layout");
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs)?;
        let layer = dir.join("layer.tar");
        sh(Command::new("tar")
            .arg("-C")
            .arg(dir.join("rootfs"))
            .arg("-cf")
            .arg(&layer)
            .arg("."))?;
        let add = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
            let tmp = dir.join("blob.tmp");
            fs::write(&tmp, bytes)?;
            let out = Command::new("sha256sum").arg(&tmp).output()?;
            let hex = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .context("sha256sum")?
                .to_owned();
            fs::rename(&tmp, blobs.join(&hex))?;
            Ok((hex, bytes.len()))
        };
        let (layer_hex, layer_len) = add(&fs::read(&layer)?)?;
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":{cmd}}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_hex}"]}}}}"#
        );
        let (config_hex, config_len) = add(config.as_bytes())?;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_hex}","size":{config_len}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_hex}","size":{layer_len}}}]}}"#
        );
        let (manifest_hex, manifest_len) = add(manifest.as_bytes())?;
        fs::write(
            layout.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_hex}","size":{manifest_len},"annotations":{{"io.containerd.image.name":"{image}","org.opencontainers.image.ref.name":"v1"}}}}]}}"#
            ),
        )?;
        fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let archive = dir.join("image.tar");
        sh(Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .args(["oci-layout", "index.json", "blobs"]))?;
        self.ctr_in(namespace, &["image", "import", &archive.to_string_lossy()])?;
        Ok(())
    }

    /// Removes every task and container left in the namespace by a check, and every pod
    /// sandbox left in the CRI's.
    fn clean_namespace(&self) {
        cri::remove_all_pods(self);
        if let Ok(out) = self.ctr_ok(&["task", "ls", "-q"]) {
            for id in out.lines() {
                let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
                let _ = self.wait_status(id, "STOPPED", Duration::from_secs(5));
                let _ = self.ctr(&["task", "rm", "-f", id]);
            }
        }
        if let Ok(out) = self.ctr_ok(&["container", "ls", "-q"]) {
            for id in out.lines() {
                let _ = self.ctr(&["container", "rm", id]);
            }
        }
    }

    /// Mount points under the temporary directory.
    pub(crate) fn mounts(&self) -> Vec<String> {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.to_string_lossy();
        info.lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(dir.as_ref()))
            .map(str::to_owned)
            .collect()
    }

    /// Our shim processes serving this containerd.
    pub(crate) fn shims(&self) -> Vec<u32> {
        self.shim_pids("containerd-shim-wasm-v1")
    }

    /// Processes serving this containerd whose command line names `binary`
    /// (`containerd-shim` for every runtime's shims).
    pub(crate) fn shim_pids(&self, binary: &str) -> Vec<u32> {
        let needle = self.dir.join("containerd.sock.ttrpc");
        let needle = needle.to_string_lossy();
        processes(|environ, cmdline| {
            // A process-level container's child runs the same binary: not a shim.
            cmdline.contains(binary)
                && !cmdline.contains("__wasmpod-guest")
                && String::from_utf8_lossy(environ).contains(needle.as_ref())
        })
    }
}

/// The pids of processes whose environment (raw, NUL-separated) and command line `keep`
/// accepts; processes that end or hide their files meanwhile are left out.
pub(crate) fn processes(keep: impl Fn(&[u8], &str) -> bool) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if keep(&environ, &String::from_utf8_lossy(&cmdline)) {
            pids.push(pid);
        }
    }
    pids
}

/// A running `ctr events`.
pub(crate) struct EventWatch(Child);

impl EventWatch {
    /// Stops watching once late events have arrived; everything it printed.
    pub(crate) fn finish(self) -> anyhow::Result<String> {
        let mut child = self.0;
        std::thread::sleep(Duration::from_millis(300));
        let _ = child.kill();
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.clean_namespace();
        let _ = self.stop_daemon();
        for pid in self.shims() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        cri::remove_bridge();
        if self.keep_log.get() {
            let _ = fs::copy(
                self.dir.join("containerd.log"),
                std::env::temp_dir().join("wasmpod-e2e-containerd.log"),
            );
            eprintln!(
                "containerd's log kept as {}",
                std::env::temp_dir()
                    .join("wasmpod-e2e-containerd.log")
                    .display()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn check_output_and_exit_codes(env: &Containerd) -> anyhow::Result<()> {
    let (code, out, err) = env.run_wasm("args", &[], &["args", "hello", "wasm world"])?;
    ensure!(code == 0, "exit {code}: {err}");
    ensure!(
        out.contains("arg[0]=/probe.wasm")
            && out.contains("arg[2]=hello")
            && out.contains("arg[3]=wasm world"),
        "unexpected output: {out:?}"
    );
    // The native snapshotter hands the shim a bind mount instead of overlayfs.
    let (code, out, err) =
        env.run_wasm("native", &["--snapshotter", "native"], &["args", "native"])?;
    ensure!(
        code == 0 && out.contains("arg[2]=native"),
        "native snapshotter: {code} {out:?} {err}"
    );
    let (code, _, err) = env.run_wasm("exit7", &[], &["exit", "7"])?;
    ensure!(code == 7, "proc_exit(7) gave {code}: {err}");
    let (code, _, err) = env.run_wasm("trap", &[], &["trap"])?;
    ensure!(code == 134, "a trap gave {code}: {err}");
    ensure!(
        err.contains("wasm") || err.contains("unreachable"),
        "no trap message: {err:?}"
    );
    Ok(())
}

fn check_env(env: &Containerd) -> anyhow::Result<()> {
    let (code, out, err) = env.run_wasm("env", &["--env", "GREETING=hi there"], &["env"])?;
    ensure!(code == 0, "exit {code}: {err}");
    ensure!(
        out.lines().any(|l| l == "GREETING=hi there"),
        "GREETING missing: {out:?}"
    );
    Ok(())
}

/// `ctr run --mount` of host directory `src` at `dst`, `mode` `ro` or `rw`.
fn bind_mount(src: &Path, dst: &str, mode: &str) -> String {
    format!(
        "type=bind,src={},dst={dst},options=rbind:{mode}",
        src.display()
    )
}

fn check_bind_mounts(env: &Containerd) -> anyhow::Result<()> {
    let data = env.dir.join("data");
    fs::create_dir_all(&data)?;
    fs::write(data.join("in.txt"), "from the host\n")?;
    let ro = bind_mount(&data, "/data", "ro");
    let (code, out, _) = env.run_wasm("ro-read", &["--mount", &ro], &["cat", "/data/in.txt"])?;
    ensure!(
        code == 0 && out.contains("from the host"),
        "ro read: {code} {out:?}"
    );
    let (code, out, _) = env.run_wasm(
        "ro-write",
        &["--mount", &ro],
        &["write", "/data/new.txt", "x"],
    )?;
    ensure!(
        code != 0 && !data.join("new.txt").exists(),
        "ro mount took a write: {code} {out:?}"
    );
    let rw = bind_mount(&data, "/data", "rw");
    let (code, out, _) = env.run_wasm(
        "rw-write",
        &["--mount", &rw],
        &["write", "/data/new.txt", "written"],
    )?;
    ensure!(code == 0, "rw write: {code} {out:?}");
    ensure!(
        fs::read_to_string(data.join("new.txt"))? == "written",
        "the host does not see the write"
    );
    // Nothing outside the container's directories: the host's /etc is not the guest's.
    let (_, out, _) = env.run_wasm("escape", &[], &["cat", "/../../../../etc/hostname"])?;
    let host = fs::read_to_string("/etc/hostname").unwrap_or_default();
    ensure!(
        host.is_empty() || !out.contains(host.trim()),
        "the guest read the host's /etc/hostname"
    );
    Ok(())
}

fn check_stdin(env: &Containerd) -> anyhow::Result<()> {
    let mut child = env
        .ctr_cmd(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            "stdin",
            "/probe.wasm",
            "stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"twelve bytes")?;
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "stdin run failed: {err}");
    ensure!(err.contains("read 12 bytes"), "stdin not seen: {err:?}");
    Ok(())
}

/// Starts `ctr run --rm` of a spinning probe with `flags`, sends `signal` once it runs, and
/// fails unless it ends with `expected` within a second; returns how long it took.
pub(crate) fn kill_spinning(
    env: &Containerd,
    id: &str,
    flags: &[&str],
    signal: &str,
    expected: i32,
) -> anyhow::Result<Duration> {
    let mut all = vec!["run", "--rm", "--runtime", RUNTIME];
    all.extend_from_slice(flags);
    all.extend_from_slice(&[IMAGE, id, "/probe.wasm", "spin"]);
    let child = env
        .ctr_cmd(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    env.wait_status(id, "RUNNING", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    env.ctr_ok(&["task", "kill", "-s", signal, id])?;
    let out = child.wait_with_output()?;
    let took = t0.elapsed();
    let code = out.status.code().unwrap_or(-1);
    ensure!(
        code == expected,
        "{signal} gave exit {code}, not {expected}"
    );
    ensure!(
        took < Duration::from_secs(1),
        "{signal} took {took:?} to stop a spinning guest"
    );
    Ok(took)
}

fn check_kill(env: &Containerd) -> anyhow::Result<()> {
    for (signal, expected) in [("SIGTERM", 143), ("SIGKILL", 137)] {
        let id = format!("spin-{}", signal.to_lowercase());
        let took = kill_spinning(env, &id, &[], signal, expected)?;
        eprintln!("  {signal}: spinning guest stopped in {took:.0?}, exit {expected}");
    }
    Ok(())
}

fn check_memory_limit(env: &Containerd) -> anyhow::Result<()> {
    // Past its limit the guest is OOM-killed, as a memory cgroup would kill a process.
    let (code, out, err) = env.run_wasm(
        "mem",
        &["--memory-limit", &(32u64 << 20).to_string()],
        &["alloc", "64"],
    )?;
    ensure!(
        code == 137 && !out.contains("allocated"),
        "a 32 MiB limit let the guest go on (exit {code}): {out:?} {err:?}"
    );
    let (code, out, _) = env.run_wasm(
        "mem-ok",
        &["--memory-limit", &(128u64 << 20).to_string()],
        &["alloc", "64"],
    )?;
    ensure!(
        code == 0 && out.contains("allocated 64 MiB"),
        "128 MiB limit: {code} {out:?}"
    );
    Ok(())
}

fn check_not_wasm(env: &Containerd) -> anyhow::Result<()> {
    let bin = env.dir.join("notwasm");
    fs::create_dir_all(&bin)?;
    fs::write(bin.join("app.sh"), "#!/bin/sh\necho native\n")?;
    let mount = bind_mount(&bin, "/app", "ro");
    let mounts_before = env.mounts().len();
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--mount",
        &mount,
        IMAGE,
        "notwasm",
        "/app/app.sh",
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a shell script ran as wasm");
    ensure!(
        err.contains("not a WebAssembly") && err.contains("/app/app.sh") && err.contains(IMAGE),
        "the error does not say what is wrong: {err}"
    );
    ensure!(env.task("notwasm")?.is_none(), "a task was left behind");
    let _ = env.ctr(&["container", "rm", "notwasm"]);
    ensure!(
        env.mounts().len() <= mounts_before,
        "a mount was left behind: {:?}",
        env.mounts()
    );
    eprintln!("  error: {}", err.trim());
    Ok(())
}

fn check_pod_sandbox(env: &Containerd) -> anyhow::Result<()> {
    let pod = [
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=pod1",
    ];
    // A sandbox container runs nothing, whatever its args say.
    env.run_detached("pod1", &pod, &["exit", "3"])?;
    let app = [
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=pod1",
    ];
    env.run_detached("pod1-app", &app, &["sleep", "600000"])?;
    let (sandbox_pid, _) = env.task("pod1")?.context("sandbox task")?;
    let (app_pid, _) = env.task("pod1-app")?.context("app task")?;
    ensure!(
        sandbox_pid == app_pid,
        "the pod's containers run in two shims ({sandbox_pid}, {app_pid})"
    );
    ensure!(
        env.shims().len() == 1,
        "expected one shim, found {:?}",
        env.shims()
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "pod1-app"])?;
    env.wait_status("pod1-app", "STOPPED", Duration::from_secs(2))?;
    env.ctr_ok(&["task", "rm", "pod1-app"])?;
    ensure!(
        env.task("pod1")?.is_some_and(|(_, s)| s == "RUNNING"),
        "the sandbox ended with the app"
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "pod1"])?;
    env.wait_status("pod1", "STOPPED", Duration::from_secs(2))?;
    env.ctr_ok(&["task", "rm", "pod1"])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env.shims().is_empty() {
        ensure!(
            Instant::now() < deadline,
            "the pod's shim outlived its containers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn check_events_and_metrics(env: &Containerd) -> anyhow::Result<()> {
    let events = env.watch_events()?;
    let (code, _, err) = env.run_wasm("ev", &[], &["alloc", "8"])?;
    ensure!(code == 0, "ev: exit {code}: {err}");
    env.run_detached("metrics", &[], &["sleep", "600000"])?;
    let metrics = env.ctr_ok(&["task", "metrics", "metrics"])?;
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "metrics"])?;
    let text = events.finish()?;
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        ensure!(
            text.lines()
                .any(|l| l.contains(topic) && l.contains("\"ev\"")),
            "no {topic} event for ev in:\n{text}"
        );
    }
    ensure!(
        metrics.contains("memory.usage_in_bytes"),
        "no memory in metrics: {metrics}"
    );
    Ok(())
}

fn check_registry_pull(env: &Containerd) -> anyhow::Result<()> {
    let (_registry, host) = Registry::start(&env.dir)?;
    let remote = format!("{host}/e2e/probe:v1");
    sh(Command::new(&env.wasmpod)
        .arg("--root")
        .arg(env.dir.join("wasmpod"))
        .args(["push", IMAGE, &remote]))?;
    env.ctr_ok(&["image", "pull", "--plain-http", &remote])?;
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &remote,
        "pulled",
        "/probe.wasm",
        "args",
        "pulled",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("arg[2]=pulled"),
        "pulled image run: {text}"
    );
    Ok(())
}

fn check_artifact(env: &Containerd) -> anyhow::Result<()> {
    const ARTIFACT: &str = "localhost/wasmpod-e2e/probe-artifact:v1";
    env.import(&env.dir.join("probe.wasm"), ARTIFACT, "artifact")?;
    for (id, args, expected_code, expected_out) in [
        (
            "art-args",
            &["probe.wasm", "args", "from-content"][..],
            0,
            "arg[2]=from-content",
        ),
        ("art-exit", &["probe.wasm", "exit", "7"][..], 7, ""),
    ] {
        let out_file = env.dir.join(format!("{id}.out"));
        let out = Command::new(&env.run_via_api)
            .arg(env.socket())
            .args([NAMESPACE, RUNTIME, ARTIFACT, id])
            .arg(&out_file)
            .args(args)
            .output()?;
        let code = out.status.code().unwrap_or(-1);
        let text = fs::read_to_string(&out_file).unwrap_or_default();
        ensure!(
            code == expected_code && text.contains(expected_out),
            "artifact {id}: exit {code} (want {expected_code}), output {text:?}, {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn check_containerd_restart(env: &Containerd) -> anyhow::Result<()> {
    env.run_detached("survivor", &[], &["sleep", "600000"])?;
    let (pid, _) = env.task("survivor")?.context("task")?;
    env.restart()?;
    let after = env.task("survivor")?;
    ensure!(
        after == Some((pid, "RUNNING".into())),
        "after the restart: {after:?}"
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGTERM", "survivor"])?;
    env.wait_status("survivor", "STOPPED", Duration::from_secs(2))?;
    env.ctr_ok(&["task", "rm", "survivor"])?;
    env.ctr_ok(&["container", "rm", "survivor"])?;
    Ok(())
}

/// A field of `/proc/PID/status` (`NoNewPrivs`, `CapBnd`).
pub(crate) fn proc_status(pid: u32, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// A cgroup v1 file of container `id` (`memory`, `memory.usage_in_bytes`), as ctr's
/// `cgroupsPath` `/NAMESPACE/ID` puts it.
pub(crate) fn cgroup_file(controller: &str, id: &str, file: &str) -> PathBuf {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        format!("/sys/fs/cgroup/{NAMESPACE}/{id}/{file}").into()
    } else {
        format!("/sys/fs/cgroup/{controller}/{NAMESPACE}/{id}/{file}").into()
    }
}

/// Waits until containerd shows task `id` of a dead shim as stopped, or no longer at all.
fn wait_dead_shim_task(env: &Containerd, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match env.task(id)? {
            None => return Ok(()),
            Some((_, s)) if s == "STOPPED" => return Ok(()),
            Some(_) if Instant::now() > deadline => {
                bail!("containerd still shows the task {id} of a dead shim")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn check_shim_killed(env: &Containerd) -> anyhow::Result<()> {
    // Two tasks in one shim (node grouping); the shim is SIGKILLed under them: containerd
    // reports each task's exit (137) and cleans up after the dead shim.
    let node = ["--annotation", "wasmpod.io/grouping=node"];
    env.run_detached("orphan", &node, &["sleep", "600000"])?;
    env.run_detached("orphan-2", &node, &["sleep", "600000"])?;
    let (pid, _) = env.task("orphan")?.context("task")?;
    let (pid2, _) = env.task("orphan-2")?.context("task")?;
    ensure!(pid == pid2, "node grouping: two shims {pid} and {pid2}");
    let events = env.watch_events()?;
    sh(Command::new("kill").args(["-KILL", &pid.to_string()]))?;
    wait_dead_shim_task(env, "orphan")?;
    wait_dead_shim_task(env, "orphan-2")?;
    let text = events.finish()?;
    for id in ["orphan", "orphan-2"] {
        ensure!(
            text.lines()
                .any(|l| l.contains("/tasks/exit") && l.contains(&format!("\"{id}\""))),
            "no /tasks/exit for {id} after its shim was killed:\n{text}"
        );
        let _ = env.ctr(&["task", "rm", id]);
        env.ctr_ok(&["container", "rm", id])?;
    }
    ensure!(
        env.mounts().is_empty(),
        "mounts left after a dead shim: {:?}",
        env.mounts()
    );
    // At the process level the guest's own process dies with its shim, and the dead
    // shim's cleanup removes its cgroup.
    env.run_detached(
        "orphan-p",
        &["--annotation", "wasmpod.io/isolation=process"],
        &["sleep", "600000"],
    )?;
    let (child, _) = env.task("orphan-p")?.context("task")?;
    let shim = proc_status(child, "PPid");
    ensure!(!shim.is_empty(), "the guest {child} has no parent");
    sh(Command::new("kill").args(["-KILL", &shim]))?;
    wait_dead_shim_task(env, "orphan-p")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{child}")).exists() {
        ensure!(
            Instant::now() < deadline,
            "the guest process {child} outlived its shim"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = env.ctr(&["task", "rm", "orphan-p"]);
    env.ctr_ok(&["container", "rm", "orphan-p"])?;
    let cgroup = cgroup_file("memory", "orphan-p", "");
    ensure!(
        !cgroup.exists(),
        "{} outlived the dead shim",
        cgroup.display()
    );
    Ok(())
}

/// Open fds of a process.
pub(crate) fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The shim's ttrpc socket is a file under a directory only root can enter — not an
/// abstract socket a host-network container could reach (containerd's CVE-2020-15257): root
/// connects, an unprivileged user (65534) is refused.
fn check_shim_socket(env: &Containerd) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    env.run_detached("sock", &[], &["sleep", "600000"])?;
    let bundle = env
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(NAMESPACE)
        .join("sock");
    let address = fs::read_to_string(bundle.join("address"))?;
    let path = address.trim().trim_start_matches("unix://").to_owned();
    ensure!(
        path.starts_with('/') && Path::new(&path).exists(),
        "the shim's address {address:?} is not a socket file"
    );
    let me = std::env::current_exe()?;
    let connect = |unprivileged: bool| -> anyhow::Result<Option<i32>> {
        let mut cmd = Command::new(&me);
        cmd.args(["__connect", &path]);
        if unprivileged {
            // std drops the supplementary groups when root changes uid.
            cmd.uid(65534).gid(65534);
        }
        Ok(cmd.status()?.code())
    };
    let as_root = connect(false)?;
    let as_nobody = connect(true)?;
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "sock"])?;
    ensure!(
        as_root == Some(0),
        "root could not connect to {path}: {as_root:?}"
    );
    ensure!(
        as_nobody == Some(13),
        "uid 65534 was not refused at {path} (status {as_nobody:?})"
    );
    let parent = Path::new(&path).parent().and_then(Path::parent);
    eprintln!("  {path}: root connects, uid 65534 refused (permission denied under {parent:?})");
    Ok(())
}

fn check_cycles(env: &Containerd) -> anyhow::Result<()> {
    let task_dir = env
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(NAMESPACE);
    let entries = |p: &Path| fs::read_dir(p).map_or(0, |d| d.count());
    let containerd = env.pid().context("containerd pid")?;
    // One warm-up cycle: containerd opens some descriptors once.
    env.run_wasm("warmup", &[], &["exit", "0"])?;
    let before = (
        env.mounts().len(),
        env.shims().len(),
        entries(&task_dir),
        fds(containerd),
    );
    let started = Instant::now();
    for i in 0..100 {
        let (code, _, err) = env.run_wasm(&format!("cycle-{i}"), &[], &["exit", "0"])?;
        ensure!(code == 0, "cycle {i}: exit {code}: {err}");
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after = (
        env.mounts().len(),
        env.shims().len(),
        entries(&task_dir),
        fds(containerd),
    );
    ensure!(
        after.0 == before.0 && after.1 == before.1 && after.2 == before.2 && after.3 <= before.3 + 2,
        "100 cycles left something (mounts, shims, task dirs, containerd fds): {before:?} -> {after:?}"
    );
    eprintln!(
        "  100 × ctr run --rm in {took:.1?} ({:.0?} each); mounts/shims/task dirs/containerd fds {before:?} -> {after:?}",
        took / 100
    );
    Ok(())
}
