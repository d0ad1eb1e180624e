//! The container's root filesystem: the snapshot mounts containerd sends with Create
//! (overlayfs, or a bind mount from the native snapshotter), mounted at `bundle/rootfs`
//! and detached on Delete.

use std::path::{Path, PathBuf};

use containerd_shim::protos::api::Mount;

use crate::error::{Error, Result};
use crate::sys;

/// Where the root filesystem goes inside the bundle, as runc's shim puts it.
pub(crate) fn target(bundle: &Path) -> PathBuf {
    bundle.join("rootfs")
}

/// Mounts `mounts` in order at `bundle/rootfs`. Returns whether anything was mounted
/// (containers without snapshot mounts — a Wasm OCI artifact, a pre-made bundle — have
/// none). On failure nothing stays mounted.
pub(crate) async fn mount(id: &str, bundle: &Path, mounts: &[Mount]) -> Result<bool> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = target(bundle);
    std::fs::create_dir_all(&target).map_err(|e| Error::Rootfs {
        id: id.to_owned(),
        reason: format!("creating {}: {e}", target.display()),
    })?;
    for m in mounts {
        if let Err(e) = containerd_shim::asynchronous::util::mount_rootfs(m, &target).await {
            let _ = sys::unmount(&target);
            return Err(Error::Rootfs {
                id: id.to_owned(),
                reason: format!(
                    "mounting {} {} at {}: {e}",
                    m.type_,
                    m.source,
                    target.display()
                ),
            });
        }
    }
    Ok(true)
}

/// Detaches the root filesystem at `bundle/rootfs`; nothing mounted is not an error.
pub(crate) fn unmount(id: &str, bundle: &Path) -> Result<()> {
    let target = target(bundle);
    sys::unmount(&target).map(drop).map_err(|e| Error::Rootfs {
        id: id.to_owned(),
        reason: format!("unmounting {}: {e}", target.display()),
    })
}

/// Whether something is mounted at `bundle/rootfs` (a shim that died left it behind).
pub(crate) fn is_mounted(bundle: &Path) -> bool {
    sys::is_mount_point(&target(bundle))
}

/// Whether the root filesystem at `bundle/rootfs` holds nothing (or is not there): an
/// image without filesystem layers, such as a Wasm OCI artifact pulled by the CRI.
pub(crate) fn is_empty(bundle: &Path) -> bool {
    std::fs::read_dir(target(bundle)).map_or(true, |mut d| d.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_root_filesystem_is_told_apart() {
        let bundle = tempfile::tempdir().unwrap();
        assert!(is_empty(bundle.path()), "no rootfs at all");
        std::fs::create_dir(target(bundle.path())).unwrap();
        assert!(is_empty(bundle.path()), "an empty rootfs");
        std::fs::write(target(bundle.path()).join("app.wasm"), b"\0asm").unwrap();
        assert!(!is_empty(bundle.path()));
    }
}
