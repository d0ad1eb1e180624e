//! Progress reporting for pulls and pushes; the CLI draws bars, libraries may ignore it.

/// Receives byte counts as blobs move. Implementations must be cheap: they are called
/// for every chunk received or sent.
pub trait Progress: Send + Sync {
    /// A blob starts moving; `total` is its size from the descriptor.
    fn start(&self, digest: &str, total: u64) {
        let _ = (digest, total);
    }
    /// `bytes` more of the blob have moved (including bytes resumed from a previous pull).
    fn advance(&self, digest: &str, bytes: u64) {
        let _ = (digest, bytes);
    }
    /// The blob is complete (or was already present).
    fn finish(&self, digest: &str) {
        let _ = digest;
    }
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {}
