//! Media types of OCI and Docker documents, wasm artifacts and layers.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The CNCF TAG Runtime wasm artifact config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The CNCF TAG Runtime wasm artifact layer: the module or component itself.
pub const WASM_LAYER: &str = "application/wasm";
/// The legacy wasm-to-oci layer.
pub const WASM_LEGACY_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The legacy wasm-to-oci config.
pub const WASM_LEGACY_CONFIG: &str = "application/vnd.wasm.config.v1+json";

/// Manifest media types a pull accepts, most preferred first.
pub const MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

/// How a layer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A tar archive, uncompressed.
    Tar,
    /// A gzip-compressed tar archive.
    TarGzip,
    /// A zstd-compressed tar archive.
    TarZstd,
    /// A bare wasm module or component (artifact or legacy layer).
    Wasm,
}

/// Classifies a layer media type (nondistributable layers as their distributable
/// counterparts); `None` for a type no wasm runtime reads.
pub fn layer_kind(media_type: &str) -> Option<LayerKind> {
    let base = media_type
        .strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.")
        .map(|rest| format!("application/vnd.oci.image.layer.v1.{rest}"));
    Some(match base.as_deref().unwrap_or(media_type) {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => LayerKind::Tar,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => LayerKind::TarGzip,
        "application/vnd.oci.image.layer.v1.tar+zstd" => LayerKind::TarZstd,
        WASM_LAYER | WASM_LEGACY_LAYER => LayerKind::Wasm,
        _ => return None,
    })
}

/// Whether `media_type` is a layer holding a wasm binary (artifact or legacy).
pub fn is_wasm_layer(media_type: &str) -> bool {
    layer_kind(media_type) == Some(LayerKind::Wasm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_kinds() {
        assert_eq!(
            layer_kind("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(LayerKind::TarZstd)
        );
        assert_eq!(
            layer_kind("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Some(LayerKind::TarGzip)
        );
        assert_eq!(layer_kind(WASM_LEGACY_LAYER), Some(LayerKind::Wasm));
        assert!(is_wasm_layer(WASM_LAYER));
        assert!(!is_wasm_layer("application/vnd.oci.image.layer.v1.tar"));
        assert_eq!(layer_kind("application/x-rar"), None);
    }
}
