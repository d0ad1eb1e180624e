//! Kubernetes manifests as `kubectl apply -f` reads them: YAML (or JSON) files of one or
//! more documents, decoded into k8s-openapi types, strictly — a field the type does not
//! know is an error naming it, as `kubectl --validate=strict` would say.

use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::node::v1::RuntimeClass;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The objects of a set of manifest files that a pod run uses.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    /// The pods, in file order.
    pub pods: Vec<Pod>,
    /// RuntimeClasses, to map `runtimeClassName` to a handler.
    pub runtime_classes: Vec<RuntimeClass>,
    /// ConfigMaps, for `configMap` volumes and env.
    pub config_maps: Vec<ConfigMap>,
    /// Secrets, for `imagePullSecrets`, `secret` volumes and env.
    pub secrets: Vec<Secret>,
}

impl Manifests {
    /// Reads every document of `files`. Unknown kinds are errors naming the document.
    pub fn load(files: &[impl AsRef<Path>]) -> Result<Self> {
        let mut all = Self::default();
        for file in files {
            let file = file.as_ref();
            let text = std::fs::read_to_string(file).map_err(Error::io(file))?;
            all.add(&file.display().to_string(), &text)?;
        }
        Ok(all)
    }

    /// Adds the documents of `text`; `source` names it in errors.
    pub fn add(&mut self, source: &str, text: &str) -> Result<()> {
        for (index, doc) in documents(source, text)?.into_iter().enumerate() {
            let name = format!("{source} (document {})", index + 1);
            let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
            match kind {
                "Pod" => self.pods.push(decode(&name, doc)?),
                "RuntimeClass" => self.runtime_classes.push(decode(&name, doc)?),
                "ConfigMap" => self.config_maps.push(decode(&name, doc)?),
                "Secret" => self.secrets.push(decode(&name, doc)?),
                "" => return Err(Error::manifest(name, "no kind")),
                other => {
                    return Err(Error::manifest(
                        name,
                        format!(
                            "kind {other} cannot be run here: give Pods, and the \
                             RuntimeClasses, ConfigMaps and Secrets they use"
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The non-empty documents of a YAML stream, as JSON values.
pub fn documents(source: &str, text: &str) -> Result<Vec<serde_json::Value>> {
    let mut docs = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(doc).map_err(|e| {
            Error::manifest(format!("{source} (document {})", index + 1), e.to_string())
        })?;
        if !value.is_null() {
            docs.push(octal_modes(value));
        }
    }
    Ok(docs)
}

/// Kubernetes reads YAML 1.1, where `mode: 0400` is octal; YAML 1.2 (serde_yaml_ng) reads
/// it as a string. File modes (`mode`, `defaultMode`) written that way become numbers.
fn octal_modes(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match (&*k, v) {
                        ("mode" | "defaultMode", Value::String(s))
                            if s.len() > 1
                                && s.starts_with('0')
                                && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) =>
                        {
                            u32::from_str_radix(&s, 8).map_or(Value::String(s), Value::from)
                        }
                        (_, v) => octal_modes(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(octal_modes).collect()),
        other => other,
    }
}

/// Decodes one document into `T`, refusing fields `T` does not have.
pub fn decode<T: DeserializeOwned + Serialize>(source: &str, doc: serde_json::Value) -> Result<T> {
    let typed: T =
        serde_json::from_value(doc.clone()).map_err(|e| Error::manifest(source, e.to_string()))?;
    let back = serde_json::to_value(&typed).map_err(|e| Error::manifest(source, e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_fields(&doc, &back, String::new(), &mut unknown);
    if !unknown.is_empty() {
        return Err(Error::manifest(
            source,
            format!(
                "unknown field{} {}",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", ")
            ),
        ));
    }
    Ok(typed)
}

/// Paths of the fields of `given` that did not survive decoding into `decoded`.
fn unknown_fields(
    given: &serde_json::Value,
    decoded: &serde_json::Value,
    at: String,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (given, decoded) {
        (Value::Object(given), Value::Object(decoded)) => {
            for (key, value) in given {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match decoded.get(key) {
                    Some(d) => unknown_fields(value, d, path, out),
                    // A null, or an empty list or map, decodes to nothing and is no error.
                    None if value.is_null()
                        || value.as_array().is_some_and(Vec::is_empty)
                        || value.as_object().is_some_and(|o| o.is_empty()) => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(given), Value::Array(decoded)) => {
            for (i, (g, d)) in given.iter().zip(decoded).enumerate() {
                unknown_fields(g, d, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: hello
    image: localhost/hello:v1
    args: ["a", "b"]
    resources:
      limits:
        memory: 64Mi
        cpu: 500m
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: wasm
handler: wasm
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hi
"#;

    #[test]
    fn documents_of_every_kind() {
        let mut m = Manifests::default();
        m.add("pod.yaml", POD).unwrap();
        assert_eq!(m.pods.len(), 1);
        assert_eq!(m.runtime_classes[0].handler, "wasm");
        assert_eq!(m.config_maps[0].data.as_ref().unwrap()["greeting"], "hi");
        let spec = m.pods[0].spec.as_ref().unwrap();
        assert_eq!(spec.containers[0].args.as_deref().unwrap(), ["a", "b"]);
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = Manifests::default()
            .add(
                "bad.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n  - name: a\n    image: b\n    comand: [x]\n",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.yaml (document 1)"), "{e}");
        assert!(e.contains("spec.containers[0].comand"), "{e}");
    }

    #[test]
    fn unknown_kinds_and_bad_yaml_are_refused() {
        let e = Manifests::default()
            .add(
                "d.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind Deployment cannot be run here"), "{e}");
        let e = Manifests::default()
            .add("b.yaml", "kind: Pod\n  bad: [")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("b.yaml (document 1)"), "{e}");
        let e = Manifests::default()
            .add("n.yaml", "metadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no kind"), "{e}");
    }

    /// Every manifest we ship under `deploy/` decodes strictly into its k8s-openapi type.
    #[test]
    fn shipped_manifests_are_valid() {
        use k8s_openapi::api::apps::v1::DaemonSet;
        use k8s_openapi::api::core::v1::Namespace;
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let mut files = Vec::new();
        let mut dirs = vec![deploy];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml") {
                    files.push(path);
                }
            }
        }
        let mut kinds = Vec::new();
        for file in &files {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(file).unwrap();
            for doc in documents(&name, &text).unwrap() {
                let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
                let api = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
                match (api.as_str(), kind.as_str()) {
                    ("v1", "Pod") => drop(decode::<Pod>(&name, doc).unwrap()),
                    ("v1", "Namespace") => drop(decode::<Namespace>(&name, doc).unwrap()),
                    ("v1", "ConfigMap") => drop(decode::<ConfigMap>(&name, doc).unwrap()),
                    ("node.k8s.io/v1", "RuntimeClass") => {
                        let rc: RuntimeClass = decode(&name, doc).unwrap();
                        assert_eq!(rc.handler, "wasm", "{name}");
                    }
                    ("apps/v1", "DaemonSet") => drop(decode::<DaemonSet>(&name, doc).unwrap()),
                    ("v1", "ServiceAccount") => drop(
                        decode::<k8s_openapi::api::core::v1::ServiceAccount>(&name, doc).unwrap(),
                    ),
                    ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                        drop(decode::<k8s_openapi::api::rbac::v1::ClusterRole>(&name, doc).unwrap())
                    }
                    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => drop(
                        decode::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&name, doc)
                            .unwrap(),
                    ),
                    // kind's own config type, not a Kubernetes object.
                    ("kind.x-k8s.io/v1alpha4", "Cluster") => {}
                    other => panic!("{name}: {other:?} is not checked: add it here"),
                }
                kinds.push(kind);
            }
        }
        for kind in ["Pod", "RuntimeClass", "DaemonSet"] {
            assert!(kinds.iter().any(|k| k == kind), "no {kind} under deploy/");
        }
        // Every Pod we ship runs as wasmpod pod run would run it.
        for file in files.iter().filter(|f| {
            f.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples"))
        }) {
            let m = Manifests::load(&[file]).unwrap();
            for pod in &m.pods {
                let options =
                    crate::PlanOptions::new("/var/log/pods", "/run/wasmpod/pods", "u", "node-1");
                let plan = crate::PodPlan::new(pod, &m, &options).unwrap();
                assert_eq!(plan.handler, "wasm", "{}", file.display());
            }
        }
    }

    #[test]
    fn empty_documents_are_skipped() {
        let mut m = Manifests::default();
        m.add(
            "e.yaml",
            "---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n",
        )
        .unwrap();
        assert_eq!(m.config_maps.len(), 1);
    }
}
