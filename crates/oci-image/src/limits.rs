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

    /// The most the layers of an image within [`Self::max_unpacked`] can take to download:
    /// a tar entry is 512 bytes of header plus its contents rounded up to 512, so a layer
    /// is under twice what it unpacks to, plus its end-of-archive blocks; compression adds
    /// well under 1 MiB to that.
    pub fn max_download(&self) -> u64 {
        self.max_unpacked.saturating_mul(2).saturating_add(1 << 20)
    }

    /// Refuses layers whose descriptors alone say they cannot unpack within the limit,
    /// before anything of them is downloaded. `layers` are `(digest, size)`.
    pub(crate) fn downloads<'a>(
        &self,
        manifest: &str,
        layers: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Result<()> {
        let cap = self.max_download();
        let mut total = 0u64;
        for (digest, size) in layers {
            total = total.saturating_add(size);
            if total > cap {
                return Err(Error::LimitExceeded {
                    what: format!("manifest {manifest}: layer {digest}"),
                    detail: format!(
                        "{total} bytes of layers to download, more than an image within the \
                         unpacked limit of {} bytes can take ({cap})",
                        self.max_unpacked
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_downloads_are_capped_from_their_descriptors() {
        let limits = ImageLimits {
            max_unpacked: 1 << 20,
            ..ImageLimits::default()
        };
        assert_eq!(limits.max_download(), 3 << 20);
        limits
            .downloads("sha256:m", [("sha256:a", 1 << 20), ("sha256:b", 2 << 20)])
            .unwrap();
        let e = limits
            .downloads("sha256:m", [("sha256:a", 300 << 20)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layer sha256:a") && e.contains("314572800 bytes"),
            "{e}"
        );
        // A descriptor claiming 2^62 bytes, and sizes that would overflow a sum.
        assert!(limits.downloads("m", [("a", 1 << 62)]).is_err());
        let e = limits
            .downloads("m", [("a", 1 << 20), ("b", u64::MAX)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer b"), "{e}");
    }
}
