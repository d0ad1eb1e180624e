//! The peers a figure is compared with in the same benchmark run: runwasi's wasmtime shim
//! (`containerd-shim-wasmtime-v1`, runtime type `io.containerd.wasmtime.v1`), when
//! `$WASMPOD_RUNWASI_SHIM` names its binary: put on the private containerd's PATH and
//! registered as the CRI runtime handler `wasmtime`. Nothing in the repository builds or
//! holds runwasi; without the variable each section says it skipped it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use anyhow::{ensure, Context};

use crate::e2e::{Containerd, Flavor};

/// runwasi's runtime type.
pub(crate) const RUNWASI: &str = "io.containerd.wasmtime.v1";
/// The CRI runtime handler (and RuntimeClass) it is registered under.
pub(crate) const RUNWASI_HANDLER: &str = "wasmtime";

/// The variable that names runwasi's `containerd-shim-wasmtime-v1` binary.
const SHIM_VAR: &str = "WASMPOD_RUNWASI_SHIM";

/// runwasi's shim binary, from [`SHIM_VAR`].
fn binary() -> anyhow::Result<PathBuf> {
    let binary = PathBuf::from(
        std::env::var_os(SHIM_VAR)
            .with_context(|| format!("{SHIM_VAR} does not name runwasi's shim binary"))?,
    );
    ensure!(
        binary.is_file(),
        "{SHIM_VAR}={}: no such file",
        binary.display()
    );
    Ok(binary)
}

/// Puts runwasi's shim on `env`'s PATH and registers the CRI handler [`RUNWASI_HANDLER`]
/// (containerd restarts to read it). `ctr run --runtime io.containerd.wasmtime.v1` needs
/// only the first.
pub(crate) fn install_runwasi(env: &Containerd) -> anyhow::Result<()> {
    let binary = binary()?;
    symlink(&binary, env.dir.join("bin/containerd-shim-wasmtime-v1"))?;
    match env.flavor {
        Flavor::V2 => {
            let conf = env.dir.join("conf.d");
            fs::create_dir_all(&conf)?;
            fs::write(
                conf.join("runwasi.toml"),
                format!(
                    "version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{RUNWASI_HANDLER}]\n  \
                     runtime_type = '{RUNWASI}'\n"
                ),
            )?;
        }
        Flavor::V1_7 | Flavor::V1_6 => {
            let config = env.dir.join("config.toml");
            let mut text = fs::read_to_string(&config)?;
            text.push_str(&format!(
                "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{RUNWASI_HANDLER}]\n  \
                 runtime_type = \"{RUNWASI}\"\n"
            ));
            fs::write(&config, text)?;
        }
    }
    env.restart()
}
