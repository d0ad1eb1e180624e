//! Generates the CRI v1 messages and services from `proto/v1.proto`, compiled by protox.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/v1.proto");
    let fds = protox::compile(["proto/v1.proto"], ["proto/"])?;
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .compile_fds(fds)?;
    Ok(())
}
