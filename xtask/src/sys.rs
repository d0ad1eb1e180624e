//! The system calls xtask makes itself: which pages of a file are in the page cache, and
//! dropping them from it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context};

/// The page size the kernel caches files in.
pub(crate) const PAGE: u64 = 4096;

/// For each page of the file at `path`, whether it is in the page cache now (`mincore(2)`
/// on a read-only mapping of it, which faults nothing in).
pub(crate) fn cached_pages(path: &Path) -> anyhow::Result<Vec<bool>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = usize::try_from(file.metadata()?.len())?;
    if len == 0 {
        return Ok(Vec::new());
    }
    let pages = len.div_ceil(PAGE as usize);
    let mut vec = vec![0u8; pages];
    // SAFETY: a fresh shared read-only mapping of the whole file, which nothing reads: it
    // is only handed to mincore and unmapped before the function returns. `vec` has one
    // byte per page of it, as mincore writes.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if addr == libc::MAP_FAILED {
            bail!(
                "mapping {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        let r = libc::mincore(addr, len, vec.as_mut_ptr());
        let err = std::io::Error::last_os_error();
        libc::munmap(addr, len);
        if r != 0 {
            bail!("mincore of {}: {err}", path.display());
        }
    }
    Ok(vec.into_iter().map(|b| b & 1 == 1).collect())
}

/// Drops the file's pages from the page cache (those no process maps).
pub(crate) fn evict(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: posix_fadvise on an open descriptor only advises the kernel.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        bail!(
            "posix_fadvise of {}: {}",
            path.display(),
            std::io::Error::from_raw_os_error(r)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_just_read_is_cached_page_by_page() {
        let dir = std::env::temp_dir().join(format!("xtask-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("three-pages-and-a-bit");
        std::fs::write(&path, vec![7u8; 3 * PAGE as usize + 1]).expect("writing");
        assert_eq!(
            std::fs::read(&path).expect("reading").len(),
            3 * PAGE as usize + 1
        );
        let pages = cached_pages(&path).expect("mincore");
        assert_eq!(pages, vec![true; 4], "4 pages, each just read");
        evict(&path).expect("fadvise");
        std::fs::write(dir.join("empty"), b"").expect("writing");
        assert!(cached_pages(&dir.join("empty"))
            .expect("mincore")
            .is_empty());
        assert!(cached_pages(&dir.join("missing"))
            .expect_err("no such file")
            .to_string()
            .contains("missing"));
        std::fs::remove_dir_all(&dir).expect("cleaning up");
    }
}
