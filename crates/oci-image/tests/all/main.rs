//! `oci-image` against a real registry: Debian's docker-registry on loopback, started per test.

use test_support::registry;
use test_support::token_proxy;

mod faults;
mod hostile;
mod pull;

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use oci_image::{BuildFormat, BuildOptions, Credentials, ImageRef, PullOptions, Store};

/// A store in a temporary directory.
pub(crate) fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("images")).unwrap();
    (dir, store)
}

/// A minimal wasm module with `size` bytes of custom section padding.
pub(crate) fn module(size: usize) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // A custom section: id 0, LEB128 length, name "pad", payload.
    let payload = size.saturating_sub(4);
    let mut len = payload + 4;
    m.push(0);
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            m.push(byte);
            break;
        }
        m.push(byte | 0x80);
    }
    m.extend_from_slice(b"\x03pad");
    m.extend((0..payload).map(|i| (i * 7 % 251) as u8));
    m
}

/// Builds `wasm` into `store` as `reference`.
pub(crate) fn build(store: &Store, reference: &ImageRef, format: BuildFormat, wasm: &[u8]) {
    oci_image::build(
        store,
        wasm,
        &BuildOptions {
            reference: reference.clone(),
            format,
            file_name: "app.wasm".into(),
            annotations: BTreeMap::new(),
            created: Some(UNIX_EPOCH),
            files: Vec::new(),
            exposed_ports: Vec::new(),
        },
    )
    .unwrap();
}

pub(crate) fn anonymous() -> PullOptions {
    PullOptions::default().credentials(Credentials::Anonymous)
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
