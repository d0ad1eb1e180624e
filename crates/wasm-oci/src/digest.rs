//! sha256 digests: well-formed before they name a file, and checked against the bytes they
//! describe.

use sha2::{Digest as _, Sha256};

/// A digest that is malformed or does not match what it describes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// Not `sha256:` and 64 lowercase hex digits.
    #[error("invalid digest {0:?} (expected sha256: and 64 lowercase hex digits)")]
    Invalid(String),
    /// More bytes than the descriptor's size.
    #[error("{digest}: longer than its descriptor's {size} bytes")]
    TooLong {
        /// The descriptor's digest.
        digest: String,
        /// The descriptor's size.
        size: u64,
    },
    /// The bytes are not what the descriptor names.
    #[error("{digest}: content does not match its digest (got {got}, {len} bytes)")]
    Mismatch {
        /// The descriptor's digest.
        digest: String,
        /// The digest of what was read.
        got: String,
        /// How many bytes were read.
        len: u64,
    },
}

/// The hex part of a `sha256:` digest, checked (it becomes a file name in a store).
pub fn hex_of(digest: &str) -> Result<&str, DigestError> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(DigestError::Invalid(digest.to_owned())),
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks that `bytes` are the `size` bytes that `digest` names.
pub fn verify(digest: &str, size: u64, bytes: &[u8]) -> Result<(), DigestError> {
    hex_of(digest)?;
    let len = bytes.len() as u64;
    if len > size {
        return Err(DigestError::TooLong {
            digest: digest.to_owned(),
            size,
        });
    }
    let got = sha256(bytes);
    if len != size || got != digest {
        return Err(DigestError::Mismatch {
            digest: digest.to_owned(),
            got,
            len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_become_file_names_only_when_well_formed() {
        let d = sha256(b"hello");
        assert_eq!(hex_of(&d).unwrap().len(), 64);
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:00",
            "sha256",
            &d.to_uppercase(),
            &format!("{d}0"),
        ] {
            assert_eq!(hex_of(bad), Err(DigestError::Invalid(bad.to_owned())));
        }
    }

    #[test]
    fn verify_checks_size_and_content() {
        let d = sha256(b"hello");
        assert_eq!(verify(&d, 5, b"hello"), Ok(()));
        assert!(matches!(
            verify(&d, 4, b"hello"),
            Err(DigestError::TooLong { size: 4, .. })
        ));
        let e = verify(&d, 5, b"hellx").unwrap_err();
        assert!(e.to_string().contains("does not match its digest"), "{e}");
        assert!(matches!(
            verify(&d, 6, b"hello"),
            Err(DigestError::Mismatch { len: 5, .. })
        ));
        assert!(matches!(
            verify("md5:00", 5, b"hello"),
            Err(DigestError::Invalid(_))
        ));
    }
}
