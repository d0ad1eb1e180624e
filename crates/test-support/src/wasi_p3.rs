//! The official WASI testsuite's preview 3 (WASI 0.3) tests: their operation-based `.json`
//! files (run, write, read, wait, connect, send, recv, request, kill, and the HTTP servers
//! a `wasi:http` client test talks to) read and carried out in Rust, as the suite's own
//! Python runner (`test-runner/wasi_test_runner/test_suite_runner.py`) does, against a
//! process the caller starts (beside `wasi_testsuite`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one operation may wait for the guest (the Python runner's is 5 s; CI machines
/// are slower and run tests side by side).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// One preview 3 test.
#[derive(Debug, Clone)]
pub struct Test {
    /// `rust/<name>`, as the expectations name it.
    pub name: String,
    /// The component.
    pub wasm: PathBuf,
    /// `wasi:cli/command` or `wasi:http/service`.
    pub world: World,
    /// The proposals it needs (`http`, `sockets`).
    pub proposals: Vec<String>,
    /// HTTP servers stood up for its outbound requests.
    pub servers: Vec<Server>,
    /// What to do, in order.
    pub operations: Vec<Operation>,
}

/// The world a test's component targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// A command: run to its exit.
    Command,
    /// `wasi:http/service`: served, then asked.
    HttpService,
}

/// How to start the component (the `run` operation).
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// Arguments after the program.
    pub args: Vec<String>,
    /// Its whole environment (the test's, plus `HTTP_SERVER_<NAME>` of each server).
    pub env: BTreeMap<String, String>,
    /// The directory it gets as `/`, if any.
    pub root: Option<PathBuf>,
}

/// One step of a test.
#[derive(Debug, Clone)]
pub enum Operation {
    Run(RunSpec),
    Wait {
        exit_code: i32,
    },
    Read {
        stream: String,
        payload: String,
    },
    Write {
        stream: String,
        payload: String,
    },
    Connect {
        id: String,
    },
    Send {
        id: String,
        payload: String,
    },
    Recv {
        id: String,
        payload: String,
    },
    Request(Request),
    /// A signal by name (`SIGINT`), sent with kill(1).
    Kill {
        signal: String,
    },
}

/// A request to the served component and the response it must give.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
    pub response_headers: Vec<(String, String)>,
    pub response_body: String,
}

/// An HTTP server of the test: listening with endpoints, or an address nobody listens on.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub closed: bool,
    pub endpoints: Vec<Endpoint>,
}

/// What a server answers at one method and path.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: String,
    pub path: String,
    pub answer: Answer,
}

/// How an endpoint answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A fixed response; chunked (with trailers) when `chunks` is given.
    Static {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        chunks: Option<Vec<String>>,
        trailers: Vec<(String, String)>,
    },
    /// The request's body back.
    EchoBody,
    /// The request line and headers (and trailers) back as response headers.
    EchoHeaders,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn text(v: &Value, default: &str) -> String {
    v.as_str().unwrap_or(default).to_owned()
}

fn operation(dir: &Path, op: &Value) -> Operation {
    match op["type"].as_str().unwrap_or_default() {
        "run" => Operation::Run(RunSpec {
            args: strings(&op["args"]),
            env: pairs(&op["env"]).into_iter().collect(),
            root: op["root"].as_str().map(|r| dir.join(r)),
        }),
        "wait" => Operation::Wait {
            exit_code: op["exit_code"].as_i64().unwrap_or(0) as i32,
        },
        "read" => Operation::Read {
            stream: text(&op["id"], "stdout"),
            payload: text(&op["payload"], ""),
        },
        "write" => Operation::Write {
            stream: text(&op["id"], "stdin"),
            payload: text(&op["payload"], ""),
        },
        "connect" => Operation::Connect {
            id: text(&op["id"], "server"),
        },
        "send" => Operation::Send {
            id: text(&op["id"], ""),
            payload: text(&op["payload"], ""),
        },
        "recv" => Operation::Recv {
            id: text(&op["id"], ""),
            payload: text(&op["payload"], ""),
        },
        "request" => {
            let response = &op["response"];
            Operation::Request(Request {
                method: text(&op["method"], "GET"),
                path: text(&op["path"], "/"),
                headers: pairs(&op["headers"]),
                body: text(&op["body"], ""),
                status: response["status"].as_u64().unwrap_or(200) as u16,
                response_headers: pairs(&response["headers"]),
                response_body: text(&response["body"], ""),
            })
        }
        "kill" => Operation::Kill {
            signal: text(&op["signal"], "SIGTERM"),
        },
        other => panic!("{}: unknown operation {other:?}", dir.display()),
    }
}

fn endpoint(e: &Value) -> Endpoint {
    let answer = match e["mode"].as_str().unwrap_or("static") {
        "echo-body" => Answer::EchoBody,
        "echo-headers" => Answer::EchoHeaders,
        _ => {
            let r = &e["response"];
            match r.as_str() {
                Some(body) => Answer::Static {
                    status: 200,
                    headers: vec![],
                    body: body.to_owned(),
                    chunks: None,
                    trailers: vec![],
                },
                None => Answer::Static {
                    status: r["status"].as_u64().unwrap_or(200) as u16,
                    headers: pairs(&r["headers"]),
                    body: text(&r["body"], ""),
                    chunks: r.get("chunks").map(strings),
                    trailers: pairs(&r["trailers"]),
                },
            }
        }
    };
    Endpoint {
        method: text(&e["method"], "GET").to_ascii_uppercase(),
        path: text(&e["path"], "/"),
        answer,
    }
}

/// The preview 3 tests of the suite's tree (see [`crate::wasi_testsuite::dir`]), sorted by name.
pub fn preview3_tests(unpacked: &Path) -> Vec<Test> {
    let dir = unpacked.join("tests/rust/testsuite/wasm32-wasip3");
    let mut tests = Vec::new();
    for wasm in std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
    {
        if wasm.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        let stem = wasm.file_stem().unwrap().to_string_lossy().into_owned();
        let spec: Value = std::fs::read(wasm.with_extension("json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let operations = match spec["operations"].as_array() {
            Some(ops) => ops.iter().map(|op| operation(&dir, op)).collect(),
            // The legacy form: run, read stdout and stderr when given, wait.
            None => {
                let mut ops = vec![Operation::Run(RunSpec {
                    args: strings(&spec["args"]),
                    env: pairs(&spec["env"]).into_iter().collect(),
                    root: spec["root"].as_str().map(|r| dir.join(r)),
                })];
                for stream in ["stdout", "stderr"] {
                    if let Some(payload) = spec[stream].as_str() {
                        ops.push(Operation::Read {
                            stream: stream.into(),
                            payload: payload.into(),
                        });
                    }
                }
                ops.push(Operation::Wait {
                    exit_code: spec["exit_code"].as_i64().unwrap_or(0) as i32,
                });
                ops
            }
        };
        let servers = spec["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| Server {
                name: text(&s["name"], ""),
                closed: s["kind"].as_str() == Some("closed"),
                endpoints: s["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(endpoint)
                    .collect(),
            })
            .collect();
        tests.push(Test {
            name: format!("rust/{stem}"),
            wasm,
            world: match spec["world"].as_str() {
                Some("wasi:http/service") => World::HttpService,
                _ => World::Command,
            },
            proposals: strings(&spec["proposals"]),
            servers,
            operations,
        });
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    tests
}

/// HTTP header or trailer fields, names lowercased.
type Fields = Vec<(String, String)>;

/// The bytes of a stream so far, and whether it ended.
#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
    ended: bool,
}

/// What a process wrote to one of its output pipes, read by a thread as it comes.
#[derive(Clone, Default)]
struct Captured {
    inner: Arc<(Mutex<Stream>, Condvar)>,
}

impl Captured {
    fn spawn(mut from: impl Read + Send + 'static) -> (Self, Consumer) {
        let captured = Captured::default();
        let inner = captured.inner.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = from.read(&mut buf).unwrap_or(0);
                let (lock, cond) = &*inner;
                let mut state = lock.lock().unwrap();
                if n == 0 {
                    state.ended = true;
                    cond.notify_all();
                    return;
                }
                state.bytes.extend_from_slice(&buf[..n]);
                cond.notify_all();
            }
        });
        (
            captured.clone(),
            Consumer {
                captured,
                position: 0,
            },
        )
    }

    fn all(&self) -> String {
        String::from_utf8_lossy(&self.inner.0.lock().unwrap().bytes).into_owned()
    }
}

/// The unread part of a [`Captured`] stream.
struct Consumer {
    captured: Captured,
    position: usize,
}

impl Consumer {
    /// Waits until `done` says how much of the unread bytes it takes (or the stream ends,
    /// or the deadline), and takes that much.
    fn take(&mut self, done: impl Fn(&[u8], bool) -> Option<usize>) -> Option<Vec<u8>> {
        let deadline = Instant::now() + OPERATION_TIMEOUT;
        let (lock, cond) = &*self.captured.inner;
        let mut state = lock.lock().unwrap();
        loop {
            let unread = &state.bytes[self.position..];
            if let Some(n) = done(unread, state.ended) {
                let taken = unread[..n].to_vec();
                self.position += n;
                return Some(taken);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// `n` bytes, or fewer where the stream ended.
    fn read(&mut self, n: usize) -> Option<Vec<u8>> {
        self.take(|unread, ended| (unread.len() >= n || ended).then(|| unread.len().min(n)))
    }

    /// One line, without its end.
    fn line(&mut self) -> Option<String> {
        let line = self.take(
            |unread, ended| match unread.iter().position(|b| *b == b'\n') {
                Some(i) => Some(i + 1),
                None => ended.then_some(unread.len()),
            },
        )?;
        Some(String::from_utf8_lossy(&line).trim().to_owned())
    }
}

/// A test's HTTP servers: threads answering on loopback until dropped.
struct Servers {
    env: BTreeMap<String, String>,
    stop: Vec<(std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>)>,
}

impl Servers {
    fn start(specs: &[Server]) -> Servers {
        let mut env = BTreeMap::new();
        let mut stop = Vec::new();
        for spec in specs {
            let var = format!("HTTP_SERVER_{}", spec.name.to_ascii_uppercase());
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            env.insert(var, addr.to_string());
            if spec.closed {
                // Reserved, then closed: connecting is refused.
                drop(listener);
                continue;
            }
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            stop.push((addr, flag.clone()));
            let endpoints = spec.endpoints.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let endpoints = endpoints.clone();
                    std::thread::spawn(move || {
                        let _ = answer(stream, &endpoints);
                    });
                }
            });
        }
        Servers { env, stop }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (addr, flag) in &self.stop {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = TcpStream::connect(addr);
        }
    }
}

/// A parsed HTTP/1.1 message head: the first line and the headers (names lowercased).
fn read_head(reader: &mut impl BufRead) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    reader.read_line(&mut first)?;
    Ok((first.trim().to_owned(), read_fields(reader)?))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A body framed by `headers`: chunked (with its trailers), by length, or to the end
/// when `to_end` (a response without either).
fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    to_end: bool,
) -> std::io::Result<(Vec<u8>, Fields)> {
    if header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok((body, vec![]));
            }
            let size =
                usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk)?;
            body.extend(chunk);
            let mut crlf = [0; 2];
            reader.read_exact(&mut crlf)?;
        }
        return Ok((body, read_fields(reader)?));
    }
    if let Some(len) = header(headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        return Ok((body, vec![]));
    }
    let mut body = Vec::new();
    if to_end {
        reader.read_to_end(&mut body)?;
    }
    Ok((body, vec![]))
}

/// Header lines up to a blank one (names lowercased).
fn read_fields(reader: &mut impl BufRead) -> std::io::Result<Vec<(String, String)>> {
    let mut fields = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(fields);
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
}

/// Answers one request on `stream` as the endpoint for its method and path says (404
/// without one), then closes: one connection per request, as the Python server does.
fn answer(stream: TcpStream, endpoints: &[Endpoint]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(OPERATION_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let (first, headers) = read_head(&mut reader)?;
    let mut parts = first.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let (body, trailers) = read_body(&mut reader, &headers, false)?;
    let mut out = stream;
    let reply = |out: &mut TcpStream, status: u16, fields: &[(String, String)], body: &[u8]| {
        let mut head = format!("HTTP/1.1 {status} X\r\n");
        for (k, v) in fields {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        out.write_all(head.as_bytes())?;
        if method != "HEAD" {
            out.write_all(body)?;
        }
        out.flush()
    };
    let Some(endpoint) = endpoints
        .iter()
        .find(|e| e.method == method && e.path == path)
    else {
        return reply(&mut out, 404, &[], b"");
    };
    match &endpoint.answer {
        Answer::EchoBody => reply(&mut out, 200, &[], &body),
        Answer::EchoHeaders => {
            let mut echoed = vec![
                ("x-request-method".to_owned(), method.clone()),
                ("x-request-path".to_owned(), path.clone()),
            ];
            for (k, v) in &headers {
                echoed.push((format!("x-echo-{k}"), v.clone()));
            }
            for (k, v) in &trailers {
                echoed.push((format!("x-trailer-{k}"), v.clone()));
            }
            reply(&mut out, 200, &echoed, b"")
        }
        Answer::Static {
            status,
            headers: fields,
            body,
            chunks: None,
            ..
        } => reply(&mut out, *status, fields, body.as_bytes()),
        Answer::Static {
            status,
            headers: fields,
            chunks: Some(chunks),
            trailers,
            ..
        } => {
            let mut head = format!("HTTP/1.1 {status} X\r\n");
            for (k, v) in fields {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("Transfer-Encoding: chunked\r\n");
            if !trailers.is_empty() {
                let names: Vec<&str> = trailers.iter().map(|(k, _)| k.as_str()).collect();
                head.push_str(&format!("Trailer: {}\r\n", names.join(", ")));
            }
            head.push_str("Connection: close\r\n\r\n");
            out.write_all(head.as_bytes())?;
            if method == "HEAD" {
                return out.flush();
            }
            for chunk in chunks {
                out.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())?;
            }
            out.write_all(b"0\r\n")?;
            for (k, v) in trailers {
                out.write_all(format!("{k}: {v}\r\n").as_bytes())?;
            }
            out.write_all(b"\r\n")?;
            out.flush()
        }
    }
}

/// Sends `req` to the server at `base` (`http://host:port`) and checks the response.
pub fn request(base: &str, req: &Request) -> Result<(), String> {
    let authority = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let stream = TcpStream::connect(&authority).map_err(|e| format!("connect {authority}: {e}"))?;
    stream.set_read_timeout(Some(OPERATION_TIMEOUT)).unwrap();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {authority}\r\n",
        req.method, req.path
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = stream.try_clone().unwrap();
    out.write_all(head.as_bytes())
        .and_then(|()| out.write_all(req.body.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let mut reader = BufReader::new(stream);
    let (status_line, headers) = read_head(&mut reader).map_err(|e| format!("response: {e}"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {status_line:?}"))?;
    let (body, _) = read_body(&mut reader, &headers, req.method != "HEAD")
        .map_err(|e| format!("response body: {e}"))?;
    if status != req.status {
        return Err(format!(
            "{} {}: status {status}, expected {}",
            req.method, req.path, req.status
        ));
    }
    for (k, v) in &req.response_headers {
        match header(&headers, &k.to_ascii_lowercase()) {
            Some(got) if got == v => {}
            got => {
                return Err(format!(
                    "{} {}: header {k} {got:?}, expected {v:?}",
                    req.method, req.path
                ))
            }
        }
    }
    let body = String::from_utf8_lossy(&body);
    if body != req.response_body {
        return Err(format!(
            "{} {}: body {body:?}, expected {:?}",
            req.method, req.path, req.response_body
        ));
    }
    Ok(())
}

/// A started test process: its pipes, and what it wrote.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Consumer,
    stderr: Consumer,
    out: Captured,
    err: Captured,
}

impl Process {
    fn new(mut child: Child) -> Process {
        let stdin = child.stdin.take();
        let (out, stdout) = Captured::spawn(child.stdout.take().expect("piped stdout"));
        let (err, stderr) = Captured::spawn(child.stderr.take().expect("piped stderr"));
        Process {
            child,
            stdin,
            stdout,
            stderr,
            out,
            err,
        }
    }

    fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.stdin.take();
        let deadline = Instant::now() + OPERATION_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout {:?}, stderr {:?}",
            self.out.all(),
            self.err
                .all()
                .lines()
                .take(8)
                .collect::<Vec<_>>()
                .join(" | ")
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn running(p: &mut Option<Process>) -> Result<&mut Process, String> {
    p.as_mut().ok_or_else(|| "no process running".to_owned())
}

/// Carries out `test`: `start` starts the component as the [`RunSpec`] says, with piped
/// stdin, stdout and stderr (an HTTP service listening on a loopback port it prints as
/// `http://…` on a line of stderr). The error says which operation failed and how.
pub fn run(test: &Test, start: &mut dyn FnMut(&RunSpec) -> Child) -> Result<(), String> {
    let servers = Servers::start(&test.servers);
    let mut process: Option<Process> = None;
    let mut sockets: BTreeMap<String, TcpStream> = BTreeMap::new();
    let mut http_base: Option<String> = None;
    for op in &test.operations {
        match op {
            Operation::Run(spec) => {
                let mut spec = spec.clone();
                spec.env.extend(servers.env.clone());
                process = Some(Process::new(start(&spec)));
            }
            Operation::Write { payload, .. } => {
                let p = running(&mut process)?;
                let stdin = p.stdin.as_mut().ok_or("stdin is closed")?;
                stdin
                    .write_all(payload.as_bytes())
                    .and_then(|()| stdin.flush())
                    .map_err(|e| format!("write to stdin: {e}"))?;
            }
            Operation::Read { stream, payload } => {
                let p = running(&mut process)?;
                let from = if stream == "stderr" {
                    &mut p.stderr
                } else {
                    &mut p.stdout
                };
                let got = from.read(payload.len()).unwrap_or_default();
                if got != payload.as_bytes() {
                    return Err(format!(
                        "read {stream}: {:?}, expected {payload:?} ({})",
                        String::from_utf8_lossy(&got),
                        p.output()
                    ));
                }
            }
            Operation::Wait { exit_code } => {
                let mut p = process.take().ok_or("no process running")?;
                let status = p.wait();
                let code = status.and_then(|s| s.code());
                if code != Some(*exit_code) {
                    return Err(format!(
                        "exit {:?}, expected {exit_code} ({})",
                        status,
                        p.output()
                    ));
                }
            }
            Operation::Connect { id } => {
                let p = running(&mut process)?;
                let line = p.stdout.line().unwrap_or_default();
                let stream = TcpStream::connect(&line)
                    .map_err(|e| format!("connect {id} at {line:?}: {e} ({})", p.output()))?;
                stream.set_read_timeout(Some(OPERATION_TIMEOUT)).unwrap();
                sockets.insert(id.clone(), stream);
            }
            Operation::Send { id, payload } => {
                let socket = sockets
                    .get_mut(id)
                    .ok_or_else(|| format!("no socket {id}"))?;
                socket
                    .write_all(payload.as_bytes())
                    .map_err(|e| format!("send on {id}: {e}"))?;
            }
            Operation::Recv { id, payload } => {
                let socket = sockets
                    .get_mut(id)
                    .ok_or_else(|| format!("no socket {id}"))?;
                let mut got = vec![0; payload.len()];
                let n = socket
                    .read(&mut got)
                    .map_err(|e| format!("recv on {id}: {e}"))?;
                if got[..n] != *payload.as_bytes() {
                    return Err(format!(
                        "recv on {id}: {:?}, expected {payload:?}",
                        String::from_utf8_lossy(&got[..n])
                    ));
                }
            }
            Operation::Request(req) => {
                let p = running(&mut process)?;
                if http_base.is_none() {
                    loop {
                        let Some(line) = p.stderr.line() else {
                            return Err(format!("no http:// address on stderr ({})", p.output()));
                        };
                        if let Some(at) = line.find("http://") {
                            let url = line[at..].split_whitespace().next().unwrap_or_default();
                            http_base = Some(url.to_owned());
                            break;
                        }
                        if line.is_empty() && p.child.try_wait().ok().flatten().is_some() {
                            return Err(format!("exited before serving ({})", p.output()));
                        }
                    }
                }
                let base = http_base.clone().unwrap_or_default();
                request(&base, req).map_err(|e| format!("request: {e} ({})", p.output()))?;
            }
            Operation::Kill { signal } => {
                let p = running(&mut process)?;
                // Our own child's pid, which it stays until reaped.
                let sent = std::process::Command::new("kill")
                    .args(["-s", signal.trim_start_matches("SIG")])
                    .arg(p.child.id().to_string())
                    .status()
                    .map_err(|e| format!("kill -s {signal}: {e}"))?;
                if !sent.success() {
                    return Err(format!("kill -s {signal}: {sent}"));
                }
            }
        }
    }
    if let Some(p) = process {
        return Err(format!("still running at the end ({})", p.output()));
    }
    drop(servers);
    Ok(())
}
