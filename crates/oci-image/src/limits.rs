//! Caps on what an image may make the runtime download, parse and write.

use crate::error::{Error, Result};

/// Default cap on a manifest, index or image config document (containerd's too).
pub const DEFAULT_MAX_DOCUMENT: u64 = 4 << 20;
/// Default cap on the number of layers of one image (Docker's overlay driver stops at 128).
pub const DEFAULT_MAX_LAYERS: usize = 128;
/// Default cap on the bytes one image may unpack to.
pub const DEFAULT_MAX_UNPACKED: u64 = 1 << 30;

/// What an image may be: past any of these, a pull or an unpack stops with
/// [`Error::LimitExceeded`] naming the document or layer and the limit, before the
/// offending bytes are fetched where their size is known in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Bytes of one manifest, index or image config.
    pub max_document: u64,
    /// Layers of one manifest.
    pub max_layers: usize,
    /// Bytes the image unpacks to (file contents plus 512 bytes per entry).
    pub max_unpacked: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_document: DEFAULT_MAX_DOCUMENT,
            max_layers: DEFAULT_MAX_LAYERS,
            max_unpacked: DEFAULT_MAX_UNPACKED,
        }
    }
}

impl ImageLimits {
    /// Refuses a document of `size` bytes.
    pub(crate) fn document(&self, what: &str, size: u64) -> Result<()> {
        if size > self.max_document {
            return Err(Error::LimitExceeded {
                what: what.to_owned(),
                detail: format!(
                    "{size} bytes, over the limit of {} bytes for a manifest, index or config",
                    self.max_document
                ),
            });
        }
        Ok(())
    }

    /// Refuses a manifest with too many layers.
    pub(crate) fn layers(&self, manifest: &str, count: usize) -> Result<()> {
        if count > self.max_layers {
            return Err(Error::LimitExceeded {
                what: format!("manifest {manifest}"),
                detail: format!(
                    "{count} layers, over the limit of {} layers",
                    self.max_layers
                ),
            });
        }
        Ok(())
    }
}
