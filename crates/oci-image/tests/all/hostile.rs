//! A hostile registry (issue 38's findings 8 and 9): documents without end, documents that
//! claim gigabytes, a drip of one byte at a time, and a manifest whose layers could never
//! fit. Each pull or push stops at its limit, with an error naming it, and reads nothing
//! past it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_image::{Error, ImageRecord, ImageRef};
use sha2::{Digest as _, Sha256};

use crate::{anonymous, rt, store};

/// What the registry answers to a GET of a manifest.
#[derive(Clone)]
enum Manifest {
    /// Chunks of JSON-looking bytes, without end.
    Endless,
    /// A `Content-Length` of this many bytes, then a few bytes and silence.
    Claims(u64),
    /// One byte every 200 ms of a document of 1,000 bytes.
    Drip,
    /// These bytes.
    Bytes(Vec<u8>),
}

/// A registry on loopback that answers `/v2/` and manifests as `manifest` says, and 404
/// to anything else; counts the manifest bytes it managed to send.
struct Hostile {
    port: u16,
    sent: Arc<AtomicU64>,
}

impl Hostile {
    fn start(manifest: Manifest) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (manifest, sent) = (manifest.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = answer(client, &manifest, &sent);
                });
            }
        });
        Self { port, sent }
    }

    fn image(&self, name: &str) -> ImageRef {
        ImageRef::parse(&format!("127.0.0.1:{}/{name}", self.port)).unwrap()
    }
}

fn answer(client: TcpStream, manifest: &Manifest, sent: &AtomicU64) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut out = client;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        // The rest of the head.
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" {
                break;
            }
        }
        if path == "/v2/" {
            out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")?;
            continue;
        }
        if !path.contains("/manifests/") {
            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        let media = "application/vnd.oci.image.manifest.v1+json";
        match manifest {
            Manifest::Endless => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {media}\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?;
                let chunk = vec![b' '; 64 << 10];
                loop {
                    write!(out, "{:x}\r\n", chunk.len())?;
                    out.write_all(&chunk)?;
                    out.write_all(b"\r\n")?;
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
            Manifest::Claims(size) => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {media}\r\nContent-Length: {size}\r\n\r\n{{"
                )?;
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(60));
                return Ok(());
            }
            Manifest::Drip => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {media}\r\nContent-Length: 1000\r\n\r\n"
                )?;
                for _ in 0..1000 {
                    out.write_all(b" ")?;
                    sent.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Manifest::Bytes(bytes) => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {media}\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                )?;
                out.write_all(bytes)?;
            }
        }
    }
}

#[test]
fn a_manifest_without_end_is_refused_at_the_document_limit() {
    let hostile = Hostile::start(Manifest::Endless);
    let (_d, store) = store();
    let image = hostile.image("evil:v1");
    let t0 = Instant::now();
    let err = rt()
        .block_on(oci_image::pull(&store, &image, &anonymous()))
        .unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{image}: manifest: 4194305 bytes or more, over the limit of 4194304 bytes for a \
             manifest, index or config"
        )
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // What went out is the limit and what the sockets' buffers held, not gigabytes.
    std::thread::sleep(Duration::from_millis(200));
    let sent = hostile.sent.load(Ordering::Relaxed);
    assert!(sent < 32 << 20, "{sent} bytes were sent");
}

#[test]
fn a_manifest_claiming_gigabytes_is_refused_before_its_body_is_read() {
    let hostile = Hostile::start(Manifest::Claims(2_130_000_000));
    let (_d, store) = store();
    let image = hostile.image("evil:v1");
    let t0 = Instant::now();
    let err = rt()
        .block_on(oci_image::pull(&store, &image, &anonymous()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{image}: manifest: 2130000000 bytes, over the limit of 4194304 bytes for \
             a manifest, index or config"
        )
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[test]
fn a_registry_that_drips_is_stopped_at_the_pull_deadline() {
    let hostile = Hostile::start(Manifest::Drip);
    let (_d, store) = store();
    let image = hostile.image("evil:v1");
    let options = anonymous().deadline(Some(Duration::from_secs(2)));
    let t0 = Instant::now();
    let err = rt()
        .block_on(oci_image::pull(&store, &image, &options))
        .unwrap_err();
    assert!(matches!(err, Error::Deadline { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("pull of {image}: did not finish within its deadline of 2s")
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(hostile.sent.load(Ordering::Relaxed) < 30);
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A store holding only an index whose one manifest is `manifest` (not in the store), as
/// a pull of another platform leaves it; tagged `source`.
fn index_only(store: &oci_image::Store, source: &ImageRef, manifest: &[u8]) {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(manifest),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    let index = serde_json::to_vec(&index).unwrap();
    let index_digest = store.write_blob(&index, None).unwrap();
    store
        .tag(
            source,
            ImageRecord {
                digest: index_digest,
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                manifest: digest(manifest),
                size: 0,
            },
        )
        .unwrap();
}

/// Completing an image from its source registry: a manifest whose layers could never fit
/// an image within the unpacked limit is refused before any of them is fetched.
#[test]
fn push_completion_refuses_layers_past_the_limit_unfetched() {
    let zeros = format!("sha256:{}", "0".repeat(64));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": zeros, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": zeros, "size": 3u64 << 30}],
    }))
    .unwrap();
    let hostile = Hostile::start(Manifest::Bytes(manifest.clone()));
    let (_d, store) = store();
    let source = hostile.image("app:v1");
    index_only(&store, &source, &manifest);
    let target = hostile.image("copy:v1");
    let err = rt()
        .block_on(oci_image::push(&store, &source, &target, &anonymous()))
        .unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert!(
        err.to_string().contains(
            "3221225472 bytes of layers to download, more than an image within the unpacked \
             limit of 1073741824 bytes can take"
        ),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(store.dir().join("ingest"))
            .unwrap()
            .count(),
        0
    );
}

/// Completing an image from a source registry that sends a manifest without end: refused
/// at the document limit.
#[test]
fn push_completion_refuses_a_manifest_without_end() {
    let hostile = Hostile::start(Manifest::Endless);
    let (_d, store) = store();
    let source = hostile.image("app:v1");
    index_only(&store, &source, b"{\"any\": \"manifest\"}");
    let err = rt()
        .block_on(oci_image::push(
            &store,
            &source,
            &hostile.image("copy:v1"),
            &anonymous(),
        ))
        .unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert!(
        err.to_string().contains("over the limit of 4194304 bytes"),
        "{err}"
    );
    assert!(hostile.sent.load(Ordering::Relaxed) < 32 << 20);
}
