//! A registry front that demands the bearer-token flow, for tests: `/v2/…` answers 401 with
//! `WWW-Authenticate: Bearer realm=…/token` until a request carries the token, `/token`
//! hands the token out for the right basic credentials, and authorised GET/HEAD requests
//! are relayed to a real (unauthenticated) registry behind it. One request per connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const TOKEN: &str = "wasmpod-test-token";

/// A running token-auth front; stops accepting when dropped (its thread exits with the test).
#[derive(Debug)]
pub struct TokenProxy {
    port: u16,
    /// How many tokens were issued.
    pub issued: Arc<AtomicUsize>,
}

impl TokenProxy {
    /// Fronts `upstream` (`host:port`), granting tokens to `user`/`password`.
    pub fn start(upstream: String, user: &str, password: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = format!("{user}:{password}");
        let issued = Arc::new(AtomicUsize::new(0));
        let counter = issued.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (upstream, expected, counter) =
                    (upstream.clone(), expected.clone(), counter.clone());
                std::thread::spawn(move || handle(stream, &upstream, &expected, port, &counter));
            }
        });
        Self { port, issued }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn handle(mut client: TcpStream, upstream: &str, expected: &str, port: u16, issued: &AtomicUsize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();

    if target.starts_with("/token") {
        let granted = authorization
            .strip_prefix("Basic ")
            .and_then(|b| {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()
            })
            .is_some_and(|d| d == expected.as_bytes());
        if granted {
            issued.fetch_add(1, Ordering::SeqCst);
            let body =
                format!(r#"{{"token":"{TOKEN}","access_token":"{TOKEN}","expires_in":300}}"#);
            let _ = write!(client, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        } else {
            let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
            let _ = write!(client, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
        return;
    }
    if authorization != format!("Bearer {TOKEN}") || !matches!(method, "GET" | "HEAD") {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        let _ = write!(
            client,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"wasmpod-test\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let accept = head
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase().starts_with("accept:")
                || l.to_ascii_lowercase().starts_with("range:")
        })
        .map(|l| format!("{l}\r\n"))
        .collect::<String>();
    let _ = write!(
        up,
        "{method} {target} HTTP/1.0\r\nHost: {upstream}\r\n{accept}\r\n"
    );
    let mut response = Vec::new();
    let _ = up.read_to_end(&mut response);
    let _ = client.write_all(&response);
}
