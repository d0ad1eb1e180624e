//! `wasmpod install` as its DaemonSet runs it: inside the init container's 64 MiB memory
//! limit, twice in a row, with a shim the size of a release build with debug info.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

/// A memory cgroup of its own with `limit` bytes, removed on drop (v1 or v2).
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    fn new(limit: u64) -> Option<Self> {
        let name = format!("wasmpod-install-test-{}", std::process::id());
        let (dir, v2) = if Path::new("/sys/fs/cgroup/memory").is_dir() {
            (Path::new("/sys/fs/cgroup/memory").join(name), false)
        } else if Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
            (Path::new("/sys/fs/cgroup").join(name), true)
        } else {
            return None;
        };
        std::fs::create_dir(&dir).ok()?;
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(dir.join(file), limit.to_string()).unwrap();
        if !v2 {
            // Swap would hide an overrun.
            let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
        }
        Some(Self { dir, v2 })
    }

    /// The highest usage seen, where the kernel reports it.
    fn peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `size` bytes that differ from block to block (so no layer of the system can share them).
fn write_big_file(path: &Path, size: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..size / block.len() {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}

fn same_file(a: &Path, b: &Path) -> bool {
    let out = Command::new("cmp").arg(a).arg(b).output().unwrap();
    out.status.success()
}

#[test]
fn install_twice_within_the_daemonsets_64_mib() {
    if sys_euid() != 0 {
        eprintln!("skipped: creating a memory cgroup needs root");
        return;
    }
    const LIMIT: u64 = 64 << 20;
    let Some(cgroup) = MemoryCgroup::new(LIMIT) else {
        eprintln!("skipped: no memory cgroup controller mounted");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let shim = dir.path().join("containerd-shim-wasm-v1");
    // The size of a release shim with line tables (199 MB measured): three times the limit.
    write_big_file(&shim, 200 << 20);
    let config = dir.path().join("etc/containerd/config.toml");
    let bin = dir.path().join("usr/local/bin");
    for run in ["first", "second"] {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                cgroup.dir.display()
            ))
            .arg(env!("CARGO_BIN_EXE_wasmpod"))
            .args([
                "install",
                "--config-version",
                "2",
                "--restart-command",
                "true",
            ])
            .arg("--shim")
            .arg(&shim)
            .arg("--containerd-config")
            .arg(&config)
            .arg("--bin-dir")
            .arg(&bin);
        let (out, peak_rss) = output_and_peak_memory(cmd);
        assert_code(&out, 0);
        let said = stdout(&out);
        if run == "second" {
            assert!(said.contains("nothing changed"), "{run} run: {said}");
        } else {
            assert!(said.contains("installed"), "{run} run: {said}");
        }
        // The cgroup's own peak counts the page cache the copy passes through (reclaimed
        // as it goes); the process's resident memory is what the copy itself costs.
        eprintln!(
            "{run} install: peak RSS {:.1} MiB; the cgroup's peak {} MiB of its {} MiB limit",
            peak_rss as f64 / f64::from(1 << 20),
            cgroup.peak().unwrap_or_default() >> 20,
            LIMIT >> 20
        );
        assert!(
            peak_rss < 32 << 20,
            "{run} install: peak RSS {peak_rss} bytes for a {} MiB shim: the copy is not streamed",
            200
        );
    }
    assert!(same_file(&shim, &bin.join("containerd-shim-wasm-v1")));
}

fn sys_euid() -> u32 {
    sys::euid()
}
