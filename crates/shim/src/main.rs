//! `containerd-shim-wasm-v1`: containerd starts it for runtime `io.containerd.wasm.v1`.

fn main() {
    shim::main();
}
