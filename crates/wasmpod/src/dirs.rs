//! Where wasmpod keeps its cache, store and run state.

use std::path::{Path, PathBuf};

/// The directories of one invocation.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    /// Precompile cache.
    pub(crate) cache: PathBuf,
    /// Run state: one bundle directory per running container.
    pub(crate) state: PathBuf,
    /// The image store.
    pub(crate) images: PathBuf,
}

impl Dirs {
    /// `--root`/`--state` when given; otherwise `/var/lib/wasmpod` and `/run/wasmpod` as
    /// root, and the XDG directories for other users.
    pub(crate) fn resolve(root: Option<&Path>, state: Option<&Path>) -> Self {
        let is_root = crate::sys::euid() == 0;
        let env_dir = |var: &str, fallback: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(fallback)))
                .unwrap_or_else(std::env::temp_dir)
        };
        let cache = match root {
            Some(r) => r.join("cache"),
            None if is_root => PathBuf::from("/var/lib/wasmpod/cache"),
            None => env_dir("XDG_CACHE_HOME", ".cache").join("wasmpod"),
        };
        let images = match root {
            Some(r) => r.join("images"),
            None if is_root => PathBuf::from("/var/lib/wasmpod/images"),
            None => env_dir("XDG_DATA_HOME", ".local/share").join("wasmpod/images"),
        };
        let state = match state {
            Some(s) => s.to_owned(),
            None if is_root => PathBuf::from("/run/wasmpod"),
            None => std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| Path::new(&d).join("wasmpod"))
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("wasmpod-{}", crate::sys::uid()))
                }),
        };
        Self {
            cache,
            state,
            images,
        }
    }
}
