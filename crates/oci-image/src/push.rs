//! Pushing images from the store to a registry.

use std::collections::BTreeSet;

use oci_client::RegistryOperation;

use crate::error::{Error, Result};
use crate::image::{self, read_index};
use crate::progress::Quiet;
use crate::pull::{PullOptions, Registry};
use crate::reference::ImageRef;
use crate::store::{is_index, Store};

/// Pushes the image named `source` in the store to `target` (often the same name):
/// blobs the registry lacks, each manifest by digest, then the top document by tag.
/// Returns the pushed digest.
///
/// The copy is the same image: a pull keeps an image's whole index but fetches only the
/// manifest (and blobs) of the platform it runs, so the other platforms' manifests and
/// blobs that are not in the store are fetched from where the image came from — the
/// registry `source` names — on the way (as `crane copy` does), rather than pushing an
/// index whose manifests the target lacks. What is fetched so is held to the same limits
/// as a pull: documents to the document limit before they are read, a manifest's blobs to
/// what an image within the unpacked limit can take, and the whole push to
/// [`PullOptions::deadline`].
pub async fn push(
    store: &Store,
    source: &ImageRef,
    target: &ImageRef,
    options: &PullOptions,
) -> Result<String> {
    options
        .within(
            || format!("push of {source} to {target}"),
            push_within(store, source, target, options),
        )
        .await
}

async fn push_within(
    store: &Store,
    source: &ImageRef,
    target: &ImageRef,
    options: &PullOptions,
) -> Result<String> {
    let record = store
        .resolve(source)?
        .ok_or_else(|| Error::NotFound(source.to_string()))?;
    let registry = Registry::new(target, options.credentials.as_ref(), options.insecure)?;
    let progress = options
        .progress
        .clone()
        .unwrap_or(std::sync::Arc::new(Quiet));
    registry
        .client
        .auth(target.as_oci(), &registry.auth, RegistryOperation::Push)
        .await
        .map_err(|e| registry.error(target, e))?;

    let top = store.read_blob(&record.digest)?;
    let mut manifests = Vec::new();
    if is_index(&record.media_type, &top) {
        for m in read_index(&top, &record.digest)?.manifests() {
            manifests.push((m.digest().to_string(), m.media_type().to_string(), m.size()));
        }
    }
    // The registry the image came from, opened when something must be fetched from it.
    let mut origin: Option<Registry> = None;
    let mut pushed = BTreeSet::new();
    let single = [(record.digest.clone(), record.media_type.clone(), 0)];
    let all = if manifests.is_empty() {
        &single[..]
    } else {
        &manifests[..]
    };
    for (digest, media_type, size) in all {
        if !store.has_blob(digest) {
            let from = open_origin(&mut origin, source, target, options)?;
            let what = format!("{source}: manifest {digest}");
            options.limits.document(&what, *size)?;
            let (bytes, _) = from
                .document(
                    &source.with_digest(digest),
                    crate::media::MANIFEST_TYPES,
                    options.limits.max_document,
                    &what,
                )
                .await?;
            store.write_blob(&bytes, Some((digest, *size)))?;
        }
        let manifest = image::read_manifest(store, digest)?;
        // As a pull would: nothing of it is fetched if its descriptors alone break a limit.
        let limits = &options.limits;
        limits.layers(digest, manifest.layers().len())?;
        limits.document(
            &format!("{source}: image config {}", manifest.config().digest()),
            manifest.config().size(),
        )?;
        limits.downloads(
            digest,
            manifest
                .layers()
                .iter()
                .map(|l| (l.digest().as_ref(), l.size())),
        )?;
        let blobs = std::iter::once(manifest.config()).chain(manifest.layers().iter());
        for blob in blobs {
            let d = blob.digest().to_string();
            if !pushed.insert(d.clone()) {
                continue;
            }
            progress.start(&d, blob.size());
            let exists = registry
                .client
                .blob_exists(target.as_oci(), &d)
                .await
                .map_err(|e| registry.error(target, e))?;
            if !exists {
                if !store.has_blob(&d) {
                    let from = open_origin(&mut origin, source, target, options)?;
                    crate::pull::fetch_blob(from, source, store, blob, &Quiet).await?;
                }
                let bytes = store.read_blob(&d)?;
                registry
                    .client
                    .push_blob(target.as_oci(), bytes, &d)
                    .await
                    .map_err(|e| registry.error(target, e))?;
            }
            progress.advance(&d, blob.size());
            progress.finish(&d);
        }
        if !manifests.is_empty() {
            put_manifest(
                &registry,
                store,
                &target.with_digest(digest),
                target,
                digest,
                media_type,
            )
            .await?;
        }
    }
    put_manifest(
        &registry,
        store,
        target,
        target,
        &record.digest,
        &record.media_type,
    )
    .await?;
    Ok(record.digest)
}

/// The registry `source` names (opened once), to fetch what the store lacks from; the
/// target's credentials are used only when it is the same registry.
fn open_origin<'a>(
    origin: &'a mut Option<Registry>,
    source: &ImageRef,
    target: &ImageRef,
    options: &PullOptions,
) -> Result<&'a Registry> {
    if origin.is_none() {
        let same = source.registry() == target.registry();
        let credentials = options.credentials.as_ref().filter(|_| same);
        *origin = Some(Registry::new(source, credentials, options.insecure)?);
    }
    Ok(origin.as_ref().expect("opened above"))
}

async fn put_manifest(
    registry: &Registry,
    store: &Store,
    to: &ImageRef,
    target: &ImageRef,
    digest: &str,
    media_type: &str,
) -> Result<()> {
    let bytes = store.read_blob(digest)?;
    let content_type = http::HeaderValue::from_str(media_type)
        .map_err(|e| Error::invalid(digest, format!("media type {media_type:?}: {e}")))?;
    registry
        .client
        .push_manifest_raw(to.as_oci(), bytes, content_type)
        .await
        .map_err(|e| registry.error(target, e))?;
    Ok(())
}
