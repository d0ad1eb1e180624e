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
        let imported = if report.drop_in {
            format!(", imported by {}", args.containerd_config.display())
        } else {
            String::new()
        };
        println!(
            "added runtime handler {:?} ({}) to {} (config version {}{imported})",
            args.handler,
            cri::install::RUNTIME_TYPE,
            report.config_file.display(),
            report.config_version
        );
    }
    if let Some(backup) = &report.backup {
        println!("previous config kept as {}", backup.display());
    }
    if !report.needs_restart() {
        println!(
            "nothing changed: {} already runs wasm containers",
            report.config_file.display()
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

/// The config version this node's containerd writes by default: 4 for containerd 2.3+,
/// 3 for 2.0–2.2, else 2.
fn containerd_config_version() -> i64 {
    let out = Command::new("containerd").arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    config_version_for(&text)
}

/// [`containerd_config_version`] from `containerd --version`'s output:
/// "containerd github.com/containerd/containerd v1.6.20 …", "… containerd/v2 v2.0.0 …",
/// or, from a build without the `v`, "… containerd/v2 2.3.4".
fn config_version_for(text: &str) -> i64 {
    let release = text.split_whitespace().skip(2).find_map(|w| {
        let mut parts = w.trim_start_matches('v').split('.');
        let major = parts.next()?.parse::<u32>().ok()?;
        let minor = parts.next()?.parse::<u32>().ok()?;
        Some((major, minor))
    });
    match release {
        Some((major, minor)) if major > 2 || (major == 2 && minor >= 3) => 4,
        Some((2, _)) => 3,
        _ => 2,
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

#[cfg(test)]
mod tests {
    use super::config_version_for;

    #[test]
    fn config_version_follows_containerd_release() {
        for (text, version) in [
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n",
                2,
            ),
            (
                "containerd github.com/containerd/containerd v1.7.27 05044ec\n",
                2,
            ),
            (
                "containerd github.com/containerd/containerd/v2 v2.0.0 207ad71\n",
                3,
            ),
            (
                "containerd github.com/containerd/containerd/v2 v2.2.1 abc\n",
                3,
            ),
            ("containerd github.com/containerd/containerd/v2 2.3.4\n", 4),
            (
                "containerd github.com/containerd/containerd/v2 v3.0.0 x\n",
                4,
            ),
            ("", 2),
        ] {
            assert_eq!(config_version_for(text), version, "{text}");
        }
    }
}
