//! `cargo xtask e2e --cgroup2 [CHECK...]`: the checks that touch cgroups, run again inside
//! a guest that boots a cgroup v2 kernel (the nodes of every current distribution), since
//! the machines the e2e runs on mount cgroup v1.
//!
//! The guest is virtme-ng (PyPI) booting Debian bookworm's kernel package under QEMU, with
//! the host's root filesystem shared read-only; all three are fetched into the cache outside
//! the checkout. It runs this very xtask binary against the host's build (no cargo in the
//! guest): containerd 2.x from the same cache, the debug shim and CLI from the target
//! directory. Without a usable `/dev/kvm` QEMU emulates the CPU (TCG): a boot takes about
//! 15 s and code runs several times slower, so the set is the cgroup checks only.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use super::{debian, SLOWDOWN_ENV};
use crate::util::{have, output_ok, root};

/// The checks that create, limit, update, read or remove a cgroup: the process level's
/// own, runc's for native containers, and the Stats that read them.
pub(crate) const CGROUP_CHECKS: &[&str] = &[
    "memory-limit",
    "process-level",
    "process-oom",
    "cpu-quota",
    "pids-blockio",
    "events-and-metrics",
    "pod-oom",
    "pod-update",
    "pod-process",
    "pod-cgroup-parent",
    "pod-node-grouping",
    "pod-native-oom",
];

/// The checks that need a systemd manager: the guest runs them in a second pass, with
/// systemd started as the first process of a PID and mount namespace of its own (see
/// [`guest_script`]).
pub(crate) const SYSTEMD_CHECKS: &[&str] = &["systemd-driver", "pod-cgroup-parent"];

/// Debian bookworm's kernel (the cloud flavour lacks 9p, which virtme-ng shares the root
/// filesystem over) and kmod, whose `modprobe` the guest's kernel calls for its modules.
const KERNEL_META: &str = "linux-image-amd64";
const VIRTME_NG: &str = "virtme-ng==1.41";

/// How long one guest may run all its checks.
const GUEST_LIMIT: Duration = Duration::from_secs(40 * 60);

/// Set in the guest: the binaries are the host's, already built.
pub(crate) const PREBUILT_ENV: &str = "WASMPOD_E2E_PREBUILT";

pub(crate) fn run(filter: &[String]) -> anyhow::Result<()> {
    for (program, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("python3", "python3-venv"),
    ] {
        ensure!(
            have(program),
            "the cgroup v2 guest needs {program}: apt-get install {package}"
        );
    }
    let (systemd, checks): (Vec<&str>, Vec<&str>) = if filter.is_empty() {
        (SYSTEMD_CHECKS.to_vec(), CGROUP_CHECKS.to_vec())
    } else {
        // A check in both lists runs in both passes.
        let named = |list: &[&str], c: &str| list.iter().any(|s| s.contains(c));
        let filter = filter.iter().map(String::as_str);
        (
            filter
                .clone()
                .filter(|c| named(SYSTEMD_CHECKS, c))
                .collect(),
            filter
                .filter(|c| !named(SYSTEMD_CHECKS, c) || named(CGROUP_CHECKS, c))
                .collect(),
        )
    };
    // Everything the guest uses, ready on the host: it has no network and no cargo.
    super::build_binaries()?;
    debian::containerd("sid")?;
    let guest = Guest::fetch()?;
    let target = crate::util::target_dir();
    let io = target.join("cgroup2-guest");
    let _ = fs::remove_dir_all(&io);
    fs::create_dir_all(&io)?;
    let xtask = std::env::current_exe().context("this xtask binary")?;
    let xtask = Path::new("/opt").join(xtask.strip_prefix(&target).with_context(|| {
        format!(
            "{} is not under the target directory {}",
            xtask.display(),
            target.display()
        )
    })?);
    fs::write(
        io.join("run.sh"),
        guest_script(&guest, &xtask, &checks, &systemd),
    )?;
    eprintln!(
        "e2e --cgroup2: booting {} under QEMU for {} (under systemd: {})",
        guest.kernel.display(),
        checks.join(" "),
        systemd.join(" ")
    );
    let started = Instant::now();
    let mut vng = guest.command(&target);
    let mut child = vng
        .stdin(Stdio::null())
        // QEMU cuts a redirected stdout short: a pipe, read to the end.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting vng")?;
    let out = drain(child.stdout.take().context("vng's stdout")?);
    let err = drain(child.stderr.take().context("vng's stderr")?);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > GUEST_LIMIT {
            let _ = child.kill();
            bail!("the cgroup v2 guest ran past {GUEST_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let log = fs::read_to_string(io.join("out")).unwrap_or_default();
    eprint!("{log}");
    let rc = fs::read_to_string(io.join("rc")).unwrap_or_default();
    eprintln!(
        "e2e --cgroup2: the guest ran {:.0?} (vng {status})",
        started.elapsed()
    );
    match rc.trim() {
        "0" => Ok(()),
        "" => bail!("the cgroup v2 guest ended without the checks' result:\n{out}\n{err}"),
        code => bail!("cgroup v2 checks failed in the guest (exit {code})"),
    }
}

/// Reads `from` to its end on a thread of its own.
fn drain(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        text
    })
}

/// What the guest boots with.
struct Guest {
    /// `vmlinuz-*`, in the unpacked kernel package (its modules beside it, under `lib/`).
    kernel: PathBuf,
    /// The unpacked kernel package: `lib/modules` for the guest's modprobe.
    kernel_root: PathBuf,
    /// `modprobe`, `depmod`… as links to the unpacked kmod (it takes its applet from its
    /// name), for vng on the host and for the kernel in the guest.
    kmod_bin: PathBuf,
    /// virtme-ng's `vng`, in a virtual environment of its own.
    vng: PathBuf,
}

impl Guest {
    fn fetch() -> anyhow::Result<Self> {
        let package = kernel_package()?;
        let kernel_root = from_machine_archive(&package)?;
        let kernel = fs::read_dir(kernel_root.join("boot"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .with_context(|| format!("no vmlinuz-* in {}/boot", kernel_root.display()))?;
        let kmod = from_machine_archive("kmod")?;
        let cache = debian::cache_root();
        let kmod_bin = cache.join("vm/bin");
        fs::create_dir_all(&kmod_bin)?;
        // Relative: the guest sees the cache at another path.
        let kmod = Path::new("../..")
            .join(kmod.strip_prefix(&cache)?)
            .join("bin/kmod");
        for applet in ["modprobe", "depmod", "insmod", "rmmod", "lsmod", "modinfo"] {
            let link = kmod_bin.join(applet);
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&kmod, &link)?;
        }
        let venv = debian::cache_root().join("vm/venv");
        let vng = venv.join("bin/vng");
        if !vng.exists() {
            eprintln!("installing {VIRTME_NG} into {}", venv.display());
            output_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
            output_ok(Command::new(venv.join("bin/pip")).args(["install", "--quiet", VIRTME_NG]))?;
        }
        Ok(Self {
            kernel,
            kernel_root,
            kmod_bin,
            vng,
        })
    }

    /// vng booting the kernel with the target directory as `/opt` and the cache as
    /// `/srv` in the guest (its own `/tmp` and `/var/cache` are overlays and tmpfs).
    fn command(&self, target: &Path) -> Command {
        let mut path = format!(
            "{}:{}:",
            self.vng
                .parent()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            self.kmod_bin.display()
        );
        path.push_str(&std::env::var("PATH").unwrap_or_default());
        let mut cmd = Command::new(&self.vng);
        cmd.env("PATH", path)
            .arg("--run")
            .arg(&self.kernel)
            .args(["--disable-kvm", "--cpus", "2", "--memory", "6G"])
            .arg(format!("--rwdir=/opt={}", target.display()))
            .arg(format!("--rwdir=/srv={}", debian::cache_root().display()))
            .args(["--exec", "sh /opt/cgroup2-guest/run.sh"]);
        cmd
    }
}

/// The guest's one command: the kernel's modules and modprobe, the controllers a node's
/// systemd enables for its children, then the checks, their output and exit code left in
/// the target directory for the host.
///
/// Then the `systemd` checks, under a real systemd (Debian's, the host's package): it
/// runs as pid 1 of a PID namespace (`systemd --system` must be pid 1) with its own
/// `/proc` (it reads its clients' pids there), in a cgroup of its own that it manages as
/// a node's systemd manages the root, with units of the script's (one empty target: no
/// services, no mounts, but the system bus: the units start Debian's dbus-daemon, on
/// which the driver reaches systemd). The checks join its namespaces, as a node's
/// containerd shares its init's: systemd and the bus take connections only from peers
/// whose pids they can see.
fn guest_script(guest: &Guest, xtask: &Path, checks: &[&str], systemd: &[&str]) -> String {
    let in_guest = |p: &Path| -> String {
        let cache = debian::cache_root();
        p.strip_prefix(&cache)
            .map(|rest| Path::new("/srv").join(rest).display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    format!(
        "exec > /opt/cgroup2-guest/out 2>&1\n\
         set -x\n\
         mount --bind {modules} /lib/modules\n\
         echo {modprobe} > /proc/sys/kernel/modprobe\n\
         echo '+cpu +memory +pids +io' > /sys/fs/cgroup/cgroup.subtree_control\n\
         stat -fc %T /sys/fs/cgroup\n\
         cat /sys/fs/cgroup/cgroup.subtree_control\n\
         mkdir -p /run/e2e\n\
         export TMPDIR=/run/e2e WASMPOD_CACHE=/srv CARGO_TARGET_DIR=/opt {PREBUILT_ENV}=1\n\
         export {SLOWDOWN_ENV}=5\n\
         export PATH={kmod}:$PATH\n\
         cd {root}\n\
         set +x\n\
         rc=0\n\
         if [ -n '{checks}' ]; then {xtask} e2e --containerd 2 {checks}; rc=$?; fi\n\
         if [ $rc = 0 ] && [ -n '{systemd}' ]; then\n\
           set -x\n\
           mkdir -p /run/e2e-units /sys/fs/cgroup/e2e-systemd\n\
           printf '[Unit]\\nDescription=wasmpod e2e\\nWants=dbus.socket dbus.service\\n' > /run/e2e-units/e2e.target\n\
           printf '[Unit]\\nDefaultDependencies=no\\n[Socket]\\nListenStream=/run/dbus/system_bus_socket\\n' > /run/e2e-units/dbus.socket\n\
           printf '[Unit]\\nDefaultDependencies=no\\nRequires=dbus.socket\\n[Service]\\nType=notify\\nNotifyAccess=main\\nExecStart=/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only\\n' > /run/e2e-units/dbus.service\n\
           unshare --pid --fork --mount --mount-proc sh -c 'echo $$ > /sys/fs/cgroup/e2e-systemd/cgroup.procs && exec env -i container=wasmpod-e2e SYSTEMD_UNIT_PATH=/run/e2e-units /lib/systemd/systemd --system --unit=e2e.target --log-target=kmsg' &\n\
           for i in $(seq 1 240); do [ -S /run/systemd/private ] && [ -S /run/dbus/system_bus_socket ] && break; sleep 0.5; done\n\
           sd=$(pgrep -xf '/lib/systemd/systemd --system.*' | head -1)\n\
           for i in $(seq 1 240); do nsenter -t \"$sd\" --pid --mount busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.DBus.Peer Ping > /dev/null 2>&1 && break; sleep 0.5; done\n\
           set +x\n\
           nsenter -t \"$sd\" --pid --mount sh -c 'cd {root} && exec {xtask} e2e --containerd 2 {systemd}'; rc=$?\n\
           dmesg | grep 'systemd\\[1\\]' | tail -20\n\
         fi\n\
         echo $rc > /opt/cgroup2-guest/rc\n",
        modules = in_guest(&guest.kernel_root.join("lib/modules")),
        modprobe = in_guest(&guest.kmod_bin.join("modprobe")),
        kmod = in_guest(&guest.kmod_bin),
        root = root().display(),
        xtask = xtask.display(),
        checks = checks.join(" "),
        systemd = systemd.join(" "),
    )
}

/// Package `name` as the machine's own apt has it (the kernel's newest build is in the
/// security archive, which the e2e's private bookworm list leaves out), unpacked into the
/// cache: `apt-get download` and `dpkg-deb -x`, nothing installed.
fn from_machine_archive(name: &str) -> anyhow::Result<PathBuf> {
    let dir = debian::cache_root().join("vm/packages");
    let root = dir.join(name);
    if root.join(".unpacked").exists() {
        return Ok(root);
    }
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    eprintln!("fetching {name} into {}", dir.display());
    output_ok(
        Command::new("apt-get")
            .args(["download", "-qq", name])
            .current_dir(&debs),
    )?;
    let deb = fs::read_dir(&debs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}_")))
        })
        .with_context(|| format!("apt-get download {name} left no {name}_*.deb"))?;
    let _ = fs::remove_dir_all(&root);
    output_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::write(root.join(".unpacked"), "")?;
    Ok(root)
}

/// The kernel package `linux-image-amd64` depends on, as the machine's apt knows it.
fn kernel_package() -> anyhow::Result<String> {
    let out = output_ok(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    out.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Depends: ")
                .filter(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
                .map(str::to_owned)
        })
        .with_context(|| format!("apt-cache depends {KERNEL_META}: no kernel package in {out}"))
}
