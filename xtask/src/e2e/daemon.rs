//! The private containerd of an e2e pass: its config (the version's own default, paths and
//! this VM's settings edited), the daemon and its registry, `ctr` and event helpers, and the
//! teardown that runs even when a check fails.

use super::*;

/// containerd's config, made from what that version's `containerd config default` prints
/// (`default`), with values set by their TOML paths: private root, state, sockets; the CRI
/// plugin with a sandbox image of the test's own, CNI from Debian's plugins with a bridge
/// config in `dir`, pod network namespaces under the state directory, registry hosts from
/// `dir/certs.d`, and the adjustments these VMs need (`restrict_oom_score_adj`). 2.x
/// (version 3) imports `conf.d/*.toml`, where `wasmpod install` puts the handlers; 1.x
/// (version 2) takes them in the file itself. A path the default lacks is an error naming
/// it: a new release that moved a setting fails here, not in a check.
pub(crate) fn config_toml(dir: &Path, flavor: Flavor, default: &str) -> anyhow::Result<String> {
    use toml_edit::{value, Array};
    let d = dir.display().to_string();
    let at = |p: &str| format!("{d}/{p}");
    let list = |items: &[&str]| value(items.iter().copied().collect::<Array>());
    let mut doc = parse_default(default)?;
    let mut disabled = vec![
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
    ];
    set(&mut doc, &["root"], value(at("root")))?;
    set(&mut doc, &["state"], value(at("state")))?;
    set(&mut doc, &["grpc", "address"], value(at("containerd.sock")))?;
    put(
        &mut doc,
        &["ttrpc", "address"],
        value(at("containerd.sock.ttrpc")),
    )?;
    set(&mut doc, &["debug", "address"], value(at("debug.sock")))?;
    set(&mut doc, &["debug", "level"], value("info"))?;
    set(
        &mut doc,
        &plugin("io.containerd.internal.v1.opt", &["path"]),
        value(at("opt")),
    )?;
    if flavor.is_1x() {
        disabled.push("io.containerd.snapshotter.v1.aufs");
        let cri = |keys: &[&'static str]| plugin("io.containerd.grpc.v1.cri", keys);
        set(&mut doc, &cri(&["sandbox_image"]), value(cri::PAUSE_IMAGE))?;
        set(&mut doc, &cri(&["restrict_oom_score_adj"]), value(true))?;
        set(
            &mut doc,
            &cri(&["netns_mounts_under_state_dir"]),
            value(true),
        )?;
        set(
            &mut doc,
            &cri(&["stream_server_address"]),
            value("127.0.0.1"),
        )?;
        set(&mut doc, &cri(&["stream_server_port"]), value("0"))?;
        // CDI came in 1.7.
        if flavor == Flavor::V1_7 {
            set(&mut doc, &cri(&["enable_cdi"]), value(false))?;
        }
        set(&mut doc, &cri(&["cni", "bin_dir"]), value("/usr/lib/cni"))?;
        set(&mut doc, &cri(&["cni", "conf_dir"]), value(at("cni/net.d")))?;
        set(&mut doc, &cri(&["cni", "max_conf_num"]), value(1))?;
        set(
            &mut doc,
            &cri(&["registry", "config_path"]),
            value(at("certs.d")),
        )?;
        // 1.7 drops the built-in runc handler once any runtime table is defined: the
        // default's own stays, and stays the default.
        let runc = ["containerd", "runtimes", "runc", "runtime_type"];
        set(&mut doc, &cri(&runc), value("io.containerd.runc.v2"))?;
        let default_runtime = ["containerd", "default_runtime_name"];
        set(&mut doc, &cri(&default_runtime), value("runc"))?;
    } else {
        disabled.push("io.containerd.snapshotter.v1.erofs");
        let images = |keys: &[&'static str]| plugin("io.containerd.cri.v1.images", keys);
        let runtime = |keys: &[&'static str]| plugin("io.containerd.cri.v1.runtime", keys);
        set(&mut doc, &["imports"], list(&[&at("conf.d/*.toml")]))?;
        let sandbox = ["pinned_images", "sandbox"];
        set(&mut doc, &images(&sandbox), value(cri::PAUSE_IMAGE))?;
        let hosts = ["registry", "config_path"];
        set(&mut doc, &images(&hosts), value(at("certs.d")))?;
        set(&mut doc, &runtime(&["restrict_oom_score_adj"]), value(true))?;
        set(
            &mut doc,
            &runtime(&["netns_mounts_under_state_dir"]),
            value(true),
        )?;
        set(&mut doc, &runtime(&["enable_cdi"]), value(false))?;
        set(
            &mut doc,
            &runtime(&["cni", "bin_dirs"]),
            list(&["/usr/lib/cni"]),
        )?;
        set(
            &mut doc,
            &runtime(&["cni", "conf_dir"]),
            value(at("cni/net.d")),
        )?;
        // Image verifiers the node may have are not the test's.
        let verifiers = plugin("io.containerd.image-verifier.v1.bindir", &["bin_dir"]);
        set(&mut doc, &verifiers, value(at("image-verifier")))?;
    }
    // NRI's socket is the node's, not the test's (1.6 has no NRI).
    if flavor != Flavor::V1_6 {
        set(
            &mut doc,
            &plugin("io.containerd.nri.v1.nri", &["disable"]),
            value(true),
        )?;
    }
    set(&mut doc, &["disabled_plugins"], list(&disabled))?;
    Ok(doc.to_string())
}

/// The TOML path of `keys` in plugin `name`'s table.
fn plugin<'a>(name: &'a str, keys: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["plugins", name];
    path.extend_from_slice(keys);
    path
}

/// `containerd config default`'s text as a document. 1.6 prints one key twice
/// (`mutation_threshold` of the GC scheduler), which TOML forbids: a line that repeats the
/// one before it is dropped first.
fn parse_default(default: &str) -> anyhow::Result<toml_edit::DocumentMut> {
    let mut text = String::with_capacity(default.len());
    let mut previous = "";
    for line in default.lines() {
        if line.trim().is_empty() || line != previous {
            text.push_str(line);
            text.push('\n');
        }
        previous = line;
    }
    text.parse()
        .context("containerd config default did not print TOML")
}

/// Sets the key at `path`, which the default must have, to `new`, keeping its place.
fn set(
    doc: &mut toml_edit::DocumentMut,
    path: &[&str],
    new: toml_edit::Item,
) -> anyhow::Result<()> {
    edit(doc, path, new, false)
}

/// Sets the key at `path`, adding it (and its tables) where the default has none.
fn put(
    doc: &mut toml_edit::DocumentMut,
    path: &[&str],
    new: toml_edit::Item,
) -> anyhow::Result<()> {
    edit(doc, path, new, true)
}

fn edit(
    doc: &mut toml_edit::DocumentMut,
    path: &[&str],
    new: toml_edit::Item,
    add: bool,
) -> anyhow::Result<()> {
    let (last, tables) = path.split_last().context("an empty TOML path")?;
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    for key in tables {
        if add && !table.contains_key(key) {
            table.insert(key, toml_edit::Item::Table(toml_edit::Table::new()));
        }
        table = table
            .get_mut(key)
            .and_then(toml_edit::Item::as_table_like_mut)
            .with_context(|| format!("containerd config default has no table {path:?}"))?;
    }
    ensure!(
        add || table.contains_key(last),
        "containerd config default has no key {path:?}"
    );
    table.insert(last, new);
    Ok(())
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
    /// Variables containerd (and so every shim it starts) runs with, besides the test's.
    extra_env: std::cell::RefCell<Vec<(String, String)>>,
}

impl Containerd {
    /// Starts containerd 2.x in a new temporary directory, with `bins.shim` on its PATH.
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
        let bin = flavor.suite().map(debian::containerd).transpose()?;
        let default = output_ok(
            Command::new(
                bin.as_ref()
                    .map_or_else(|| "containerd".into(), |b| b.join("containerd")),
            )
            .args(["config", "default"]),
        )?;
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
            extra_env: std::cell::RefCell::default(),
        };
        env.launch()?;
        Ok(env)
    }

    pub(crate) fn launch(&self) -> anyhow::Result<()> {
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
            // Every shim appends its start path's phases here (`cargo xtask bench` reads it).
            .env("WASMPOD_TIMINGS", self.timings())
            .envs(self.extra_env.borrow().iter().cloned())
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

    /// Restarts containerd with `vars` set in its environment (and its shims'), replacing
    /// those of an earlier call; none, as it began.
    pub(crate) fn restart_with_env(&self, vars: &[(&str, &str)]) -> anyhow::Result<()> {
        self.stop_daemon()?;
        *self.extra_env.borrow_mut() = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.launch()
    }

    /// containerd's pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.borrow().as_ref().map(Child::id)
    }

    /// Where the shims write their phases' timings (`WASMPOD_TIMINGS`).
    pub(crate) fn timings(&self) -> PathBuf {
        self.dir.join("timings.log")
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

    pub(crate) fn keep_log(&self) {
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

    /// `ctr events`, subscribed before it returns: it has seen an event made for it (a
    /// namespace created and removed), so nothing after this call can be missed however
    /// slowly `ctr` started.
    pub(crate) fn watch_events(&self) -> anyhow::Result<EventWatch> {
        let mut child = self
            .ctr_cmd(&["events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("ctr events' stdout")?;
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let text = text.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut text = text.lock().unwrap_or_else(|p| p.into_inner());
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        };
        let watch = EventWatch {
            child,
            reader,
            text,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for attempt in 0.. {
            let marker = format!("wasmpod-e2e-events-{}-{attempt}", std::process::id());
            self.ctr_ok(&["namespaces", "create", &marker])?;
            let _ = self.ctr(&["namespaces", "remove", &marker]);
            let seen_by = Instant::now() + Duration::from_millis(500);
            while Instant::now() < seen_by {
                if watch.text().contains(&marker) {
                    return Ok(watch);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            ensure!(
                Instant::now() < deadline,
                "ctr events did not subscribe within 20 s"
            );
        }
        unreachable!("the loop returns or fails")
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

    /// Ends task `id` with SIGKILL, waits until it has stopped, and removes it and its
    /// container; any step that fails is the error.
    pub(crate) fn kill_and_remove(&self, id: &str) -> anyhow::Result<()> {
        self.ctr_ok(&["task", "kill", "-s", "SIGKILL", id])?;
        self.wait_status(id, "STOPPED", Duration::from_secs(5))?;
        self.ctr_ok(&["task", "rm", id])?;
        self.ctr_ok(&["container", "rm", id])?;
        Ok(())
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
        let limit = scaled(limit);
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
        self.import_with(wasm, image, format, &[])
    }

    /// [`import`](Self::import) with more `ctr image import` flags.
    pub(crate) fn import_with(
        &self,
        wasm: &Path,
        image: &str,
        format: &str,
        flags: &[&str],
    ) -> anyhow::Result<()> {
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
        args.extend(flags);
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
            let registry = Registry::start();
            let host = registry.host();
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
        self.import_rootfs_with(namespace, dir, image, cmd, &[])
    }

    /// [`import_rootfs`](Self::import_rootfs), its layer made by `tar` with `tar_args`
    /// too (a hostile layer's pax records, say).
    pub(crate) fn import_rootfs_with(
        &self,
        namespace: &str,
        dir: &Path,
        image: &str,
        cmd: &[&str],
        tar_args: &[&str],
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
            .args(tar_args)
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
    pub(crate) fn clean_namespace(&self) {
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
                && !cmdline.contains("__wasmpod-pod")
                && String::from_utf8_lossy(environ).contains(needle.as_ref())
        })
    }

    /// The holders of pods' namespaces that shims serving this containerd started.
    pub(crate) fn pod_holders(&self) -> Vec<u32> {
        let needle = self.dir.join("containerd.sock.ttrpc");
        let needle = needle.to_string_lossy();
        processes(|environ, cmdline| {
            cmdline.contains("__wasmpod-pod")
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
pub(crate) struct EventWatch {
    child: Child,
    reader: std::thread::JoinHandle<()>,
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl EventWatch {
    fn text(&self) -> String {
        self.text.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops watching once late events have arrived; everything it printed.
    pub(crate) fn finish(self) -> anyhow::Result<String> {
        let mut child = self.child;
        std::thread::sleep(Duration::from_millis(300));
        let _ = child.kill();
        child.wait()?;
        let _ = self.reader.join();
        let text = self.text.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(text)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_config_is_edited_by_path_and_a_missing_key_is_named() {
        // 1.6 prints the GC scheduler's `mutation_threshold` twice.
        let default = "version = 2\nroot = \"/var/lib/containerd\"\n\n[plugins]\n  \
                       [plugins.\"io.containerd.gc.v1.scheduler\"]\n    mutation_threshold = 100\n    \
                       mutation_threshold = 100\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    \
                       sandbox_image = \"registry.k8s.io/pause:3.6\"\n";
        let mut doc = parse_default(default).unwrap();
        let cri = ["plugins", "io.containerd.grpc.v1.cri", "sandbox_image"];
        set(&mut doc, &cri, toml_edit::value("localhost/pause:test")).unwrap();
        set(&mut doc, &["root"], toml_edit::value("/tmp/x/root")).unwrap();
        put(
            &mut doc,
            &["ttrpc", "address"],
            toml_edit::value("/tmp/x/t.sock"),
        )
        .unwrap();
        let missing = ["plugins", "io.containerd.grpc.v1.cri", "no_such_key"];
        let err = set(&mut doc, &missing, toml_edit::value(true)).unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
        let err = set(&mut doc, &["nope", "key"], toml_edit::value(1)).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let text = doc.to_string();
        let back: toml_edit::DocumentMut = text.parse().unwrap();
        assert_eq!(
            back["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"].as_str(),
            Some("localhost/pause:test")
        );
        assert_eq!(back["root"].as_str(), Some("/tmp/x/root"));
        assert_eq!(back["ttrpc"]["address"].as_str(), Some("/tmp/x/t.sock"));
        assert_eq!(text.matches("mutation_threshold").count(), 1);
    }
}
