//! Links `containerd-shim-wasm-v1` as a position-dependent executable on Linux, with the
//! functions a shim runs side by side.
//!
//! A position-independent executable is relocated at every start: the loader writes the
//! absolute addresses into `.data.rel.ro` (about 1.2 MB here: vtables, string and static
//! references), which turns those pages into private memory in each shim process. Linked
//! with `-no-pie`, the addresses are fixed at link time and the pages stay shared with the
//! file, so each further shim costs only what it really writes. containerd's own shims (Go,
//! non-PIE by default on linux/amd64) are built the same way. The code is still compiled
//! position-independent; only the shim's own image loses load-address randomisation —
//! wasmtime's compiled code, its stacks and heaps are mapped at random addresses as before.
//!
//! `text.order` lists the functions a shim runs, as `cargo xtask orderfile` found them
//! (the warm path first, then the compiler's); the linker (rust-lld, the default on
//! x86_64 Linux since Rust 1.90) places them first, in that order. A shim maps the pages
//! it runs code on, and 64 KiB around each one it faults in: with its code packed, a shim
//! holds a few MiB of text instead of over 11. Names the list has and the build does not
//! (a dependency bumped since it was made) are skipped: the layout is then only less
//! good, never wrong. `WASMPOD_TEXT_ORDER=0` links without it.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=text.order");
    println!("cargo:rerun-if-env-changed=WASMPOD_TEXT_ORDER");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-no-pie");
    let order =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("text.order");
    if order.is_file()
        && std::env::var("WASMPOD_TEXT_ORDER").as_deref() != Ok("0")
        && links_with_lld()
    {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the binary is linked by rust-lld, which reads a symbol ordering file: the
/// default on x86_64 Linux from Rust 1.90, unless a linker of one's own is configured.
fn links_with_lld() -> bool {
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    target == "x86_64-unknown-linux-gnu"
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !["linker", "link-self-contained", "fuse-ld"]
            .iter()
            .any(|f| flags.contains(f))
        && rustc_minor().is_some_and(|minor| minor >= 90)
}

/// The minor version of the rustc cargo builds with (`rustc 1.95.0 (...)`: 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var_os("RUSTC")?;
    let out = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8(out.stdout).ok()?;
    version
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}
