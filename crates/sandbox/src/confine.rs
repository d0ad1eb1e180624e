//! What the process of a process-level container enters before its guest runs: the pod's
//! network namespace, a mount namespace of its own ([`Confinement::enter`]), then an
//! unprivileged user with no capabilities and `no_new_privs` ([`Confinement::drop_to`]).
//! The seccomp and Landlock layers over that are [`crate::harden`]'s.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;

use caps::{CapSet, CapsHashSet};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};
use crate::sys;
use crate::GuestUser;

/// The network a container's process gets, from the spec's `linux.namespaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No network namespace in the spec: the host's network (`hostNetwork: true`).
    Host,
    /// A namespace of its own, with only a loopback device (`ctr run` without `--net-host`).
    New,
    /// An existing namespace to join: the pod's, which CNI has set up.
    Join(PathBuf),
}

/// The confinement of one process-level container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    network: Network,
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
}

/// What a failed system call of the confinement becomes: the step and the OS error.
fn os_error(what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::Confine(format!("{what}: {e}"))
}

impl Confinement {
    /// Reads the confinement from `spec`.
    pub fn from_spec(spec: &Spec) -> Result<Self> {
        let network = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
            .map_or(Network::Host, |n| match n.path() {
                Some(path) if !path.as_os_str().is_empty() => Network::Join(path.clone()),
                _ => Network::New,
            });
        let process = spec.process().as_ref();
        let user = process.map(|p| p.user().clone()).unwrap_or_default();
        Ok(Self {
            network,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
        })
    }

    /// The network the process gets.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Replaces the network namespace to join: the runtime knows a pod's namespace by its
    /// path when the spec names it through the sandbox's process (`/proc/PID/ns/net`).
    pub fn set_network(&mut self, network: Network) {
        self.network = network;
    }

    /// The user, group and supplementary groups the guest runs as: the spec's, or `guest`
    /// when the spec asks for root. Group 0 is never kept.
    pub fn guest_ids(&self, guest: GuestUser) -> (u32, u32, Vec<u32>) {
        if self.uid == 0 {
            return (guest.uid, guest.gid, Vec::new());
        }
        let gid = match self.gid {
            0 => guest.gid,
            gid => gid,
        };
        let groups = self
            .additional_gids
            .iter()
            .copied()
            .filter(|g| *g != 0)
            .collect();
        (self.uid, gid, groups)
    }

    /// Enters the container's namespaces. Namespaces belong to threads, so this must run
    /// while the process has a single thread (checked), before any runtime starts.
    pub fn enter(&self) -> Result<()> {
        single_threaded()?;
        match &self.network {
            Network::Host => {}
            Network::New => unshare(libc::CLONE_NEWNET, "a network namespace")?,
            Network::Join(path) => {
                let ns = File::open(path).map_err(|e| {
                    Error::Confine(format!("network namespace {}: {e}", path.display()))
                })?;
                sys::join_network_namespace(ns.as_fd()).map_err(|e| {
                    Error::Confine(format!("joining network namespace {}: {e}", path.display()))
                })?;
            }
        }
        unshare(libc::CLONE_NEWNS, "a mount namespace")?;
        // Mounts made inside stay inside; the host's still reach in.
        sys::make_root_rslave().map_err(os_error("making / a slave mount"))
    }

    /// Becomes the guest's unprivileged user ([`Confinement::guest_ids`]) with no
    /// capabilities in any set, and sets `no_new_privs`. A guest uses none: the spec's
    /// `process.capabilities` are for a Linux process, and what a wasm guest may do is its
    /// WASI grants. Single-threaded, as [`Confinement::enter`].
    pub fn drop_to(&self, guest: GuestUser) -> Result<()> {
        single_threaded()?;
        let (uid, gid, groups) = self.guest_ids(guest);
        let caps_err = |what: &str, e: caps::errors::CapsError| {
            Error::Confine(format!("capabilities: {what}: {e}"))
        };
        for cap in caps::all() {
            if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(|e| caps_err(&format!("dropping {cap} from the bounding set"), e))?;
            }
        }
        caps::clear(None, CapSet::Ambient).map_err(|e| caps_err("ambient", e))?;
        caps::clear(None, CapSet::Inheritable).map_err(|e| caps_err("inheritable", e))?;
        sys::prctl(libc::PR_SET_KEEPCAPS, 0).map_err(os_error("PR_SET_KEEPCAPS"))?;
        // glibc applies these to every thread (there is one). A change from root to
        // another user clears the permitted and effective sets.
        sys::setgroups(&groups).map_err(os_error("setgroups"))?;
        sys::setgid(gid).map_err(os_error(&format!("setgid {gid}")))?;
        sys::setuid(uid).map_err(os_error(&format!("setuid {uid}")))?;
        let empty = CapsHashSet::new();
        caps::set(None, CapSet::Effective, &empty).map_err(|e| caps_err("effective", e))?;
        caps::set(None, CapSet::Permitted, &empty).map_err(|e| caps_err("permitted", e))?;
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(os_error("PR_SET_NO_NEW_PRIVS"))?;
        Ok(())
    }
}

/// An error unless the calling process has one thread.
fn single_threaded() -> Result<()> {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
    if threads != Some(1) {
        return Err(Error::Confine(format!(
            "must confine a single-threaded process, this one has {threads:?} threads"
        )));
    }
    Ok(())
}

fn unshare(flag: libc::c_int, what: &str) -> Result<()> {
    sys::unshare(flag).map_err(os_error(&format!("creating {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_network_and_user() {
        let c = Confinement::from_spec(&spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":1000,"gid":100,"additionalGids":[5]},
                "capabilities":{"bounding":["CAP_NET_BIND_SERVICE","CAP_CHOWN"],"effective":["CAP_NET_BIND_SERVICE"]}},
               "linux":{"namespaces":[{"type":"mount"},{"type":"network","path":"/var/run/netns/cni-1"}]}}"#,
        ))
        .unwrap();
        assert_eq!(c.network(), &Network::Join("/var/run/netns/cni-1".into()));
        assert_eq!(
            (c.uid, c.gid, c.additional_gids.clone()),
            (1000, 100, vec![5])
        );
        let guest = GuestUser::NOBODY;
        assert_eq!(c.guest_ids(guest), (1000, 100, vec![5]));
        let root = Confinement::from_spec(&spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0,"additionalGids":[1]}}}"#,
        ))
        .unwrap();
        assert_eq!(root.guest_ids(guest), (65534, 65534, vec![]));
        let group_root = Confinement::from_spec(&spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":7,"gid":0,"additionalGids":[0,9]}}}"#,
        ))
        .unwrap();
        assert_eq!(group_root.guest_ids(guest), (7, 65534, vec![9]));

        let c = Confinement::from_spec(&spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"network"}]}}"#,
        ))
        .unwrap();
        assert_eq!(c.network(), &Network::New);
        let c = Confinement::from_spec(&spec(r#"{"ociVersion":"1.0.2","linux":{}}"#)).unwrap();
        assert_eq!(c.network(), &Network::Host);
    }

    #[test]
    fn refuses_a_process_with_threads() {
        let c = Confinement::from_spec(&spec(r#"{"ociVersion":"1.0.2"}"#)).unwrap();
        // The test harness runs this on a thread of its own: never single-threaded.
        let e = c.enter().unwrap_err();
        assert!(e.to_string().contains("single-threaded"), "{e}");
        let e = c.drop_to(GuestUser::NOBODY).unwrap_err();
        assert!(e.to_string().contains("single-threaded"), "{e}");
    }
}
