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
    let mut check = Verifier::new(digest, size)?;
    check.update(bytes)?;
    check.finish()
}

/// [`verify`] for content that arrives in pieces: each piece is hashed as it comes and
/// refused as soon as the whole would be longer than the descriptor says.
#[derive(Debug)]
pub struct Verifier {
    digest: String,
    size: u64,
    len: u64,
    hasher: Sha256,
}

impl Verifier {
    /// A check of the `size` bytes that `digest` names; fails on a malformed digest.
    pub fn new(digest: &str, size: u64) -> Result<Self, DigestError> {
        hex_of(digest)?;
        Ok(Self {
            digest: digest.to_owned(),
            size,
            len: 0,
            hasher: Sha256::new(),
        })
    }

    /// Takes the next piece.
    pub fn update(&mut self, piece: &[u8]) -> Result<(), DigestError> {
        self.len += piece.len() as u64;
        if self.len > self.size {
            return Err(DigestError::TooLong {
                digest: self.digest.clone(),
                size: self.size,
            });
        }
        self.hasher.update(piece);
        Ok(())
    }

    /// Whether the pieces were, in all, what the descriptor names.
    pub fn finish(self) -> Result<(), DigestError> {
        let got = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if self.len != self.size || got != self.digest {
            return Err(DigestError::Mismatch {
                digest: self.digest,
                got,
                len: self.len,
            });
        }
        Ok(())
    }
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

    #[test]
    fn a_verifier_takes_pieces_and_stops_at_the_size() {
        let d = sha256(b"hello world");
        let mut v = Verifier::new(&d, 11).unwrap();
        v.update(b"hello").unwrap();
        v.update(b" world").unwrap();
        assert_eq!(v.finish(), Ok(()));
        let mut v = Verifier::new(&d, 11).unwrap();
        v.update(b"hello worl").unwrap();
        assert!(matches!(
            v.update(b"dd"),
            Err(DigestError::TooLong { size: 11, .. })
        ));
        let mut v = Verifier::new(&d, 11).unwrap();
        v.update(b"hello").unwrap();
        assert!(matches!(
            v.finish(),
            Err(DigestError::Mismatch { len: 5, .. })
        ));
    }
}
