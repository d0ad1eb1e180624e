//! `cargo xtask fuzz [--seconds N] [TARGET...]`: builds the targets in `fuzz/` with
//! libFuzzer's coverage instrumentation (the flags cargo-fuzz passes, on stable Rust; no
//! sanitizer) and runs each for N seconds (default 60) from its seeds (`fuzz/seeds/T`,
//! kept in git) and its growing corpus (`fuzz/corpus/T`, not). An input that crashes a
//! target is saved under `fuzz/artifacts/T/` and fails the run: make it a regression test
//! next to the code it broke.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::util::{cargo, root, run as sh};

/// The targets, as `fuzz/Cargo.toml` names them.
pub(crate) const TARGETS: [&str; 7] = [
    "reference",
    "documents",
    "layer",
    "tar-headers",
    "spec",
    "pod",
    "entrypoint",
];

const FLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
];

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut seconds = 60u64;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .context("--seconds needs a number")?
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => bail!("unknown fuzz target or flag {other:?} (targets: {TARGETS:?})"),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let bins = build()?;
    let fuzz = root().join("fuzz");
    for target in targets {
        let corpus = fuzz.join("corpus").join(target);
        let artifacts = fuzz.join("artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        // The targets' scratch directories (some live as long as the process, and
        // libFuzzer exits without dropping them) go in one removed afterwards.
        let scratch = bins.join(format!("scratch-{target}"));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let out = Command::new(bins.join(target))
            .env("TMPDIR", &scratch)
            .arg(&corpus)
            .arg(fuzz.join("seeds").join(target))
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args(["-rss_limit_mb=2048", "-timeout=20", "-print_final_stats=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let _ = std::fs::remove_dir_all(&scratch);
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| "?".into())
        };
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {target} failed ({}); the input is under {}:\n{}",
                out.status,
                artifacts.display(),
                tail.join("\n")
            );
        }
        let corpus_size = std::fs::read_dir(&corpus).map_or(0, |d| d.count());
        eprintln!(
            "fuzz {target}: ok, {} runs in {seconds} s ({}/s), corpus {corpus_size}, peak RSS {} MB",
            stat("number_of_executed_units"),
            stat("average_exec_per_sec"),
            stat("peak_rss_mb"),
        );
    }
    Ok(())
}

/// Builds every target; returns the directory of the binaries.
fn build() -> anyhow::Result<PathBuf> {
    let target_dir = crate::util::target_dir().join("fuzz");
    // The flags go to the target only (`--target`): build scripts and proc macros, which
    // rustc loads, stay uninstrumented.
    sh(cargo()
        .args(["build", "--bins", "--manifest-path"])
        .arg(root().join("fuzz/Cargo.toml"))
        .args(["--target", TRIPLE, "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", FLAGS.join(" ")))?;
    Ok(target_dir.join(TRIPLE).join("debug"))
}
