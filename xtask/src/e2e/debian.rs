//! containerd releases from Debian's archive, for the e2e and the bench: `containerd/sid`
//! (2.x) and `containerd/trixie` (1.7), downloaded with a private apt configuration and
//! unpacked with `dpkg-deb -x` into a cache outside the checkout. Nothing is installed on
//! the machine: bookworm's own containerd (1.6) stays as apt left it, and the daemons run
//! bookworm's runc, which both take (sid's and trixie's runc need a newer glibc).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context};

use crate::util::run as sh;

/// How long an unpacked suite is reused before it is fetched again: sid moves, and a week
/// keeps a developer's runs quick without testing a stale containerd for long.
const REFRESH_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The keyring a stanza that names none is checked against (Debian's `debian-archive-keyring`).
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Where fetched packages live: `$WASMPOD_CACHE`, else `/var/cache/wasmpod-test` (as root,
/// which the e2e is), else `~/.cache/wasmpod-test`.
pub(crate) fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASMPOD_CACHE") {
        return PathBuf::from(dir);
    }
    if crate::util::is_root() {
        return PathBuf::from("/var/cache/wasmpod-test");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    Path::new(&home).join(".cache/wasmpod-test")
}

/// One `deb` source of the machine: the archive's URI and the keyring it is signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Archive {
    pub(crate) uri: String,
    pub(crate) keyring: String,
}

/// The Debian archive this machine's apt uses, from its deb822 sources
/// (`/etc/apt/sources.list.d/*.sources`) or, failing those, its one-line sources: the first
/// source of Debian's main archive (the security archive carries no containerd).
pub(crate) fn machine_archive() -> anyhow::Result<Archive> {
    let mut stanzas = Vec::new();
    let dir = Path::new("/etc/apt/sources.list.d");
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sources"))
        .collect();
    files.sort();
    for file in &files {
        stanzas.extend(deb822_archives(&fs::read_to_string(file)?));
    }
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        stanzas.extend(one_line_archives(&text));
    }
    stanzas.into_iter().next().with_context(|| {
        format!(
            "no Debian archive in this machine's apt sources ({} or /etc/apt/sources.list)",
            dir.display()
        )
    })
}

/// The `deb` archives of a deb822 sources file, security archives left out.
fn deb822_archives(text: &str) -> Vec<Archive> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_owned())
                })
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types"), field("URIs"), field("Suites"))
        else {
            continue;
        };
        if !types.split_whitespace().any(|t| t == "deb") || suites.contains("-security") {
            continue;
        }
        if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let keyring = field("Signed-By").unwrap_or_else(|| DEFAULT_KEYRING.to_owned());
        for uri in uris.split_whitespace() {
            out.push(Archive {
                uri: uri.to_owned(),
                keyring: keyring.clone(),
            });
        }
    }
    out
}

/// The `deb` archives of a one-line `sources.list`, security archives left out.
fn one_line_archives(text: &str) -> Vec<Archive> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim();
            // `[signed-by=… arch=…]` options, if any.
            let (options, rest) = match rest.strip_prefix('[') {
                Some(r) => r.split_once(']')?,
                None => ("", rest),
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?;
            let suite = words.next()?;
            if suite.contains("-security") {
                return None;
            }
            let keyring = options
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .unwrap_or(DEFAULT_KEYRING);
            Some(Archive {
                uri: uri.to_owned(),
                keyring: keyring.to_owned(),
            })
        })
        .collect()
}

/// `package` from `suite` of the machine's Debian archive, unpacked: the directory that
/// holds its `usr/`. Reused from the cache while younger than a week.
pub(crate) fn unpacked(package: &str, suite: &str) -> anyhow::Result<PathBuf> {
    let dir = cache_root().join("debian").join(suite);
    let root = dir.join(package);
    let stamp = root.join(".unpacked");
    let fresh = fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < REFRESH_AFTER);
    if fresh {
        return Ok(root);
    }
    let archive = machine_archive()?;
    eprintln!(
        "fetching {package}/{suite} from {} into {}",
        archive.uri,
        dir.display()
    );
    let lists = dir.join("lists");
    let cache = dir.join("cache");
    let debs = dir.join("debs");
    for d in [
        lists.join("partial"),
        cache.join("archives/partial"),
        debs.clone(),
    ] {
        fs::create_dir_all(&d)?;
    }
    let sources = dir.join("sources.list");
    fs::write(
        &sources,
        format!(
            "deb [signed-by={}] {} {suite} main\n",
            archive.keyring, archive.uri
        ),
    )?;
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.arg("-qq")
            .arg("-o")
            .arg(format!("Dir::Etc::sourcelist={}", sources.display()))
            .args(["-o", "Dir::Etc::sourceparts=-"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", lists.display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", cache.display()))
            // The machine's installed packages are not this suite's business.
            .args(["-o", "Dir::State::status=/dev/null"])
            .args(["-o", "APT::Sandbox::User=root"])
            // Only the package lists: no translations or AppStream metadata.
            .args([
                "-o",
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            ])
            .args([
                "-o",
                "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
            ])
            .args([
                "-o",
                "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
            ])
            .args(["-o", "Acquire::Languages=none"])
            .args(args)
            .current_dir(&debs);
        cmd
    };
    sh(&mut apt(&["update"]))?;
    for old in fs::read_dir(&debs)?.flatten() {
        fs::remove_file(old.path())?;
    }
    sh(&mut apt(&["download", &format!("{package}/{suite}")]))?;
    let deb = fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package}/{suite} left no .deb"))?;
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(&root)?;
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::write(
        &stamp,
        deb.file_name().unwrap_or_default().as_encoded_bytes(),
    )?;
    Ok(root)
}

/// containerd from `suite`: the directory with its `containerd`, `ctr` and
/// `containerd-shim-runc-v2`.
pub(crate) fn containerd(suite: &str) -> anyhow::Result<PathBuf> {
    let bin = unpacked("containerd", suite)?.join("usr/bin");
    for program in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        ensure!(
            bin.join(program).is_file(),
            "containerd/{suite} has no {program} in {}",
            bin.display()
        );
    }
    let out = Command::new(bin.join("containerd"))
        .arg("--version")
        .output()
        .with_context(|| format!("running containerd/{suite}"))?;
    if !out.status.success() {
        bail!(
            "containerd/{suite} does not run on this machine: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_archive_is_found_in_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /k.gpg\n\n\
                      Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            deb822_archives(deb822),
            vec![Archive {
                uri: "http://deb.example/debian".into(),
                keyring: "/k.gpg".into()
            }]
        );
        let one_line = "# deb http://old/ x main\ndeb http://sec/ bookworm-security main\n\
                        deb [arch=amd64 signed-by=/s.gpg] http://mirror/debian bookworm main\n";
        assert_eq!(
            one_line_archives(one_line),
            vec![Archive {
                uri: "http://mirror/debian".into(),
                keyring: "/s.gpg".into()
            }]
        );
        assert!(deb822_archives("Types: deb-src\nURIs: http://x/\nSuites: sid\n").is_empty());
    }
}
