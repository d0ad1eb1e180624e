//! Test workloads built from the C sources in `tests/fixtures/`, shared by the crates'
//! integration tests. Built once per test run into the target's tmp
//! directory, written atomically so concurrent test binaries can share them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn out_dir() -> PathBuf {
    crate::target_tmp("wasm-fixtures")
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).expect("write fixture");
    std::fs::rename(&tmp, path).expect("rename fixture");
}

/// Compiles `tests/fixtures/<name>.c` to a wasm32-wasi preview 1 module with clang.
pub fn c_module(name: &str) -> Vec<u8> {
    let src = crate::fixtures_dir().join(format!("{name}.c"));
    let out = out_dir().join(format!("{name}.wasm"));
    let tmp = out.with_extension(format!("build{}", std::process::id()));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {clang} ({e}): install clang lld wasi-libc libclang-rt-14-dev-wasm32"
            )
        });
    assert!(status.success(), "clang failed on {}", src.display());
    let bytes = std::fs::read(&tmp).expect("read compiled fixture");
    std::fs::rename(&tmp, &out).expect("rename fixture");
    bytes
}

/// The probe program (`tests/fixtures/probe.c`) as a preview 1 module file.
pub fn probe_module() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        c_module("probe");
        out_dir().join("probe.wasm")
    })
}

/// The probe program as a preview 2 component: the module wrapped with wasmtime's
/// preview 1 command adapter, as `wasm-tools component new` does.
pub fn probe_component() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let module = std::fs::read(probe_module()).expect("read probe module");
        let component = wit_component::ComponentEncoder::default()
            .validate(true)
            .module(&module)
            .expect("probe module for the encoder")
            .adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            )
            .expect("preview 1 command adapter")
            .encode()
            .expect("encode the probe component");
        let out = out_dir().join("probe.component.wasm");
        write_atomic(&out, &component);
        out
    })
}
