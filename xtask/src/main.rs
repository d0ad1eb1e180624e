//! `cargo xtask`: the project's own tasks. This file only dispatches; one file per task.

mod bench;
mod e2e;
mod example;
mod test;
#[cfg(test)]
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
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}
