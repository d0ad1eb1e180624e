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
        let invalid = |reason: String| Error::InvalidReference {
            reference: text.to_owned(),
            reason,
        };
        if text.trim() != text || text.is_empty() {
            return Err(invalid("empty or surrounded by whitespace".to_owned()));
        }
        if let Some((_, digest)) = text.rsplit_once('@') {
            if crate::media::digest_hex(digest).is_err() {
                return Err(invalid(format!(
                    "digest {digest:?} is not sha256: and 64 lowercase hex digits"
                )));
            }
        }
        let inner = Reference::from_str(text).map_err(|e| {
            let reason = match e {
                oci_spec::distribution::ParseError::ReferenceInvalidFormat
                    if text.chars().any(|c| c.is_ascii_uppercase()) =>
                {
                    "repository names must be lowercase".to_owned()
                }
                other => other.to_string(),
            };
            invalid(reason)
        })?;
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
            ("x:", "invalid"),
        ] {
            let err = ImageRef::parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{err}");
            assert!(err.to_lowercase().contains(why), "{text}: {err}");
        }
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
