//! `cargo xtask bench pod`: pod start latency through containerd's CRI plugin — from
//! RunPodSandbox to the container running — for a wasm pod (our shim) against the same pod
//! under runwasi's wasmtime shim and a runc busybox pod, in the same containerd, with the
//! same CNI bridge network; and a mixed pod (the wasm app beside a native busybox sidecar)
//! against the same pod of two busybox containers under runc alone.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::anchors::{install_runwasi, RUNWASI_HANDLER};
use super::{median, ms};
use crate::bench::shim::{busybox_image, BUSYBOX};
use crate::e2e::cri::{import_pause_image, probe_image, K8S_NAMESPACE};
use crate::e2e::{build_binaries_in, Containerd};

const RUNS: usize = 20;

pub(crate) fn run() -> anyhow::Result<()> {
    println!("\n== Kubernetes CRI: pod start, RunPodSandbox to the container running");
    // The workspace's examples, pod-start among them, in the same build.
    let bins = build_binaries_in("release", &["--release"])?;
    let example = bins.shim.with_file_name("examples/pod-start");
    let env = Containerd::start(&bins)?;
    import_pause_image(&env)?;
    let wasm_image = probe_image(&env)?;
    let busybox = busybox_image(&env, K8S_NAMESPACE);
    let runwasi = install_runwasi(&env);
    if let Err(e) = &runwasi {
        println!("runwasi comparison skipped: {e:#}");
    }
    let time_pod =
        |name: &str, runtime_class: &str, containers: &str| -> anyhow::Result<Duration> {
            let manifest = env.dir.join(format!("{name}.yaml"));
            std::fs::write(
                &manifest,
                format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{runtime_class}  \
                 containers:\n{containers}"
            ),
            )?;
            let out = Command::new(&example)
                .arg(format!("unix://{}", env.socket().display()))
                .arg(&manifest)
                .arg((RUNS + 1).to_string())
                .arg(env.dir.join("pod-logs"))
                .arg(env.dir.join("pods"))
                .output()
                .context("running pod-start")?;
            if !out.status.success() {
                bail!("pod-start {name}: {}", String::from_utf8_lossy(&out.stderr));
            }
            let samples: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<f64>().ok())
                .map(|m| Duration::from_secs_f64(m / 1000.0))
                .skip(1) // the first run pulls the image and compiles the wasm
                .collect();
            if samples.len() != RUNS {
                bail!("pod-start {name}: {} samples", samples.len());
            }
            Ok(median(samples))
        };
    let time = |name: &str, runtime_class: &str, image: &str, args: &str| {
        let container = format!(
            "  - {{name: c, image: {image}, imagePullPolicy: IfNotPresent, args: {args}}}\n"
        );
        time_pod(name, runtime_class, &container)
    };
    // With the pod network (a CNI bridge, as most clusters), and on the host's network,
    // which leaves the runtimes' own share.
    for (network, spec) in [
        ("pod network (CNI bridge)", ""),
        ("host network", "  hostNetwork: true\n"),
    ] {
        println!("-- {network}");
        let wasm = time(
            "wasm-pod",
            &format!("  runtimeClassName: wasm\n{spec}"),
            &wasm_image,
            "[sleep, \"600000\"]",
        )?;
        println!(
            "wasm pod (probe sleep, our shim):  {} median of {RUNS}",
            ms(wasm)
        );
        if runwasi.is_ok() {
            let theirs = time(
                "runwasi-pod",
                &format!("  runtimeClassName: {RUNWASI_HANDLER}\n{spec}"),
                &wasm_image,
                "[sleep, \"600000\"]",
            )?;
            println!(
                "wasm pod (probe sleep, runwasi):   {} median of {RUNS}",
                ms(theirs)
            );
            println!(
                "ours / runwasi: {:.2}x",
                wasm.as_secs_f64() / theirs.as_secs_f64()
            );
        }
        match &busybox {
            Ok(()) => {
                let runc = time("runc-pod", spec, BUSYBOX, "[/bin/sleep, \"600\"]")?;
                println!(
                    "runc pod (busybox sleep):          {} median of {RUNS}",
                    ms(runc)
                );
                println!(
                    "wasm / runc: {:.2}x",
                    wasm.as_secs_f64() / runc.as_secs_f64()
                );
            }
            Err(e) => println!("runc comparison skipped: {e:#}"),
        }
        // A pod with a native sidecar: the wasm app beside busybox (runc, through our
        // shim), against the same pod of two busybox containers under runc alone.
        if busybox.is_ok() {
            let sidecar = format!(
                "  - {{name: sidecar, image: {BUSYBOX}, imagePullPolicy: IfNotPresent, \
                 args: [/bin/sleep, \"600\"]}}\n"
            );
            let app = format!(
                "  - {{name: app, image: {wasm_image}, imagePullPolicy: IfNotPresent, \
                 args: [sleep, \"600000\"]}}\n"
            );
            let runc_app = format!(
                "  - {{name: app, image: {BUSYBOX}, imagePullPolicy: IfNotPresent, \
                 args: [/bin/sleep, \"600\"]}}\n"
            );
            let mixed = time_pod(
                "mixed-pod",
                &format!("  runtimeClassName: wasm\n{spec}"),
                &format!("{app}{sidecar}"),
            )?;
            let runc = time_pod("runc-two", spec, &format!("{runc_app}{sidecar}"))?;
            println!(
                "mixed pod (wasm + busybox sidecar): {} median of {RUNS}",
                ms(mixed)
            );
            println!(
                "runc pod (busybox + busybox):      {} median of {RUNS}",
                ms(runc)
            );
            println!(
                "mixed / runc: {:.2}x",
                mixed.as_secs_f64() / runc.as_secs_f64()
            );
        }
    }
    Ok(())
}
