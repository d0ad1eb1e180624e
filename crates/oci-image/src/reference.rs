//! Image references: `hello` is `docker.io/library/hello:latest`, as docker and containerd read it.

use std::fmt;
use std::str::FromStr;

use oci_spec::distribution::Reference;

use crate::error::{Error, Result};

/// A parsed, normalised image reference: registry, repository, and a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses a reference the way docker does: a missing registry is `docker.io`, a
    /// one-part Docker Hub name lives under `library/`, and a missing tag is `latest`
    /// (unless a digest is given).
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidReference {
            reference: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.is_empty() || text.trim() != text {
            return Err(invalid("empty or surrounded by whitespace"));
        }
        let (rest, digest) = match text.rsplit_once('@') {
            Some((rest, digest)) => {
                if crate::media::digest_hex(digest).is_err() {
                    return Err(Error::InvalidReference {
                        reference: text.to_owned(),
                        reason: format!(
                            "digest {digest:?} is not sha256: and 64 lowercase hex digits"
                        ),
                    });
                }
                (rest, Some(digest.to_owned()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(invalid(
                    "a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        let (registry, repository) = split_domain(name);
        if let Some(registry) = &registry {
            if !valid_domain(registry) {
                return Err(invalid(
                    "the registry is not a host name with an optional port",
                ));
            }
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lowercase"));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(invalid(
                "invalid reference format: repository path components are [a-z0-9] separated by '.', '_', '__' or dashes",
            ));
        }
        let registry = registry.unwrap_or_else(|| DOCKER_HUB.to_owned());
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        if repository.len() > 255 {
            return Err(invalid("the repository name is longer than 255 characters"));
        }
        let inner = match (tag, digest) {
            (Some(t), Some(d)) => {
                Reference::with_tag_and_digest(registry, repository, t.to_owned(), d)
            }
            (None, Some(d)) => Reference::with_digest(registry, repository, d),
            (t, None) => {
                Reference::with_tag(registry, repository, t.unwrap_or("latest").to_owned())
            }
        };
        Ok(Self { inner })
    }

    /// The registry host (and port), e.g. `docker.io` or `localhost:5000`.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path, e.g. `library/hello`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The same repository at another digest (no tag).
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            inner: Reference::with_digest(
                self.registry().to_owned(),
                self.repository().to_owned(),
                digest.to_owned(),
            ),
        }
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`, `[::1]`):
    /// plain HTTP is then used without being asked, as docker does for loopback.
    pub fn is_loopback(&self) -> bool {
        let host = host_of(self.registry());
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    pub(crate) fn as_oci(&self) -> &Reference {
        &self.inner
    }
}

const DOCKER_HUB: &str = "docker.io";

/// Splits off the registry: the first component is one when it has a '.' or ':' or is
/// `localhost` (docker's rule).
fn split_domain(name: &str) -> (Option<String>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first.to_owned()), rest)
        }
        _ => (None, name),
    }
}

/// `host[:port]`: DNS labels of `[A-Za-z0-9-]` (not starting or ending with '-'), or an
/// IPv4 address; the port is decimal.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    port_ok && host.split('.').all(label_ok)
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && matches!(bytes[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if sep.is_empty() || !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    !tag.is_empty()
        && tag.len() <= 128
        && word(tag.as_bytes()[0])
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// The host part of `host[:port]` or `[v6]:port`.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn docker_hub_defaults() {
        for (text, full) in [
            ("hello", "docker.io/library/hello:latest"),
            ("hello:1.0", "docker.io/library/hello:1.0"),
            ("me/app", "docker.io/me/app:latest"),
            ("docker.io/library/hello", "docker.io/library/hello:latest"),
            ("ghcr.io/a/b/c:v2", "ghcr.io/a/b/c:v2"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("127.0.0.1:5000/x:t", "127.0.0.1:5000/x:t"),
        ] {
            assert_eq!(ImageRef::parse(text).unwrap().to_string(), full, "{text}");
        }
    }

    #[test]
    fn digests() {
        let r = ImageRef::parse(&format!("localhost:5000/x@{DIGEST}")).unwrap();
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(r.tag(), None);
        let r = ImageRef::parse(&format!("x:v1@{DIGEST}")).unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(r.with_digest(DIGEST).tag(), None);
    }

    #[test]
    fn invalid_references_say_why() {
        for (text, why) in [
            ("", "empty"),
            (" x", "whitespace"),
            ("Hello", "lowercase"),
            ("x@sha256:abcd", "64 lowercase hex"),
            ("x@md5:0123456789abcdef0123456789abcdef", "digest \"md5:"),
            ("a//b", "invalid"),
            ("x:", "a tag is"),
            ("x:-v", "a tag is"),
            ("a/b__c/d", "ok"),
            ("a/b___c", "invalid"),
            ("-a", "invalid"),
            ("exa_mple.com/x", "registry"),
            ("localhost:port/x", "registry"),
        ] {
            if why == "ok" {
                assert!(ImageRef::parse(text).is_ok(), "{text}");
                continue;
            }
            let err = ImageRef::parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{err}");
            assert!(err.to_lowercase().contains(why), "{text}: {err}");
        }
    }

    /// Agrees with oci-spec's regex-based parser (which costs ~30 ms per process to
    /// compile, hence ours) on what is valid and how it normalises.
    #[test]
    fn agrees_with_oci_spec() {
        let d = DIGEST;
        for text in [
            "hello",
            "hello:1",
            "a/b",
            "a/b/c:v",
            "docker.io/x",
            "index.docker.io/x",
            "localhost/x",
            "localhost:5000/x:y",
            "127.0.0.1:5000/a/b",
            "ghcr.io/o/r:v1.2-3_x",
            "a.b.c/d-e/f__g/h.i:tag",
            "reg.io:443/x",
            "a--b",
            "a-b-c/d",
            "x:T_A.G",
            &format!("x@{d}"),
            &format!("x:t@{d}"),
            &format!("r.io/x@{d}"),
            "a//b",
            "x:",
            "-x",
            "x-",
            "x/",
            "/x",
            "x:.t",
            "r.io:/x",
            "a___b",
            "x y",
        ] {
            let ours = ImageRef::parse(text).map(|r| r.to_string()).ok();
            let theirs = Reference::from_str(text).map(|r| r.to_string()).ok();
            assert_eq!(ours, theirs, "{text}");
        }
        // Where docker and oci-spec differ, ours follows docker: no uppercase repositories.
        assert!(Reference::from_str("A/b").is_ok() && ImageRef::parse("A/b").is_err());
    }

    #[test]
    fn loopback() {
        for (text, yes) in [
            ("localhost:5000/x", true),
            ("127.0.0.1:40000/x", true),
            ("example.com:5000/x", false),
            ("hello", false),
        ] {
            assert_eq!(ImageRef::parse(text).unwrap().is_loopback(), yes, "{text}");
        }
    }
}
