//! An image in the store: which manifest suits this host, what format it is, how it runs,
//! and its unpacked root filesystem.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::error::{Error, Result};
use crate::extract::unpack_layer;
use crate::limits::ImageLimits;
use crate::media::{self, LayerKind};
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Store};

/// How the wasm travels inside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Ordinary tar layers with the `.wasm` in the root filesystem (`FROM scratch` + `COPY`).
    Compat,
    /// The CNCF TAG Runtime wasm artifact: config `application/vnd.wasm.config.v0+json`,
    /// layers `application/wasm`.
    Artifact,
    /// The legacy wasm-to-oci layer `application/vnd.wasm.content.layer.v1+wasm`.
    Legacy,
}

/// How the image asks to be run (the OCI image config's `Entrypoint`, `Cmd`, `Env`,
/// `WorkingDir`; for artifacts, the wasm file itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The entrypoint, argv-style.
    pub entrypoint: Vec<String>,
    /// Default arguments (replaced by the user's).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// The working directory, if set.
    pub working_dir: Option<String>,
}

impl ImageConfig {
    /// The argv a container runs: entrypoint, then `args` if given, else the image's cmd.
    pub fn argv(&self, args: &[String]) -> Vec<String> {
        let mut argv = self.entrypoint.clone();
        argv.extend(
            if args.is_empty() {
                self.cmd.iter()
            } else {
                args.iter()
            }
            .cloned(),
        );
        argv
    }
}

/// An image resolved in the store and unpacked.
#[derive(Debug, Clone)]
pub struct Image {
    /// The name it was opened by.
    pub reference: ImageRef,
    /// What the name points at.
    pub record: ImageRecord,
    /// The wasm packaging.
    pub format: ImageFormat,
    /// How it runs.
    pub config: ImageConfig,
    /// The unpacked root filesystem (shared: copy it before letting a guest write).
    pub rootfs: PathBuf,
}

/// Opens an image in the store, unpacking it on first use within `limits`.
pub fn open(store: &Store, reference: &ImageRef, limits: &ImageLimits) -> Result<Image> {
    let record = store
        .resolve(reference)?
        .ok_or_else(|| Error::NotFound(reference.to_string()))?;
    open_record(store, reference, record, limits)
}

/// Opens what `record` points at under the name `reference`, which need not be tagged yet
/// (a pull tags it only once this succeeded).
pub(crate) fn open_record(
    store: &Store,
    reference: &ImageRef,
    record: ImageRecord,
    limits: &ImageLimits,
) -> Result<Image> {
    let manifest = read_manifest(store, &record.manifest)?;
    limits.layers(&record.manifest, manifest.layers().len())?;
    let (format, config) = inspect(store, &manifest, &record.manifest)?;
    let rootfs = unpack(store, &record.manifest, &manifest, limits.max_unpacked)?;
    Ok(Image {
        reference: reference.clone(),
        record,
        format,
        config,
        rootfs,
    })
}

pub(crate) fn read_manifest(store: &Store, digest: &str) -> Result<ImageManifest> {
    let bytes = store.read_blob(digest)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("manifest {digest}"), e))
}

pub(crate) fn read_index(bytes: &[u8], digest: &str) -> Result<ImageIndex> {
    serde_json::from_slice(bytes).map_err(|e| Error::invalid(format!("image index {digest}"), e))
}

/// Picks the index entry this host runs (`wasm_oci::platform::pick`: `wasip2/wasm`,
/// `wasip1/wasm`, `wasi/wasm`, then `linux/<host>`; a lone entry without a platform).
pub(crate) fn select_manifest<'a>(
    index: &'a ImageIndex,
    reference: &str,
) -> Result<&'a Descriptor> {
    let host = wasm_oci::platform::host_arch();
    wasm_oci::platform::pick(index, host).ok_or_else(|| {
        let found = wasm_oci::platform::listed(index);
        Error::NoMatchingPlatform {
            reference: reference.to_owned(),
            arch: host.to_owned(),
            found: if found.is_empty() {
                "nothing".to_owned()
            } else {
                found.join(", ")
            },
        }
    })
}

/// Tells the format apart and reads how the image runs. Unknown layer or config media
/// types are errors naming them.
pub(crate) fn inspect(
    store: &Store,
    manifest: &ImageManifest,
    digest: &str,
) -> Result<(ImageFormat, ImageConfig)> {
    let config_type = manifest.config().media_type().to_string();
    let config_digest = manifest.config().digest().to_string();
    let mut wasm_files = Vec::new();
    let mut legacy = false;
    for (i, layer) in manifest.layers().iter().enumerate() {
        let media_type = layer.media_type().to_string();
        if media::layer_kind(&media_type, layer.digest().as_ref())? == LayerKind::Wasm {
            legacy |= media_type == media::WASM_LEGACY_LAYER;
            wasm_files.push(wasm_file_name(layer, i));
        }
    }
    if manifest.layers().is_empty() {
        return Err(Error::invalid(
            format!("manifest {digest}"),
            "has no layers",
        ));
    }
    match config_type.as_str() {
        media::OCI_CONFIG | media::DOCKER_CONFIG if wasm_files.is_empty() => {
            let bytes = store.read_blob(&config_digest)?;
            let parsed: ImageConfiguration = serde_json::from_slice(&bytes)
                .map_err(|e| Error::invalid(format!("image config {config_digest}"), e))?;
            let c = parsed.config().clone().unwrap_or_default();
            let config = ImageConfig {
                entrypoint: c.entrypoint().clone().unwrap_or_default(),
                cmd: c.cmd().clone().unwrap_or_default(),
                env: c.env().clone().unwrap_or_default(),
                working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            };
            Ok((ImageFormat::Compat, config))
        }
        media::WASM_CONFIG
        | media::WASM_LEGACY_CONFIG
        | media::OCI_CONFIG
        | "application/vnd.oci.empty.v1+json"
            if !wasm_files.is_empty() =>
        {
            let format = if legacy && config_type != media::WASM_CONFIG {
                ImageFormat::Legacy
            } else {
                ImageFormat::Artifact
            };
            let config = ImageConfig {
                entrypoint: vec![format!("/{}", wasm_files[0])],
                ..ImageConfig::default()
            };
            Ok((format, config))
        }
        other => Err(Error::UnsupportedMediaType {
            media_type: other.to_owned(),
            digest: config_digest,
        }),
    }
}

/// The file a wasm layer becomes: its `org.opencontainers.image.title` when that is a
/// plain file name, else `module.wasm` (`module-<i>.wasm` after the first).
pub(crate) fn wasm_file_name(layer: &Descriptor, i: usize) -> String {
    let title = layer
        .annotations()
        .as_ref()
        .and_then(|a| a.get("org.opencontainers.image.title"))
        .filter(|t| {
            !t.is_empty()
                && !t.starts_with('.')
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    match title {
        Some(t) => t.clone(),
        None if i == 0 => "module.wasm".to_owned(),
        None => format!("module-{i}.wasm"),
    }
}

/// Unpacks a manifest's layers into `rootfs/<hex>` (once; concurrent callers race to a
/// rename and the loser's copy is dropped).
fn unpack(store: &Store, digest: &str, manifest: &ImageManifest, limit: u64) -> Result<PathBuf> {
    let target = store.rootfs_path(digest)?;
    if target.is_dir() {
        return Ok(target);
    }
    let parent = store.dir().join("rootfs");
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&parent)
        .map_err(Error::io(&parent))?;
    let root = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority())
        .map_err(Error::io(tmp.path()))?;
    let mut budget = limit;
    for (i, layer) in manifest.layers().iter().enumerate() {
        let layer_digest = layer.digest().to_string();
        let path = store.blob_path(&layer_digest)?;
        let file = fs::File::open(&path).map_err(Error::io(&path))?;
        let kind = media::layer_kind(layer.media_type().as_ref(), &layer_digest)?;
        if kind == LayerKind::Wasm {
            let size = file.metadata().map_err(Error::io(&path))?.len();
            budget = budget.checked_sub(size).ok_or_else(|| Error::TooLarge {
                layer: layer_digest.clone(),
                limit,
            })?;
            let name = wasm_file_name(layer, i);
            let mut out = root
                .open_with(
                    &name,
                    OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o755),
                )
                .map_err(Error::io(tmp.path().join(&name)))?;
            std::io::copy(&mut file.take(size), &mut out)
                .map_err(Error::io(tmp.path().join(&name)))?;
        } else {
            let report = unpack_layer(
                &root,
                std::io::BufReader::new(file),
                kind,
                &layer_digest,
                &mut budget,
                limit,
            )?;
            if report.skipped_devices > 0 {
                tracing::warn!(layer = %layer_digest, count = report.skipped_devices, "device nodes skipped");
            }
        }
    }
    let kept = tmp.keep();
    fs::set_permissions(&kept, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(Error::io(&kept))?;
    match fs::rename(&kept, &target) {
        Ok(()) => Ok(target),
        Err(_) if target.is_dir() => {
            let _ = fs::remove_dir_all(&kept);
            Ok(target)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&kept);
            Err(Error::io(&target)(e))
        }
    }
}
