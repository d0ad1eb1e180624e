//! `cargo xtask`: the project's own tasks. This file only dispatches; one file per task.

#![deny(unsafe_code)]

mod bench;
mod e2e;
mod example;
mod fuzz;
mod orderfile;
#[allow(
    unsafe_code,
    reason = "the system call std has no API for, behind safe functions"
)]
mod sys;
mod test;
mod tidy;
mod util;

use anyhow::bail;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test    fmt check, clippy (-D warnings), docs, every test of the workspace, then the e2e
  e2e     the shim under a private containerd (as root): ctr run, kill, mounts, restart,
          and pods through its CRI plugin with `wasmpod pod`
          [CHECK...] runs only the checks whose names contain one of the words
          --kind: the same on a kind cluster (needs docker, kind, kubectl)
  bench   startup, compile/cache and throughput figures (release build)
          --load [CYCLES]: ctr run --rm cycles 8 at a time, ours against runc (as root)
  tidy    the rules ARCHITECTURE.md states: crate graph, wasmtime only in wasm-engine,
          docs and unsafe attributes, unsafe only in sys modules, file length, doc lines
  fuzz    [--seconds N] [TARGET...]: each fuzz target in fuzz/ for N seconds (60)
  orderfile
          which of the shim's functions run, for the linker to put side by side:
          crates/shim/text.order (as root: a loop device and a private containerd)
  example static-site [-t REF] [-o OUT.tar]: builds the static-site example image from
          its sources (a wasi:http component serving files from its own root)
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("e2e") => e2e::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("example") => example::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("tidy") => tidy::run(&args[1..]),
        Some("orderfile") => orderfile::run(&args[1..]),
        // For the e2e: connect to a unix socket as whichever user runs this; exit 0 when
        // connected, 13 when refused for permissions, 1 otherwise.
        Some("__connect") => {
            let path = args.get(1).map(String::as_str).unwrap_or_default();
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => std::process::exit(0),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    std::process::exit(13)
                }
                Err(e) => {
                    eprintln!("{path}: {e}");
                    std::process::exit(1)
                }
            }
        }
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}
