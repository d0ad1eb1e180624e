//! OCI images for wasmpod: references, registry pulls and pushes, a verified local store,
//! safe layer extraction and wasm image builds.
//!
//! Usable without containerd:
//!
//! ```no_run
//! # async fn demo() -> oci_image::Result<()> {
//! use oci_image::{ImageRef, PullOptions, Store};
//! let store = Store::open("/var/lib/wasmpod/images")?;
//! let reference = ImageRef::parse("localhost:5000/hello:latest")?;
//! let image = oci_image::pull(&store, &reference, &PullOptions::default()).await?;
//! println!("{} → {}", image.reference, image.rootfs.display());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod build;
mod error;
mod extract;
mod image;
mod limits;
mod media;
mod progress;
mod pull;
mod push;
mod reference;
mod store;
mod trust;

pub use auth::Credentials;
pub use build::{build, export, BuildFormat, BuildOptions};
pub use error::{Error, Result};
pub use extract::{unpack_layer, ExtractReport};
pub use image::{open, Image, ImageConfig, ImageFormat};
pub use limits::{ImageLimits, DEFAULT_MAX_DOCUMENT, DEFAULT_MAX_LAYERS, DEFAULT_MAX_UNPACKED};
pub use progress::Progress;
pub use pull::{pull, PullOptions, DEFAULT_DEADLINE, MIN_PROGRESS, PROGRESS_WINDOW};
pub use push::push;
pub use reference::ImageRef;
pub use store::{ImageRecord, PruneReport, Store};
pub use trust::check_private_dir;

/// Entry points for the fuzz targets in `fuzz/`: what a pull and an unpack do with bytes a
/// registry sends, behind the `fuzzing` feature. Not a stable API.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use oci_spec::image::ImageManifest;

    use crate::media::LayerKind;
    use crate::store::{document_media_type, is_index};
    use crate::Store;

    /// Reads `document` as a pull does (an index: the entry chosen for this host; a
    /// manifest: its layers' kinds and file names, and `config` as its image config).
    /// Panics if a file name it would write is not a plain name.
    pub fn documents(store: &Store, document: &[u8], config: &[u8]) {
        let media_type = document_media_type(document);
        if is_index(&media_type, document) {
            if let Ok(index) = crate::image::read_index(document, "fuzz") {
                let _ = crate::image::select_manifest(&index, "fuzz");
            }
            return;
        }
        let Ok(mut manifest) = serde_json::from_slice::<ImageManifest>(document) else {
            return;
        };
        for (i, layer) in manifest.layers().iter().enumerate() {
            let kind =
                crate::media::layer_kind(layer.media_type().as_ref(), layer.digest().as_ref());
            if matches!(kind, Ok(LayerKind::Wasm)) {
                let name = crate::image::wasm_file_name(layer, i);
                let mut parts = std::path::Path::new(&name).components();
                assert!(
                    matches!(parts.next(), Some(std::path::Component::Normal(_)))
                        && parts.next().is_none(),
                    "a wasm layer's file name {name:?} is not a plain name"
                );
            }
        }
        let Ok(digest) = store.write_blob(config, None) else {
            return;
        };
        let mut descriptor = manifest.config().clone();
        if let Ok(d) = digest.parse() {
            descriptor.set_digest(d);
            descriptor.set_size(config.len() as u64);
            manifest.set_config(descriptor);
            let _ = crate::image::inspect(store, &manifest, "fuzz");
        }
        // One blob per input would fill the disk over a long run.
        if let Ok(path) = store.blob_path(&digest) {
            let _ = std::fs::remove_file(path);
        }
    }
}
