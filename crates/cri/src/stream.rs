//! The CRI's streaming calls, `Exec` and `Attach`: the runtime answers with a URL on its
//! streaming server, which speaks Kubernetes' remote-command protocol over a WebSocket, as
//! the kubelet proxies it for `kubectl exec -it`. Offered `v5.channel.k8s.io` and
//! `v4.channel.k8s.io` (containerd 1.6's server knows only v4). Each binary message starts
//! with its channel: 0 stdin, 1 stdout, 2 stderr, 3 how the process ended (a Kubernetes
//! `Status` as JSON), 4 a terminal's size (`{"Width":W,"Height":H}`); in v5, channel 255
//! closes a stream (`[255, 0]`: stdin has ended).

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::error::{Error, Result};

/// The sub-protocols offered, best first.
const PROTOCOLS: &str = "v5.channel.k8s.io, v4.channel.k8s.io";
const V5: &str = "v5.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// A terminal's size, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// The local ends of a streaming session.
pub struct StreamIo {
    /// What is sent to the process's stdin, when it has one; its end closes the
    /// process's stdin (v5; a v4 server is never told).
    pub stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
    /// Where the process's stdout goes (with a terminal, all its output).
    pub stdout: Box<dyn AsyncWrite + Unpin + Send>,
    /// Where its stderr goes.
    pub stderr: Box<dyn AsyncWrite + Unpin + Send>,
    /// The terminal's sizes, the first at once and then each change, for a session with a
    /// terminal.
    pub sizes: Option<mpsc::Receiver<TerminalSize>>,
}

impl std::fmt::Debug for StreamIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamIo")
            .field("stdin", &self.stdin.is_some())
            .field("sizes", &self.sizes.is_some())
            .finish_non_exhaustive()
    }
}

/// The `Status` the server sends on channel 3 as the process ends.
#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    details: Option<StatusDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct StatusDetails {
    #[serde(default)]
    causes: Vec<StatusCause>,
}

#[derive(Debug, Default, Deserialize)]
struct StatusCause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// The exit code a `Status` reports: 0 for `Success`, the `ExitCode` cause of a
/// `NonZeroExitCode`; an error for any other failure (the runtime could not run it).
fn exit_code(what: &str, json: &[u8]) -> Result<i32> {
    let status: Status = serde_json::from_slice(json).map_err(|e| Error::Stream {
        what: what.to_owned(),
        reason: format!(
            "the streaming server's status {:?} is not a Kubernetes Status: {e}",
            String::from_utf8_lossy(json)
        ),
    })?;
    if status.status == "Success" {
        return Ok(0);
    }
    let code = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .find(|c| c.reason == "ExitCode")
        .and_then(|c| c.message.parse().ok());
    match (status.reason.as_str(), code) {
        ("NonZeroExitCode", Some(code)) => Ok(code),
        _ => Err(Error::Stream {
            what: what.to_owned(),
            reason: if status.message.is_empty() {
                format!("it failed ({})", status.reason)
            } else {
                status.message
            },
        }),
    }
}

/// The WebSocket address of a streaming URL (`http://` → `ws://`).
fn websocket_url(url: &str) -> Result<String> {
    match url.split_once("://") {
        Some(("http", rest)) => Ok(format!("ws://{rest}")),
        Some(("https", rest)) => Ok(format!("wss://{rest}")),
        Some(("ws" | "wss", _)) => Ok(url.to_owned()),
        _ => Err(Error::Stream {
            what: url.to_owned(),
            reason: "the runtime's streaming URL is not http(s)".into(),
        }),
    }
}

/// Connects to streaming `url` (from `Exec` or `Attach`), relays `io` until the process
/// ends, and returns its exit code. `what` names the session in errors.
pub async fn run(what: &str, url: &str, io: StreamIo) -> Result<i32> {
    let failed = |reason: String| Error::Stream {
        what: what.to_owned(),
        reason,
    };
    let mut request = websocket_url(url)?
        .into_client_request()
        .map_err(|e| failed(format!("streaming URL {url}: {e}")))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(PROTOCOLS),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| failed(format!("connecting to the streaming server at {url}: {e}")))?;
    let v5 = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .is_some_and(|p| p.as_bytes() == V5.as_bytes());
    let (mut sink, mut source) = socket.split();
    let StreamIo {
        stdin,
        mut stdout,
        mut stderr,
        sizes,
    } = io;
    // Everything sent goes through one queue: stdin and the terminal's sizes.
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let sender = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut pumps = Vec::new();
    if let Some(mut stdin) = stdin {
        let tx = tx.clone();
        pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                buf[0] = STDIN;
                match stdin.read(&mut buf[1..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let frame = buf[..=n].to_vec();
                        if tx.send(Message::binary(frame)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if v5 {
                let _ = tx.send(Message::binary(vec![CLOSE, STDIN])).await;
            }
        }));
    }
    if let Some(mut sizes) = sizes {
        let tx = tx.clone();
        pumps.push(tokio::spawn(async move {
            while let Some(size) = sizes.recv().await {
                let mut frame = vec![RESIZE];
                frame.extend_from_slice(
                    format!(r#"{{"Width":{},"Height":{}}}"#, size.width, size.height).as_bytes(),
                );
                if tx.send(Message::binary(frame)).await.is_err() {
                    return;
                }
            }
        }));
    }
    let mut status = Vec::new();
    let mut ended = false;
    while let Some(message) = source.next().await {
        let message = message.map_err(|e| failed(format!("the stream broke: {e}")))?;
        match message {
            Message::Binary(data) => {
                let Some((&channel, data)) = data.split_first() else {
                    continue;
                };
                let written = match channel {
                    STDOUT => stdout.write_all(data).await.and(stdout.flush().await),
                    STDERR => stderr.write_all(data).await.and(stderr.flush().await),
                    STATUS => {
                        status.extend_from_slice(data);
                        ended = true;
                        Ok(())
                    }
                    _ => Ok(()),
                };
                written.map_err(|e| failed(format!("writing its output: {e}")))?;
            }
            // A ping is answered by the socket itself.
            Message::Close(_) => break,
            _ => {}
        }
    }
    for pump in pumps {
        pump.abort();
    }
    drop(tx);
    sender.abort();
    if !ended {
        return Err(failed(
            "the streaming server closed the stream without saying how the process ended".into(),
        ));
    }
    // A v4/v5 server sends an empty status object only for success in some versions.
    if status.iter().all(u8::is_ascii_whitespace) {
        return Ok(0);
    }
    exit_code(what, &status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        assert_eq!(
            exit_code("x", br#"{"metadata":{},"status":"Success"}"#).unwrap(),
            0
        );
        let failed = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 7], exit code 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(exit_code("x", failed).unwrap(), 7);
        let internal = br#"{"metadata":{},"status":"Failure","message":"failed to exec in container: not running","reason":"InternalError"}"#;
        let e = exit_code("exec c1", internal).unwrap_err().to_string();
        assert!(
            e.contains("exec c1") && e.contains("failed to exec in container: not running"),
            "{e}"
        );
        let e = exit_code("exec c1", b"<html>").unwrap_err().to_string();
        assert!(e.contains("not a Kubernetes Status"), "{e}");
    }

    #[test]
    fn streaming_urls_become_websocket_urls() {
        assert_eq!(
            websocket_url("http://127.0.0.1:4242/exec/abc").unwrap(),
            "ws://127.0.0.1:4242/exec/abc"
        );
        assert_eq!(
            websocket_url("https://node:10250/attach/x").unwrap(),
            "wss://node:10250/attach/x"
        );
        assert!(websocket_url("unix:///run/x").is_err());
    }
}
