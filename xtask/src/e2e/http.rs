//! Serving `wasi:http` handlers: under `ctr` in both isolation levels (answers, many
//! requests at once, SIGTERM drains, SIGKILL aborts) and in a CRI pod at its pod IP, whose
//! outbound connections follow the `wasmpod.io/allowed-outbound` annotation.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use super::{Containerd, RUNTIME};
use crate::util::{output_ok, root};

const HTTP_IMAGE: &str = "localhost/wasmpod-e2e/http:v1";

/// Builds the handler `tests/fixtures/NAME.c` as a component (through the engine's
/// `http-fixture` example, which generates its bindings), once per e2e run.
pub(crate) fn http_fixture(env: &Containerd, name: &str) -> anyhow::Result<PathBuf> {
    let out = env.dir.join(format!("{name}.wasm"));
    if out.exists() {
        return Ok(out);
    }
    crate::util::build_http_component(name, &env.dir)
}

/// One `GET path` on a new connection to `addr`: `(status code, body)`.
pub(crate) fn get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("GET {path} from {addr}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no HTTP response: {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `addr` answers HTTP (any status).
pub(crate) fn wait_serving(addr: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match get(addr, "/ready", Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            other if Instant::now() > deadline => bail!("{addr} is not serving: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `ctr run --rm` of the hello handler on the host's network in `level`, attached: the
/// child's exit status is the task's.
fn serve_attached(
    env: &Containerd,
    id: &str,
    level: &str,
    port: u16,
) -> anyhow::Result<std::process::Child> {
    serve_image_attached(env, id, level, port, HTTP_IMAGE, "/http_hello.wasm")
}

/// `ctr run --rm --net-host` of `image` (its program `entry`) at `level`, served on
/// `port`, attached.
pub(crate) fn serve_image_attached(
    env: &Containerd,
    id: &str,
    level: &str,
    port: u16,
    image: &str,
    entry: &str,
) -> anyhow::Result<std::process::Child> {
    let annotation = format!("wasmpod.io/isolation={level}");
    serve_annotated(env, id, &annotation, port, image, entry)
}

/// `ctr run --rm --net-host` of `image` (its program `entry`) with `annotation`, served
/// on `port`, attached.
fn serve_annotated(
    env: &Containerd,
    id: &str,
    annotation: &str,
    port: u16,
    image: &str,
    entry: &str,
) -> anyhow::Result<std::process::Child> {
    let child = env
        .ctr_cmd(&[
            "run",
            "--rm",
            "--net-host",
            "--runtime",
            RUNTIME,
            "--annotation",
            annotation,
            "--annotation",
            &format!("wasmpod.io/port={port}"),
            image,
            id,
            entry,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok(child)
}

pub(crate) fn wait_exit(child: &mut std::process::Child, limit: Duration) -> anyhow::Result<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("ctr run did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Under `ctr`, in both levels: the handler answers on the annotated port; 200 requests at
/// once (20 threads × 10) are all answered; SIGTERM with 20 slow requests in flight loses
/// none and the task exits 0; SIGKILL ends it at once (137) with a request in flight.
pub(crate) fn check_http_serve(env: &Containerd) -> anyhow::Result<()> {
    let wasm = http_fixture(env, "http_hello")?;
    env.import(&wasm, HTTP_IMAGE, "compat")?;
    for level in ["shared", "process"] {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let id = format!("http-{level}");
        let mut child = serve_attached(env, &id, level, port)?;
        let started = Instant::now();
        wait_serving(&addr, Duration::from_secs(20))?;
        let first = started.elapsed();
        let (status, body) = get(&addr, "/hi?x=1", Duration::from_secs(5))?;
        ensure!(
            status == 200 && body == "hello from wasm: GET /hi?x=1\n",
            "{level}: {status} {body:?}"
        );
        // 200 concurrent requests.
        let t0 = Instant::now();
        let threads: Vec<_> = (0..20)
            .map(|t| {
                let addr = addr.clone();
                std::thread::spawn(move || -> anyhow::Result<usize> {
                    let mut ok = 0;
                    for i in 0..10 {
                        let path = format!("/c/{t}/{i}");
                        let (s, b) = get(&addr, &path, Duration::from_secs(20))?;
                        ok += usize::from(s == 200 && b.contains(&path));
                    }
                    Ok(ok)
                })
            })
            .collect();
        let mut answered = 0;
        for t in threads {
            answered += t
                .join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))??;
        }
        ensure!(
            answered == 200,
            "{level}: {answered} of 200 concurrent requests answered"
        );
        let burst = t0.elapsed();
        // SIGTERM with slow requests in flight: all answered, then exit 0.
        let slow: Vec<_> = (0..20)
            .map(|i| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    get(
                        &addr,
                        &format!("/slow/{i}?sleep=800"),
                        Duration::from_secs(20),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // The instances in flight show in the task's memory (the engine's gauge in the
        // shared level, the cgroup in the process level).
        let m = super::isolation::metrics(env, &id)?;
        let memory = m.get("memory.usage_in_bytes").copied().unwrap_or(0);
        let cpu = m.get("cpuacct.usage").copied().unwrap_or(0);
        ensure!(
            memory > 0 && cpu > 0,
            "{level}: no memory or CPU time in the metrics after 200 requests, 20 in flight: {}",
            env.ctr_ok(&["task", "metrics", &id])?
        );
        env.ctr_ok(&["task", "kill", "-s", "SIGTERM", &id])?;
        let mut drained = 0;
        for s in slow {
            if let Ok(Ok((200, body))) = s.join() {
                drained += usize::from(body.contains("sleep=800"));
            }
        }
        let code = wait_exit(&mut child, Duration::from_secs(20))?;
        ensure!(
            drained == 20,
            "{level}: SIGTERM lost {} of 20 requests in flight",
            20 - drained
        );
        ensure!(
            code == 0,
            "{level}: exit {code} after SIGTERM's drain, not 0"
        );
        ensure!(
            TcpStream::connect(&addr).is_err(),
            "{level}: {addr} still accepts"
        );
        // SIGKILL: at once, the request in flight is cut.
        let id = format!("http-{level}-kill");
        let mut child = serve_attached(env, &id, level, port)?;
        wait_serving(&addr, Duration::from_secs(20))?;
        let slow = {
            let addr = addr.clone();
            std::thread::spawn(move || get(&addr, "/slow?sleep=20000", Duration::from_secs(30)))
        };
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        env.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id])?;
        let code = wait_exit(&mut child, Duration::from_secs(10))?;
        let killed_in = t0.elapsed();
        let cut = slow
            .join()
            .map_err(|_| anyhow::anyhow!("the client panicked"))?;
        ensure!(code == 137, "{level}: exit {code} after SIGKILL, not 137");
        ensure!(cut.is_err(), "{level}: a request survived SIGKILL: {cut:?}");
        eprintln!(
            "  {level} level: first answer {first:.0?} after ctr run, 200 concurrent requests in {burst:.0?}, \
             {:.1} MiB with 20 in flight, SIGTERM drained them (exit 0), SIGKILL ended it in {killed_in:.0?} (137)",
            memory as f64 / 1048576.0
        );
    }
    Ok(())
}

/// A tiny HTTP server on every host address at a free port, answering `upstream PORT`:
/// reached from a pod through its bridge's gateway address.
fn upstream() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("0.0.0.0:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let body = format!("upstream {port}");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Ok(port)
}

/// A Pod with `runtimeClassName: wasm` serving `http_net` is reached at its pod IP on port
/// 8080 (CNI bridge), in both levels; its outbound connections (`wasi:sockets` and
/// outgoing `wasi:http`) reach the destination its annotation allows and are refused
/// elsewhere with access-denied, logged with the container's id.
pub(crate) fn check_pod_http(env: &Containerd) -> anyhow::Result<()> {
    let wasm = http_fixture(env, "http_net")?;
    let image = super::cri::push_image(env, &wasm, "e2e/http-net")?;
    let (allowed, denied) = (upstream()?, upstream()?);
    let gateway = format!("{}1", super::cri::SUBNET_PREFIX);
    for level in ["shared", "process"] {
        let name = format!("web-{level}");
        let pod = super::cri::manifest(
            env,
            &name,
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations:
    wasmpod.io/isolation: {level}
    wasmpod.io/allowed-outbound: "{gateway}:{allowed}"
spec:
  runtimeClassName: wasm
  containers:
  - name: web
    image: {image}
"#
            ),
        )?;
        let sandbox = super::cri::pod_run_ok(env, &["-d", &pod.to_string_lossy()])?;
        let status = super::cri::inspect(env, sandbox.trim())?;
        let ip = super::cri::field(&status, "/status/network/ip");
        ensure!(
            ip.starts_with(super::cri::SUBNET_PREFIX),
            "{level}: pod IP {ip:?}"
        );
        let addr = format!("{ip}:8080");
        wait_serving(&addr, Duration::from_secs(20))?;
        let (code, body) = get(&addr, "/hello", Duration::from_secs(5))?;
        ensure!(
            code == 200 && body == "hello from wasm: /hello\n",
            "{level}: {code} {body:?}"
        );
        let ask = |path: String| get(&addr, &path, Duration::from_secs(10)).map(|(_, b)| b);
        let connected = ask(format!("/connect/{gateway}/{allowed}"))?;
        ensure!(
            connected == "connected\n",
            "{level}: allowed connect: {connected:?}"
        );
        let refused = ask(format!("/connect/{gateway}/{denied}"))?;
        ensure!(
            refused == "socket error 1 (access-denied)\n",
            "{level}: denied connect: {refused:?}"
        );
        let fetched = ask(format!("/fetch/{gateway}:{allowed}/x"))?;
        ensure!(
            fetched == format!("fetched 200: upstream {allowed}"),
            "{level}: allowed fetch: {fetched:?}"
        );
        let refused_fetch = ask(format!("/fetch/{gateway}:{denied}/x"))?;
        ensure!(
            refused_fetch == "http error 15 (HTTP-request-denied)\n",
            "{level}: denied fetch: {refused_fetch:?}"
        );
        // The denial is logged with the container's id: in the shim's log (containerd's)
        // for the shared level, on the container's stderr (its CRI log) for a process.
        let container = super::cri::wasmpod_ok(env, &["cri", "ps", "-q", "--pod", sandbox.trim()])?;
        let container = container.trim();
        let read_log = || -> anyhow::Result<String> {
            Ok(match level {
                "shared" => {
                    std::fs::read_to_string(env.dir.join("containerd.log")).unwrap_or_default()
                }
                // The guest's stderr stream: `cri logs` writes it to its own stderr.
                _ => {
                    let out = env.wasmpod(&["cri", "logs", container]).output()?;
                    String::from_utf8_lossy(&out.stderr).into_owned()
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let logged = |log: &str| {
            log.lines()
                .any(|l| l.contains("network policy: denied") && l.contains(container))
        };
        let mut log = read_log()?;
        while !logged(&log) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            log = read_log()?;
        }
        ensure!(
            logged(&log),
            "{level}: no log line of the denial naming container {container}: {}",
            &log[log.len().saturating_sub(600)..]
        );
        super::cri::wasmpod_ok(env, &["pod", "rm", &name])?;
        eprintln!("  {level} level: served at {addr}; {gateway}:{allowed} reached, {gateway}:{denied} refused (socket and HTTP)");
    }
    Ok(())
}

/// The static-site example, built from its sources by `cargo xtask example`'s steps and
/// run by `ctr` (shared level, port from the image's ExposedPorts): its files come back
/// with their content types, a missing file or a path out of `/site` is 404.
pub(crate) fn check_static_site(env: &Containerd) -> anyhow::Result<()> {
    let wasm = http_fixture(env, "static-site")?;
    let tar = env.dir.join("static-site.tar");
    let image = "localhost/wasmpod-e2e/static-site:v1";
    let mut build = Command::new(&env.wasmpod);
    build.arg("--root").arg(env.dir.join("wasmpod"));
    crate::example::build_args(&mut build, &wasm, image);
    output_ok(build.arg("-o").arg(&tar))?;
    env.ctr_ok(&["image", "import", &tar.to_string_lossy()])?;
    // Served on the image's port, 8080, on the host's network: nothing else may hold it.
    if TcpStream::connect("127.0.0.1:8080").is_ok() {
        eprintln!("  skipped: something on this machine already listens on port 8080");
        return Ok(());
    }
    env.ctr_ok(&[
        "run",
        "-d",
        "--net-host",
        "--runtime",
        RUNTIME,
        image,
        "site",
        "/static-site.wasm",
    ])?;
    let addr = "127.0.0.1:8080";
    let result = (|| -> anyhow::Result<()> {
        wait_serving(addr, Duration::from_secs(20))?;
        let page = std::fs::read_to_string(root().join("examples/static-site/public/index.html"))?;
        let (status, body) = get(addr, "/", Duration::from_secs(5))?;
        ensure!(status == 200 && body == page, "GET /: {status} {body:?}");
        let (status, css) = get(addr, "/style.css", Duration::from_secs(5))?;
        ensure!(
            status == 200 && css.contains("#654ff0"),
            "GET /style.css: {status}"
        );
        for path in ["/missing.html", "/../etc/passwd", "/%2e%2e/etc/passwd"] {
            let (status, _) = get(addr, path, Duration::from_secs(5))?;
            ensure!(status == 404, "GET {path}: {status}, not 404");
        }
        Ok(())
    })();
    let _ = env.ctr(&["task", "kill", "-s", "SIGKILL", "site"]);
    result?;
    eprintln!(
        "  index.html and style.css served from the image's /site; missing and escaping paths 404"
    );
    Ok(())
}

/// The 99th percentile of `n` sequential GETs to `addr`, each answered 200.
fn p99(addr: &str, n: usize) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        let (status, _) = get(addr, &format!("/p/{i}"), Duration::from_secs(10))?;
        ensure!(status == 200, "GET /p/{i} from {addr}: {status}");
        times.push(t0.elapsed());
    }
    times.sort();
    Ok(times[n * 99 / 100])
}

/// The soft limit on this process's open descriptors.
fn descriptor_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

/// Slowloris against one tenant of a node-grouped shim: two handlers in one shim, 2,000
/// connections (fewer if this process may not open that many) dripping request heads
/// into the first. Every one of the second's requests is answered meanwhile (its p99
/// before and during is printed: a figure for docs/benchmarks.md, not an assertion),
/// containerd's log, where the shim writes, grows by less than 1 MB, and the first
/// answers again once its flood has gone.
pub(crate) fn check_http_slowloris(env: &Containerd) -> anyhow::Result<()> {
    let wasm = http_fixture(env, "http_hello")?;
    env.import(&wasm, HTTP_IMAGE, "compat")?;
    let serve = |id: &str, port: u16| {
        let grouping = "wasmpod.io/grouping=node";
        serve_annotated(env, id, grouping, port, HTTP_IMAGE, "/http_hello.wasm")
    };
    let (victim_port, neighbour_port) = (free_port()?, free_port()?);
    let victim = format!("127.0.0.1:{victim_port}");
    let neighbour = format!("127.0.0.1:{neighbour_port}");
    let mut a = serve("slowloris-victim", victim_port)?;
    let mut b = serve("slowloris-neighbour", neighbour_port)?;
    let result = (|| -> anyhow::Result<()> {
        wait_serving(&victim, Duration::from_secs(20))?;
        wait_serving(&neighbour, Duration::from_secs(20))?;
        let unloaded = p99(&neighbour, 200)?;
        let log = env.dir.join("containerd.log");
        let log_before = std::fs::metadata(&log)?.len();
        let clients = 2000.min(descriptor_limit().saturating_sub(200));
        let mut slow = Vec::with_capacity(clients);
        for _ in 0..clients {
            match TcpStream::connect_timeout(&victim.parse()?, Duration::from_millis(200)) {
                Ok(s) => {
                    s.set_nonblocking(true)?;
                    slow.push(s);
                }
                // Past the tenant's cap and the backlog: the kernel makes them wait.
                Err(_) => continue,
            }
        }
        let head = b"GET / HTTP/1.1\r\nX-Slow: ";
        let drip = std::thread::spawn(move || {
            for round in 0..20 {
                for s in &mut slow {
                    let _ = s.write(&[head[round % head.len()]]);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            slow.len()
        });
        std::thread::sleep(Duration::from_secs(1));
        let loaded = p99(&neighbour, 200)?;
        let opened = drip
            .join()
            .map_err(|_| anyhow::anyhow!("the dripping thread panicked"))?;
        let grown = std::fs::metadata(&log)?.len().saturating_sub(log_before);
        eprintln!(
            "  neighbour p99 {unloaded:.1?} unloaded, {loaded:.1?} with {opened} slow connections \
             on its neighbour; containerd's log grew {grown} bytes"
        );
        ensure!(grown < 1 << 20, "containerd's log grew {grown} bytes");
        // The victim still answers once its flood is gone.
        let (status, _) = get(&victim, "/after", Duration::from_secs(20))?;
        ensure!(status == 200, "the victim after its flood: {status}");
        Ok(())
    })();
    for (child, id) in [
        (&mut a, "slowloris-victim"),
        (&mut b, "slowloris-neighbour"),
    ] {
        let _ = env.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        let _ = wait_exit(child, Duration::from_secs(20));
    }
    result
}
