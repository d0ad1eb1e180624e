//! Lua 5.4's sources for the CPU-bound workload, from a registry package at bench time:
//! the source distribution of `lupa` on PyPI carries them in `third-party/lua54/`. The
//! sdist is found through PyPI's JSON API, its sha256 checked against the pinned one,
//! and the Lua directory unpacked into the cache outside the checkout.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};

/// The release of `lupa` whose sdist carries Lua 5.4.8.
const LUPA: &str = "2.8";
/// That sdist's sha256, as PyPI lists it.
const LUPA_SHA256: &str = "d8022641b9ec8ecf2c5ecbe9f47e5a70e0b87c4b5ae921b92cb02a638e0acd08";
/// Where in the sdist Lua's sources are.
const LUA_DIR: &str = "third-party/lua54/";

/// The directory holding Lua's `onelua.c` and headers: from the cache, else fetched.
pub(super) fn sources() -> anyhow::Result<PathBuf> {
    let dir = crate::e2e::debian::cache_root().join(format!("pypi/lupa-{LUPA}"));
    let lua = dir.join("lua54");
    if lua.join("onelua.c").is_file() && lua.join(".complete").is_file() {
        return Ok(lua);
    }
    fs::create_dir_all(&dir)?;
    let sdist = dir.join(format!("lupa-{LUPA}.tar.gz"));
    if !sdist.is_file() || sha256_of(&sdist)? != LUPA_SHA256 {
        download(&sdist)?;
    }
    let digest = sha256_of(&sdist)?;
    ensure!(
        digest == LUPA_SHA256,
        "lupa-{LUPA}.tar.gz from PyPI has sha256 {digest}, not the pinned {LUPA_SHA256}"
    );
    if lua.exists() {
        fs::remove_dir_all(&lua)?;
    }
    unpack_lua(&sdist, &lua)?;
    ensure!(
        lua.join("onelua.c").is_file(),
        "lupa-{LUPA}.tar.gz has no {LUA_DIR}onelua.c"
    );
    fs::write(lua.join(".complete"), LUPA_SHA256)?;
    Ok(lua)
}

/// Fetches the sdist's address from PyPI's JSON API, then the sdist, into `to`.
fn download(to: &Path) -> anyhow::Result<()> {
    let index = "https://pypi.org/pypi/lupa/json";
    eprintln!("fetching lupa {LUPA}'s sdist (Lua 5.4's sources) from PyPI");
    let listing = curl(index)?;
    let listing: serde_json::Value =
        serde_json::from_slice(&listing).with_context(|| format!("{index} is not JSON"))?;
    let url = listing["releases"][LUPA]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["packagetype"] == "sdist")
        .and_then(|u| u["url"].as_str())
        .with_context(|| format!("{index} lists no sdist of lupa {LUPA}"))?;
    let partial = to.with_extension("partial");
    fs::write(&partial, curl(url)?)?;
    fs::rename(&partial, to)?;
    Ok(())
}

fn curl(url: &str) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("curl")
        .args(["-fsSL", "--retry", "3", "--max-time", "300", url])
        .output()
        .context("running curl (apt-get install curl)")?;
    if !out.status.success() {
        bail!(
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    ensure!(out.status.success(), "sha256sum {}", path.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// The files under [`LUA_DIR`] of the sdist, flat into `into` (nothing else is written).
fn unpack_lua(sdist: &Path, into: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(into)?;
    let file = fs::File::open(sdist)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.into_owned();
        let path = path.to_string_lossy();
        // `lupa-2.8/third-party/lua54/NAME`, one level: Lua's sources are flat.
        let Some(name) = path.split_once(LUA_DIR).map(|(_, n)| n.to_owned()) else {
            continue;
        };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        fs::write(into.join(&name), bytes)?;
    }
    Ok(())
}
