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

mod auth;
mod build;
mod error;
mod extract;
mod image;
mod limits;
pub mod media;
mod progress;
mod pull;
mod push;
mod reference;
mod store;

pub use auth::Credentials;
pub use build::{build, export, BuildFormat, BuildOptions};
pub use error::{Error, Result};
pub use extract::{unpack_layer, ExtractReport};
pub use image::{open, Image, ImageConfig, ImageFormat};
pub use limits::{ImageLimits, DEFAULT_MAX_DOCUMENT, DEFAULT_MAX_LAYERS, DEFAULT_MAX_UNPACKED};
pub use progress::Progress;
pub use pull::{pull, PullOptions};
pub use push::push;
pub use reference::ImageRef;
pub use store::{ImageRecord, PruneReport, Store};
