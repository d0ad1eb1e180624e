//! `containerd-shim-wasm-v1`: containerd starts it for runtime `io.containerd.wasm.v1`.

#![forbid(unsafe_code)]

fn main() {
    shim::main();
}
