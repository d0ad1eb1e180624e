//! Test workloads built from the C sources in `tests/fixtures/`, shared by the crates'
//! integration tests. Built once per test run into the target's tmp
//! directory, written atomically so concurrent test binaries can share them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn out_dir() -> PathBuf {
    crate::target_tmp("wasm-fixtures")
}

/// Compiles `tests/fixtures/<name>.c` to a wasm32-wasi preview 1 module with clang.
pub fn c_module(name: &str) -> Vec<u8> {
    let src = crate::fixtures_dir().join(format!("{name}.c"));
    let out = crate::c_file_module(&src, name);
    std::fs::read(&out).expect("read compiled fixture")
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
        crate::write_atomic(&out, &component);
        out
    })
}
