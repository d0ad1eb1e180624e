//! Wasm OCI artifacts: the wasm layer of the container's image, read from containerd's
//! content store over its gRPC API (containers → image → manifest → layer), verified
//! against its digest.

use std::path::{Path, PathBuf};

use grpc_api::containerd::services::containers::v1::GetContainerRequest;
use grpc_api::containerd::services::content::v1::{InfoRequest, ReadContentRequest};
use grpc_api::containerd::services::images::v1::GetImageRequest;
use grpc_api::containerd::services::snapshots::v1::{RemoveSnapshotRequest, ViewSnapshotRequest};
use grpc_api::{namespaced, Client};
use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
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

/// A wasm program found in an image by [`ContentStore::program`].
pub(crate) struct ImageProgram {
    /// The image and where in it the program is, for logs and errors.
    pub(crate) name: String,
    /// The program.
    pub(crate) bytes: Vec<u8>,
}

impl std::fmt::Debug for ImageProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageProgram")
            .field("name", &self.name)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

fn grpc(what: String) -> impl FnOnce(grpc_api::tonic::Status) -> Error {
    move |status| Error::Content(format!("{what}: {}", status.message()))
}

/// One image's scratch directory: on drop its snapshot view is unmounted, then the
/// directory removed — never removed through a view that is still mounted.
pub(crate) struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    pub(crate) fn path(&self) -> &Path {
        self.0
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            if !release_view(dir.path()) {
                let kept = dir.keep();
                tracing::warn!(dir = %kept.display(), "image scratch: a snapshot view stays mounted here");
            }
        }
    }
}

/// Unmounts the snapshot view under image scratch directory `dir`, if one is mounted;
/// whether nothing is mounted there now.
pub(crate) fn release_view(dir: &Path) -> bool {
    let view = dir.join("snapshot");
    if crate::rootfs::is_mounted(&view) {
        if let Err(e) = crate::rootfs::unmount("image-program", &view) {
            tracing::warn!(error = %e, "image scratch: unmounting a snapshot view");
        }
    }
    !crate::rootfs::is_mounted(&view)
}

impl ContentStore {
    async fn connect(&self) -> Result<Client> {
        Client::connect(&self.address).await.map_err(|e| {
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
            .get(namespaced(
                GetContainerRequest { id: id.to_owned() },
                &self.namespace,
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
            .get(namespaced(
                GetImageRequest {
                    name: image.to_owned(),
                },
                &self.namespace,
            ))
            .await
            .map_err(|status| match status.code() {
                grpc_api::tonic::Code::NotFound => Error::Content(format!(
                    "image {image} is not on this node (containerd namespace {}): pull it \
                     first",
                    self.namespace
                )),
                _ => grpc(format!("image {image}"))(status),
            })?
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
                let entries = platform::ranked(&index, platform::host_arch());
                if entries.is_empty() {
                    return Err(Error::Content(format!(
                        "image {image}: no manifest for wasm or linux/{} in its index (it lists {})",
                        platform::host_arch(),
                        platform::listed(&index).join(", ")
                    )));
                }
                // The best platform whose manifest and config the store holds: containerd
                // keeps only the content of the platforms it pulled or imported. Failing
                // that, the best whose manifest it holds (the error then names its config).
                let mut first_error = None;
                let mut readable = None;
                for entry in entries {
                    let digest = entry.digest().to_string();
                    let bytes = match self
                        .read(client, image, &digest, entry.size(), MAX_DOCUMENT)
                        .await
                    {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            first_error.get_or_insert(e);
                            continue;
                        }
                    };
                    let held = match serde_json::from_slice::<ImageManifest>(&bytes) {
                        Ok(m) => self.holds(client, m.config().digest().as_ref()).await,
                        Err(_) => true, // not a manifest: the error below names it
                    };
                    if held {
                        readable = Some((digest, bytes));
                        break;
                    }
                    readable.get_or_insert((digest, bytes));
                }
                if let Some((digest, bytes)) = readable {
                    manifest_digest = digest;
                    document = bytes;
                    first_error = None;
                }
                if let Some(e) = first_error {
                    return Err(e);
                }
            }
        }
        serde_json::from_slice(&document)
            .map_err(|e| Error::Content(format!("image {image}: manifest {manifest_digest}: {e}")))
    }

    /// The config of image `image`, whose manifest is `manifest`.
    async fn config(
        &self,
        client: &Client,
        image: &str,
        manifest: &ImageManifest,
    ) -> Result<ImageConfiguration> {
        let config = manifest.config();
        let bytes = self
            .read(
                client,
                image,
                config.digest().as_ref(),
                config.size(),
                MAX_DOCUMENT,
            )
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Content(format!("image {image}: config: {e}")))
    }

    /// The wasm program of image `image`, for the precompile agent and for an exec of an
    /// image's program: its wasm layer, or the entrypoint of its config read from its
    /// files, unpacked into a scratch directory made under `scratch_parent` and removed
    /// afterwards (through `oci_image`'s safe extraction, within its default
    /// unpacked-size limit). `Ok(Err(why))` when the image is not a wasm image or names
    /// no program.
    pub(crate) async fn program(
        &self,
        image: &str,
        scratch_parent: &Path,
        max_size: u64,
    ) -> Result<std::result::Result<ImageProgram, String>> {
        std::fs::create_dir_all(scratch_parent).map_err(crate::error::io(format!(
            "creating {}",
            scratch_parent.display()
        )))?;
        let scratch = Scratch(Some(
            tempfile::Builder::new()
                .prefix("image-")
                .tempdir_in(scratch_parent)
                .map_err(crate::error::io(format!(
                    "creating a scratch directory in {}",
                    scratch_parent.display()
                )))?,
        ));
        self.program_in(image, scratch.path(), max_size).await
    }

    async fn program_in(
        &self,
        image: &str,
        scratch: &Path,
        max_size: u64,
    ) -> Result<std::result::Result<ImageProgram, String>> {
        let client = self.connect().await?;
        let manifest = self.manifest(&client, image).await?;
        let layers = manifest.layers();
        if let Some(layer) = layers
            .iter()
            .find(|l| wasm_oci::media::is_wasm_layer(l.media_type().as_ref()))
        {
            let digest = layer.digest().to_string();
            let bytes = self
                .read(&client, image, &digest, layer.size(), max_size)
                .await?;
            return Ok(Ok(ImageProgram {
                name: format!("{image} (layer {digest})"),
                bytes,
            }));
        }
        let config = self.config(&client, image, &manifest).await?;
        let run = config.config().clone().unwrap_or_default();
        let argv: Vec<String> = run
            .entrypoint()
            .iter()
            .flatten()
            .chain(run.cmd().iter().flatten())
            .cloned()
            .collect();
        let Some(program) = argv.first() else {
            return Ok(Err("its config names no entrypoint or cmd".into()));
        };
        if *config.architecture() != Arch::Wasm && !program.ends_with(".wasm") {
            return Ok(Err(format!(
                "{}/{}, entrypoint {program}",
                config.os(),
                config.architecture()
            )));
        }
        let rootfs = scratch.join("rootfs");
        std::fs::create_dir_all(&rootfs)
            .map_err(crate::error::io(format!("creating {}", rootfs.display())))?;
        let read = |root: &Path| -> Result<ImageProgram> {
            let bad = |e: sandbox::Error| Error::Content(format!("image {image}: {e}"));
            let mut spec = sandbox::ContainerSpec::new(argv.clone()).root(root, true);
            if let Some(dir) = run.working_dir().as_ref().filter(|d| !d.is_empty()) {
                spec = spec.cwd(dir.clone());
            }
            let spec = spec.to_spec().map_err(bad)?;
            let policy = sandbox::RunPolicy::from_spec(&spec, root).map_err(bad)?;
            let bytes = policy.read_entrypoint(max_size).map_err(bad)?;
            Ok(ImageProgram {
                name: format!("{image}: {}", policy.entrypoint()),
                bytes,
            })
        };
        let unpacked = match self.unpack(&client, image, layers, &rootfs).await {
            Ok(()) => return read(&rootfs).map(Ok),
            Err(e) => e,
        };
        // containerd may have let go of the layers once they were unpacked (its transfer
        // service does): the files are then in the image's snapshot.
        let config_digest = manifest.config().digest().to_string();
        let Some((snapshotter, chain)) = self.snapshot_of(&client, &config_digest).await? else {
            return Err(unpacked);
        };
        tracing::debug!(%image, %snapshotter, %chain, reason = %unpacked, "reading the program from the image's snapshot");
        let key = format!(
            "wasmpod-image-program-{}",
            chain.trim_start_matches("sha256:")
        );
        let snapshots = || client.snapshots();
        let remove = || async {
            snapshots()
                .remove(namespaced(
                    RemoveSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: key.clone(),
                    },
                    &self.namespace,
                ))
                .await
        };
        // One left by an agent that died here.
        let _ = remove().await;
        let mounts = snapshots()
            .view(namespaced(
                ViewSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: key.clone(),
                    parent: chain.clone(),
                    labels: Default::default(),
                },
                &self.namespace,
            ))
            .await
            .map_err(grpc(format!(
                "image {image}: a view of its {snapshotter} snapshot {chain}"
            )))?
            .into_inner()
            .mounts;
        let mounts: Vec<containerd_shim::protos::api::Mount> = mounts
            .into_iter()
            .map(|m| containerd_shim::protos::api::Mount {
                type_: m.r#type,
                source: m.source,
                target: m.target,
                options: m.options,
                ..Default::default()
            })
            .collect();
        let bundle = scratch.join("snapshot");
        let result = match crate::rootfs::mount("image-program", &bundle, &mounts).await {
            Ok(_) => {
                let program = read(&crate::rootfs::target(&bundle));
                if let Err(e) = crate::rootfs::unmount("image-program", &bundle) {
                    tracing::warn!(error = %e, "unmounting an image's snapshot view");
                }
                program
            }
            Err(e) => Err(e),
        };
        if let Err(status) = remove().await {
            tracing::warn!(%key, error = %status.message(), "removing an image's snapshot view");
        }
        result.map(Ok)
    }

    /// Unpacks the layers of image `image` from the content store into `root`.
    async fn unpack(
        &self,
        client: &Client,
        image: &str,
        layers: &[Descriptor],
        root: &Path,
    ) -> Result<()> {
        let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())
            .map_err(crate::error::io(format!("opening {}", root.display())))?;
        let limit = oci_image::DEFAULT_MAX_UNPACKED;
        let mut budget = limit;
        for layer in layers {
            let digest = layer.digest().to_string();
            let media_type = layer.media_type().to_string();
            let kind = wasm_oci::media::layer_kind(&media_type).ok_or_else(|| {
                Error::Content(format!(
                    "image {image}: layer {digest}: unsupported media type {media_type:?}"
                ))
            })?;
            // Through a file, not memory: a layer may be as large as the budget.
            let scratch = root.parent().unwrap_or(root);
            let mut file = tempfile::tempfile_in(scratch).map_err(crate::error::io(format!(
                "a scratch file in {}",
                scratch.display()
            )))?;
            self.read_into(client, image, &digest, layer.size(), budget, &mut file)
                .await?;
            let reader = std::io::BufReader::new(file);
            oci_image::unpack_layer(&dir, reader, kind, &digest, &mut budget, limit)
                .map_err(|e| Error::Content(format!("image {image}: {e}")))?;
        }
        Ok(())
    }

    /// Whether the content store holds blob `digest`.
    async fn holds(&self, client: &Client, digest: &str) -> bool {
        self.info(client, digest).await.is_ok()
    }

    /// The content store's record of blob `digest`.
    async fn info(
        &self,
        client: &Client,
        digest: &str,
    ) -> std::result::Result<
        Option<grpc_api::containerd::services::content::v1::Info>,
        grpc_api::tonic::Status,
    > {
        Ok(client
            .content()
            .info(namespaced(
                InfoRequest {
                    digest: digest.to_owned(),
                },
                &self.namespace,
            ))
            .await?
            .into_inner()
            .info)
    }

    /// The snapshot an image was unpacked into, from the label containerd puts on its
    /// config blob: `(snapshotter, chain id)`; `None` when it was not unpacked.
    async fn snapshot_of(
        &self,
        client: &Client,
        config_digest: &str,
    ) -> Result<Option<(String, String)>> {
        const LABEL: &str = "containerd.io/gc.ref.snapshot.";
        let info = self
            .info(client, config_digest)
            .await
            .map_err(grpc(format!("config {config_digest}")))?;
        Ok(info.and_then(|i| {
            i.labels
                .into_iter()
                .find_map(|(k, v)| Some((k.strip_prefix(LABEL)?.to_owned(), v)))
        }))
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
        let config = self.config(&client, &image, &manifest).await?;
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

    /// Streams blob `digest` of `size` bytes into `file`, checking its sha256 as it comes,
    /// and rewinds the file.
    async fn read_into(
        &self,
        client: &Client,
        image: &str,
        digest: &str,
        size: u64,
        max: u64,
        file: &mut std::fs::File,
    ) -> Result<()> {
        use std::io::{Seek as _, Write as _};
        let what = format!("image {image}: blob {digest}");
        self.stream(client, image, digest, size, max, |piece| {
            file.write_all(piece)
                .map_err(crate::error::io(format!("{what}: writing a scratch file")))
        })
        .await?;
        file.rewind().map_err(crate::error::io(format!(
            "{what}: rewinding a scratch file"
        )))
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
        let mut bytes = Vec::with_capacity(usize::try_from(size.min(max)).unwrap_or(0));
        self.stream(client, image, digest, size, max, |piece| {
            bytes.extend_from_slice(piece);
            Ok(())
        })
        .await?;
        Ok(bytes)
    }

    /// Hands blob `digest` of `size` bytes (refused above `max`) to `sink` piece by piece,
    /// each piece checked against the descriptor's size and the whole against its sha256.
    async fn stream(
        &self,
        client: &Client,
        image: &str,
        digest: &str,
        size: u64,
        max: u64,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let what = format!("image {image}: blob {digest}");
        if size > max {
            return Err(Error::Content(format!(
                "{what}: {size} bytes is over the limit of {max}"
            )));
        }
        // Refuses a malformed digest before anything is asked of containerd.
        let mut check = wasm_oci::digest::Verifier::new(digest, size)
            .map_err(|e| Error::Content(format!("{what}: {e}")))?;
        let bad =
            |e: wasm_oci::digest::DigestError| Error::Content(format!("image {image}: blob {e}"));
        let mut stream = client
            .content()
            .read(namespaced(
                ReadContentRequest {
                    digest: digest.to_owned(),
                    offset: 0,
                    size: 0,
                },
                &self.namespace,
            ))
            .await
            .map_err(grpc(what.clone()))?
            .into_inner();
        while let Some(chunk) = stream.message().await.map_err(grpc(what.clone()))? {
            check.update(&chunk.data).map_err(bad)?;
            sink(&chunk.data)?;
        }
        check.finish().map_err(bad)
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

    async fn program(
        &self,
        image: &str,
        scratch_parent: &Path,
        max_size: u64,
    ) -> Result<std::result::Result<ImageProgram, String>> {
        ContentStore::program(self, image, scratch_parent, max_size).await
    }
}
