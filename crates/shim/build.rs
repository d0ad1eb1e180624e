//! Links `containerd-shim-wasm-v1` as a position-dependent executable on Linux.
//!
//! A position-independent executable is relocated at every start: the loader writes the
//! absolute addresses into `.data.rel.ro` (about 1.2 MB here: vtables, string and static
//! references), which turns those pages into private memory in each shim process. Linked
//! with `-no-pie`, the addresses are fixed at link time and the pages stay shared with the
//! file, so each further shim costs only what it really writes. containerd's own shims (Go,
//! non-PIE by default on linux/amd64) are built the same way. The code is still compiled
//! position-independent; only the shim's own image loses load-address randomisation —
//! wasmtime's compiled code, its stacks and heaps are mapped at random addresses as before.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
