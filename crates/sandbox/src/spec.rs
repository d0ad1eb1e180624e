//! The runtime spec of a container described in plain terms (argv, environment, working
//! directory, volumes, limits): what `wasmpod run` and an embedder without containerd
//! build, and [`RunPolicy::from_spec`](crate::RunPolicy::from_spec) reads like any other.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilities, LinuxMemoryBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::{Error, Result};

/// A host directory given to the guest at a path of its own, as `-v HOST:GUEST[:ro|rw]`
/// gives it (a bind mount in the runtime spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    host: PathBuf,
    guest: String,
    read_only: bool,
}

impl Volume {
    /// `host` at `guest` (an absolute path inside the container), read-only if asked.
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<String>, read_only: bool) -> Self {
        Self {
            host: host.into(),
            guest: guest.into(),
            read_only,
        }
    }

    /// Parses `HOST:GUEST[:ro|rw]` as docker does, except that the host directory must
    /// exist (it is not created behind the user's back); the host path is made absolute.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |reason: String| Error::Volume {
            volume: spec.to_owned(),
            reason,
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, guest, mode) = match parts.as_slice() {
            [h, g] => (*h, *g, "rw"),
            [h, g, m] => (*h, *g, *m),
            _ => return Err(bad("expected HOST:GUEST[:ro|rw]".to_owned())),
        };
        if !matches!(mode, "ro" | "rw") {
            return Err(bad(format!("mode {mode:?} is not ro or rw")));
        }
        if !guest.starts_with('/') {
            return Err(bad(format!(
                "the container path {guest:?} must be absolute"
            )));
        }
        let source = std::fs::canonicalize(host)
            .map_err(|e| bad(format!("host directory {host:?}: {e}")))?;
        if !source.is_dir() {
            return Err(bad(format!("{} is not a directory", source.display())));
        }
        Ok(Self::new(source, guest, mode == "ro"))
    }

    /// The host directory.
    pub fn host(&self) -> &Path {
        &self.host
    }

    /// Where the guest sees it.
    pub fn guest(&self) -> &str {
        &self.guest
    }

    /// Whether the guest is refused writes under it.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    fn mount(&self) -> Result<Mount> {
        let mode = if self.read_only { "ro" } else { "rw" };
        MountBuilder::default()
            .destination(&self.guest)
            .typ("bind")
            .source(&self.host)
            .options(vec!["rbind".to_owned(), mode.to_owned()])
            .build()
            .map_err(|e| Error::Spec(format!("volume {}: {e}", self.guest)))
    }
}

impl FromStr for Volume {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// What a container runs and what it is given, in plain terms; [`to_spec`](Self::to_spec)
/// writes the runtime spec containerd would hand a shim for it.
///
/// ```
/// let spec = sandbox::ContainerSpec::new(["/app.wasm", "--verbose"])
///     .env("GREETING=hello")
///     .cwd("/srv")
///     .memory_limit(64 << 20)
///     .root("/var/lib/app/rootfs", true)
///     .to_spec()?;
/// assert_eq!(spec.process().as_ref().unwrap().args().as_ref().unwrap()[0], "/app.wasm");
/// # Ok::<(), sandbox::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    args: Vec<String>,
    env: Vec<String>,
    cwd: Option<String>,
    volumes: Vec<Volume>,
    memory: Option<u64>,
    user: (u32, u32),
    root: Option<(PathBuf, bool)>,
}

impl ContainerSpec {
    /// A container running `args` (`args[0]`: the wasm file, found inside the root
    /// filesystem or the volumes, or the program's name when the program is given apart).
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Sets `KEY=VALUE`, replacing an earlier value of KEY (later settings win, as in
    /// docker: an image's environment first, then the user's).
    pub fn env(mut self, entry: impl Into<String>) -> Self {
        let entry = entry.into();
        let key = env_key(&entry).to_owned();
        self.env.retain(|old| env_key(old) != key);
        self.env.push(entry);
        self
    }

    /// The working directory (default `/`).
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Gives the guest a host directory.
    pub fn volume(mut self, volume: Volume) -> Self {
        self.volumes.push(volume);
        self
    }

    /// Caps the guest's memory (`linux.resources.memory.limit`), in bytes.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// The user and group the container runs as (default root).
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = (uid, gid);
        self
    }

    /// The root filesystem, a host directory the guest sees at `/` (relative: to the
    /// bundle). Without one the guest sees only its volumes, as under `wasmtime run`.
    pub fn root(mut self, path: impl Into<PathBuf>, read_only: bool) -> Self {
        self.root = Some((path.into(), read_only));
        self
    }

    /// The arguments.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The runtime spec: the process, the volumes as bind mounts, the memory limit, the
    /// root filesystem, and nothing a wasm guest cannot be given.
    pub fn to_spec(&self) -> Result<Spec> {
        let spec_error =
            |what: &str, e: oci_spec::OciSpecError| Error::Spec(format!("{what}: {e}"));
        if self.args.is_empty() {
            return Err(Error::Spec(
                "the container has no arguments: nothing to run".to_owned(),
            ));
        }
        let (uid, gid) = self.user;
        let process = ProcessBuilder::default()
            .args(self.args.clone())
            .env(self.env.clone())
            .cwd(self.cwd.clone().unwrap_or_else(|| "/".to_owned()))
            .user(
                UserBuilder::default()
                    .uid(uid)
                    .gid(gid)
                    .build()
                    .map_err(|e| spec_error("user", e))?,
            )
            .rlimits(Vec::new())
            .capabilities(LinuxCapabilities::default())
            .build()
            .map_err(|e| spec_error("process", e))?;
        let mounts = self
            .volumes
            .iter()
            .map(Volume::mount)
            .collect::<Result<Vec<_>>>()?;
        let mut resources = LinuxResourcesBuilder::default();
        if let Some(limit) = self.memory {
            let limit = i64::try_from(limit)
                .map_err(|_| Error::Spec(format!("memory limit {limit} is too large")))?;
            resources = resources.memory(
                LinuxMemoryBuilder::default()
                    .limit(limit)
                    .build()
                    .map_err(|e| spec_error("memory", e))?,
            );
        }
        let linux = LinuxBuilder::default()
            .resources(resources.build().map_err(|e| spec_error("resources", e))?)
            .namespaces(Vec::new())
            .masked_paths(Vec::new())
            .readonly_paths(Vec::new())
            .build()
            .map_err(|e| spec_error("linux", e))?;
        let mut spec = SpecBuilder::default()
            .process(process)
            .mounts(mounts)
            .linux(linux)
            .hostname(String::new())
            .build()
            .map_err(|e| spec_error("spec", e))?;
        spec.set_root(
            self.root
                .as_ref()
                .map(|(path, read_only)| {
                    RootBuilder::default()
                        .path(path)
                        .readonly(*read_only)
                        .build()
                        .map_err(|e| spec_error("root", e))
                })
                .transpose()?,
        );
        Ok(spec)
    }
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_as_docker_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().display().to_string();
        let v = Volume::parse(&format!("{host}:/data:ro")).unwrap();
        assert_eq!(
            (v.host(), v.guest(), v.read_only()),
            (dir.path(), "/data", true)
        );
        let v: Volume = format!("{host}:/data").parse().unwrap();
        assert!(!v.read_only());
        for (bad, why) in [
            (host.clone(), "expected HOST:GUEST"),
            (format!("{host}:data"), "must be absolute"),
            (format!("{host}:/data:rx"), "is not ro or rw"),
            (
                "/nonexistent/wasmpod:/data".to_owned(),
                "host directory \"/nonexistent/wasmpod\"",
            ),
        ] {
            let err = Volume::parse(&bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("volume {bad:?}: ")), "{err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_spec_says_what_was_asked_and_the_policy_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        std::fs::write(rootfs.join("app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let spec = ContainerSpec::new(["/app.wasm", "one"])
            .env("A=1")
            .env("B=2")
            .env("A=3")
            .cwd("/data")
            .volume(Volume::new(&data, "/data", true))
            .memory_limit(32 << 20)
            .user(1000, 1000)
            .root("rootfs", false)
            .to_spec()
            .unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.env().as_deref().unwrap(), ["B=2", "A=3"]);
        assert_eq!(process.user().uid(), 1000);
        let mount = &spec.mounts().as_ref().unwrap()[0];
        assert_eq!(mount.options().as_deref().unwrap(), ["rbind", "ro"]);

        let policy = crate::RunPolicy::from_spec(&spec, dir.path()).unwrap();
        assert_eq!(policy.entrypoint(), "/app.wasm");
        assert_eq!(policy.args(), ["/app.wasm", "one"]);
        assert_eq!(policy.cwd(), "/data");
        assert_eq!(policy.limits().memory, Some(32 << 20));
        let data_preopen = policy
            .preopens()
            .iter()
            .find(|p| p.guest == "/data")
            .unwrap();
        assert!(data_preopen.readonly);
        assert_eq!(policy.read_entrypoint(1 << 20).unwrap(), b"\0asm\x01\0\0\0");
    }

    #[test]
    fn nothing_to_run_is_refused() {
        let err = ContainerSpec::new(Vec::<String>::new())
            .to_spec()
            .unwrap_err();
        assert!(err.to_string().contains("nothing to run"), "{err}");
    }

    #[test]
    fn without_a_root_the_guest_sees_only_its_volumes() {
        let spec = ContainerSpec::new(["app.wasm"]).to_spec().unwrap();
        assert!(spec.root().is_none());
    }
}
