//! Serving `wasi:http/proxy` components: a C handler built from `tests/fixtures/http_hello.c`.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasm_engine::{KillHandle, ServeConfig, ServeStats};

use super::*;

/// One HTTP/1.1 request on a new connection: `(status line, body)`.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Serves the hello handler on a free loopback port; returns its address, the switch that
/// drains it and the server's task.
async fn serve_hello() -> (
    SocketAddr,
    KillHandle,
    tokio::task::JoinHandle<wasm_engine::Result<ServeStats>>,
) {
    // As servers run: instances from the pooling allocator's slots.
    let e = Engine::new(EngineConfig::default().pooling(wasm_engine::Pooling::new(256, 64 << 20)))
        .unwrap();
    let p = e
        .load_file(http_fixture::hello_handler())
        .expect("load the handler");
    assert!(e.serves_http(&p));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = KillHandle::new();
    let config = ServeConfig {
        shutdown: shutdown.clone(),
        ..Default::default()
    };
    let server = tokio::spawn(async move { e.serve(&p, listener, config).await });
    (addr, shutdown, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_answers_http() {
    let (addr, shutdown, server) = serve_hello().await;
    let (status, body) = get(addr, "/greet?x=1").await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "hello from wasm: GET /greet?x=1\n");
    shutdown.kill();
    let stats = server.await.unwrap().unwrap();
    assert_eq!(
        stats,
        ServeStats {
            requests: 1,
            failed: 0
        }
    );
}

/// Instance slots are reset in place, not handed back to the kernel (the engine keeps the
/// first pages of each resident): every request must still find a fresh instance — its
/// zeroed data zero and its initialized data as the module set it — whichever slot it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_a_fresh_instance_in_a_reused_slot() {
    let (addr, shutdown, server) = serve_hello().await;
    for round in 0..3 {
        let requests: Vec<_> = (0..8)
            .map(|_| tokio::spawn(async move { get(addr, "/state").await }))
            .collect();
        for r in requests {
            let (status, body) = r.await.unwrap().unwrap();
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(body, "visits=1 dirty=0 seeded=0\n", "round {round}");
        }
    }
    shutdown.kill();
    assert_eq!(server.await.unwrap().unwrap().requests, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_are_all_answered() {
    let (addr, shutdown, server) = serve_hello().await;
    let started = Instant::now();
    let requests: Vec<_> = (0..200)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/n/{i}?sleep=50")).await }))
        .collect();
    for (i, r) in requests.into_iter().enumerate() {
        let (status, body) = r.await.unwrap().unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK", "request {i}");
        assert_eq!(body, format!("hello from wasm: GET /n/{i}?sleep=50\n"));
    }
    let took = started.elapsed();
    eprintln!("200 concurrent requests, each waiting 50 ms in the guest: {took:?}");
    shutdown.kill();
    assert_eq!(server.await.unwrap().unwrap().requests, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight_and_refuses_new_ones() {
    let (addr, shutdown, server) = serve_hello().await;
    let in_flight: Vec<_> = (0..20)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/slow/{i}?sleep=500")).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    shutdown.kill();
    let t0 = Instant::now();
    for r in in_flight {
        let (status, _) = r.await.unwrap().unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    let stats = server.await.unwrap().unwrap();
    assert_eq!(stats.requests, 20, "{stats:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        t0.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the server still accepts after its drain"
    );
}

#[test]
fn a_command_is_not_a_handler() {
    let e = engine();
    let p = e.load_file(fixtures::probe_component()).unwrap();
    assert!(!e.serves_http(&p));
}

/// The network policy inside a served instance: a TCP connect (`wasi:sockets`) and an HTTP
/// request (`wasi:http/outgoing-handler`) reach an allowed destination; others fail inside
/// the guest with access-denied / HTTP-request-denied; a policy with no destinations
/// denies both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_connections_follow_the_policy() {
    // The allowed destination: a tiny HTTP server on loopback.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream")
                    .await;
            });
        }
    });
    // A port nobody is allowed to reach (nothing listens there either).
    let other = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    for (list, allowed) in [
        (format!("127.0.0.1:{}", up.port()), true),
        (String::new(), false),
    ] {
        let e = engine();
        let p = e.load_file(http_fixture::net_handler()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = KillHandle::new();
        let config = ServeConfig {
            shutdown: shutdown.clone(),
            network: wasm_engine::NetworkPolicy {
                outbound: wasm_engine::NetworkPolicy::parse_outbound(&list).unwrap(),
                ..Default::default()
            },
            ..Default::default()
        };
        let server = tokio::spawn(async move { e.serve(&p, listener, config).await });
        let body = |path: String| async move { get(addr, &path).await.unwrap().1 };
        let connect = body(format!("/connect/127.0.0.1/{}", up.port())).await;
        let fetch = body(format!("/fetch/127.0.0.1:{}/x", up.port())).await;
        if allowed {
            assert_eq!(connect, "connected\n");
            assert_eq!(fetch, "fetched 200: upstream");
        } else {
            assert_eq!(connect, "socket error 1 (access-denied)\n");
            assert_eq!(fetch, "http error 15 (HTTP-request-denied)\n");
        }
        let denied_connect = body(format!("/connect/127.0.0.1/{}", other.port())).await;
        assert_eq!(denied_connect, "socket error 1 (access-denied)\n", "{list}");
        let denied_fetch = body(format!("/fetch/127.0.0.1:{}/", other.port())).await;
        assert_eq!(
            denied_fetch, "http error 15 (HTTP-request-denied)\n",
            "{list}"
        );
        shutdown.kill();
        let stats = server.await.unwrap().unwrap();
        assert_eq!(stats.requests, 4);
    }
}

/// A server's instances share the container's memory gauge: their memory shows while
/// requests are in flight and is given back after; with a cap, requests past it fail (500)
/// while those within it are answered, as one memory limit over the whole container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_one_memory_gauge_and_cap() {
    async fn serve_with(
        memory: wasm_engine::MemoryGauge,
        cap: Option<u64>,
    ) -> (SocketAddr, KillHandle) {
        // As servers run: from the pooling allocator.
        let e =
            Engine::new(EngineConfig::default().pooling(wasm_engine::Pooling::default())).unwrap();
        let p = e.load_file(http_fixture::hello_handler()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = KillHandle::new();
        let config = ServeConfig {
            shutdown: shutdown.clone(),
            memory,
            limits: cap.map_or_else(wasm_engine::Limits::default, |cap| {
                wasm_engine::Limits::default().memory(cap)
            }),
            ..Default::default()
        };
        tokio::spawn(async move { e.serve(&p, listener, config).await });
        (addr, shutdown)
    }
    // One instance's size, while its request sleeps.
    let gauge = wasm_engine::MemoryGauge::default();
    let (addr, shutdown) = serve_with(gauge.clone(), None).await;
    let slow = tokio::spawn(async move { get(addr, "/one?sleep=400").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let one = gauge.bytes();
    assert!(one > 0, "no memory counted for a request in flight");
    let (status, _) = slow.await.unwrap().unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(gauge.bytes(), 0, "memory kept after the request");
    shutdown.kill();

    // Room for two and a half instances: of four at once, two are answered.
    let gauge = wasm_engine::MemoryGauge::default();
    let (addr, shutdown) = serve_with(gauge.clone(), Some(one * 5 / 2)).await;
    let requests: Vec<_> = (0..4)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/{i}?sleep=400")).await }))
        .collect();
    let mut ok = 0;
    let mut failed = 0;
    for r in requests {
        match r.await.unwrap().unwrap().0.as_str() {
            "HTTP/1.1 200 OK" => ok += 1,
            "HTTP/1.1 500 Internal Server Error" => failed += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, failed), (2, 2), "one instance is {one} bytes");
    assert!(gauge.bytes() <= one * 5 / 2);
    shutdown.kill();
}
