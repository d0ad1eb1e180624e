//! A private OCI registry for tests: Debian's `docker-registry` on a free loopback port
//! with its own storage and config, optionally behind htpasswd basic auth; stopped on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

/// The user and password of an authenticated registry.
pub const USER: &str = "wasmpod";
/// The password of [`USER`].
pub const PASSWORD: &str = "s3cret-pass";

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// A registry that wants [`USER`] / [`PASSWORD`] (HTTP basic auth, htpasswd).
    pub fn start_with_auth() -> Self {
        Self::launch(true)
    }

    fn launch(auth: bool) -> Self {
        let binary = std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "docker-registry".into());
        let dir = tempfile::tempdir().expect("registry temp dir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: wasmpod-test-secret\n",
            dir.path().join("data").display()
        );
        if auth {
            let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
            std::fs::write(dir.path().join("htpasswd"), format!("{USER}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wasmpod-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}): apt-get install docker-registry")
            });
        let mut registry = Self { child, dir, port };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited with {status}: {}", self.log());
            }
            if self.get("/v2/").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not answer within 20 s: {}", self.log());
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps a blob's bytes (to tamper with them).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The status line of a plain GET (accepting OCI manifests and indexes), if the
    /// registry answered.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: {ACCEPT}\r\n\r\n",
            self.host()
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.lines().next().map(str::to_owned)
    }

    /// The storage directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
/// What [`Registry::get`] accepts: the registry answers an OCI manifest only to a client
/// that says it takes one.
const ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
