//! `containerd-shim-wasm-v1`: containerd starts it for runtime `io.containerd.wasm.v1`.

#![deny(unsafe_code)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, reason = "exports `pow` for the C ABI: sys.rs says why")]
#[path = "main/sys.rs"]
mod sys;

fn main() {
    shim::main();
}
