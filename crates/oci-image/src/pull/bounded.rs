//! Reading what a registry sends without trusting it: a document is refused past its size
//! limit before the bytes past it are read, and a download must keep moving.

use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::RegistryOperation;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::Registry;
use crate::error::{Error, Result};
use crate::reference::ImageRef;

/// The least a download must bring in each [`PROGRESS_WINDOW`]: a registry that drips a
/// byte at a time is cut off, however often its bytes reset a read timeout.
pub const MIN_PROGRESS: u64 = 64 << 10;
/// See [`MIN_PROGRESS`].
pub const PROGRESS_WINDOW: Duration = Duration::from_secs(60);

/// Counts what a download brought in the current window, and says when it fell short.
#[derive(Debug)]
pub(crate) struct Watchdog {
    window: Duration,
    min: u64,
    since: Instant,
    bytes: u64,
}

impl Watchdog {
    pub(crate) fn new() -> Self {
        Self::with(PROGRESS_WINDOW, MIN_PROGRESS)
    }

    pub(crate) fn with(window: Duration, min: u64) -> Self {
        Self {
            window,
            min,
            since: Instant::now(),
            bytes: 0,
        }
    }

    /// The next item of `stream`, or an error naming `what` when the window ends before it
    /// has brought its least.
    pub(crate) async fn next<S, T>(&mut self, stream: &mut S, what: &str) -> Result<Option<T>>
    where
        S: Stream<Item = T> + Unpin,
    {
        match tokio::time::timeout_at(self.since + self.window, stream.next()).await {
            Ok(item) => Ok(item),
            Err(_) => Err(Error::Stalled {
                what: what.to_owned(),
                detail: format!(
                    "{} bytes in the last {}, fewer than the least of {} bytes",
                    self.bytes,
                    humanize(self.window),
                    self.min
                ),
            }),
        }
    }

    /// `n` more bytes came; a window that has brought its least starts over.
    pub(crate) fn advance(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
        if self.bytes >= self.min {
            self.since = Instant::now();
            self.bytes = 0;
        }
    }
}

fn humanize(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

impl Registry {
    /// The manifest or index `reference` names, as the registry sends it, and its digest:
    /// refused once it passes `max` bytes (by its `Content-Length`, or as it streams), and
    /// when the registry stalls. The digest is the content's; a reference by digest must
    /// match it.
    pub(crate) async fn document(
        &self,
        reference: &ImageRef,
        accept: &[&str],
        max: u64,
        what: &str,
    ) -> Result<(bytes::Bytes, String)> {
        let oci = reference.as_oci();
        let token = self
            .client
            .auth(oci, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.error(reference, e))?;
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            oci.resolve_registry(),
            oci.repository(),
            oci.digest()
                .unwrap_or_else(|| oci.tag().unwrap_or("latest"))
        );
        let mut request = self.http.get(&url).header("Accept", accept.join(", "));
        match (token, &self.credentials) {
            (Some(token), _) => request = request.bearer_auth(token),
            (None, crate::auth::Credentials::Basic { username, password }) => {
                request = request.basic_auth(username, Some(password))
            }
            (None, crate::auth::Credentials::Anonymous) => {}
        }
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            reference: reference.to_string(),
            registry: reference.registry().to_owned(),
            message: innermost(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        // `Content-Length` says the size; a stream cut at the limit only that it is more.
        let too_big = |size: u64, exact: bool| Error::LimitExceeded {
            what: what.to_owned(),
            detail: format!(
                "{size} bytes{}, over the limit of {max} bytes for a manifest, index or config",
                if exact { "" } else { " or more" }
            ),
        };
        if !status.is_success() {
            // An error's body is read only as far as an error envelope can reasonably go.
            let body = read_capped(response, 64 << 10, what)
                .await
                .unwrap_or_default();
            let e = match (
                status.as_u16(),
                serde_json::from_slice::<OciEnvelope>(&body),
            ) {
                (401 | 403, _) => OciDistributionError::UnauthorizedError { url },
                (_, Ok(envelope)) if !envelope.errors.is_empty() => {
                    OciDistributionError::RegistryError { envelope, url }
                }
                (code, _) => OciDistributionError::ServerError {
                    code,
                    url,
                    message: String::from_utf8_lossy(&body).into_owned(),
                },
            };
            return Err(self.error(reference, e));
        }
        if let Some(len) = response.content_length().filter(|&n| n > max) {
            return Err(too_big(len, true));
        }
        let body = read_capped(response, max, what).await?;
        if body.len() as u64 > max {
            return Err(too_big(body.len() as u64, false));
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if let Some(wanted) = oci.digest() {
            if wanted != digest {
                return Err(Error::DigestMismatch {
                    digest: wanted.to_owned(),
                    detail: format!("received content hashes to {digest}"),
                });
            }
        }
        Ok((body, digest))
    }
}

/// The body of `response`, read up to one byte past `max` (so that the caller can tell it
/// was longer), under the [`Watchdog`].
async fn read_capped(response: reqwest::Response, max: u64, what: &str) -> Result<bytes::Bytes> {
    let mut stream = response.bytes_stream();
    let mut watchdog = Watchdog::new();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = watchdog.next(&mut stream, what).await? {
        let chunk = chunk.map_err(|e| Error::Registry {
            reference: what.to_owned(),
            message: innermost(&e),
        })?;
        watchdog.advance(chunk.len());
        let room = usize::try_from(max.saturating_add(1))
            .unwrap_or(usize::MAX)
            .saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() as u64 > max {
            break;
        }
    }
    Ok(body.freeze())
}

/// The innermost cause of `e`: what went wrong, without reqwest's wrapping.
pub(super) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = s.to_string();
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drip_is_cut_however_often_it_comes() {
        // A byte every 100 ms: each arrives well within any read timeout.
        let drip = futures_util::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((vec![0u8], n + 1))
        });
        let mut drip = Box::pin(drip);
        let mut watchdog = Watchdog::with(Duration::from_millis(500), 100);
        let t0 = Instant::now();
        let e = loop {
            match watchdog.next(&mut drip, "blob sha256:x").await {
                Ok(Some(chunk)) => watchdog.advance(chunk.len()),
                Ok(None) => panic!("the drip ended"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(
            e.starts_with("blob sha256:x: the download stalled: ")
                && e.ends_with(" bytes in the last 0.5 s, fewer than the least of 100 bytes"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_steady_download_is_never_cut() {
        let steady = futures_util::stream::iter(0..50).then(|_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            vec![0u8; 50]
        });
        let mut steady = Box::pin(steady);
        let mut watchdog = Watchdog::with(Duration::from_millis(500), 100);
        let mut total = 0;
        while let Some(chunk) = watchdog.next(&mut steady, "blob").await.unwrap() {
            watchdog.advance(chunk.len());
            total += chunk.len();
        }
        assert_eq!(total, 2500);
    }
}
