//! [`NetnsRuntime`]: async threads inside one network namespace, for shared-level guests.
//!
//! A network namespace belongs to a thread, and a socket to the namespace of the thread
//! that made it. Shared-level guests run inside the shim, which stays in the host's
//! namespace; a guest that opens sockets (a served `wasi:http` listener, `wasi:sockets`,
//! outgoing `wasi:http`) runs on one of these runtimes instead, whose threads all joined
//! its pod's namespace before running anything, so its sockets are the pod's.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::Network;

/// A tokio runtime whose threads (workers and blocking ones) are in one network namespace.
#[derive(Debug)]
pub struct NetnsRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    /// The namespace's inode number (`stat -L /proc/PID/ns/net`).
    inode: u64,
}

impl NetnsRuntime {
    /// Starts a runtime of `workers` threads in `network`: the namespace at the path of
    /// [`Network::Join`], or a new one ([`Network::New`]: only a loopback device, down, as
    /// runc leaves it). `Network::Host` needs no runtime of its own and is refused.
    pub fn new(network: &Network, workers: usize) -> Result<Self> {
        let ns: OwnedFd = match network {
            Network::Host => {
                return Err(Error::Confine(
                    "the host's network needs no runtime of its own".into(),
                ))
            }
            Network::Join(path) => File::open(path)
                .map_err(|e| Error::Confine(format!("network namespace {}: {e}", path.display())))?
                .into(),
            Network::New => new_namespace()?,
        };
        let inode = inode(&ns)?;
        let ns = Arc::new(ns);
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ns_start, failed_start) = (ns.clone(), failed.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("wasm-netns")
            .event_interval(1)
            .enable_all()
            .on_thread_start(move || {
                if let Err(error) = crate::sys::join_network_namespace(ns_start.as_fd()) {
                    tracing::error!(%error, "joining the guest's network namespace");
                    failed_start.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            })
            .build()
            .map_err(|e| Error::Confine(format!("starting the network runtime: {e}")))?;
        let this = Self {
            runtime: Some(runtime),
            inode,
        };
        // Prove a worker is where it should be before anything runs on it (without
        // block_on, which the async code that makes these may not use).
        let (tx, rx) = std::sync::mpsc::channel();
        this.handle().spawn(async move {
            let _ = tx.send(thread_inode());
        });
        let seen = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| Error::Confine(format!("the network runtime: {e}")))?;
        if failed.load(std::sync::atomic::Ordering::SeqCst) || seen.ok() != Some(inode) {
            return Err(Error::Confine(format!(
                "the network runtime's threads are not in network namespace {inode}"
            )));
        }
        Ok(this)
    }

    /// Where tasks are spawned.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
    }

    /// The namespace's inode number.
    pub fn inode(&self) -> u64 {
        self.inode
    }
}

impl Drop for NetnsRuntime {
    fn drop(&mut self) {
        // Dropped from async code too, where blocking on the workers is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A new network namespace, made on a short-lived thread so that no other thread moves.
fn new_namespace() -> Result<OwnedFd> {
    std::thread::spawn(|| -> Result<OwnedFd> {
        crate::sys::unshare(libc::CLONE_NEWNET)
            .map_err(|e| Error::Confine(format!("a new network namespace: {e}")))?;
        File::open("/proc/thread-self/ns/net")
            .map(OwnedFd::from)
            .map_err(|e| Error::Confine(format!("the new network namespace: {e}")))
    })
    .join()
    .map_err(|_| Error::Confine("a new network namespace: the thread panicked".into()))?
}

fn inode(fd: &OwnedFd) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let file = File::from(fd.try_clone().map_err(|e| Error::Confine(e.to_string()))?);
    file.metadata()
        .map(|m| m.ino())
        .map_err(|e| Error::Confine(format!("the network namespace: {e}")))
}

/// The network namespace of the calling thread.
pub(crate) fn thread_inode() -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(PathBuf::from("/proc/thread-self/ns/net")).map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_made_on_the_runtime_are_in_its_namespace() {
        if !nix_root() {
            eprintln!("skipped: needs root for unshare(CLONE_NEWNET)");
            return;
        }
        let host = thread_inode().unwrap();
        let rt = NetnsRuntime::new(&Network::New, 1).unwrap();
        assert_ne!(rt.inode(), host);
        // A listener on the host's loopback cannot be reached from the new namespace.
        let host_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = host_listener.local_addr().unwrap();
        let (inode, reached) = rt.handle().block_on(async move {
            tokio::spawn(async move {
                let blocking = tokio::task::spawn_blocking(thread_inode).await.unwrap();
                let reached = tokio::net::TcpStream::connect(addr).await;
                (blocking.unwrap(), reached.is_ok())
            })
            .await
            .unwrap()
        });
        assert_eq!(inode, rt.inode(), "blocking threads join it too");
        assert!(
            !reached,
            "the host's {addr} is reachable from the new namespace"
        );
        assert!(
            std::net::TcpStream::connect(addr).is_ok(),
            "from the host it is"
        );
        assert_eq!(
            thread_inode().unwrap(),
            host,
            "the caller stays where it was"
        );
        let joined =
            NetnsRuntime::new(&Network::Join(PathBuf::from("/proc/self/ns/net")), 1).unwrap();
        assert_eq!(joined.inode(), host);
        let e = NetnsRuntime::new(&Network::Join("/nonexistent/ns".into()), 1).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ns"), "{e}");
    }

    fn nix_root() -> bool {
        rustix::process::geteuid().is_root()
    }
}
