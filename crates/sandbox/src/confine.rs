//! What the process of a process-level container enters before its guest runs: the pod's
//! network namespace, a mount namespace of its own, the spec's user, only the capabilities
//! the spec grants, and `no_new_privs`.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxNamespaceType, Spec};

use crate::error::{Error, Result};
use crate::sys;

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
    /// The capability sets the spec grants: bounding, effective, permitted, inheritable,
    /// ambient. Absent sets are empty.
    caps: [CapsHashSet; 5],
}

fn cap_set(spec_set: &Option<Capabilities>, field: &str) -> Result<CapsHashSet> {
    let mut set = HashSet::new();
    for cap in spec_set.iter().flatten() {
        let name = serde_json::to_string(cap)
            .map_err(|e| Error::Spec(format!("{field}: {e}")))?
            .trim_matches('"')
            .to_owned();
        let parsed: Capability = name
            .parse()
            .map_err(|_| Error::Spec(format!("{field}: unknown capability {name}")))?;
        set.insert(parsed);
    }
    Ok(set)
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
        let caps = process.and_then(|p| p.capabilities().as_ref());
        let field = |name: &str| format!("process.capabilities.{name}");
        let caps = match caps {
            Some(c) => [
                cap_set(c.bounding(), &field("bounding"))?,
                cap_set(c.effective(), &field("effective"))?,
                cap_set(c.permitted(), &field("permitted"))?,
                cap_set(c.inheritable(), &field("inheritable"))?,
                cap_set(c.ambient(), &field("ambient"))?,
            ],
            None => Default::default(),
        };
        Ok(Self {
            network,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            caps,
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

    /// Confines the calling process. Namespaces and capabilities belong to threads, so this
    /// must run while the process has a single thread (checked), before any runtime starts.
    pub fn apply(&self) -> Result<()> {
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
        sys::make_root_rslave().map_err(os_error("making / a slave mount"))?;
        self.drop_privileges()
    }

    fn drop_privileges(&self) -> Result<()> {
        let [bounding, effective, permitted, inheritable, ambient] = &self.caps;
        let caps_err = |what: &str, e: caps::errors::CapsError| {
            Error::Confine(format!("capabilities: {what}: {e}"))
        };
        for cap in caps::all() {
            if !bounding.contains(&cap)
                && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false)
            {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(|e| caps_err(&format!("dropping {cap} from the bounding set"), e))?;
            }
        }
        // Keep the permitted set across the change of user; it is narrowed right after.
        sys::prctl(libc::PR_SET_KEEPCAPS, 1).map_err(os_error("PR_SET_KEEPCAPS"))?;
        // glibc applies these to every thread (there is one).
        sys::setgroups(&self.additional_gids).map_err(os_error("setgroups"))?;
        sys::setgid(self.gid).map_err(os_error(&format!("setgid {}", self.gid)))?;
        sys::setuid(self.uid).map_err(os_error(&format!("setuid {}", self.uid)))?;
        caps::set(None, CapSet::Effective, effective).map_err(|e| caps_err("effective", e))?;
        caps::set(None, CapSet::Permitted, permitted).map_err(|e| caps_err("permitted", e))?;
        caps::set(None, CapSet::Inheritable, inheritable)
            .map_err(|e| caps_err("inheritable", e))?;
        caps::clear(None, CapSet::Ambient).map_err(|e| caps_err("ambient", e))?;
        for cap in ambient {
            caps::raise(None, CapSet::Ambient, *cap)
                .map_err(|e| caps_err(&format!("raising {cap} in the ambient set"), e))?;
        }
        sys::prctl(libc::PR_SET_KEEPCAPS, 0).map_err(os_error("PR_SET_KEEPCAPS"))?;
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(os_error("PR_SET_NO_NEW_PRIVS"))?;
        Ok(())
    }
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
    fn reads_network_user_and_capabilities() {
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
        assert_eq!(c.caps[0].len(), 2);
        assert!(c.caps[1].contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(c.caps[2].is_empty());

        let c = Confinement::from_spec(&spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"network"}]}}"#,
        ))
        .unwrap();
        assert_eq!(c.network(), &Network::New);
        assert!(c.caps.iter().all(|s| s.is_empty()));
        let c = Confinement::from_spec(&spec(r#"{"ociVersion":"1.0.2","linux":{}}"#)).unwrap();
        assert_eq!(c.network(), &Network::Host);
    }

    #[test]
    fn refuses_a_process_with_threads() {
        let c = Confinement::from_spec(&spec(r#"{"ociVersion":"1.0.2"}"#)).unwrap();
        // The test harness runs this on a thread of its own: never single-threaded.
        let e = c.apply().unwrap_err();
        assert!(e.to_string().contains("single-threaded"), "{e}");
    }
}
