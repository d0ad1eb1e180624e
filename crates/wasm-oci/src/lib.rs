//! What every reader of a Wasm OCI image agrees on: the media types of wasm artifacts and
//! of the OCI and Docker documents around them, which entry of an image index a wasm
//! runtime runs, and how a blob is checked against its digest.
//!
//! The shim (reading containerd's content store) and `oci-image` (reading a registry or
//! its own store) both choose through [`platform::pick`], so a node of any architecture
//! runs the same manifest whichever path the image took.
//!
//! ```
//! use wasm_oci::{digest, media, platform};
//! assert_eq!(media::layer_kind(media::WASM_LAYER), Some(media::LayerKind::Wasm));
//! assert_eq!(platform::rank("wasip1", "wasm", "arm64"), Some(1));
//! let d = digest::sha256(b"hello");
//! digest::verify(&d, 5, b"hello")?;
//! # Ok::<(), wasm_oci::digest::DigestError>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod digest;
pub mod media;
pub mod platform;
