//! Pulling images from OCI distribution registries into the store.

mod bounded;

use std::sync::Arc;
use std::time::Duration;

use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_spec::image::Descriptor;
use sha2::{Digest as _, Sha256};

use crate::auth::Credentials;
use crate::error::{Error, Result};
use crate::image::{self, Image};
use crate::limits::ImageLimits;
use crate::media;
use crate::progress::{Progress, Quiet};
use crate::reference::ImageRef;
use crate::store::{document_media_type, is_index, ImageRecord, Store};

pub(crate) use bounded::Watchdog;
pub use bounded::{MIN_PROGRESS, PROGRESS_WINDOW};

/// How long a pull or push may take in all, by default: past it, it stops with
/// [`Error::Deadline`] (and a pull resumes where it stopped when run again).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// How to reach the registry and what to accept: [`PullOptions::default`] (docker's
/// credentials, TLS off loopback, the default limits, [`DEFAULT_DEADLINE`]) and what
/// differs.
#[derive(Clone)]
#[non_exhaustive]
pub struct PullOptions {
    /// Credentials; `None` reads docker's `config.json` for the registry.
    pub credentials: Option<Credentials>,
    /// Treat the registry as docker treats an insecure registry: plain HTTP, and no
    /// certificate verification for any HTTPS it redirects to. Loopback registries use
    /// plain HTTP without it (but still verify certificates elsewhere).
    pub insecure: bool,
    /// Caps on the documents, layers and unpacked size of the image.
    pub limits: ImageLimits,
    /// Receives download progress.
    pub progress: Option<Arc<dyn Progress>>,
    /// How long the whole pull or push may take; `None` for no limit. Whatever the
    /// deadline, a download that brings less than [`MIN_PROGRESS`] bytes in a
    /// [`PROGRESS_WINDOW`] is stopped.
    pub deadline: Option<Duration>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            credentials: None,
            insecure: false,
            limits: ImageLimits::default(),
            progress: None,
            deadline: Some(DEFAULT_DEADLINE),
        }
    }
}

impl PullOptions {
    /// Uses these credentials instead of docker's `config.json`.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Treats the registry as insecure (see the field).
    pub fn insecure(mut self, yes: bool) -> Self {
        self.insecure = yes;
        self
    }

    /// Caps on the documents, layers and unpacked size.
    pub fn limits(mut self, limits: ImageLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Reports download progress here.
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Stops the pull or push after `deadline` (`None`: no limit).
    pub fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Runs `work` (a pull or push named `what`) within the deadline.
    pub(crate) async fn within<T>(
        &self,
        what: impl FnOnce() -> String,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(deadline) = self.deadline else {
            return work.await;
        };
        tokio::time::timeout(deadline, work)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Deadline {
                    what: what(),
                    deadline: humantime::format_duration(deadline).to_string(),
                })
            })
    }
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("credentials", &self.credentials)
            .field("insecure", &self.insecure)
            .field("limits", &self.limits)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// A client for one registry, with its credentials resolved.
pub(crate) struct Registry {
    pub(crate) client: oci_client::Client,
    pub(crate) auth: RegistryAuth,
    credentials: Credentials,
    /// The URL scheme of the registry, as the client chose it.
    scheme: &'static str,
    /// What reads documents within their limits (the client reads them whole).
    http: reqwest::Client,
}

impl Registry {
    pub(crate) fn new(
        reference: &ImageRef,
        credentials: Option<&Credentials>,
        insecure: bool,
    ) -> Result<Self> {
        // The process may already have chosen a provider; that one is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (protocol, scheme) = if insecure {
            (ClientProtocol::Http, "http")
        } else if reference.is_loopback() {
            (
                ClientProtocol::HttpsExcept(vec![reference.registry().to_owned()]),
                "http",
            )
        } else {
            (ClientProtocol::Https, "https")
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("wasmpod/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(insecure)
            .build()
            .map_err(|e| Error::Registry {
                reference: reference.to_string(),
                message: format!("cannot make an HTTP client: {e}"),
            })?;
        let client = oci_client::Client::new(ClientConfig {
            protocol,
            // Also spares loading the system trust store, which costs tens of milliseconds.
            accept_invalid_certificates: insecure,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("wasmpod/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        });
        let credentials = match credentials {
            Some(c) => c.clone(),
            None => Credentials::from_docker_config(reference.registry())?,
        };
        Ok(Self {
            client,
            auth: credentials.to_oci(),
            credentials,
            scheme,
            http,
        })
    }

    /// Turns a client error into one line naming the image.
    pub(crate) fn error(&self, reference: &ImageRef, e: OciDistributionError) -> Error {
        let registry = |message: String| Error::Registry {
            reference: reference.to_string(),
            message,
        };
        match e {
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                Error::Unreachable {
                    reference: reference.to_string(),
                    registry: reference.registry().to_owned(),
                    message: bounded::innermost(&e),
                }
            }
            OciDistributionError::RequestError(e)
                if matches!(e.status().map(|s| s.as_u16()), Some(401 | 403)) =>
            {
                self.error(
                    reference,
                    OciDistributionError::UnauthorizedError { url: String::new() },
                )
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => match &self.credentials {
                Credentials::Basic { username, .. } => registry(format!(
                    "the registry refused the credentials of user {username:?}"
                )),
                Credentials::Anonymous => registry(
                    "authentication required (pass --username, or add the registry to ~/.docker/config.json)"
                        .to_owned(),
                ),
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let first = envelope.errors.first();
                match first.map(|e| &e.code) {
                    Some(OciErrorCode::ManifestUnknown) => registry(format!(
                        "{} not found in the registry",
                        match reference.digest() {
                            Some(d) => format!("digest {d}"),
                            None => format!("tag {:?}", reference.tag().unwrap_or("latest")),
                        }
                    )),
                    Some(OciErrorCode::NameUnknown) => registry(format!(
                        "repository {:?} not found in the registry",
                        reference.repository()
                    )),
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => {
                        self.error(reference, OciDistributionError::UnauthorizedError { url: String::new() })
                    }
                    _ => registry(
                        envelope
                            .errors
                            .iter()
                            .map(|e| format!("{:?}: {}", e.code, e.message))
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                }
            }
            OciDistributionError::ServerError { code, message, .. } => {
                registry(format!("the registry answered HTTP {code}: {}", message.trim()))
            }
            OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
                expected,
                actual,
            }) => Error::DigestMismatch {
                digest: expected,
                detail: format!("received content hashes to {actual}"),
            },
            other => registry(other.to_string()),
        }
    }
}

fn to_oci_descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        ..OciDescriptor::default()
    }
}

/// Pulls `reference` into the store (verifying every digest and size), unpacks it and
/// tags it. Blobs already present are not downloaded again; a download that was cut off
/// resumes where it stopped.
///
/// The whole pull runs within [`PullOptions::deadline`]; a manifest or index larger than
/// the document limit is refused before the bytes past the limit are read.
pub async fn pull(store: &Store, reference: &ImageRef, options: &PullOptions) -> Result<Image> {
    options
        .within(
            || format!("pull of {reference}"),
            pull_within(store, reference, options),
        )
        .await
}

async fn pull_within(store: &Store, reference: &ImageRef, options: &PullOptions) -> Result<Image> {
    let limits = &options.limits;
    let registry = Registry::new(reference, options.credentials.as_ref(), options.insecure)?;
    let progress: Arc<dyn Progress> = options.progress.clone().unwrap_or(Arc::new(Quiet));
    let (bytes, digest) = registry
        .document(
            reference,
            media::MANIFEST_TYPES,
            limits.max_document,
            &format!("{reference}: manifest"),
        )
        .await?;
    limits.document(
        &format!("{reference}: manifest {digest}"),
        bytes.len() as u64,
    )?;
    let media_type = document_media_type(&bytes);
    store.write_blob(&bytes, None)?;
    let (manifest_digest, manifest_bytes) = if is_index(&media_type, &bytes) {
        let index = image::read_index(&bytes, &digest)?;
        let entry = image::select_manifest(&index, &reference.to_string())?;
        let entry_digest = entry.digest().to_string();
        limits.document(
            &format!("{reference}: manifest {entry_digest}"),
            entry.size(),
        )?;
        let by_digest = reference.with_digest(&entry_digest);
        let (m, _) = registry
            .document(
                &by_digest,
                media::MANIFEST_TYPES,
                limits.max_document,
                &format!("{reference}: manifest {entry_digest}"),
            )
            .await?;
        store.write_blob(&m, Some((&entry_digest, entry.size())))?;
        (entry_digest, m)
    } else {
        (digest.clone(), bytes.clone())
    };
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| Error::invalid(format!("manifest {manifest_digest}"), e))?;
    // Refuse oversized or unknown content before downloading anything.
    limits.layers(&manifest_digest, manifest.layers().len())?;
    limits.document(
        &format!("{reference}: image config {}", manifest.config().digest()),
        manifest.config().size(),
    )?;
    for layer in manifest.layers() {
        media::layer_kind(layer.media_type().as_ref(), layer.digest().as_ref())?;
    }
    limits.downloads(
        &manifest_digest,
        manifest
            .layers()
            .iter()
            .map(|l| (l.digest().as_ref(), l.size())),
    )?;
    let blobs = std::iter::once(manifest.config()).chain(manifest.layers().iter());
    let downloads = blobs.map(|d| fetch_blob(&registry, reference, store, d, progress.as_ref()));
    futures_util::future::try_join_all(downloads).await?;
    let size = manifest.config().size() + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
    image::inspect(store, &manifest, &manifest_digest)?;
    let record = ImageRecord {
        digest,
        media_type,
        manifest: manifest_digest,
        size,
    };
    // Tagged only once it unpacked: a name never points at an image that cannot open.
    let image = image::open_record(store, reference, record.clone(), limits)?;
    store.tag(reference, record)?;
    Ok(image)
}

/// Downloads one blob into the store unless it is there; resumes a partial download, and
/// starts over once if the resumed content turns out wrong.
pub(crate) async fn fetch_blob(
    registry: &Registry,
    reference: &ImageRef,
    store: &Store,
    desc: &Descriptor,
    progress: &dyn Progress,
) -> Result<()> {
    let digest = desc.digest().to_string();
    progress.start(&digest, desc.size());
    for attempt in 0..2 {
        let Some(mut ingest) = store.ingest(&digest).await? else {
            progress.finish(&digest);
            return Ok(());
        };
        let (mut len, mut hasher) = ingest.resume()?;
        if len > desc.size() {
            ingest.truncate()?;
            (len, hasher) = (0, Sha256::new());
        }
        let resumed = len > 0;
        if len < desc.size() {
            let oci_desc = to_oci_descriptor(desc);
            let stream = if resumed {
                match registry
                    .client
                    .pull_blob_stream_partial(reference.as_oci(), &oci_desc, len, None)
                    .await
                    .map_err(|e| registry.error(reference, e))?
                {
                    BlobResponse::Partial(s) => {
                        tracing::debug!(%digest, offset = len, "resuming a download");
                        progress.advance(&digest, len);
                        s
                    }
                    BlobResponse::Full(s) => {
                        ingest.truncate()?;
                        (len, hasher) = (0, Sha256::new());
                        s
                    }
                }
            } else {
                registry
                    .client
                    .pull_blob_stream(reference.as_oci(), &oci_desc)
                    .await
                    .map_err(|e| registry.error(reference, e))?
            };
            let mut stream = stream.stream;
            let mut watchdog = Watchdog::new();
            let what = format!("{reference}: blob {digest}");
            while let Some(chunk) = watchdog.next(&mut stream, &what).await? {
                let chunk = match chunk {
                    Ok(c) => c,
                    // The client's own end-of-stream digest check: ours below decides.
                    Err(_) if len == desc.size() => break,
                    Err(e) => {
                        return Err(Error::Registry {
                            reference: reference.to_string(),
                            message: format!(
                                "downloading {digest}: {e} (the pull resumes from here)"
                            ),
                        })
                    }
                };
                if len + chunk.len() as u64 > desc.size() {
                    ingest.discard();
                    return Err(Error::DigestMismatch {
                        digest,
                        detail: format!("the registry sent more than {} bytes", desc.size()),
                    });
                }
                watchdog.advance(chunk.len());
                hasher.update(&chunk);
                ingest.write(&chunk)?;
                len += chunk.len() as u64;
                progress.advance(&digest, chunk.len() as u64);
            }
        }
        match ingest.commit(hasher, len, desc.size()) {
            Ok(()) => {
                progress.finish(&digest);
                return Ok(());
            }
            Err(Error::DigestMismatch { .. }) if resumed && attempt == 0 => {
                tracing::warn!(%digest, "resumed download was wrong; starting over");
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::DigestMismatch {
        digest,
        detail: "a fresh download did not match either".to_owned(),
    })
}
