//! `cargo xtask bench --load [CYCLES]`: create/start/wait/delete cycles (`ctr run --rm`),
//! 8 at a time, through a private containerd — our shim with a shim per container, our
//! shim with one node-grouped shim for all, runwasi's wasmtime shim, and runc with busybox
//! in the same containerd —
//! with cycles per second and what each left behind (descriptors, memory of the
//! long-lived processes, shims, mounts, files).

use anyhow::bail;

use crate::e2e::load::{self, Workload, WASM};
use crate::e2e::{build_binaries_in, Containerd};

const PARALLEL: usize = 8;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let cycles = args
        .iter()
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(1000);
    println!("\n== load: {cycles} × ctr run --rm, {PARALLEL} at a time");
    if !crate::util::is_root() {
        bail!("the load bench starts containerd: run it as root");
    }
    let bins = build_binaries_in("release", &["--release"])?;
    let env = Containerd::start(&bins)?;
    env.prepare_image()?;
    let mut passes = vec![
        load::pass(&env, &WASM, false, cycles, PARALLEL)?,
        load::pass(&env, &WASM, true, cycles, PARALLEL)?,
    ];
    match super::anchors::install_runwasi(&env) {
        Ok(()) => {
            let runwasi = Workload {
                label: "runwasi",
                runtime: super::anchors::RUNWASI,
                // runwasi's shim fails a cycle now and then under this load ("received
                // unexpected message: InitReady"): counted and shown, not the end of it.
                tolerated_failures: 20,
                ..WASM
            };
            // A comparison's own failures are reported, not the end of the bench.
            match load::pass(&env, &runwasi, false, cycles, PARALLEL) {
                Ok(pass) => passes.push(pass),
                Err(e) => println!("runwasi's pass failed: {e:#}"),
            }
        }
        Err(e) => println!("runwasi comparison skipped: {e:#}"),
    }
    match super::shim::busybox_image(&env, crate::e2e::NAMESPACE) {
        Ok(()) => {
            let runc = Workload {
                label: "runc",
                runtime: "io.containerd.runc.v2",
                flags: &[],
                image: super::shim::BUSYBOX,
                args: &["/bin/sh", "-c", "exit 0"],
                tolerated_failures: 0,
            };
            match load::pass(&env, &runc, false, cycles, PARALLEL) {
                Ok(pass) => passes.push(pass),
                Err(e) => println!("runc's pass failed: {e:#}"),
            }
        }
        Err(e) => println!("runc comparison skipped: {e:#}"),
    }
    println!("| runtime | cycles/s | time | left behind |");
    println!("|---|---|---|---|");
    for p in &passes {
        let mut left = match load::check_growth(p) {
            Ok(()) => "nothing".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if let Some(first) = p.failures.first() {
            left.push_str(&format!(
                "; {} of {} cycles failed, the first: {}",
                p.failures.len(),
                p.cycles,
                first.lines().last().unwrap_or_default()
            ));
        }
        println!(
            "| {} | {:.1} | {:.1?} | {left} |",
            p.label,
            p.per_second(),
            p.took
        );
    }
    for p in &passes {
        println!(
            "{}: before {}\n{}: after  {}",
            p.label, p.before, p.label, p.after
        );
    }
    for base in ["runwasi", "runc"] {
        if let Some(b) = passes.iter().find(|p| p.label == base) {
            for p in passes.iter().filter(|p| p.label != base) {
                println!(
                    "{} / {base}: {:.2}x the cycles per second",
                    p.label,
                    p.per_second() / b.per_second()
                );
            }
        }
    }
    Ok(())
}
