//! `wasmpod install`: the shim onto this node and the `wasm` runtime into containerd's
//! config; containerd restarted only when something changed.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use cri::install::{InstallOptions, SHIM_BINARY};

use crate::cli::InstallArgs;

/// Runs the installer and reports what it did, a line each.
pub(crate) fn main(args: InstallArgs) -> anyhow::Result<()> {
    let shim = if args.config_only {
        None
    } else {
        Some(match &args.shim {
            Some(path) => path.clone(),
            None => beside_me()?,
        })
    };
    let runtime_options = runtime_options(&args.options)?;
    let options = InstallOptions {
        config: args.containerd_config.clone(),
        handler: args.handler.clone(),
        runtime_options,
        shim,
        bin_dir: args.bin_dir.clone(),
        new_config_version: args
            .config_version
            .unwrap_or_else(containerd_config_version),
    };
    let report = cri::install(&options)?;
    if let Some(path) = &report.shim_installed {
        println!("installed {}", path.display());
    }
    if report.config_changed {
        println!(
            "added runtime handler {:?} ({}) to {} (config version {})",
            args.handler,
            cri::install::RUNTIME_TYPE,
            args.containerd_config.display(),
            report.config_version
        );
    }
    if let Some(backup) = &report.backup {
        println!("previous config kept as {}", backup.display());
    }
    if !report.needs_restart() {
        println!(
            "nothing changed: {} already runs wasm containers",
            args.containerd_config.display()
        );
        return Ok(());
    }
    if args.no_restart {
        println!("containerd not restarted (--no-restart): restart it to use the change");
        return Ok(());
    }
    println!("restarting containerd: {}", args.restart_command);
    let status = Command::new("sh")
        .args(["-c", &args.restart_command])
        .status()
        .with_context(|| format!("running {:?}", args.restart_command))?;
    if !status.success() {
        bail!("{:?} failed ({status})", args.restart_command);
    }
    Ok(())
}

/// The shim built beside this wasmpod binary.
fn beside_me() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding this program")?;
    let shim = me.with_file_name(SHIM_BINARY);
    if !shim.is_file() {
        bail!(
            "no {SHIM_BINARY} beside {}: build it (cargo build --release -p shim), pass --shim, or --config-only",
            me.display()
        );
    }
    Ok(shim)
}

/// The config version this node's containerd reads: 3 for containerd 2.x, else 2.
fn containerd_config_version() -> i64 {
    let out = Command::new("containerd").arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "containerd github.com/containerd/containerd v1.6.20 ..." or ".../v2 v2.0.0 ..."
    let major = text.split_whitespace().find_map(|w| {
        w.strip_prefix('v')
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
    });
    if major.is_some_and(|m| m >= 2) {
        3
    } else {
        2
    }
}

/// `--option KEY=VALUE` pairs, checked as the shim will read them.
fn runtime_options(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut options = Vec::new();
    let mut toml = String::new();
    for pair in pairs {
        let (key, val) = pair
            .split_once('=')
            .with_context(|| format!("--option {pair:?}: expected KEY=VALUE"))?;
        let key = key.trim().to_ascii_lowercase();
        anyhow::ensure!(
            sandbox::HandlerOptions::KEYS.contains(&key.as_str()),
            "--option {pair:?}: unknown option {key:?} ({})",
            sandbox::HandlerOptions::KEYS.join(", ")
        );
        toml.push_str(&format!("{key} = {:?}\n", val.trim()));
        options.push((key, val.trim().to_owned()));
    }
    sandbox::HandlerOptions::from_toml(&toml, "--option")?;
    Ok(options)
}
