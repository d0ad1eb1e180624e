//! Which isolation level a container gets, and which containers share a process.
//!
//! Chosen per container from, in order: the annotations `wasmpod.io/isolation` and
//! `wasmpod.io/grouping` in its spec (a pod's annotations reach its containers through
//! containerd's `pod_annotations`), then the options of its runtime handler (containerd's
//! `[...runtimes.<handler>.options]`), then the defaults: `shared`, grouped per pod.

use std::fmt;
use std::str::FromStr;

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// The annotation choosing a container's isolation level: `shared` or `process`.
pub const ISOLATION_ANNOTATION: &str = "wasmpod.io/isolation";
/// The annotation choosing which containers share a shim process: `pod` or `node`.
pub const GROUPING_ANNOTATION: &str = "wasmpod.io/grouping";

/// How a container is kept apart from its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// In the shim's own process, beside the other containers of its group: isolated by
    /// the wasm runtime (its own store, memory cap and CPU budget); no process of its own.
    #[default]
    Shared,
    /// In a process of its own, child of the shim: its own cgroup (memory, CPU, pids), mount
    /// namespace, the pod's network namespace, `no_new_privs` and only the capabilities the
    /// spec grants.
    Process,
}

/// Which containers share one shim process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grouping {
    /// The containers of one pod (`io.kubernetes.cri.sandbox-id`); any other container
    /// gets its own shim.
    #[default]
    Pod,
    /// Every container of the node (of one containerd namespace) under this handler.
    Node,
}

/// Parses the value of one of the two settings, naming where it came from when it is wrong.
fn parse<T>(value: &str, source: &str, allowed: &[(&str, T)]) -> Result<T>
where
    T: Copy,
{
    let wanted = value.trim();
    allowed
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            Error::Spec(format!(
                "{source}: {value:?} is not one of {}",
                names.join(", ")
            ))
        })
}

impl Isolation {
    const NAMES: [(&'static str, Isolation); 2] = [
        ("shared", Isolation::Shared),
        ("process", Isolation::Process),
    ];

    /// Parses `shared` or `process`; `source` names the setting in the error.
    pub fn parse(value: &str, source: &str) -> Result<Self> {
        parse(value, source, &Self::NAMES)
    }
}

impl Grouping {
    const NAMES: [(&'static str, Grouping); 2] = [("pod", Grouping::Pod), ("node", Grouping::Node)];

    /// Parses `pod` or `node`; `source` names the setting in the error.
    pub fn parse(value: &str, source: &str) -> Result<Self> {
        parse(value, source, &Self::NAMES)
    }
}

impl FromStr for Isolation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s, "isolation")
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Shared => "shared",
            Isolation::Process => "process",
        })
    }
}

impl fmt::Display for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Grouping::Pod => "pod",
            Grouping::Node => "node",
        })
    }
}

/// What a runtime handler's options set (containerd's `options` table of the runtime, as
/// TOML): `isolation = "process"`, `grouping = "node"`. Keys are matched without regard to
/// case, as containerd's own options are (`Isolation`, `isolation`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandlerOptions {
    /// The handler's isolation level, if it sets one.
    pub isolation: Option<Isolation>,
    /// The handler's grouping, if it sets one.
    pub grouping: Option<Grouping>,
    /// Outbound destinations its containers may reach when their
    /// `wasmpod.io/allowed-outbound` annotation does not say (`allowed_outbound =
    /// "host:port,..."`).
    pub allowed_outbound: Vec<wasm_engine::Destination>,
    /// What its containers' programs may be: `max_module_size = "64Mi"` (bytes, or a
    /// size with a suffix) and `max_functions = 100000`; the engine's defaults otherwise.
    pub program_limits: wasm_engine::ProgramLimits,
    /// What each served container may hold: `http_max_connections = 1024`,
    /// `http_header_timeout = "10s"`, `http_idle_timeout = "60s"`,
    /// `http_request_timeout = "5m"`, `http_max_instances = 100`,
    /// `http_reserved_instances = 8` (the defaults).
    pub http: wasm_engine::HttpLimits,
    /// The OCI runtime that runs the native (Linux) containers of a wasm pod: `runc =
    /// "/usr/local/sbin/runc"`; `runc` on the shim's PATH when unset.
    pub runc: Option<std::path::PathBuf>,
    /// The user a process-level guest whose spec asks for root runs as instead: `guest_user
    /// = "UID:GID"`; [`GuestUser::NOBODY`] when unset. A guest never runs as root.
    pub guest_user: GuestUser,
}

/// The unprivileged user and group a process-level guest whose spec asks for root runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestUser {
    /// Its user id (never 0).
    pub uid: u32,
    /// Its group id (never 0).
    pub gid: u32,
}

impl GuestUser {
    /// `65534:65534`, the overflow user and group: nobody, nogroup.
    pub const NOBODY: GuestUser = GuestUser {
        uid: 65534,
        gid: 65534,
    };

    /// Reads `UID:GID` (two numbers, neither 0); `field` names it in errors.
    pub fn parse(text: &str, field: &str) -> Result<Self> {
        let bad = || {
            Error::Spec(format!(
                "{field}: expected \"UID:GID\" with neither 0 (a guest never runs as root), \
                 got {text:?}"
            ))
        };
        let (uid, gid) = text.trim().split_once(':').ok_or_else(bad)?;
        let uid: u32 = uid.parse().map_err(|_| bad())?;
        let gid: u32 = gid.parse().map_err(|_| bad())?;
        if uid == 0 || gid == 0 {
            return Err(bad());
        }
        Ok(GuestUser { uid, gid })
    }
}

impl Default for GuestUser {
    fn default() -> Self {
        Self::NOBODY
    }
}

impl fmt::Display for GuestUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl HandlerOptions {
    /// The keys a handler's options may set (others are containerd's, and ignored).
    pub const KEYS: [&str; 15] = [
        "isolation",
        "grouping",
        "allowed_outbound",
        "max_module_size",
        "max_functions",
        "compile_timeout",
        "compile_memory",
        "http_max_connections",
        "http_header_timeout",
        "http_idle_timeout",
        "http_request_timeout",
        "http_max_instances",
        "http_reserved_instances",
        "runc",
        "guest_user",
    ];

    /// Reads the options from the TOML body of a handler's `options` table (what
    /// containerd's CRI sends as `runtimeoptions.v1.Options.config_body`, or the file
    /// `ctr run --runtime-config-path` names). Other keys belong to containerd and are
    /// ignored; a known key with a wrong value is an error naming it.
    pub fn from_toml(body: &str, source: &str) -> Result<Self> {
        let table: toml_edit::DocumentMut = body
            .parse()
            .map_err(|e| Error::Spec(format!("{source}: not TOML: {e}")))?;
        let mut options = HandlerOptions::default();
        for (key, value) in table.iter() {
            let field = format!("{source}: {key}");
            let text = || {
                value.as_str().ok_or_else(|| {
                    let got = value.to_string();
                    Error::Spec(format!("{field}: expected a string, got {}", got.trim()))
                })
            };
            if key.eq_ignore_ascii_case("isolation") {
                options.isolation = Some(Isolation::parse(text()?, &field)?);
            } else if key.eq_ignore_ascii_case("grouping") {
                options.grouping = Some(Grouping::parse(text()?, &field)?);
            } else if key.eq_ignore_ascii_case("allowed_outbound") {
                options.allowed_outbound = wasm_engine::NetworkPolicy::parse_outbound(text()?)
                    .map_err(|e| Error::Spec(format!("{field}: {e}")))?;
            } else if key.eq_ignore_ascii_case("max_module_size") {
                options.program_limits.max_size = match value.as_integer() {
                    Some(n) => u64::try_from(n)
                        .map_err(|_| Error::Spec(format!("{field}: {n} is not a size")))?,
                    None => crate::parse_bytes(text()?)
                        .map_err(|e| Error::Spec(format!("{field}: {e}")))?,
                };
            } else if key.eq_ignore_ascii_case("compile_timeout") {
                // "90s", "5m"; a bare number is seconds; 0 is no deadline.
                let deadline = match value.as_integer() {
                    Some(n) => u64::try_from(n)
                        .map(std::time::Duration::from_secs)
                        .map_err(|_| Error::Spec(format!("{field}: {n} is not a duration")))?,
                    None => humantime::parse_duration(text()?.trim()).map_err(|e| {
                        Error::Spec(format!(
                            "{field}: {:?} is not a duration (like \"90s\" or \"5m\"): {e}",
                            text().unwrap_or_default()
                        ))
                    })?,
                };
                options.program_limits.compile_timeout = (!deadline.is_zero()).then_some(deadline);
            } else if key.eq_ignore_ascii_case("compile_memory") {
                options.program_limits.compile_memory = match value.as_integer() {
                    Some(n) => u64::try_from(n)
                        .map_err(|_| Error::Spec(format!("{field}: {n} is not a size")))?,
                    None => crate::parse_bytes(text()?)
                        .map_err(|e| Error::Spec(format!("{field}: {e}")))?,
                };
            } else if let Some(http) = wasm_engine::HttpLimits::KEYS
                .iter()
                .find(|k| key.eq_ignore_ascii_case(k))
            {
                let value = match value.as_integer() {
                    Some(n) => n.to_string(),
                    None => text()?.to_owned(),
                };
                options.http = options
                    .http
                    .with(http, &value)
                    .map_err(|e| Error::Spec(format!("{source}: {e}")))?;
            } else if key.eq_ignore_ascii_case("guest_user") {
                options.guest_user = GuestUser::parse(text()?, &field)?;
            } else if key.eq_ignore_ascii_case("runc") {
                let path = text()?;
                if path.is_empty() {
                    return Err(Error::Spec(format!(
                        "{field}: expected the path or name of an OCI runtime binary, got \"\""
                    )));
                }
                options.runc = Some(path.into());
            } else if key.eq_ignore_ascii_case("max_functions") {
                let count = match value.as_integer() {
                    Some(n) => Some(n),
                    None => text()?.trim().parse().ok(),
                };
                options.program_limits.max_functions =
                    count.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                        Error::Spec(format!(
                            "{field}: expected a count of functions, got {}",
                            value.to_string().trim()
                        ))
                    })?;
            }
        }
        Ok(options)
    }
}

/// The value of annotation `key` in `spec`, unless it is missing or blank.
pub(crate) fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

/// The level and grouping of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selection {
    /// Its isolation level.
    pub isolation: Isolation,
    /// Which containers share its shim process.
    pub grouping: Grouping,
}

impl Selection {
    /// Decides for `spec`: its annotations first, then the handler's options, then the
    /// defaults. A wrong annotation value is an error naming the annotation.
    pub fn decide(spec: &Spec, handler: &HandlerOptions) -> Result<Self> {
        let annotation = |key| annotation(spec, key);
        let isolation = match annotation(ISOLATION_ANNOTATION) {
            Some(v) => Isolation::parse(v, &format!("annotation {ISOLATION_ANNOTATION}"))?,
            None => handler.isolation.unwrap_or_default(),
        };
        let grouping = match annotation(GROUPING_ANNOTATION) {
            Some(v) => Grouping::parse(v, &format!("annotation {GROUPING_ANNOTATION}"))?,
            None => handler.grouping.unwrap_or_default(),
        };
        Ok(Self {
            isolation,
            grouping,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: &[(&str, &str)]) -> Spec {
        let mut spec = Spec::default();
        spec.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        spec
    }

    #[test]
    fn defaults_are_shared_per_pod() {
        let s = Selection::decide(&spec(&[]), &HandlerOptions::default()).unwrap();
        assert_eq!(s, Selection::default());
        assert_eq!(s.isolation, Isolation::Shared);
        assert_eq!(s.grouping, Grouping::Pod);
    }

    #[test]
    fn the_annotation_wins_over_the_handler() {
        let handler = HandlerOptions::from_toml(
            "BinaryName = \"x\"\nIsolation = \"process\"\ngrouping = \"node\"\n",
            "runtime options",
        )
        .unwrap();
        assert_eq!(handler.isolation, Some(Isolation::Process));
        assert_eq!(handler.grouping, Some(Grouping::Node));
        let s = Selection::decide(&spec(&[]), &handler).unwrap();
        assert_eq!(
            (s.isolation, s.grouping),
            (Isolation::Process, Grouping::Node)
        );
        let s = Selection::decide(&spec(&[(ISOLATION_ANNOTATION, "Shared")]), &handler).unwrap();
        assert_eq!(
            (s.isolation, s.grouping),
            (Isolation::Shared, Grouping::Node)
        );
    }

    #[test]
    fn wrong_values_name_their_source() {
        let e = Selection::decide(
            &spec(&[(ISOLATION_ANNOTATION, "vm")]),
            &HandlerOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid runtime spec: annotation wasmpod.io/isolation: \"vm\" is not one of shared, process"
        );
        let e = HandlerOptions::from_toml("grouping = 3", "runtime options").unwrap_err();
        assert!(
            e.to_string()
                .contains("runtime options: grouping: expected a string"),
            "{e}"
        );
        let e = HandlerOptions::from_toml("isolation = [", "runtime options").unwrap_err();
        assert!(e.to_string().contains("runtime options: not TOML"), "{e}");
    }

    #[test]
    fn program_limits_from_the_handler() {
        let o = HandlerOptions::from_toml(
            "max_module_size = \"64Mi\"\nMax_Functions = \"5000\"",
            "options",
        )
        .unwrap();
        assert_eq!(
            o.program_limits,
            wasm_engine::ProgramLimits {
                max_size: 64 << 20,
                max_functions: 5000,
                ..wasm_engine::ProgramLimits::default()
            }
        );
        let o = HandlerOptions::from_toml(
            "compile_timeout = \"90s\"\ncompile_memory = \"1Gi\"",
            "options",
        )
        .unwrap()
        .program_limits;
        assert_eq!(
            (o.compile_timeout, o.compile_memory),
            (Some(std::time::Duration::from_secs(90)), 1 << 30)
        );
        let o = HandlerOptions::from_toml("compile_timeout = 0", "o").unwrap();
        assert_eq!(o.program_limits.compile_timeout, None);
        let e = HandlerOptions::from_toml("compile_timeout = \"soon\"", "options").unwrap_err();
        assert!(
            e.to_string()
                .contains("options: compile_timeout: \"soon\" is not a duration"),
            "{e}"
        );
        let o =
            HandlerOptions::from_toml("max_module_size = 1000\nmax_functions = 7", "o").unwrap();
        assert_eq!(
            (o.program_limits.max_size, o.program_limits.max_functions),
            (1000, 7)
        );
        let defaults = HandlerOptions::from_toml("", "o").unwrap().program_limits;
        assert_eq!(defaults, wasm_engine::ProgramLimits::default());
        let e = HandlerOptions::from_toml("max_module_size = \"lots\"", "options").unwrap_err();
        assert!(
            e.to_string()
                .contains("options: max_module_size: \"lots\" is not a size"),
            "{e}"
        );
        let e = HandlerOptions::from_toml("max_functions = -1", "options").unwrap_err();
        assert!(
            e.to_string()
                .contains("options: max_functions: expected a count of functions, got -1"),
            "{e}"
        );
    }

    #[test]
    fn handler_options_name_the_runtime_of_native_containers() {
        let o = HandlerOptions::from_toml("runc = \"/opt/bin/runc\"", "o").unwrap();
        assert_eq!(
            o.runc.as_deref(),
            Some(std::path::Path::new("/opt/bin/runc"))
        );
        assert_eq!(HandlerOptions::from_toml("", "o").unwrap().runc, None);
        let e = HandlerOptions::from_toml("runc = \"\"", "o").unwrap_err();
        assert!(e.to_string().contains("o: runc: expected the path"), "{e}");
        let e = HandlerOptions::from_toml("runc = 1", "o").unwrap_err();
        assert!(e.to_string().contains("o: runc: expected a string"), "{e}");
    }

    #[test]
    fn handler_options_name_the_guest_user() {
        let o = HandlerOptions::from_toml("", "o").unwrap();
        assert_eq!(o.guest_user, GuestUser::NOBODY);
        let o = HandlerOptions::from_toml("guest_user = \"1000:100\"", "o").unwrap();
        assert_eq!(
            o.guest_user,
            GuestUser {
                uid: 1000,
                gid: 100
            }
        );
        assert_eq!(o.guest_user.to_string(), "1000:100");
        for bad in ["0:0", "1000:0", "1000", "a:b", ""] {
            let e = HandlerOptions::from_toml(&format!("guest_user = {bad:?}"), "o").unwrap_err();
            assert!(
                e.to_string().contains("o: guest_user: expected"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn handler_options_set_http_limits() {
        let o = HandlerOptions::from_toml(
            "http_max_connections = 64\nhttp_header_timeout = \"2s\"\nhttp_reserved_instances = 3",
            "o",
        )
        .unwrap();
        let expected = wasm_engine::HttpLimits::default()
            .with("http_max_connections", "64")
            .and_then(|l| l.with("http_header_timeout", "2s"))
            .and_then(|l| l.with("http_reserved_instances", "3"))
            .unwrap();
        assert_eq!(o.http, expected);
        for key in wasm_engine::HttpLimits::KEYS {
            assert!(
                HandlerOptions::KEYS.contains(&key),
                "{key} is not a handler option"
            );
        }
        let e = HandlerOptions::from_toml("http_idle_timeout = 0", "options").unwrap_err();
        assert!(
            e.to_string()
                .contains("options: http_idle_timeout: must be longer than zero"),
            "{e}"
        );
    }
}
