//! What wasmpod's tests share, as one dev-dependency of the crates and of xtask: a private
//! OCI registry ([`registry`]) and a bearer-token front for it ([`token_proxy`]), hostile
//! workloads as WebAssembly text ([`hostile`]), the official WASI testsuite's runners
//! ([`wasi_testsuite`], [`wasi_p3`]) and, with the `components` feature, the C fixtures
//! built to wasm32-wasi modules and `wasi:http` components (`fixtures`, `http_fixture`);
//! with `otlp`, an OTLP trace receiver (`otlp`).
//!
//! Test code: it panics with a message where a test could not go on.

#![forbid(unsafe_code)]
#![allow(
    missing_docs,
    reason = "test helpers, documented where they are not obvious"
)]

pub mod conformance;
#[cfg(feature = "components")]
pub mod fixtures;
pub mod hostile;
#[cfg(feature = "components")]
pub mod http_fixture;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod registry;
pub mod token_proxy;
pub mod wasi_p3;
pub mod wasi_testsuite;

use std::path::{Path, PathBuf};

/// The repository's `tests/fixtures`: where this crate was built, or — for a binary built
/// in another checkout that shared the target directory, whose path is gone — under the
/// directory it runs in (xtask runs everything from the repository's root).
pub fn fixtures_dir() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    if built.is_dir() {
        return built;
    }
    std::env::current_dir()
        .map(|d| d.join("tests/fixtures"))
        .ok()
        .filter(|d| d.is_dir())
        .unwrap_or(built)
}

/// A directory for built fixtures under cargo's target directory (`target/tmp/NAME`),
/// shared by every test binary and the xtask of one checkout.
pub fn target_tmp(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // target/<profile>/deps/<test binary>, target/<profile>/examples/<example>,
            // target/<profile>/<binary>
            let exe = std::env::current_exe().ok()?;
            let mut dir = exe.parent()?;
            if dir.ends_with("deps") || dir.ends_with("examples") {
                dir = dir.parent()?;
            }
            Some(dir.parent()?.to_owned())
        })
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("tmp").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).expect("write fixture");
    std::fs::rename(&tmp, path).expect("rename fixture");
}

/// Compiles the C file `src` to a wasm32-wasi preview 1 module with clang, as
/// `<target>/tmp/wasm-fixtures/<name>.wasm`; returns that path.
pub fn c_file_module(src: &Path, name: &str) -> PathBuf {
    let out = target_tmp("wasm-fixtures").join(format!("{name}.wasm"));
    let tmp = out.with_extension(format!("build{}", std::process::id()));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = std::process::Command::new(&clang)
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(&tmp)
        .arg(src)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {clang} ({e}): install clang lld wasi-libc libclang-rt-14-dev-wasm32"
            )
        });
    assert!(status.success(), "clang failed on {}", src.display());
    std::fs::rename(&tmp, &out).expect("rename fixture");
    out
}
