//! `wasmpod run --listen`: a wasi:http/proxy component served until SIGTERM, which drains it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::*;

/// A GET on a new connection; the raw response.
fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `wasmpod run --listen 127.0.0.1:0 ARGS…`: the child, its stderr past the first line,
/// and the address that line names.
fn listen(
    w: &Wasmpod,
    args: &[&str],
) -> (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    String,
) {
    let mut child = w
        .command()
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit_once("http://")
        .map(|(_, a)| a.to_owned())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, stderr, addr)
}

#[test]
fn listen_serves_a_handler_and_sigterm_drains_it() {
    let w = Wasmpod::new();
    let handler = http_fixture::hello_handler().to_str().unwrap();
    let (mut child, mut stderr, addr) = listen(&w, &[handler]);
    let response = get(&addr, "/hello");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.contains("hello from wasm: GET /hello"),
        "{response}"
    );

    // A request in flight when SIGTERM comes is answered; then wasmpod exits 0.
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || get(&addr, "/slow?sleep=800"))
    };
    std::thread::sleep(Duration::from_millis(300));
    sys::kill(&child, libc::SIGTERM).unwrap();
    let response = slow.join().unwrap();
    assert!(
        response.contains("hello from wasm: GET /slow?sleep=800"),
        "{response}"
    );
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(
        rest.contains("stopped after 2 requests (0 failed)"),
        "{rest}"
    );
}

#[test]
fn a_handler_without_listen_and_a_command_with_it_are_named() {
    let w = Wasmpod::new();
    let out = w.run(&[http_fixture::hello_handler().to_str().unwrap()]);
    assert_code(&out, 126);
    assert!(
        stderr(&out).contains("serve it with --listen ADDR"),
        "{}",
        stderr(&out)
    );
    let out = w.run(&["--listen", "127.0.0.1:0", probe()]);
    assert_code(&out, 126);
    assert!(
        stderr(&out).contains("--listen needs a wasi:http/proxy component"),
        "{}",
        stderr(&out)
    );
}

/// docker's `-p HOST:CONTAINER` serves a wasi:http component on the host port.
#[test]
fn publish_serves_a_handler_on_the_host_port() {
    let w = Wasmpod::new();
    let handler = http_fixture::hello_handler().to_str().unwrap();
    let port = registry::free_port();
    let mut child = w
        .command()
        .args(["run", "-p", &format!("127.0.0.1:{port}:80"), handler])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains(&format!("http://127.0.0.1:{port}")), "{line}");
    let response = get(&format!("127.0.0.1:{port}"), "/hello");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    sys::kill(&child, libc::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}

/// `--http-limit`: a handler that does not answer within the request timeout gets 504, and
/// a limit that is not one is named.
#[test]
fn http_limits_bound_a_handler_and_a_bad_one_is_named() {
    let w = Wasmpod::new();
    let handler = http_fixture::hello_handler().to_str().unwrap();
    let out = w.run(&[
        "--listen",
        "127.0.0.1:0",
        "--http-limit",
        "http_speed=1",
        handler,
    ]);
    assert_code(&out, 125);
    assert!(
        stderr(&out).contains("--http-limit http_speed: not an HTTP limit"),
        "{}",
        stderr(&out)
    );
    let (mut child, _stderr, addr) =
        listen(&w, &["--http-limit", "http_request_timeout=300ms", handler]);
    let response = get(&addr, "/slow?sleep=5000");
    assert!(
        response.starts_with("HTTP/1.1 504 Gateway Timeout"),
        "{response}"
    );
    sys::kill(&child, libc::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
