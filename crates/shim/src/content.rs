//! Wasm OCI artifacts: the wasm layer of the container's image, read from containerd's
//! content store over its gRPC API (containers → image → manifest → layer), verified
//! against its digest.

use std::path::PathBuf;

use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::Request;
use containerd_client::{with_namespace, Client};
use oci_spec::image::{ImageIndex, ImageManifest};
use wasm_oci::platform;

use crate::error::{Error, Result};

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
                let entry = platform::pick(&index, platform::host_arch()).ok_or_else(|| {
                    Error::Content(format!(
                        "image {image}: no manifest for wasm or linux/{} in its index (it lists {})",
                        platform::host_arch(),
                        platform::listed(&index).join(", ")
                    ))
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
            .find(|l| wasm_oci::media::is_wasm_layer(l.media_type().as_ref()))
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
        if let Err(e) = wasm_oci::digest::hex_of(digest) {
            return Err(Error::Content(format!("{what}: {e}")));
        }
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
        wasm_oci::digest::verify(digest, size, &bytes)
            .map_err(|e| Error::Content(format!("image {image}: blob {e}")))?;
        Ok(bytes)
    }
}

#[async_trait::async_trait]
impl crate::task::Images for ContentStore {
    async fn wasm_layer(&self, id: &str, max_size: u64) -> Result<Option<WasmLayer>> {
        ContentStore::wasm_layer(self, id, max_size).await
    }

    async fn image_name(&self, id: &str) -> Option<String> {
        ContentStore::image_name(self, id).await
    }

    async fn exposed_ports(&self, id: &str) -> Result<Vec<u16>> {
        ContentStore::exposed_ports(self, id).await
    }
}
