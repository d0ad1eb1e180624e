//! The one error type of `oci-image`: every variant names the reference, digest or path at fault.

use std::path::PathBuf;

/// What went wrong with an image, a registry or the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not an image reference.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The text given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// The registry answered, but with an error (missing tag, refused credentials, …).
    #[error("{reference}: {message}")]
    Registry {
        /// The image asked for.
        reference: String,
        /// The registry's answer, in one line.
        message: String,
    },
    /// The registry could not be reached at all.
    #[error("{reference}: cannot reach registry {registry}: {message}")]
    Unreachable {
        /// The image asked for.
        reference: String,
        /// The registry host.
        registry: String,
        /// The transport error, in one line.
        message: String,
    },
    /// A blob's content does not hash to its digest, or has the wrong size.
    #[error("{digest}: content does not match its digest ({detail}); nothing was stored")]
    DigestMismatch {
        /// The digest the content should have.
        digest: String,
        /// What differed.
        detail: String,
    },
    /// A digest that is not `sha256:<64 hex digits>`.
    #[error("unsupported or malformed digest {0:?}")]
    InvalidDigest(String),
    /// A manifest, index or config that cannot be parsed or is not usable.
    #[error("{what}: {reason}")]
    InvalidImage {
        /// The document or digest at fault.
        what: String,
        /// Why.
        reason: String,
    },
    /// A media type wasmpod does not know how to run.
    #[error("{digest}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The media type.
        media_type: String,
        /// The descriptor's digest.
        digest: String,
    },
    /// No entry of an image index suits this host.
    #[error("{reference}: no wasm or linux/{arch} entry in the image index (found: {found})")]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// The host architecture, in OCI terms.
        arch: String,
        /// The platforms the index offers.
        found: String,
    },
    /// A directory the runtime trusts (the store's) can be changed by another user.
    #[error("{}: {reason}: refusing to trust what is in it", path.display())]
    UnsafeDirectory {
        /// The directory at fault.
        path: PathBuf,
        /// Who else could change it.
        reason: String,
    },
    /// A layer cannot be unpacked safely.
    #[error("layer {layer}: {entry}: {reason}")]
    UnsafeLayer {
        /// The layer's digest.
        layer: String,
        /// The tar entry at fault.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// Unpacking would exceed the configured size cap.
    #[error("layer {layer}: unpacks to more than the limit of {limit} bytes")]
    TooLarge {
        /// The layer's digest.
        layer: String,
        /// The cap in bytes.
        limit: u64,
    },
    /// A manifest, index or config is larger, or has more layers, than the configured
    /// [`ImageLimits`](crate::ImageLimits) allow.
    #[error("{what}: {detail}")]
    LimitExceeded {
        /// The document at fault.
        what: String,
        /// Its size or layer count and the limit.
        detail: String,
    },
    /// A download brought less than its least in a window (see
    /// [`MIN_PROGRESS`](crate::MIN_PROGRESS)).
    #[error("{what}: the download stalled: {detail}")]
    Stalled {
        /// The document or blob being downloaded.
        what: String,
        /// What it brought, in how long, and the least it had to.
        detail: String,
    },
    /// A pull or push ran past its deadline ([`PullOptions::deadline`](crate::PullOptions)).
    #[error("{what}: did not finish within its deadline of {deadline}")]
    Deadline {
        /// The pull or push.
        what: String,
        /// The deadline, as a person writes it ("30m").
        deadline: String,
    },
    /// The image is not in the local store.
    #[error("{0}: no such image in the local store")]
    NotFound(String),
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl std::fmt::Display) -> Error {
        Error::InvalidImage {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
