//! Media types wasmpod reads and writes, and digests: `wasm-oci`'s, with this crate's
//! errors.

pub(crate) use wasm_oci::media::*;

use crate::error::{Error, Result};

/// Classifies a layer media type; unknown ones are an error naming them.
pub(crate) fn layer_kind(media_type: &str, digest: &str) -> Result<LayerKind> {
    wasm_oci::media::layer_kind(media_type).ok_or_else(|| Error::UnsupportedMediaType {
        media_type: media_type.to_owned(),
        digest: digest.to_owned(),
    })
}

/// The hex part of a `sha256:` digest, checked (it becomes a file name in the store).
pub(crate) fn digest_hex(digest: &str) -> Result<&str> {
    wasm_oci::digest::hex_of(digest).map_err(|_| Error::InvalidDigest(digest.to_owned()))
}

/// `sha256:<hex>` of some bytes.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    wasm_oci::digest::sha256(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_kinds() {
        assert_eq!(
            layer_kind("application/vnd.oci.image.layer.v1.tar+zstd", "d").unwrap(),
            LayerKind::TarZstd
        );
        assert_eq!(
            layer_kind(
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "d"
            )
            .unwrap(),
            LayerKind::TarGzip
        );
        assert_eq!(layer_kind(WASM_LEGACY_LAYER, "d").unwrap(), LayerKind::Wasm);
        let err = layer_kind("application/x-rar", "sha256:ab").unwrap_err();
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
