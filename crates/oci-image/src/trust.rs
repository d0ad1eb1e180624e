//! Whether a directory the runtime keeps trusted content in can be changed by anyone else.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Checks that nobody but this process's user (and root) can change what is under `dir`:
/// `dir` belongs to this user and is writable by nobody else, and every directory above
/// it — as written and with symlinks resolved — belongs to this user or root and is
/// writable by nobody else, unless it is sticky (like `/tmp`, where others cannot rename
/// what is not theirs). A directory another user made first (`/tmp/wasmpod` created by
/// someone to swap its contents later) fails here, naming the directory and its owner.
///
/// The image store runs this at [`Store::open`](crate::Store::open); other programs that
/// run what they find in a directory (the CLI's run state) can run it on theirs.
pub fn check_private_dir(dir: &Path) -> Result<()> {
    let me = rustix::process::geteuid().as_raw();
    let unsafe_dir = |path: &Path, reason: String| Error::UnsafeDirectory {
        path: path.to_owned(),
        reason,
    };
    let meta = fs::symlink_metadata(dir).map_err(Error::io(dir))?;
    if !meta.is_dir() {
        return Err(unsafe_dir(dir, "not a directory".into()));
    }
    if meta.uid() != me {
        return Err(unsafe_dir(
            dir,
            format!(
                "belongs to uid {}, not to this process's uid {me}",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(
            dir,
            format!("writable by others (mode {:o})", meta.mode() & 0o7777),
        ));
    }
    let resolved = fs::canonicalize(dir).map_err(Error::io(dir))?;
    for chain in [dir, resolved.as_path()] {
        for above in chain.ancestors().skip(1) {
            if above.as_os_str().is_empty() {
                continue;
            }
            // Following links here: a link is as safe as the directory that holds it,
            // which is the next one up, checked too.
            let meta = fs::metadata(above).map_err(Error::io(above))?;
            if meta.uid() != me && meta.uid() != 0 {
                return Err(unsafe_dir(
                    above,
                    format!(
                        "holds {} and belongs to uid {}: that user could replace what is in it",
                        dir.display(),
                        meta.uid()
                    ),
                ));
            }
            let sticky = meta.mode() & 0o1000 != 0;
            if meta.mode() & 0o022 != 0 && !sticky {
                return Err(unsafe_dir(
                    above,
                    format!(
                        "holds {} and is writable by others (mode {:o})",
                        dir.display(),
                        meta.mode() & 0o7777
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_directory_passes() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("images");
        fs::create_dir(&store).unwrap();
        check_private_dir(&store).unwrap();
    }

    #[test]
    fn writable_by_others_is_refused_naming_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("images");
        fs::create_dir(&store).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_private_dir(&store).unwrap_err().to_string();
        assert!(
            e.contains(&store.display().to_string()) && e.contains("mode 777"),
            "{e}"
        );
        // The directory above it, open to all without the sticky bit.
        fs::set_permissions(&store, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_private_dir(&store).unwrap_err().to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        assert!(e.contains("writable by others"), "{e}");
        // Sticky, as /tmp: others cannot rename what is ours in it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        check_private_dir(&store).unwrap();
    }

    #[test]
    fn a_directory_another_user_made_is_refused() {
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("skipped: needs root to give a directory to another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // The attacker's WASMPOD_ROOT, and the store root made in it.
        let root = dir.path().join("wasmpod");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
        let store = root.join("images");
        fs::create_dir(&store).unwrap();
        let e = check_private_dir(&store).unwrap_err().to_string();
        assert!(
            e.contains(&root.display().to_string()) && e.contains("belongs to uid 65534"),
            "{e}"
        );
        std::os::unix::fs::chown(&store, Some(65534), Some(65534)).unwrap();
        let e = check_private_dir(&store).unwrap_err().to_string();
        assert!(
            e.contains("belongs to uid 65534, not to this process's uid 0"),
            "{e}"
        );
        // A link to a private directory, from a directory only we can write, is fine.
        let private = dir.path().join("private");
        fs::create_dir(&private).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        check_private_dir(&link).unwrap_err(); // the link itself is not a directory
        check_private_dir(&private).unwrap();
    }
}
