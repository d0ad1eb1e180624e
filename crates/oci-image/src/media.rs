//! Media types wasmpod reads and writes, and digests.

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The CNCF TAG Runtime wasm artifact config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The CNCF TAG Runtime wasm artifact layer: the module or component itself.
pub const WASM_LAYER: &str = "application/wasm";
/// The legacy wasm-to-oci layer.
pub const WASM_LEGACY_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The legacy wasm-to-oci config.
pub const WASM_LEGACY_CONFIG: &str = "application/vnd.wasm.config.v1+json";

/// Manifest media types a pull accepts, most preferred first.
pub const MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

/// How a layer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A tar archive, uncompressed.
    Tar,
    /// A gzip-compressed tar archive.
    TarGzip,
    /// A zstd-compressed tar archive.
    TarZstd,
    /// A bare wasm module or component (artifact or legacy layer).
    Wasm,
}

impl LayerKind {
    /// Classifies a layer media type; unknown ones are an error naming them.
    pub fn of(media_type: &str, digest: &str) -> Result<Self> {
        let base = media_type
            .strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.")
            .map(|rest| format!("application/vnd.oci.image.layer.v1.{rest}"));
        Ok(match base.as_deref().unwrap_or(media_type) {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Self::Tar,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Self::TarGzip,
            "application/vnd.oci.image.layer.v1.tar+zstd" => Self::TarZstd,
            WASM_LAYER | WASM_LEGACY_LAYER => Self::Wasm,
            _ => {
                return Err(Error::UnsupportedMediaType {
                    media_type: media_type.to_owned(),
                    digest: digest.to_owned(),
                })
            }
        })
    }
}

/// The hex part of a `sha256:` digest, checked (it becomes a file name in the store).
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(Error::InvalidDigest(digest.to_owned())),
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_kinds() {
        assert_eq!(
            LayerKind::of("application/vnd.oci.image.layer.v1.tar+zstd", "d").unwrap(),
            LayerKind::TarZstd
        );
        assert_eq!(
            LayerKind::of(
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "d"
            )
            .unwrap(),
            LayerKind::TarGzip
        );
        assert_eq!(
            LayerKind::of(WASM_LEGACY_LAYER, "d").unwrap(),
            LayerKind::Wasm
        );
        let err = LayerKind::of("application/x-rar", "sha256:ab").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sha256:ab: unsupported media type \"application/x-rar\""
        );
    }

    #[test]
    fn digests_become_file_names_only_when_well_formed() {
        let d = sha256_digest(b"hello");
        assert_eq!(digest_hex(&d).unwrap().len(), 64);
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:00",
            "sha256",
            &d.to_uppercase(),
            &format!("{d}0"),
        ] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
    }
}
