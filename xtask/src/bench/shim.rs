//! `cargo xtask bench shim`: the shim under a private containerd (2.x from Debian sid)
//! beside runwasi's wasmtime shim (where `$WASMPOD_RUNWASI_SHIM` names it), runc and the
//! floor (a do-nothing shim) in the same containerd — `ctr run --rm` of a hello world,
//! taking turns, with ratios; our start path phase by phase; and the memory of idle shims.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::anchors::{install_runwasi, RUNWASI};
use super::{median, ms};
use crate::e2e::{build_binaries_in, compile_fixture, Containerd, RUNTIME};
use crate::util::have;

const HELLO: &str = "localhost/wasmpod-bench/hello:v1";
pub(crate) const BUSYBOX: &str = "localhost/wasmpod-bench/busybox:v1";
const RUNS: usize = 20;

/// One way to run the hello world with `ctr run --rm`.
struct Setup {
    /// The container ids' prefix, and the row's name.
    id: &'static str,
    label: &'static str,
    runtime: &'static str,
    flags: &'static [&'static str],
    image: &'static str,
    args: &'static [&'static str],
}

const FLOOR: &str = "io.containerd.floor.v1";

const SETUPS: [Setup; 5] = [
    Setup {
        id: "shared",
        label: "wasmpod (shim per container)",
        runtime: RUNTIME,
        flags: &[],
        image: HELLO,
        args: &[],
    },
    Setup {
        id: "process",
        label: "wasmpod, process level",
        runtime: RUNTIME,
        flags: &["--annotation", "wasmpod.io/isolation=process"],
        image: HELLO,
        args: &[],
    },
    Setup {
        id: "runwasi",
        label: "runwasi wasmtime shim",
        runtime: RUNWASI,
        flags: &[],
        image: HELLO,
        args: &[],
    },
    Setup {
        id: "floor",
        label: "floor: a do-nothing shim (`examples/floor-shim.rs`)",
        runtime: FLOOR,
        flags: &[],
        image: HELLO,
        args: &[],
    },
    Setup {
        id: "runc",
        label: "runc, busybox echo",
        runtime: "io.containerd.runc.v2",
        flags: &[],
        image: BUSYBOX,
        args: &["/bin/echo", "hello"],
    },
];

pub(crate) fn run() -> anyhow::Result<()> {
    println!(
        "\n== containerd: ctr run --rm of a hello world beside runwasi and runc, and idle memory"
    );
    if !crate::util::is_root() {
        bail!("the shim bench starts containerd: run it as root");
    }
    let bins = build_binaries_in("release", &["--release"])?;
    let env = Containerd::start(&bins)?;
    println!("containerd {}", env.version()?.trim());
    env.prepare_image()?; // the probe, which sleeps for the idle measurement
    let hello = env.dir.join("hello.wasm");
    compile_fixture("hello", &hello)?;
    env.import(&hello, HELLO, "compat")?;
    let mut setups: Vec<&Setup> = SETUPS.iter().collect();
    if let Err(e) = install_runwasi(&env) {
        println!("runwasi skipped: {e:#}");
        setups.retain(|s| s.runtime != RUNWASI);
    }
    // The floor: containerd finds `containerd-shim-floor-v1` on its PATH.
    let floor = crate::util::target_dir().join("release/examples/floor-shim");
    std::os::unix::fs::symlink(&floor, env.dir.join("bin/containerd-shim-floor-v1"))?;
    if let Err(e) = busybox_image(&env, crate::e2e::NAMESPACE) {
        println!("runc skipped: {e:#}");
        setups.retain(|s| s.id != "runc");
    }

    let run_once = |setup: &Setup, id: &str| -> anyhow::Result<Duration> {
        let mut all = vec!["run", "--rm", "--runtime", setup.runtime];
        all.extend_from_slice(setup.flags);
        all.extend_from_slice(&[setup.image, id]);
        all.extend_from_slice(setup.args);
        let t0 = Instant::now();
        let out = env.ctr(&all)?;
        let took = t0.elapsed();
        ensure!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ello"),
            "ctr run {}: {}",
            setup.label,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    };
    // A first run of each warms the caches (and compiles the wasm); then the runtimes
    // take turns, round after round, so drift on the machine hits them alike.
    for setup in &setups {
        run_once(setup, &format!("warm-{}", setup.id))?;
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); setups.len()];
    for round in 0..RUNS {
        for (setup, samples) in setups.iter().zip(&mut samples) {
            samples.push(run_once(setup, &format!("{}-{round}", setup.id))?);
        }
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let of = |id: &str| setups.iter().position(|s| s.id == id).map(|i| medians[i]);
    let ratio = |m: Duration, base: Option<Duration>| {
        base.map_or("—".to_owned(), |b| {
            format!("{:.2}×", m.as_secs_f64() / b.as_secs_f64())
        })
    };
    println!("| runtime | ctr run --rm, median of {RUNS} | × runwasi | × runc |");
    println!("|---|---|---|---|");
    for (setup, m) in setups.iter().zip(&medians) {
        println!(
            "| {} | {} | {} | {} |",
            setup.label,
            ms(*m),
            ratio(*m, of("runwasi")),
            ratio(*m, of("runc"))
        );
    }
    if let Some(floor) = of("floor") {
        let above = |id: &str| of(id).map_or("—".to_owned(), |m| ms(m.saturating_sub(floor)));
        println!(
            "\nabove the floor ({}): wasmpod {}, process level {}, runwasi {}, runc {}",
            ms(floor),
            above("shared"),
            above("process"),
            above("runwasi"),
            above("runc")
        );
    }
    if let Some(wall) = of("shared") {
        println!("\nour shim's start path, phase by phase (median of {RUNS}; WASMPOD_TIMINGS):");
        super::breakdown::print(&env.timings(), "shared-", wall)?;
    }

    // The probe is compiled (and cached) by the first shim that runs it; measure shims
    // that load it from the cache, as every later container of an image does.
    env.run_wasm("warm-cache", &[], &["exit", "0"])?;
    let one = idle_pss(&env, 1)?;
    let ten = idle_pss(&env, 10)?;
    println!(
        "idle shim holding  1 sleeping container:  {:.2} MiB PSS ({:.2} MiB RSS)",
        one.0, one.1
    );
    println!(
        "idle shim holding 10 sleeping containers: {:.2} MiB PSS ({:.2} MiB RSS)",
        ten.0, ten.1
    );
    println!(
        "each further idle container in a shared shim: {:.2} MiB PSS; 10 containers: {:.2} MiB PSS each",
        (ten.0 - one.0) / 9.0,
        ten.0 / 10.0
    );
    Ok(())
}

/// PSS and RSS (MiB) of the shim processes while `n` containers of one pod sleep in them.
fn idle_pss(env: &Containerd, n: usize) -> anyhow::Result<(f64, f64)> {
    let annotations = [
        "--annotation",
        "io.kubernetes.cri.sandbox-id=bench-pod",
        "--annotation",
        "io.kubernetes.cri.container-type=container",
    ];
    for i in 0..n {
        env.run_detached(&format!("idle-{i}"), &annotations, &["sleep", "600000"])?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let (pss, rss) = env
        .shims()
        .into_iter()
        .map(super::density::smaps)
        .fold((0.0, 0.0), |(p, r), (p2, r2)| (p + p2, r + r2));
    for i in 0..n {
        let id = format!("idle-{i}");
        env.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id])?;
        env.wait_status(&id, "STOPPED", Duration::from_secs(5))?;
        env.ctr_ok(&["task", "rm", &id])?;
        env.ctr_ok(&["container", "rm", &id])?;
    }
    Ok((pss, rss))
}

/// A busybox image for runc, from Debian's `busybox-static`, imported as an OCI archive
/// into containerd's `namespace` as [`BUSYBOX`].
pub(crate) fn busybox_image(env: &Containerd, namespace: &str) -> anyhow::Result<()> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() || !have("runc") {
        bail!("needs runc and busybox-static (apt-get install runc busybox-static)");
    }
    let dir = env.dir.join(format!("busybox-{namespace}"));
    let rootfs = dir.join("rootfs/bin");
    fs::create_dir_all(&rootfs)?;
    fs::copy(busybox, rootfs.join("busybox"))?;
    for applet in ["echo", "sleep", "sh"] {
        std::os::unix::fs::symlink("busybox", rootfs.join(applet))?;
    }
    env.import_rootfs(namespace, &dir, BUSYBOX, &["/bin/echo", "hello"])
}
