//! Wasm OCI artifacts: the wasm layer of the container's image, read from containerd's
//! content store over its gRPC API (containers → image → manifest → layer), verified
//! against its digest.

use std::path::PathBuf;

use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::Request;
use containerd_client::{with_namespace, Client};
use oci_spec::image::{ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Layer media types that hold a wasm binary: the CNCF artifact's and wasm-to-oci's.
const WASM_LAYER_TYPES: [&str; 2] = [
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
];
/// The largest manifest, index or config read (containerd's own limit, and oci-image's).
const MAX_DOCUMENT: u64 = 4 << 20;

/// containerd's content store, reached through its gRPC socket.
#[derive(Debug, Clone)]
pub(crate) struct ContentStore {
    /// containerd's gRPC socket (the shim's `-address`).
    pub(crate) address: PathBuf,
    /// The containerd namespace of this shim's containers.
    pub(crate) namespace: String,
}

/// The wasm layer of a container's image.
#[derive(Debug)]
pub(crate) struct WasmLayer {
    /// The image's name.
    pub(crate) image: String,
    /// The layer's content, its digest verified.
    pub(crate) bytes: Vec<u8>,
}

fn grpc(what: String) -> impl FnOnce(containerd_client::tonic::Status) -> Error {
    move |status| Error::Content(format!("{what}: {}", status.message()))
}

impl ContentStore {
    async fn connect(&self) -> Result<Client> {
        Client::from_path(&self.address).await.map_err(|e| {
            Error::Content(format!(
                "connecting to containerd at {}: {e}",
                self.address.display()
            ))
        })
    }

    /// The image container `id` was made from; empty when it names none.
    async fn container_image(&self, client: &Client, id: &str) -> Result<String> {
        Ok(client
            .containers()
            .get(with_namespace!(
                GetContainerRequest { id: id.to_owned() },
                self.namespace
            ))
            .await
            .map_err(grpc(format!("container {id}")))?
            .into_inner()
            .container
            .ok_or_else(|| Error::Content(format!("container {id}: not in containerd")))?
            .image)
    }

    /// The name of container `id`'s image, for error messages; `None` when containerd
    /// cannot say.
    pub(crate) async fn image_name(&self, id: &str) -> Option<String> {
        let client = self.connect().await.ok()?;
        let image = self.container_image(&client, id).await.ok()?;
        (!image.is_empty()).then_some(image)
    }

    /// The manifest of image `image` (the wasm platform's, for an index).
    async fn manifest(&self, client: &Client, image: &str) -> Result<ImageManifest> {
        let target = client
            .images()
            .get(with_namespace!(
                GetImageRequest {
                    name: image.to_owned()
                },
                self.namespace
            ))
            .await
            .map_err(grpc(format!("image {image}")))?
            .into_inner()
            .image
            .and_then(|i| i.target)
            .ok_or_else(|| Error::Content(format!("image {image}: no target")))?;
        let mut manifest_digest = target.digest.clone();
        let mut document = self
            .read(
                client,
                image,
                &target.digest,
                u64::try_from(target.size).unwrap_or(u64::MAX),
                MAX_DOCUMENT,
            )
            .await?;
        if let Ok(index) = serde_json::from_slice::<ImageIndex>(&document) {
            if !index.manifests().is_empty() {
                let entry = pick(&index).ok_or_else(|| {
                    Error::Content(format!("image {image}: the index lists no manifest"))
                })?;
                manifest_digest = entry.digest().to_string();
                document = self
                    .read(client, image, &manifest_digest, entry.size(), MAX_DOCUMENT)
                    .await?;
            }
        }
        serde_json::from_slice(&document)
            .map_err(|e| Error::Content(format!("image {image}: manifest {manifest_digest}: {e}")))
    }

    /// The TCP ports container `id`'s image config exposes (`ExposedPorts`); empty when it
    /// names no image or none.
    pub(crate) async fn exposed_ports(&self, id: &str) -> Result<Vec<u16>> {
        let client = self.connect().await?;
        let image = self.container_image(&client, id).await?;
        if image.is_empty() {
            return Ok(Vec::new());
        }
        let manifest = self.manifest(&client, &image).await?;
        let config = manifest.config();
        let bytes = self
            .read(
                &client,
                &image,
                config.digest().as_ref(),
                config.size(),
                MAX_DOCUMENT,
            )
            .await?;
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Content(format!("image {image}: config: {e}")))?;
        Ok(config
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().as_ref())
            .map(sandbox::exposed_tcp_ports)
            .unwrap_or_default())
    }

    /// The wasm layer of container `id`'s image; `None` when the container names no image
    /// or its image has no wasm layer (an ordinary image: the wasm is in its files).
    pub(crate) async fn wasm_layer(&self, id: &str, max_size: u64) -> Result<Option<WasmLayer>> {
        let client = self.connect().await?;
        let image = self.container_image(&client, id).await?;
        if image.is_empty() {
            return Ok(None);
        }
        let manifest = self.manifest(&client, &image).await?;
        let Some(layer) = manifest
            .layers()
            .iter()
            .find(|l| WASM_LAYER_TYPES.contains(&l.media_type().to_string().as_str()))
        else {
            return Ok(None);
        };
        let bytes = self
            .read(
                &client,
                &image,
                layer.digest().as_ref(),
                layer.size(),
                max_size,
            )
            .await?;
        Ok(Some(WasmLayer { image, bytes }))
    }

    /// Reads blob `digest` of `size` bytes and checks its sha256.
    async fn read(
        &self,
        client: &Client,
        image: &str,
        digest: &str,
        size: u64,
        max: u64,
    ) -> Result<Vec<u8>> {
        let what = format!("image {image}: blob {digest}");
        if size > max {
            return Err(Error::Content(format!(
                "{what}: {size} bytes is over the limit of {max}"
            )));
        }
        let Some(hex) = digest.strip_prefix("sha256:") else {
            return Err(Error::Content(format!(
                "{what}: only sha256 digests are supported"
            )));
        };
        let mut stream = client
            .content()
            .read(with_namespace!(
                ReadContentRequest {
                    digest: digest.to_owned(),
                    offset: 0,
                    size: 0
                },
                self.namespace
            ))
            .await
            .map_err(grpc(what.clone()))?
            .into_inner();
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = stream.message().await.map_err(grpc(what.clone()))? {
            bytes.extend_from_slice(&chunk.data);
            if bytes.len() as u64 > size {
                return Err(Error::Content(format!(
                    "{what}: longer than its descriptor's {size} bytes"
                )));
            }
        }
        let got = hex::encode(Sha256::digest(&bytes));
        if bytes.len() as u64 != size || got != hex {
            return Err(Error::Content(format!(
                "{what}: content does not match its digest (got sha256:{got}, {} bytes)",
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

/// The index entry to run: a wasm platform first (`wasip2`, `wasip1`, `wasi` on `wasm`),
/// else the host's, else the first.
fn pick(index: &ImageIndex) -> Option<&oci_spec::image::Descriptor> {
    let entries = index.manifests();
    let os_of = |d: &oci_spec::image::Descriptor| {
        d.platform()
            .as_ref()
            .map(|p| (p.os().to_string(), p.architecture().to_string()))
    };
    for os in ["wasip2", "wasip1", "wasi"] {
        if let Some(d) = entries
            .iter()
            .find(|d| os_of(d).is_some_and(|(o, a)| o == os && a == "wasm"))
        {
            return Some(d);
        }
    }
    entries
        .iter()
        .find(|d| os_of(d).is_some_and(|(o, a)| o == "linux" && a == "amd64"))
        .or_else(|| entries.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str)]) -> ImageIndex {
        let manifests: Vec<_> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{:064x}", i),
                    "size": 100,
                    "platform": {"os": os, "architecture": arch},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    fn picked(platforms: &[(&str, &str)]) -> Option<String> {
        let index = index(platforms);
        pick(&index).map(|d| d.digest().to_string())
    }

    #[test]
    fn a_wasm_platform_wins_then_the_host_then_the_first() {
        let digest = |i: u32| Some(format!("sha256:{i:064x}"));
        assert_eq!(picked(&[("linux", "amd64"), ("wasip1", "wasm")]), digest(1));
        assert_eq!(
            picked(&[("wasip1", "wasm"), ("wasip2", "wasm"), ("wasi", "wasm")]),
            digest(1)
        );
        assert_eq!(picked(&[("linux", "arm64"), ("linux", "amd64")]), digest(1));
        assert_eq!(picked(&[("linux", "arm64")]), digest(0));
        assert_eq!(picked(&[]), None);
    }
}
