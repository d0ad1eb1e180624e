//! The peers a figure is compared with in the same benchmark run: runwasi's wasmtime shim
//! (`containerd-shim-wasmtime-v1`, runtime type `io.containerd.wasmtime.v1`) from
//! `shared/anchors/`, put on the private containerd's PATH and registered as the CRI
//! runtime handler `wasmtime`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;

use anyhow::ensure;

use crate::e2e::{shared_file, Containerd, Flavor};
use crate::util::run as sh;

/// runwasi's runtime type.
pub(crate) const RUNWASI: &str = "io.containerd.wasmtime.v1";
/// The CRI runtime handler (and RuntimeClass) it is registered under.
pub(crate) const RUNWASI_HANDLER: &str = "wasmtime";

const ARCHIVE: &str = "runwasi-containerd-shim-wasmtime-v1-eb9967a.tgz";

/// The runwasi shim archive: `$WASMPOD_RUNWASI_TGZ`, else `shared/anchors/` beside the
/// checkout or above it, else `/work/shared/anchors/`.
fn archive() -> anyhow::Result<PathBuf> {
    shared_file("WASMPOD_RUNWASI_TGZ", "anchors", ARCHIVE, "runwasi's shim")
}

/// Puts runwasi's shim on `env`'s PATH and registers the CRI handler [`RUNWASI_HANDLER`]
/// (containerd restarts to read it). `ctr run --runtime io.containerd.wasmtime.v1` needs
/// only the first.
pub(crate) fn install_runwasi(env: &Containerd) -> anyhow::Result<()> {
    let dir = env.dir.join("runwasi");
    fs::create_dir_all(&dir)?;
    sh(Command::new("tar")
        .arg("xzf")
        .arg(archive()?)
        .arg("-C")
        .arg(&dir))?;
    let binary = dir.join("containerd-shim-wasmtime-v1");
    ensure!(
        binary.is_file(),
        "{} is not in the archive",
        binary.display()
    );
    symlink(&binary, env.dir.join("bin/containerd-shim-wasmtime-v1"))?;
    match env.flavor {
        Flavor::V2 => {
            let conf = env.dir.join("conf.d");
            fs::create_dir_all(&conf)?;
            fs::write(
                conf.join("runwasi.toml"),
                format!(
                    "version = 4\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{RUNWASI_HANDLER}]\n  \
                     runtime_type = '{RUNWASI}'\n"
                ),
            )?;
        }
        Flavor::V1 => {
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
