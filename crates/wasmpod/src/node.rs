//! The installer's node label, set through the Kubernetes API from inside the cluster: a
//! node is labelled `wasmpod.io/runtime=ready` only once its install succeeded (containerd
//! restarted with the handler), and the RuntimeClass schedules onto that label, so no pod
//! lands on a node that cannot run it yet. `wasmpod uninstall` takes the label away first.

use anyhow::{bail, Context};

/// The label the installer sets, and the RuntimeClass selects.
pub(crate) const LABEL: &str = "wasmpod.io/runtime";
/// Its value on a node whose install succeeded.
pub(crate) const READY: &str = "ready";

/// Where a pod's service account finds its credentials.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The API server as a pod reaches it.
#[derive(Debug)]
pub(crate) struct InCluster {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl InCluster {
    /// From the pod's environment: `KUBERNETES_SERVICE_HOST`/`_PORT` and the service
    /// account's token and CA.
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .context("--label-node works inside a pod: KUBERNETES_SERVICE_HOST is not set")?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let read = |name: &str| {
            let path = format!("{SERVICE_ACCOUNT}/{name}");
            std::fs::read(&path).with_context(|| format!("the service account's {path}"))
        };
        let token = String::from_utf8(read("token")?).context("the service account token")?;
        let ca = read("ca.crt")?;
        Self::new(&format!("https://{host}:{port}"), token.trim(), Some(&ca))
    }

    /// An API server at `base` (`https://10.96.0.1:443`), trusting `ca` (PEM) when given.
    pub(crate) fn new(base: &str, token: &str, ca: Option<&[u8]>) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30));
        if let Some(pem) = ca {
            let cert = reqwest::Certificate::from_pem(pem).context("the cluster's CA")?;
            builder = builder.tls_certs_only([cert]);
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client: builder.build().context("the Kubernetes API client")?,
        })
    }

    /// Sets label `key` of node `node` to `value`, or removes it (`None`), with a JSON
    /// merge patch: the node's other labels are left as they are.
    pub(crate) async fn label(
        &self,
        node: &str,
        key: &str,
        value: Option<&str>,
    ) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/nodes/{node}", self.base);
        let response = self
            .client
            .patch(&url)
            .bearer_auth(&self.token)
            .header("Content-Type", "application/merge-patch+json")
            .header("Accept", "application/json")
            .body(patch(key, value).to_string())
            .send()
            .await
            .with_context(|| format!("PATCH {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            bail!("labelling node {node}: the API server answered {status}: {message}");
        }
        Ok(())
    }
}

/// The merge patch that sets (or, for `None`, removes) one label.
fn patch(key: &str, value: Option<&str>) -> serde_json::Value {
    serde_json::json!({"metadata": {"labels": {key: value}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    /// One request to a fake API server: its request line, headers and body.
    fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            write!(
                stream,
                "{answer}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )
            .unwrap();
            format!("{head}\n{}", String::from_utf8(body).unwrap())
        });
        (base, handle)
    }

    #[tokio::test]
    async fn a_label_is_a_merge_patch_of_the_node() {
        let (base, server) = serve_once("HTTP/1.1 200 OK");
        let api = InCluster::new(&base, "the-token", None).unwrap();
        api.label("node-1", LABEL, Some(READY)).await.unwrap();
        let request = server.join().unwrap();
        assert!(
            request.starts_with("PATCH /api/v1/nodes/node-1 HTTP/1.1"),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(
            lower.contains("authorization: bearer the-token"),
            "{request}"
        );
        assert!(
            lower.contains("content-type: application/merge-patch+json"),
            "{request}"
        );
        let body: serde_json::Value =
            serde_json::from_str(request.rsplit('\n').next().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"metadata": {"labels": {"wasmpod.io/runtime": "ready"}}})
        );

        // Removal is a null, so the node's other labels stay.
        assert_eq!(
            patch(LABEL, None),
            serde_json::json!({"metadata": {"labels": {"wasmpod.io/runtime": null}}})
        );
    }

    #[tokio::test]
    async fn a_refusal_names_the_node_and_the_reason() {
        let (base, server) = serve_once("HTTP/1.1 403 Forbidden");
        let api = InCluster::new(&base, "t", None).unwrap();
        let e = api
            .label("node-2", LABEL, Some(READY))
            .await
            .unwrap_err()
            .to_string();
        server.join().unwrap();
        assert!(e.contains("node-2") && e.contains("403"), "{e}");
    }
}
