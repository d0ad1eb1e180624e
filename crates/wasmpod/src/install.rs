//! `wasmpod install`: the shim onto this node and the `wasm` runtime into containerd's
//! config; containerd restarted only when something changed.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use cri::install::{InstallOptions, SHIM_BINARY};

use crate::cli::{InstallArgs, NodeArgs, UninstallArgs};

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
    let node = &args.node;
    let options = InstallOptions {
        runtime_options: runtime_options(&args.options)?,
        shim,
        new_config_version: args
            .config_version
            .unwrap_or_else(containerd_config_version),
        force: args.force,
        ..options_for(node)
    };
    let report = cri::install(&options)?;
    if let Some(path) = &report.shim_installed {
        println!("installed {}", path.display());
    }
    if report.config_changed {
        let how = if report.drop_in {
            format!(", imported by {}", node.containerd_config.display())
        } else if report.template {
            ", a k3s/RKE2 template".to_owned()
        } else {
            String::new()
        };
        println!(
            "added runtime handler {:?} ({}) to {} (config version {}{how})",
            node.handler,
            cri::install::RUNTIME_TYPE,
            report.config_file.display(),
            report.config_version
        );
    }
    if let Some(backup) = &report.backup {
        println!("original config kept as {}", backup.display());
    }
    if !report.needs_restart() {
        println!(
            "nothing changed: {} already runs wasm containers",
            report.config_file.display()
        );
    } else {
        if report.restart_pending && !report.config_changed && report.shim_installed.is_none() {
            println!("an earlier install's containerd restart is still pending");
        }
        restart(node, &options)?;
        if node.no_restart {
            return Ok(()); // not ready until containerd restarts: no label
        }
    }
    if let Some(node) = &node.label_node {
        label(node, Some(crate::node::READY))?;
        println!(
            "labelled node {node} {}={}",
            crate::node::LABEL,
            crate::node::READY
        );
    }
    Ok(())
}

/// Sets (or removes) the node's wasmpod.io/runtime label through the API server.
fn label(node: &str, value: Option<&str>) -> anyhow::Result<()> {
    let api = crate::node::InCluster::from_env()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(api.label(node, crate::node::LABEL, value))
}

/// `wasmpod uninstall`: the handler, its options and the shim taken away.
pub(crate) fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let node = &args.node;
    let options = InstallOptions {
        shim: (!args.keep_shim).then(PathBuf::new),
        ..options_for(node)
    };
    if let Some(node) = &node.label_node {
        // First, so that nothing new is scheduled onto a node losing its runtime.
        label(node, None)?;
        println!("removed label {} from node {node}", crate::node::LABEL);
    }
    let report = cri::install::uninstall(&options)?;
    if let Some(file) = &report.config_edited {
        println!(
            "removed runtime handler {:?} from {}",
            node.handler,
            file.display()
        );
    }
    for file in &report.files_removed {
        println!("removed {}", file.display());
    }
    if let Some(shim) = &report.shim_removed {
        println!("removed {}", shim.display());
    }
    if !report.needs_restart() {
        println!(
            "nothing to remove: handler {:?} is not installed",
            node.handler
        );
        return Ok(());
    }
    restart(node, &options)
}

/// The options `node`'s flags give; the rest as an uninstall needs them (no shim, no
/// handler options), for install to fill in.
fn options_for(node: &NodeArgs) -> InstallOptions {
    InstallOptions {
        config: node.containerd_config.clone(),
        handler: node.handler.clone(),
        runtime_options: Vec::new(),
        shim: None,
        bin_dir: node.bin_dir.clone(),
        new_config_version: 2,
        host_root: node.host_root.clone(),
        force: false,
    }
}

/// Restarts containerd with `--restart-command` (or says why not, with `--no-restart`:
/// the operator restarts it) and records that nothing is pending any more; a failed
/// restart stays pending, so the next install or uninstall retries it.
fn restart(node: &NodeArgs, options: &InstallOptions) -> anyhow::Result<()> {
    let command = &node.restart_command;
    if node.no_restart {
        println!("containerd not restarted (--no-restart): restart it to use the change");
    } else {
        println!("restarting containerd: {command}");
        let status = Command::new("sh")
            .args(["-c", command])
            .status()
            .with_context(|| format!("running {command:?}"))?;
        if !status.success() {
            bail!("{command:?} failed ({status}); the restart stays pending: the next `wasmpod install` retries it");
        }
    }
    cri::install::restarted(options)?;
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
