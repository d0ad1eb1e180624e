//! Building wasm images into the store, and exporting them as OCI layouts or archives.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::image::{self, read_index};
use crate::media;
use crate::reference::ImageRef;
use crate::store::{is_index, ImageRecord, Store};

/// Which packaging `build` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuildFormat {
    /// The CNCF TAG Runtime wasm artifact: one manifest, config
    /// `application/vnd.wasm.config.v0+json`, one `application/wasm` layer.
    #[default]
    Artifact,
    /// An ordinary image (`FROM scratch` + `COPY app.wasm /`): an index whose
    /// `wasip1/wasm` (or `wasip2/wasm`), `linux/amd64` and `linux/arm64` entries share one
    /// tar+gzip layer, so any containerd imports and unpacks it without `--platform`.
    Compat,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The name to tag the image with in the store.
    pub reference: ImageRef,
    /// The packaging.
    pub format: BuildFormat,
    /// The file name of the wasm inside the image (the entrypoint is `/<file_name>`).
    pub file_name: String,
    /// Extra annotations for the manifest (or index), e.g. `org.opencontainers.image.source`.
    pub annotations: BTreeMap<String, String>,
    /// Creation time; `None` is `$SOURCE_DATE_EPOCH` if set (reproducible builds), else now.
    pub created: Option<SystemTime>,
    /// Host directories copied into the image's files (compat format only): each
    /// directory's contents go under its destination (an absolute path inside the image).
    /// Only regular files and directories are taken; anything else is an error.
    pub files: Vec<(PathBuf, String)>,
    /// TCP ports the image exposes (`ExposedPorts` in its config): where the shim serves a
    /// `wasi:http` handler.
    pub exposed_ports: Vec<u16>,
}

/// Appends the contents of `dir` under `dest` (a relative path inside the image, or "").
fn append_dir(tar: &mut tar::Builder<Vec<u8>>, dir: &Path, dest: &str, mtime: u64) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .collect::<std::io::Result<_>>()
        .map_err(Error::io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| Error::invalid(path.display().to_string(), "not a UTF-8 file name"))?;
        let inside = if dest.is_empty() {
            name.to_owned()
        } else {
            format!("{dest}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        let mut header = tar::Header::new_ustar();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, format!("{inside}/"), std::io::empty())
                .map_err(Error::io(&path))?;
            append_dir(tar, &path, &inside, mtime)?;
        } else if meta.is_file() {
            let bytes = fs::read(&path).map_err(Error::io(&path))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, &inside, bytes.as_slice())
                .map_err(Error::io(&path))?;
        } else {
            return Err(Error::invalid(
                path.display().to_string(),
                "only regular files and directories can be added to an image",
            ));
        }
    }
    Ok(())
}

/// Builds an image from wasm bytes into the store and tags it. Returns its record.
pub fn build(store: &Store, wasm: &[u8], options: &BuildOptions) -> Result<ImageRecord> {
    let os = wasm_os(wasm).ok_or_else(|| {
        Error::invalid(
            options.file_name.clone(),
            "not a WebAssembly binary (no \\0asm header with a module or component version)",
        )
    })?;
    let name = &options.file_name;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::invalid(
            name.clone(),
            "the file name in the image must be a plain name",
        ));
    }
    let created = rfc3339(created_secs(options.created));
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    annotations.insert("org.opencontainers.image.created".into(), created.clone());
    annotations.insert("org.opencontainers.image.title".into(), name.clone());
    if let Some(tag) = options.reference.tag() {
        annotations.insert("org.opencontainers.image.version".into(), tag.to_owned());
    }
    annotations.extend(options.annotations.clone());
    let layer_annotations = json!({"org.opencontainers.image.title": name});

    if options.format == BuildFormat::Artifact && !options.files.is_empty() {
        return Err(Error::invalid(
            options.reference.to_string(),
            "a Wasm OCI artifact holds only the wasm: add files to the compat format",
        ));
    }
    let exposed: serde_json::Map<String, Value> = options
        .exposed_ports
        .iter()
        .map(|p| (format!("{p}/tcp"), json!({})))
        .collect();
    let record = match options.format {
        BuildFormat::Artifact => {
            let layer = store.write_blob(wasm, None)?;
            let config = to_vec(&json!({
                "created": created,
                "architecture": "wasm",
                "os": os,
                "layerDigests": [layer],
            }))?;
            let config_digest = store.write_blob(&config, None)?;
            let manifest = to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": {"mediaType": media::WASM_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": [{"mediaType": media::WASM_LAYER, "digest": layer, "size": wasm.len(), "annotations": layer_annotations}],
                "annotations": annotations,
            }))?;
            let digest = store.write_blob(&manifest, None)?;
            ImageRecord {
                digest: digest.clone(),
                media_type: media::OCI_MANIFEST.to_owned(),
                manifest: digest,
                size: (config.len() + wasm.len()) as u64,
            }
        }
        BuildFormat::Compat => {
            let mtime = created_secs(options.created);
            let mut tar = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o755);
            header.set_size(wasm.len() as u64);
            header.set_mtime(mtime);
            header.set_uid(0);
            header.set_gid(0);
            tar.append_data(&mut header, name, wasm)
                .map_err(Error::io(name.as_str()))?;
            for (dir, dest) in &options.files {
                let dest = dest.trim_matches('/');
                if dest.split('/').any(|c| c == ".." || c == ".") {
                    return Err(Error::invalid(
                        dest.to_owned(),
                        "a destination inside the image must not contain . or ..",
                    ));
                }
                let mut prefix = String::new();
                for component in dest.split('/').filter(|c| !c.is_empty()) {
                    prefix = if prefix.is_empty() {
                        component.to_owned()
                    } else {
                        format!("{prefix}/{component}")
                    };
                    let mut h = tar::Header::new_ustar();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    h.set_mtime(mtime);
                    tar.append_data(&mut h, format!("{prefix}/"), std::io::empty())
                        .map_err(Error::io(dir))?;
                }
                append_dir(&mut tar, dir, dest, mtime)?;
            }
            let tar = tar.into_inner().map_err(Error::io(name.as_str()))?;
            let diff_id = media::sha256_digest(&tar);
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::best());
            gz.write_all(&tar).map_err(Error::io(name.as_str()))?;
            let gz = gz.finish().map_err(Error::io(name.as_str()))?;
            let layer = store.write_blob(&gz, None)?;
            let mut entries = Vec::new();
            let mut size = 0;
            for (p_os, arch) in [(os, "wasm"), ("linux", "amd64"), ("linux", "arm64")] {
                let config = to_vec(&json!({
                    "created": created,
                    "architecture": arch,
                    "os": p_os,
                    "config": if exposed.is_empty() {
                        json!({"Entrypoint": [format!("/{name}")]})
                    } else {
                        json!({"Entrypoint": [format!("/{name}")], "ExposedPorts": exposed})
                    },
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                    "history": [{"created": created, "created_by": format!("wasmpod build {name}")}],
                }))?;
                let config_digest = store.write_blob(&config, None)?;
                let manifest = to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": media::OCI_MANIFEST,
                    "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config.len()},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": gz.len(), "annotations": layer_annotations}],
                    "annotations": annotations,
                }))?;
                let digest = store.write_blob(&manifest, None)?;
                size = (config.len() + gz.len()) as u64;
                entries.push(json!({
                    "mediaType": media::OCI_MANIFEST,
                    "digest": digest,
                    "size": manifest.len(),
                    "platform": {"os": p_os, "architecture": arch},
                }));
            }
            let index = to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_INDEX,
                "manifests": entries,
                "annotations": annotations,
            }))?;
            let digest = store.write_blob(&index, None)?;
            let parsed = read_index(&index, &digest)?;
            let chosen = image::select_manifest(&parsed, &options.reference.to_string())?;
            ImageRecord {
                digest,
                media_type: media::OCI_INDEX.to_owned(),
                manifest: chosen.digest().to_string(),
                size,
            }
        }
    };
    store.tag(&options.reference, record.clone())?;
    Ok(record)
}

/// `wasip1` for a core module, `wasip2` for a component, by the 8-byte header.
fn wasm_os(bytes: &[u8]) -> Option<&'static str> {
    match bytes.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some("wasip1"),
        [0, b'a', b's', b'm', _, _, 1, 0] => Some("wasip2"),
        _ => None,
    }
}

fn to_vec(value: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::invalid("image document", e))
}

fn created_secs(created: Option<SystemTime>) -> u64 {
    let from_env = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    created
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs()))
        .or(from_env)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        })
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (proleptic Gregorian, UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes an image from the store as an OCI image layout: a directory, or — when `out`
/// ends in `.tar` — a tar archive of one (what `ctr image import` and `skopeo` read).
pub fn export(store: &Store, reference: &ImageRef, out: &Path) -> Result<()> {
    let record = store
        .resolve(reference)?
        .ok_or_else(|| Error::NotFound(reference.to_string()))?;
    let mut blobs = BTreeSet::new();
    blobs.insert(record.digest.clone());
    let top = store.read_blob(&record.digest)?;
    let mut manifests = Vec::new();
    if is_index(&record.media_type, &top) {
        for m in read_index(&top, &record.digest)?.manifests() {
            manifests.push(m.digest().to_string());
        }
    } else {
        manifests.push(record.digest.clone());
    }
    for m in &manifests {
        blobs.insert(m.clone());
        let manifest = image::read_manifest(store, m)?;
        blobs.insert(manifest.config().digest().to_string());
        for l in manifest.layers() {
            blobs.insert(l.digest().to_string());
        }
    }
    let mut ref_annotations = BTreeMap::new();
    ref_annotations.insert("io.containerd.image.name", reference.to_string());
    if let Some(tag) = reference.tag() {
        ref_annotations.insert("org.opencontainers.image.ref.name", tag.to_owned());
    }
    let index = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": record.media_type,
            "digest": record.digest,
            "size": top.len(),
            "annotations": ref_annotations,
        }],
    }))?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;

    let is_tar = out.extension().is_some_and(|e| e == "tar");
    if is_tar {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(parent).map_err(Error::io(parent))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp));
        let mut add = |name: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            h.set_mtime(0);
            tar.append_data(&mut h, name, bytes).map_err(Error::io(out))
        };
        add("oci-layout", layout)?;
        add("index.json", &index)?;
        for d in &blobs {
            let bytes = fs::read(store.blob_path(d)?).map_err(Error::io(out))?;
            add(&format!("blobs/sha256/{}", media::digest_hex(d)?), &bytes)?;
        }
        let writer = tar.into_inner().map_err(Error::io(out))?;
        let tmp = writer
            .into_inner()
            .map_err(|e| Error::io(out)(e.into_error()))?;
        tmp.persist(out).map_err(|e| Error::io(out)(e.error))?;
    } else {
        if out.exists() && fs::read_dir(out).map_err(Error::io(out))?.next().is_some() {
            return Err(Error::Io {
                path: out.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "directory exists and is not empty",
                ),
            });
        }
        let blob_dir = out.join("blobs/sha256");
        fs::create_dir_all(&blob_dir).map_err(Error::io(&blob_dir))?;
        fs::write(out.join("oci-layout"), layout).map_err(Error::io(out))?;
        fs::write(out.join("index.json"), &index).map_err(Error::io(out))?;
        for d in &blobs {
            let to = blob_dir.join(media::digest_hex(d)?);
            fs::copy(store.blob_path(d)?, &to).map_err(Error::io(&to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_996_799), "2026-11-29T23:59:59Z");
    }

    #[test]
    fn headers() {
        assert_eq!(wasm_os(MODULE), Some("wasip1"));
        assert_eq!(wasm_os(COMPONENT), Some("wasip2"));
        assert_eq!(wasm_os(b"\x7fELF\x02\x01\x01\0"), None);
        assert_eq!(wasm_os(b"\0asm"), None);
    }

    fn options(format: BuildFormat) -> BuildOptions {
        BuildOptions {
            reference: ImageRef::parse("localhost:5000/app:v1").unwrap(),
            format,
            file_name: "app.wasm".into(),
            annotations: BTreeMap::from([(
                "org.opencontainers.image.source".into(),
                "https://example.com/app".into(),
            )]),
            created: Some(UNIX_EPOCH),
            files: Vec::new(),
            exposed_ports: Vec::new(),
        }
    }

    #[test]
    fn compat_images_take_files_and_ports() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        fs::create_dir_all(site.join("css")).unwrap();
        fs::write(site.join("index.html"), "<h1>hi</h1>").unwrap();
        fs::write(site.join("css/a.css"), "h1{}").unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let mut opts = options(BuildFormat::Compat);
        opts.files = vec![(site.clone(), "/srv/www".into())];
        opts.exposed_ports = vec![8080];
        let record = build(&store, COMPONENT, &opts).unwrap();
        let manifest: Value =
            serde_json::from_slice(&store.read_blob(&record.manifest).unwrap()).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let config: Value =
            serde_json::from_slice(&store.read_blob(config_digest).unwrap()).unwrap();
        assert_eq!(config["config"]["ExposedPorts"], json!({"8080/tcp": {}}));
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let gz = store.read_blob(layer).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
        let names: Vec<String> = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "app.wasm",
                "srv/",
                "srv/www/",
                "srv/www/css/",
                "srv/www/css/a.css",
                "srv/www/index.html"
            ]
        );
        // Not into an artifact; no way out of the image's root; nothing but files and dirs.
        let mut opts = options(BuildFormat::Artifact);
        opts.files = vec![(site.clone(), "/www".into())];
        let e = build(&store, COMPONENT, &opts).unwrap_err().to_string();
        assert!(e.contains("compat"), "{e}");
        let mut opts = options(BuildFormat::Compat);
        opts.files = vec![(site.clone(), "/a/../..".into())];
        let e = build(&store, COMPONENT, &opts).unwrap_err().to_string();
        assert!(e.contains(".."), "{e}");
        std::os::unix::fs::symlink("/etc/passwd", site.join("link")).unwrap();
        let mut opts = options(BuildFormat::Compat);
        opts.files = vec![(site.clone(), "/www".into())];
        let e = build(&store, COMPONENT, &opts).unwrap_err().to_string();
        assert!(e.contains("link") && e.contains("regular files"), "{e}");
    }

    #[test]
    fn artifact_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = build(&store, COMPONENT, &options(BuildFormat::Artifact)).unwrap();
        assert_eq!(record.digest, record.manifest);
        let manifest: Value =
            serde_json::from_slice(&store.read_blob(&record.digest).unwrap()).unwrap();
        assert_eq!(manifest["config"]["mediaType"], media::WASM_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], media::WASM_LAYER);
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.created"],
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.source"],
            "https://example.com/app"
        );
        let config: Value = serde_json::from_slice(
            &store
                .read_blob(manifest["config"]["digest"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (config["os"].as_str(), config["architecture"].as_str()),
            (Some("wasip2"), Some("wasm"))
        );

        let image = image::open(
            &store,
            &options(BuildFormat::Artifact).reference,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(image.format, crate::ImageFormat::Artifact);
        assert_eq!(image.config.entrypoint, ["/app.wasm"]);
        assert_eq!(fs::read(image.rootfs.join("app.wasm")).unwrap(), COMPONENT);
    }

    #[test]
    fn compat_images_serve_every_platform_from_one_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = build(&store, MODULE, &options(BuildFormat::Compat)).unwrap();
        let index: Value =
            serde_json::from_slice(&store.read_blob(&record.digest).unwrap()).unwrap();
        let platforms: Vec<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(platforms, ["wasip1/wasm", "linux/amd64", "linux/arm64"]);
        let layers: BTreeSet<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let manifest = image::read_manifest(&store, m["digest"].as_str().unwrap()).unwrap();
                manifest.layers()[0].digest().to_string()
            })
            .collect();
        assert_eq!(layers.len(), 1);
        assert_eq!(
            record.manifest,
            index["manifests"][0]["digest"].as_str().unwrap()
        );

        let image = image::open(
            &store,
            &options(BuildFormat::Compat).reference,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(image.format, crate::ImageFormat::Compat);
        assert_eq!(image.config.argv(&[]), ["/app.wasm"]);
        assert_eq!(fs::read(image.rootfs.join("app.wasm")).unwrap(), MODULE);

        // Exported layouts hold every blob the index reaches.
        let out = dir.path().join("layout");
        export(&store, &options(BuildFormat::Compat).reference, &out).unwrap();
        let index_json: Value =
            serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index_json["manifests"][0]["annotations"]["io.containerd.image.name"],
            "localhost:5000/app:v1"
        );
        assert_eq!(
            fs::read_dir(out.join("blobs/sha256")).unwrap().count(),
            1 + 3 + 3 + 1
        );
        let tar_path = dir.path().join("app.tar");
        export(&store, &options(BuildFormat::Compat).reference, &tar_path).unwrap();
        let names: Vec<String> = tar::Archive::new(fs::File::open(&tar_path).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(&names[..2], ["oci-layout", "index.json"]);
        assert_eq!(names.len(), 2 + 8);
    }

    #[test]
    fn not_wasm_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = build(&store, b"#!/bin/sh\n", &options(BuildFormat::Artifact)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("app.wasm: not a WebAssembly binary"),
            "{err}"
        );
    }
}
