//! Making a pod's volumes on the node before its containers are created, as the kubelet's
//! volume manager does for `emptyDir`, `hostPath`, `configMap` and `secret`.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::plan::VolumeSetup;

/// Creates (or checks) every volume. ConfigMap and Secret files are written afresh.
pub fn prepare(volumes: &[VolumeSetup]) -> Result<()> {
    for volume in volumes {
        match volume {
            VolumeSetup::EmptyDir { path } => {
                std::fs::create_dir_all(path).map_err(Error::io(path))?;
                // Writable by whatever user the container runs as, as the kubelet makes it.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
                    .map_err(Error::io(path))?;
            }
            VolumeSetup::HostPath { path, kind } => host_path(path, kind)?,
            VolumeSetup::Files { path, files } => {
                if path.exists() {
                    std::fs::remove_dir_all(path).map_err(Error::io(path))?;
                }
                std::fs::create_dir_all(path).map_err(Error::io(path))?;
                for (name, (bytes, mode)) in files {
                    let file = path.join(name);
                    if let Some(parent) = file.parent() {
                        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
                    }
                    std::fs::write(&file, bytes).map_err(Error::io(&file))?;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
                        .map_err(Error::io(&file))?;
                }
            }
        }
    }
    Ok(())
}

/// Checks a `hostPath` volume against its `type`, creating it for the `...OrCreate` types.
fn host_path(path: &Path, kind: &str) -> Result<()> {
    let wrong = |expected: &str| Error::Io {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("hostPath type {kind} needs {expected}"),
        ),
    };
    let meta = std::fs::metadata(path);
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(wrong("a directory")),
            Err(_) => {
                std::fs::create_dir_all(path).map_err(Error::io(path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(Error::io(path))
            }
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(wrong("a regular file")),
            Err(_) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
                }
                std::fs::write(path, b"").map_err(Error::io(path))
            }
        },
        "Directory" if meta.as_ref().is_ok_and(|m| m.is_dir()) => Ok(()),
        "Directory" => Err(wrong("an existing directory")),
        "File" if meta.as_ref().is_ok_and(|m| m.is_file()) => Ok(()),
        "File" => Err(wrong("an existing regular file")),
        "Socket" if meta.as_ref().is_ok_and(|m| m.file_type().is_socket()) => Ok(()),
        "Socket" => Err(wrong("an existing socket")),
        "CharDevice" if meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) => Ok(()),
        "CharDevice" => Err(wrong("an existing character device")),
        "BlockDevice" if meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()) => Ok(()),
        "BlockDevice" => Err(wrong("an existing block device")),
        other => Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unknown hostPath type {other:?}"),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn volumes_are_made() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let files = BTreeMap::from([
            ("a.txt".to_owned(), (b"A".to_vec(), 0o400)),
            ("sub/b.txt".to_owned(), (b"B".to_vec(), 0o644)),
        ]);
        prepare(&[
            VolumeSetup::EmptyDir {
                path: d.join("empty"),
            },
            VolumeSetup::HostPath {
                path: d.join("host"),
                kind: "DirectoryOrCreate".into(),
            },
            VolumeSetup::HostPath {
                path: d.join("f/file"),
                kind: "FileOrCreate".into(),
            },
            VolumeSetup::Files {
                path: d.join("cm"),
                files: files.clone(),
            },
        ])
        .unwrap();
        assert!(d.join("empty").is_dir() && d.join("host").is_dir() && d.join("f/file").is_file());
        assert_eq!(std::fs::read(d.join("cm/sub/b.txt")).unwrap(), b"B");
        let mode = std::fs::metadata(d.join("cm/a.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o400);
        // Preparing again replaces stale files.
        std::fs::write(d.join("cm/stale"), "x").unwrap();
        prepare(&[VolumeSetup::Files {
            path: d.join("cm"),
            files,
        }])
        .unwrap();
        assert!(!d.join("cm/stale").exists());
    }

    #[test]
    fn host_path_types_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = prepare(&[VolumeSetup::HostPath {
            path: missing.clone(),
            kind: "Directory".into(),
        }])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("missing") && e.contains("an existing directory"),
            "{e}"
        );
        let e = prepare(&[VolumeSetup::HostPath {
            path: dir.path().into(),
            kind: "File".into(),
        }])
        .unwrap_err()
        .to_string();
        assert!(e.contains("regular file"), "{e}");
        let e = prepare(&[VolumeSetup::HostPath {
            path: missing,
            kind: "Weird".into(),
        }])
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown hostPath type \"Weird\""), "{e}");
    }
}
