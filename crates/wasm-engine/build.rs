//! Refuses the `escape-simulator` feature in a release build: the simulator lets a guest run
//! chosen native code in its host process, which only a test may want.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let simulator = std::env::var_os("CARGO_FEATURE_ESCAPE_SIMULATOR").is_some();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let optimized = std::env::var("OPT_LEVEL").is_ok_and(|l| l != "0");
    if simulator && (profile == "release" || optimized) {
        panic!(
            "wasm-engine: the escape-simulator feature is for tests and cannot be built \
             optimized or in the release profile (it gives guests native code execution)"
        );
    }
}
