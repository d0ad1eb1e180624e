//! The runtime handler's options: what containerd's CRI sends for
//! `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<handler>.options]`, and what
//! `ctr run --runtime-config-path FILE` names.
//!
//! For a runtime that is not runc, containerd wraps the options table in
//! `runtimeoptions.v1.Options { type_url = 1, config_path = 2, config_body = 3 }`.
//! containerd 1.6 fills only `config_path` (the table's `ConfigPath` key: a TOML file, which
//! `wasmpod install --option` writes); 1.7 and later send the whole table as TOML in
//! `config_body` when `ConfigPath` is not set. Both are read. They reach the
//! shim twice: on the stdin of `start` (the grouping must be known before a shim is chosen;
//! `bootstrap` unwraps them from each containerd version's form) and in Create's
//! `options` (the isolation level of that container).

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedInputStream;
use sandbox::HandlerOptions;

use crate::error::{Error, Result};

/// The type containerd names its generic runtime options by.
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";

/// `config_path` and `config_body` of a `runtimeoptions.v1.Options` message.
fn decode(value: &[u8]) -> Result<(String, String)> {
    let bad = |e: containerd_shim::protos::protobuf::Error| {
        Error::InvalidArgument(format!("runtime options ({RUNTIME_OPTIONS}): {e}"))
    };
    let mut input = CodedInputStream::from_bytes(value);
    let (mut path, mut body) = (String::new(), String::new());
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        let wire = containerd_shim::protos::protobuf::rt::WireType::new(tag & 7)
            .ok_or_else(|| Error::InvalidArgument(format!("runtime options: bad tag {tag}")))?;
        match tag >> 3 {
            2 => path = input.read_string().map_err(bad)?,
            3 => body = input.read_string().map_err(bad)?,
            _ => input.skip_field(wire).map_err(bad)?,
        }
    }
    Ok((path, body))
}

/// The handler options in `any`: empty when containerd sent none, or sent another runtime's
/// options (runc's, from a `ctr run` without `--runtime-config-path`).
pub(crate) fn from_any(any: &Any) -> Result<HandlerOptions> {
    if !is_runtime_options(any) {
        if !any.type_url.is_empty() {
            tracing::debug!(type_url = %any.type_url, "runtime options of another kind: ignored");
        }
        return Ok(HandlerOptions::default());
    }
    let (path, body) = decode(&any.value)?;
    if !body.trim().is_empty() {
        return HandlerOptions::from_toml(&body, "runtime options")
            .map_err(|e| Error::InvalidArgument(e.to_string()));
    }
    if path.is_empty() {
        return Ok(HandlerOptions::default());
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::InvalidArgument(format!("runtime options: config_path {path}: {e}")))?;
    HandlerOptions::from_toml(&text, &format!("runtime options {path}"))
        .map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// Whether `any` holds containerd's generic runtime options (a handler's options table).
pub(crate) fn is_runtime_options(any: &Any) -> bool {
    any.type_url.ends_with(RUNTIME_OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::CodedOutputStream;
    use sandbox::{Grouping, Isolation};

    fn options_any(path: &str, body: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "").unwrap();
            if !path.is_empty() {
                out.write_string(2, path).unwrap();
            }
            out.write_string(3, body).unwrap();
            out.write_uint32(9, 7).unwrap(); // a field from a later containerd
            out.flush().unwrap();
        }
        let mut any = Any::new();
        any.type_url = "containerd.runtimeoptions.v1.Options".into();
        any.value = value;
        any
    }

    #[test]
    fn reads_the_toml_body_containerd_sends() {
        let o = from_any(&options_any(
            "",
            "Isolation = \"process\"\nGrouping = \"node\"\n",
        ))
        .unwrap();
        assert_eq!(o.isolation, Some(Isolation::Process));
        assert_eq!(o.grouping, Some(Grouping::Node));
    }

    #[test]
    fn reads_a_config_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wasm.toml");
        std::fs::write(&file, "isolation = \"process\"\n").unwrap();
        let o = from_any(&options_any(file.to_str().unwrap(), "")).unwrap();
        assert_eq!(o.isolation, Some(Isolation::Process));
        let e = from_any(&options_any("/nonexistent/wasm.toml", "")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/wasm.toml"), "{e}");
    }

    #[test]
    fn other_options_and_bad_values() {
        let mut runc = Any::new();
        runc.type_url = "containerd.runc.v1.Options".into();
        runc.value = vec![8, 1];
        assert_eq!(from_any(&runc).unwrap(), HandlerOptions::default());
        assert_eq!(from_any(&Any::new()).unwrap(), HandlerOptions::default());
        let e = from_any(&options_any("", "isolation = \"vm\"")).unwrap_err();
        assert!(e.to_string().contains("runtime options: isolation"), "{e}");
    }
}
