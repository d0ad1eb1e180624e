//! Native (Linux) containers of a wasm pod — a mesh proxy, a log shipper, an init container
//! writing iptables rules — run by runc, the node's OCI runtime, on the root filesystem
//! containerd mounted and with the spec containerd wrote.
//!
//! Each container has a directory of its own ([`dir_of`]: beside containerd's bundles, in
//! `<state>/wasmpod-native/<namespace>/<id>`): runc's state root, runc's log, the spec runc
//! is given (containerd's, with the pod's namespaces this shim stands in for rewritten to
//! real ones), and a record of which runtime and which shim made it. Not in the bundle:
//! after a shim dies, containerd 2.x removes the bundles of the tasks it could not Delete
//! through it, and runc's state would go with them, its containers still running. The
//! `delete` of a dead shim sweeps the namespace's directories whose shim is gone. The container's init is
//! created by `runc create` with containerd's FIFOs as its stdio and started by `runc
//! start`; once runc is gone it is a child of this shim (a subreaper), whose reaper reports
//! its exit like a process-level guest's. A process with a terminal (`tty: true`, an exec's
//! `-t`) gets the one runc makes: its master comes back over a console socket and is
//! relayed to and from containerd's FIFOs ([`Terminal`]).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasm_engine::{Stdio, StdioStream};

use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};

use crate::error::{Error, Result};
use crate::process::{child_stdio, ExitWatch};

/// The directory of native containers' runtime files, beside containerd's task bundles.
pub(crate) const DIR: &str = "wasmpod-native";

/// The directory of containerd's task bundles in its state directory (1.6 to 2.x).
const TASK_DIR: &str = "io.containerd.runtime.v2.task";

/// The file in a container's directory that names the runtime binary, its cgroup driver and
/// the shim that made it (`pid start-time`), for the clean-up after a dead shim.
const RUNTIME_FILE: &str = "runtime";

/// `<state>/wasmpod-native/<namespace>` for a bundle laid out as containerd lays them out
/// (`<state>/io.containerd.runtime.v2.task/<namespace>/<id>`).
fn namespace_dir(bundle: &Path) -> Option<PathBuf> {
    let namespace = bundle.parent()?;
    let tasks = namespace.parent()?;
    if tasks.file_name()? != TASK_DIR {
        return None;
    }
    Some(tasks.parent()?.join(DIR).join(namespace.file_name()?))
}

/// The directory of container `id`'s runtime files (see the module's doc); in the bundle
/// when the bundle is not where containerd puts them.
pub(crate) fn dir_of(bundle: &Path, id: &str) -> PathBuf {
    namespace_dir(bundle).map_or_else(|| bundle.join(DIR), |d| d.join(id))
}

/// A native container's runc: the binary and the container's own state root.
#[derive(Debug)]
pub(crate) struct Runc {
    id: String,
    binary: PathBuf,
    dir: PathBuf,
    systemd: bool,
}

/// The runc binary: the handler's `runc` option (a path, or a name looked up on PATH), else
/// `runc` on PATH.
fn find_binary(configured: Option<&Path>) -> Result<PathBuf> {
    let name = configured.unwrap_or(Path::new("runc"));
    let not_found = |why: String| {
        Error::InvalidArgument(format!(
            "native containers run through runc: {why}; install runc on the node or set the \
             handler option `runc` to its path"
        ))
    };
    if name.components().count() > 1 || name.is_absolute() {
        return if name.is_file() {
            Ok(name.to_owned())
        } else {
            Err(not_found(format!("{} is not a file", name.display())))
        };
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| not_found(format!("{} is not on PATH", name.display())))
}

/// Whether `linux.cgroupsPath` is in systemd's `slice:prefix:name` form, which runc is told
/// with `--systemd-cgroup`.
fn systemd_cgroup(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .is_some_and(|p| p.to_string_lossy().split(':').count() == 3)
}

/// The message of the last error runc logged (its `--log-format json` lines).
fn last_error(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        (entry.get("level")?.as_str()? == "error")
            .then(|| entry.get("msg")?.as_str().map(str::to_owned))?
    })
}

impl Runc {
    /// The runc of container `id` in `bundle`, with `spec` (for its cgroup driver); makes
    /// the container's directory and records the binary in it.
    pub(crate) fn new(
        id: &str,
        bundle: &Path,
        configured: Option<&Path>,
        spec: &Spec,
    ) -> Result<Self> {
        let binary = find_binary(configured)?;
        let dir = dir_of(bundle, id);
        let context = format!("container {id}: making {}", dir.display());
        std::fs::create_dir_all(dir.join("state")).map_err(crate::error::io(context.clone()))?;
        let systemd = systemd_cgroup(spec);
        let record = format!(
            "{}\n{}\n{}\n",
            binary.display(),
            if systemd { "systemd" } else { "cgroupfs" },
            crate::sys::ProcessId::of(std::process::id())
        );
        std::fs::write(dir.join(RUNTIME_FILE), record).map_err(crate::error::io(context))?;
        Ok(Self {
            id: id.to_owned(),
            binary,
            dir,
            systemd,
        })
    }

    /// runc with this container's state root and log.
    fn command(&self, verb: &str) -> Command {
        command(&self.binary, &self.dir, self.systemd, verb)
    }

    fn failed(&self, what: &str, reason: impl Into<String>) -> Error {
        Error::Native {
            id: self.id.clone(),
            what: what.to_owned(),
            reason: reason.into(),
        }
    }

    /// Runs `cmd` to its end (the shim's reaper collects it, so its exit comes through a
    /// watch taken before it exists); an error with runc's own message when it fails.
    async fn run(&self, what: &str, mut cmd: Command) -> Result<()> {
        let watch = ExitWatch::new().await?;
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                watch.cancel().await;
                return Err(self.failed(what, format!("cannot run {}: {e}", self.binary.display())));
            }
        };
        let code = watch.wait(child.id()).await;
        if code == 0 {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("log.json")).unwrap_or_default();
        Err(self.failed(
            what,
            last_error(&log).unwrap_or_else(|| format!("runc exited with status {code}")),
        ))
    }

    /// `runc create` of the container from `spec` (written to this container's directory,
    /// which is runc's bundle), its init given `stdio`; the init's pid. The init waits for
    /// [`start`](Self::start).
    pub(crate) async fn create(
        &self,
        spec: &Spec,
        stdio: Stdio,
    ) -> Result<(u32, Option<Terminal>)> {
        let config = self.dir.join("config.json");
        spec.save(&config)
            .map_err(|e| self.failed("writing runc's config.json", e.to_string()))?;
        let pid_file = self.dir.join("init.pid");
        let mut cmd = self.command("create");
        cmd.arg("--bundle")
            .arg(&self.dir)
            .arg("--pid-file")
            .arg(&pid_file);
        let console = self.console(spec.process().as_ref(), &mut cmd, stdio)?;
        cmd.arg(&self.id);
        self.run("runc create", cmd).await?;
        let pid = read_pid(&pid_file).map_err(|reason| self.failed("runc create", reason))?;
        Ok((pid, self.terminal("runc create", console)?))
    }

    /// `runc start`: the init runs the container's process.
    pub(crate) async fn start(&self) -> Result<()> {
        let mut cmd = self.command("start");
        cmd.arg(&self.id);
        quiet(&mut cmd);
        self.run("runc start", cmd).await
    }

    /// `runc exec --detach` of `process` (exec `exec_id`) with `stdio`; its pid. The
    /// process is this shim's child once runc is gone.
    pub(crate) async fn exec(
        &self,
        exec_id: &str,
        process: &Process,
        stdio: Stdio,
    ) -> Result<(u32, Option<Terminal>)> {
        let file = self.dir.join(format!("exec-{exec_id}.json"));
        let json = serde_json::to_vec(process)
            .map_err(|e| self.failed("writing the exec's process", e.to_string()))?;
        std::fs::write(&file, json)
            .map_err(|e| self.failed("writing the exec's process", e.to_string()))?;
        let pid_file = self.dir.join(format!("exec-{exec_id}.pid"));
        let mut cmd = self.command("exec");
        cmd.arg("--process")
            .arg(&file)
            .arg("--detach")
            .arg("--pid-file")
            .arg(&pid_file);
        let console = self.console(Some(process), &mut cmd, stdio)?;
        cmd.arg(&self.id);
        let ran = self.run("runc exec", cmd).await;
        let _ = std::fs::remove_file(&file);
        ran?;
        let pid = read_pid(&pid_file).map_err(|reason| self.failed("runc exec", reason));
        let _ = std::fs::remove_file(&pid_file);
        Ok((pid?, self.terminal("runc exec", console)?))
    }

    /// Gives `cmd` (runc create or exec of `process`) its stdio: `stdio` itself, or, for a
    /// process with a terminal, a console socket — and `stdio`, to relay the terminal to.
    fn console(
        &self,
        process: Option<&Process>,
        cmd: &mut Command,
        stdio: Stdio,
    ) -> Result<Option<(ConsoleSocket, Stdio)>> {
        if !process.is_some_and(|p| p.terminal().unwrap_or(false)) {
            with_stdio(cmd, stdio);
            return Ok(None);
        }
        let console = ConsoleSocket::bind()
            .map_err(|e| self.failed("making a console socket", e.to_string()))?;
        cmd.arg("--console-socket").arg(console.arg());
        with_stdio(cmd, Stdio::default());
        Ok(Some((console, stdio)))
    }

    /// The terminal runc sent over `console`, relayed.
    fn terminal(
        &self,
        what: &str,
        console: Option<(ConsoleSocket, Stdio)>,
    ) -> Result<Option<Terminal>> {
        let Some((console, stdio)) = console else {
            return Ok(None);
        };
        let master = console
            .receive()
            .map_err(|e| self.failed(what, format!("receiving its terminal: {e}")))?;
        Terminal::relay(master, stdio)
            .map(Some)
            .map_err(|e| self.failed(what, format!("relaying its terminal: {e}")))
    }

    /// `runc update` of the container's cgroup to `resources`.
    pub(crate) async fn update(&self, resources: &LinuxResources) -> Result<()> {
        let file = self.dir.join("update.json");
        let json = serde_json::to_vec(resources)
            .map_err(|e| self.failed("writing the new resources", e.to_string()))?;
        std::fs::write(&file, &json)
            .map_err(|e| self.failed("writing the new resources", e.to_string()))?;
        let mut cmd = self.command("update");
        cmd.arg("--resources").arg(&file).arg(&self.id);
        quiet(&mut cmd);
        let ran = self.run("runc update", cmd).await;
        let _ = std::fs::remove_file(&file);
        ran
    }

    /// `runc delete --force`: whatever still runs in the container is killed, its cgroup
    /// and state go; then this container's directory.
    pub(crate) async fn delete(&self) -> Result<()> {
        let mut cmd = self.command("delete");
        cmd.arg("--force").arg(&self.id);
        quiet(&mut cmd);
        self.run("runc delete", cmd).await?;
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| self.failed(&format!("removing {}", self.dir.display()), e.to_string()))
    }
}

/// A socket runc's `--console-socket` sends a new terminal's master to: in the abstract
/// namespace (no file left behind, no limit from a long state path), named for this shim.
struct ConsoleSocket {
    listener: UnixListener,
    name: String,
}

impl ConsoleSocket {
    fn bind() -> std::io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "wasmpod-console-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name)?)?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener, name })
    }

    /// The socket as runc is told it (Go's `@` for the abstract namespace).
    fn arg(&self) -> String {
        format!("@{}", self.name)
    }

    /// The master runc sent: runc has exited by now, its connection queued.
    fn receive(&self) -> std::io::Result<OwnedFd> {
        let (stream, _) = self.listener.accept().map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => {
                std::io::Error::other("runc did not connect to the console socket")
            }
            _ => e,
        })?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        crate::sys::receive_fd(&stream)
    }
}

/// A terminal runc made for a container's init or an exec: its master, relayed to and from
/// containerd's FIFOs by a thread each way until the process's side closes.
#[derive(Debug)]
pub(crate) struct Terminal {
    master: Arc<File>,
}

impl Terminal {
    fn relay(master: OwnedFd, stdio: Stdio) -> std::io::Result<Self> {
        let master = Arc::new(File::from(master));
        let from = master.clone();
        let stdout = stdio.stdout;
        std::thread::Builder::new()
            .name("tty-out".into())
            .spawn(move || {
                let mut master = &*from;
                // Ends with EIO once the process's side is closed; the FIFO closes with it.
                let _ = match stdout {
                    StdioStream::File(mut out) => std::io::copy(&mut master, &mut out),
                    _ => std::io::copy(&mut master, &mut std::io::sink()),
                };
            })?;
        if let StdioStream::File(mut stdin) = stdio.stdin {
            let into = master.clone();
            std::thread::Builder::new()
                .name("tty-in".into())
                .spawn(move || {
                    let mut master = &*into;
                    let _ = std::io::copy(&mut stdin, &mut master);
                })?;
        }
        Ok(Self { master })
    }

    /// ResizePty: the terminal's new window size.
    pub(crate) fn resize(&self, width: u32, height: u32) -> std::io::Result<()> {
        crate::sys::set_window_size(&*self.master, width, height)
    }
}

/// A runc command whose process (the container's init, an exec) takes `stdio`; the shim's
/// own socket is not handed down.
fn with_stdio(cmd: &mut Command, stdio: Stdio) {
    cmd.env_remove(crate::bootstrap::LISTEN_FD_ENV)
        .stdin(child_stdio(stdio.stdin))
        .stdout(child_stdio(stdio.stdout))
        .stderr(child_stdio(stdio.stderr));
}

/// A runc command with no stdio: what it has to say goes to its log.
fn quiet(cmd: &mut Command) {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
}

fn command(binary: &Path, dir: &Path, systemd: bool, verb: &str) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("--root")
        .arg(dir.join("state"))
        .arg("--log")
        .arg(dir.join("log.json"))
        .args(["--log-format", "json"]);
    if systemd {
        cmd.arg("--systemd-cgroup");
    }
    cmd.arg(verb);
    cmd
}

fn read_pid(path: &Path) -> std::result::Result<u32, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{} holds no pid: {text:?}", path.display()))
}

/// The namespaces of a pod this shim stands in for: containerd's CRI names a pod's
/// namespaces as `/proc/<sandbox task pid>/ns/<kind>`, and a wasm sandbox's task pid is
/// this shim's, whose own namespaces are the host's.
pub(crate) fn through_shim(spec: &Spec) -> Vec<LinuxNamespaceType> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .filter(|ns| names_this_shim(ns))
        .map(|ns| ns.typ())
        .collect()
}

/// Whether `ns` is named through this shim's pid (`/proc/<shim pid>/ns/...`).
fn names_this_shim(ns: &oci_spec::runtime::LinuxNamespace) -> bool {
    let prefix = PathBuf::from(format!("/proc/{}/ns", std::process::id()));
    ns.path().as_ref().is_some_and(|p| p.starts_with(&prefix))
}

/// The pod's real namespaces for those [`through_shim`] found: the network namespace CNI
/// made, and the pod holder's IPC, UTS and PID namespaces.
#[derive(Debug, Default)]
pub(crate) struct PodNamespaces {
    /// The pod's network namespace.
    pub(crate) net: Option<PathBuf>,
    /// The pid of the process holding the pod's IPC, UTS and PID namespaces.
    pub(crate) holder: Option<u32>,
}

/// The spec runc is given for container `id`: containerd's, with the root filesystem at
/// its absolute place in `bundle` and each namespace named through this shim replaced by
/// the pod's own. A namespace this shim cannot stand in for is an error naming it.
pub(crate) fn runc_spec(mut spec: Spec, bundle: &Path, pod: &PodNamespaces) -> Result<Spec> {
    if let Some(root) = spec.root().clone() {
        if root.path().is_relative() {
            let mut root = root;
            root.set_path(bundle.join(root.path()));
            spec.set_root(Some(root));
        }
    }
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(spec);
    };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    for ns in &mut namespaces {
        if !names_this_shim(ns) {
            continue;
        }
        let kind = ns.typ();
        let path = match kind {
            LinuxNamespaceType::Network => pod.net.clone(),
            LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts | LinuxNamespaceType::Pid => {
                pod.holder.map(|pid| holder_ns(pid, kind))
            }
            _ => None,
        };
        let Some(path) = path else {
            return Err(Error::InvalidArgument(format!(
                "linux.namespaces: the {kind:?} namespace {} is the wasm pod sandbox's, which \
                 has none of that kind to join",
                ns.path()
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )));
        };
        ns.set_path(Some(path));
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// `/proc/<pid>/ns/<kind>` of the pod holder.
fn holder_ns(pid: u32, kind: LinuxNamespaceType) -> PathBuf {
    let name = match kind {
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        _ => "pid",
    };
    PathBuf::from(format!("/proc/{pid}/ns/{name}"))
}

/// After a shim died: what runc left of container `id` of `bundle` (its processes, cgroup
/// and state) goes, and so does what it left of every other container of the namespace
/// whose shim is gone too — containerd may ask for one task of a group alone, having
/// removed the others' bundles.
pub(crate) fn clean_up_after_dead_shim(id: &str, bundle: &Path) {
    let bundle = bundle.canonicalize().unwrap_or_else(|_| bundle.to_owned());
    delete_left(id, &dir_of(&bundle, id));
    let Some(namespace) = namespace_dir(&bundle) else {
        return;
    };
    for entry in std::fs::read_dir(&namespace)
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = entry.path();
        let Some(other) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if other != id && shim_gone(&dir) {
            delete_left(&other, &dir);
        }
    }
}

/// Whether the shim recorded in a container's directory is no longer running.
fn shim_gone(dir: &Path) -> bool {
    let Ok(record) = std::fs::read_to_string(dir.join(RUNTIME_FILE)) else {
        return false;
    };
    // A shim SIGKILLed a moment ago may be a zombie yet: gone all the same.
    crate::sys::ProcessId::parse(record.lines().nth(2).unwrap_or(""))
        .is_some_and(|shim| !shim.is_running())
}

/// `runc delete --force` of container `id` through the runtime recorded in `dir`, then
/// `dir`.
fn delete_left(id: &str, dir: &Path) {
    let Ok(record) = std::fs::read_to_string(dir.join(RUNTIME_FILE)) else {
        return;
    };
    let mut lines = record.lines();
    let binary = PathBuf::from(lines.next().unwrap_or("runc"));
    let systemd = lines.next() == Some("systemd");
    let out = command(&binary, dir, systemd, "delete")
        .args(["--force", id])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(out) => tracing::warn!(
            %id,
            error = %String::from_utf8_lossy(&out.stderr).trim(),
            "runc delete after a dead shim"
        ),
        Err(error) => tracing::warn!(%id, %error, "runc delete after a dead shim"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"linux":{{"namespaces":[{namespaces}]}}}}"#
        ))
        .unwrap()
    }

    fn paths(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        spec.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .map(|ns| (ns.typ(), ns.path().clone()))
            .collect()
    }

    #[test]
    fn the_pods_namespaces_replace_the_shims() {
        let me = std::process::id();
        let s = spec(&format!(
            r#"{{"type":"network","path":"/proc/{me}/ns/net"}},{{"type":"ipc","path":"/proc/{me}/ns/ipc"}},
               {{"type":"uts","path":"/proc/{me}/ns/uts"}},{{"type":"pid"}},{{"type":"mount"}}"#
        ));
        assert_eq!(
            through_shim(&s),
            [
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts
            ]
        );
        let pod = PodNamespaces {
            net: Some("/run/netns/cni-1".into()),
            holder: Some(42),
        };
        let out = runc_spec(s, Path::new("/b"), &pod).unwrap();
        assert_eq!(out.root().as_ref().unwrap().path(), Path::new("/b/rootfs"));
        assert_eq!(
            paths(&out),
            [
                (LinuxNamespaceType::Network, Some("/run/netns/cni-1".into())),
                (LinuxNamespaceType::Ipc, Some("/proc/42/ns/ipc".into())),
                (LinuxNamespaceType::Uts, Some("/proc/42/ns/uts".into())),
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Mount, None),
            ]
        );
    }

    #[test]
    fn a_namespace_the_pod_lacks_is_named() {
        let me = std::process::id();
        let s = spec(&format!(r#"{{"type":"pid","path":"/proc/{me}/ns/pid"}}"#));
        let e = runc_spec(s, Path::new("/b"), &PodNamespaces::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("Pid namespace /proc/{me}/ns/pid")),
            "{e}"
        );
        // Paths of other processes are the spec's own business.
        let s = spec(r#"{"type":"ipc","path":"/proc/1/ns/ipc"}"#);
        let out = runc_spec(s, Path::new("/b"), &PodNamespaces::default()).unwrap();
        assert_eq!(
            paths(&out),
            [(LinuxNamespaceType::Ipc, Some("/proc/1/ns/ipc".into()))]
        );
    }

    #[test]
    fn runcs_last_logged_error_is_its_reason() {
        let log = concat!(
            r#"{"level":"warning","msg":"minor","time":"t"}"#,
            "\n",
            r#"{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH","time":"t"}"#,
            "\nnot json\n"
        );
        assert_eq!(
            last_error(log).as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
        assert_eq!(last_error("{}"), None);
    }

    #[test]
    fn the_cgroup_driver_follows_the_path_form() {
        let with = |p: &str| -> Spec {
            serde_json::from_str(&format!(
                r#"{{"ociVersion":"1.0.2","linux":{{"cgroupsPath":"{p}"}}}}"#
            ))
            .unwrap()
        };
        assert!(systemd_cgroup(&with("kubepods.slice:cri-containerd:abc")));
        assert!(!systemd_cgroup(&with("/k8s.io/abc")));
    }

    #[test]
    fn runtime_files_live_beside_containerds_bundles() {
        let bundle = Path::new("/run/ctrd/io.containerd.runtime.v2.task/k8s.io/abc");
        assert_eq!(
            dir_of(bundle, "abc"),
            Path::new("/run/ctrd/wasmpod-native/k8s.io/abc")
        );
        assert_eq!(
            dir_of(Path::new("/tmp/bundle"), "abc"),
            Path::new("/tmp/bundle/wasmpod-native")
        );
    }

    #[test]
    fn only_a_dead_shims_containers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let started = crate::sys::start_time(me).unwrap();
        let at = |shim: &str| {
            let d = dir.path().join(shim.replace(' ', "-"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join(RUNTIME_FILE),
                format!("/usr/sbin/runc\ncgroupfs\n{shim}\n"),
            )
            .unwrap();
            d
        };
        assert!(!shim_gone(&at(&format!("{me} {started}"))));
        assert!(shim_gone(&at(&format!("{me} {}", started + 1))));
        assert!(!shim_gone(&at("not a record")));
        assert!(!shim_gone(dir.path()));
    }

    #[test]
    fn a_missing_runtime_is_named_with_the_option() {
        let e = find_binary(Some(Path::new("/nonexistent/runc"))).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/nonexistent/runc is not a file") && text.contains("`runc`"),
            "{text}"
        );
    }
}
