//! Generates the CRI v1 and containerd gRPC bindings. The `.proto` files are read from the
//! crates.io packages `k8s-cri` and `containerd-client`, which cargo downloads for this
//! crate (see its `Cargo.toml`) but never builds: `cargo metadata` says where they were
//! unpacked, protox (a protobuf compiler in Rust) compiles them, and tonic-prost-build
//! writes the Rust. No protoc, and no copy of the protos in the tree.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The containerd API files the project calls, each with what it imports (protox follows
/// the imports).
const CONTAINERD_FILES: &[&str] = &[
    "services/containers/v1/containers.proto",
    "services/content/v1/content.proto",
    "services/events/v1/events.proto",
    "services/images/v1/images.proto",
    "services/namespaces/v1/namespace.proto",
    "services/snapshots/v1/snapshots.proto",
    "services/tasks/v1/tasks.proto",
    "services/version/v1/version.proto",
    "events/image.proto",
];

/// Where containerd-client keeps the API's protos, under its `vendor/` include directory.
const CONTAINERD_API: &str = "github.com/containerd/containerd/api";

type BuildResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BuildResult<()> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let packages = packages()?;
    let k8s_cri = package_dir(&packages, "k8s-cri")?;
    let containerd = package_dir(&packages, "containerd-client")?;

    let cri_fds = protox::compile([k8s_cri.join("proto/v1.proto")], [k8s_cri.join("proto")])?;
    // serde on the CRI's messages: `wasmpod cri inspect` prints them as JSON, as crictl does.
    tonic_prost_build::configure()
        .build_server(false)
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .include_file("cri.rs")
        .compile_fds(cri_fds)?;

    let vendor = containerd.join("vendor");
    let files: Vec<PathBuf> = CONTAINERD_FILES
        .iter()
        .map(|f| vendor.join(CONTAINERD_API).join(f))
        .collect();
    let containerd_fds = protox::compile(files, [vendor])?;
    let mut config = tonic_prost_build::Config::new();
    // `prost::Name` on every message: events arrive as `Any`s named by type URL.
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(false)
        .include_file("containerd.rs")
        .compile_fds_with_config(containerd_fds, config)?;
    Ok(())
}

/// The packages of this crate's dependency graph, from `cargo metadata` (which downloads the
/// protos' packages when a new machine has not yet).
fn packages() -> BuildResult<Vec<serde_json::Value>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata (to find the packages that carry the protos) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let mut metadata: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    match metadata["packages"].take() {
        serde_json::Value::Array(packages) => Ok(packages),
        _ => Err("cargo metadata printed no package list".into()),
    }
}

/// The directory cargo unpacked package `name` into.
fn package_dir(packages: &[serde_json::Value], name: &str) -> BuildResult<PathBuf> {
    let manifest_path = packages
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or_else(|| format!("cargo metadata lists no {name} package"))?;
    let dir = Path::new(manifest_path)
        .parent()
        .ok_or_else(|| format!("{name}'s manifest path {manifest_path} has no directory"))?;
    Ok(dir.to_path_buf())
}
