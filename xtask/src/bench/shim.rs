//! `cargo xtask bench shim`: the shim under a private containerd against runc in the same
//! containerd — cold start of `ctr run --rm` for a hello world, and the memory of idle shims.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::{median, ms};
use crate::e2e::{build_binaries_in, compile_fixture, Containerd, RUNTIME};
use crate::util::have;

const HELLO: &str = "localhost/wasmpod-bench/hello:v1";
pub(crate) const BUSYBOX: &str = "localhost/wasmpod-bench/busybox:v1";
const RUNS: usize = 20;

pub(crate) fn run() -> anyhow::Result<()> {
    println!("\n== containerd: ctr run --rm of a hello world, and idle memory");
    if !crate::util::is_root() {
        bail!("the shim bench starts containerd: run it as root");
    }
    let bins = build_binaries_in("release", &["--release"])?;
    let env = Containerd::start(&bins)?;
    env.prepare_image()?; // the probe, which sleeps for the idle measurement
    let hello = env.dir.join("hello.wasm");
    compile_fixture("hello", &hello)?;
    env.import(&hello, HELLO, "compat")?;

    let time_runs =
        |runtime: &str, flags: &[&str], image: &str, args: &[&str]| -> anyhow::Result<Duration> {
            let mut samples = Vec::new();
            for i in 0..=RUNS {
                let id = format!("bench-{i}");
                let mut all = vec!["run", "--rm", "--runtime", runtime];
                all.extend_from_slice(flags);
                all.extend_from_slice(&[image, &id]);
                all.extend_from_slice(args);
                let t0 = Instant::now();
                let out = env.ctr(&all)?;
                let took = t0.elapsed();
                ensure!(
                    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ello"),
                    "ctr run {runtime}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if i > 0 {
                    samples.push(took); // the first run warms the caches (and compiles the wasm)
                }
            }
            Ok(median(samples))
        };
    let wasm = time_runs(RUNTIME, &[], HELLO, &[])?;
    println!(
        "ctr run --rm hello (wasm shim):   {} median of {RUNS}",
        ms(wasm)
    );
    let process = time_runs(
        RUNTIME,
        &["--annotation", "wasmpod.io/isolation=process"],
        HELLO,
        &[],
    )?;
    println!(
        "ctr run --rm hello (wasm shim, process level): {} median of {RUNS}",
        ms(process)
    );
    match busybox_image(&env, crate::e2e::NAMESPACE) {
        Ok(()) => {
            let runc = time_runs(
                "io.containerd.runc.v2",
                &[],
                BUSYBOX,
                &["/bin/echo", "hello"],
            )?;
            println!(
                "ctr run --rm busybox echo (runc): {} median of {RUNS}",
                ms(runc)
            );
            println!(
                "wasm shim / runc: {:.2}x (process level: {:.2}x)",
                wasm.as_secs_f64() / runc.as_secs_f64(),
                process.as_secs_f64() / runc.as_secs_f64()
            );
        }
        Err(e) => println!("runc comparison skipped: {e:#}"),
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
