//! Registry credentials: given explicitly, or read from docker's `config.json` `auths`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

use crate::error::{Error, Result};

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (the registry may still hand out an anonymous bearer token).
    #[default]
    Anonymous,
    /// A user name and password (or access token), used for HTTP basic auth or to obtain
    /// a bearer token from the registry's token service.
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ****)"),
        }
    }
}

impl Credentials {
    /// Credentials for `registry` from a docker config file: `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json`. A missing file or entry means anonymous; an entry
    /// that cannot be decoded is an error naming the file.
    pub fn from_docker_config(registry: &str) -> Result<Self> {
        match docker_config_path() {
            Some(path) if path.is_file() => Self::from_docker_config_file(&path, registry),
            _ => Ok(Self::Anonymous),
        }
    }

    /// Credentials for `registry` from the given docker config file.
    pub fn from_docker_config_file(path: &Path, registry: &str) -> Result<Self> {
        let text = std::fs::read(path).map_err(Error::io(path))?;
        Self::from_docker_config_json(&text, registry, &path.display().to_string())
    }

    /// Credentials for `registry` from the contents of a docker config file (as a
    /// Kubernetes `kubernetes.io/dockerconfigjson` Secret holds it); `source` names it in
    /// errors.
    pub fn from_docker_config_json(text: &[u8], registry: &str, source: &str) -> Result<Self> {
        let bad = |reason: String| Error::invalid(source, reason);
        let config: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
        let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
            return Ok(Self::Anonymous);
        };
        let wanted = normalise(registry);
        let Some(entry) = auths
            .iter()
            .find(|(key, _)| normalise(key) == wanted)
            .map(|(_, v)| v)
        else {
            return Ok(Self::Anonymous);
        };
        let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or_default();
        if !field("username").is_empty() {
            return Ok(Self::Basic {
                username: field("username").to_owned(),
                password: field("password").to_owned(),
            });
        }
        let encoded = field("auth");
        if encoded.is_empty() {
            return Ok(Self::Anonymous);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| bad(format!("auths.{registry}.auth: {e}")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad(format!("auths.{registry}.auth is not UTF-8")))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad(format!("auths.{registry}.auth is not user:password")))?;
        Ok(Self::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    pub(crate) fn to_oci(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
}

/// `https://index.docker.io/v1/`, `index.docker.io` and `docker.io` are one registry.
fn normalise(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        std::fs::write(
            &path,
            serde_json::json!({"auths": {
                "localhost:5000": {"auth": b64},
                "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
                "broken.example": {"auth": "!!!"},
            }})
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            Credentials::from_docker_config_file(&path, "localhost:5000").unwrap(),
            Credentials::Basic {
                username: "alice".into(),
                password: "s3cr:et".into()
            }
        );
        assert!(matches!(
            Credentials::from_docker_config_file(&path, "docker.io").unwrap(),
            Credentials::Basic { username, .. } if username == "bob"
        ));
        assert_eq!(
            Credentials::from_docker_config_file(&path, "other:5000").unwrap(),
            Credentials::Anonymous
        );
        let err = Credentials::from_docker_config_file(&path, "broken.example").unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
