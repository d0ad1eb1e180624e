//! `cargo xtask example static-site [-t REF] [-o OUT]`: builds the static-site example image
//! from its sources — `examples/static-site/site.c` compiled by clang against generated
//! `wasi:http` bindings and made a component (the engine's `http-fixture` example), then
//! `wasmpod build` with the site's files at `/site` and port 8080 exposed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::util::{root, run as sh};

/// The image the example is tagged with unless `-t` says otherwise.
pub(crate) const STATIC_SITE: &str = "localhost/wasmpod-examples/static-site:v1";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut tag = STATIC_SITE.to_owned();
    let mut out = None;
    let mut name = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-t" | "--tag" => tag = it.next().context("-t needs an image name")?.clone(),
            "-o" | "--output" => out = Some(PathBuf::from(it.next().context("-o needs a path")?)),
            "static-site" => name = Some(a.clone()),
            other => bail!("unknown example or flag {other:?}: the example is static-site"),
        }
    }
    if name.is_none() {
        bail!("usage: cargo xtask example static-site [-t REF] [-o OUT.tar]");
    }
    crate::util::require_wasm_toolchain()?;
    let work = root().join("target/examples");
    std::fs::create_dir_all(&work)?;
    let wasm = crate::util::build_http_component("static-site", &work)?;
    let wasmpod = std::env::var("WASMPOD").map(PathBuf::from).ok();
    let mut cmd = match &wasmpod {
        Some(bin) => Command::new(bin),
        None => {
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.current_dir(root())
                .args(["run", "-q", "-p", "wasmpod", "--"]);
            c
        }
    };
    build_args(&mut cmd, &wasm, &tag);
    if let Some(out) = &out {
        cmd.arg("-o").arg(out);
    }
    sh(&mut cmd)?;
    eprintln!(
        "run it: wasmpod run --listen 127.0.0.1:8080 {tag}   (then open http://127.0.0.1:8080/)"
    );
    Ok(())
}

/// `wasmpod build` arguments of the image: the component, the site's files, port 8080.
pub(crate) fn build_args(cmd: &mut Command, wasm: &Path, tag: &str) {
    let public = root().join("examples/static-site/public");
    cmd.arg("build")
        .arg(wasm)
        .args(["-t", tag, "--expose", "8080", "--add"])
        .arg(format!("{}:/site", public.display()));
}
