//! Which entry of an image index a wasm runtime runs: a wasm platform first (`wasip2`,
//! `wasip1`, `wasi` on `wasm`), then the host's `linux/<arch>`; a lone entry without a
//! platform is taken as it is.

use oci_spec::image::{Descriptor, ImageIndex};

/// The wasm platforms, most preferred first (os, architecture).
pub const WASM_PLATFORMS: [(&str, &str); 3] =
    [("wasip2", "wasm"), ("wasip1", "wasm"), ("wasi", "wasm")];

/// This machine's architecture as OCI platforms name it (`amd64`, `arm64`, ...).
pub fn host_arch() -> &'static str {
    oci_arch(std::env::consts::ARCH)
}

/// Rust's name of an architecture as OCI's (`x86_64` → `amd64`, `aarch64` → `arm64`).
pub fn oci_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The rank of platform `os/arch` on a host of architecture `host_arch` (lower is
/// preferred); `None` for a platform this host does not run.
pub fn rank(os: &str, arch: &str, host_arch: &str) -> Option<usize> {
    if let Some(i) = WASM_PLATFORMS
        .iter()
        .position(|&(o, a)| o == os && a == arch)
    {
        return Some(i);
    }
    (os == "linux" && arch == host_arch).then_some(WASM_PLATFORMS.len())
}

/// The index entry to run on a host of architecture `host_arch` (pass [`host_arch()`]): the
/// best ranked, the first of equals; a lone entry without a platform; else `None`.
pub fn pick<'a>(index: &'a ImageIndex, host_arch: &str) -> Option<&'a Descriptor> {
    ranked(index, host_arch).into_iter().next()
}

/// Every index entry this host runs, the one [`pick`] takes first and the others in the
/// order it would prefer them (a store may hold only some of them: containerd keeps the
/// content of the platform it unpacked).
pub fn ranked<'a>(index: &'a ImageIndex, host_arch: &str) -> Vec<&'a Descriptor> {
    let entries = index.manifests();
    let mut ranked: Vec<(usize, usize, &Descriptor)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let p = d.platform().as_ref()?;
            let rank = rank(
                &p.os().to_string(),
                &p.architecture().to_string(),
                host_arch,
            )?;
            Some((rank, i, d))
        })
        .collect();
    ranked.sort_by_key(|&(rank, i, _)| (rank, i));
    if ranked.is_empty() {
        return match entries.as_slice() {
            [only] if only.platform().is_none() => vec![only],
            _ => Vec::new(),
        };
    }
    ranked.into_iter().map(|(_, _, d)| d).collect()
}

/// The platforms an index lists, `os/arch` (`unspecified` for an entry without one), for
/// an error saying none fits.
pub fn listed(index: &ImageIndex) -> Vec<String> {
    index
        .manifests()
        .iter()
        .map(|d| match d.platform() {
            Some(p) => format!("{}/{}", p.os(), p.architecture()),
            None => "unspecified".to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[Option<(&str, &str)>]) -> ImageIndex {
        let manifests: Vec<_> = platforms
            .iter()
            .enumerate()
            .map(|(i, platform)| {
                let mut entry = serde_json::json!({
                    "mediaType": crate::media::OCI_MANIFEST,
                    "digest": format!("sha256:{i:064x}"),
                    "size": 100,
                });
                if let Some((os, arch)) = platform {
                    entry["platform"] = serde_json::json!({"os": os, "architecture": arch});
                }
                entry
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    /// The position of the entry picked among `platforms` on `host`.
    fn picked(platforms: &[(&str, &str)], host: &str) -> Option<usize> {
        let platforms: Vec<_> = platforms.iter().copied().map(Some).collect();
        let index = index(&platforms);
        let d = pick(&index, host)?;
        index.manifests().iter().position(|e| e == d)
    }

    #[test]
    fn a_wasm_platform_wins_then_the_host() {
        assert_eq!(
            picked(&[("linux", "amd64"), ("wasip1", "wasm")], "amd64"),
            Some(1)
        );
        assert_eq!(
            picked(
                &[("wasip1", "wasm"), ("wasip2", "wasm"), ("wasi", "wasm")],
                "amd64"
            ),
            Some(1)
        );
        assert_eq!(picked(&[], "amd64"), None);
    }

    #[test]
    fn ranked_lists_every_runnable_entry_best_first() {
        let platforms: Vec<_> = [
            ("linux", "arm64"),
            ("linux", "amd64"),
            ("wasip1", "wasm"),
            ("windows", "amd64"),
            ("wasip2", "wasm"),
        ]
        .into_iter()
        .map(Some)
        .collect();
        let many = index(&platforms);
        let order: Vec<usize> = ranked(&many, "amd64")
            .into_iter()
            .map(|d| many.manifests().iter().position(|e| e == d).unwrap())
            .collect();
        assert_eq!(order, [4, 2, 1]);
        assert_eq!(ranked(&index(&[None]), "amd64").len(), 1);
        assert!(ranked(&index(&[None, None]), "amd64").is_empty());
    }

    #[test]
    fn an_arm64_host_picks_arm64_not_amd64() {
        let platforms = [("linux", "amd64"), ("linux", "arm64")];
        assert_eq!(picked(&platforms, "arm64"), Some(1));
        assert_eq!(picked(&platforms, "amd64"), Some(0));
        // Another architecture's only manifest is not run.
        assert_eq!(picked(&[("linux", "amd64")], "arm64"), None);
        // A wasm platform runs anywhere.
        assert_eq!(
            picked(&[("linux", "amd64"), ("wasip2", "wasm")], "arm64"),
            Some(1)
        );
    }

    #[test]
    fn a_lone_entry_without_a_platform_is_taken() {
        let lone = index(&[None]);
        assert!(pick(&lone, "amd64").is_some());
        let two = index(&[None, None]);
        assert!(pick(&two, "amd64").is_none());
        assert_eq!(listed(&two), ["unspecified", "unspecified"]);
    }

    #[test]
    fn architectures_are_named_as_oci_names_them() {
        assert_eq!(oci_arch("x86_64"), "amd64");
        assert_eq!(oci_arch("aarch64"), "arm64");
        assert_eq!(oci_arch("riscv64"), "riscv64");
    }
}
