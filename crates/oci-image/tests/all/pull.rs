//! Build → push → pull round trips, integrity, resumption, concurrency and auth.

use std::fs;
use std::sync::{Arc, Mutex};

use oci_image::{
    BuildFormat, Credentials, Error, ImageFormat, ImageLimits, ImageRef, Progress, PullOptions,
};

use crate::registry::{Registry, PASSWORD, USER};
use crate::{anonymous, build, module, rt, store};

#[test]
fn both_formats_round_trip_and_pull_by_digest() {
    let registry = Registry::start();
    let rt = rt();
    for (format, expect) in [
        (BuildFormat::Artifact, ImageFormat::Artifact),
        (BuildFormat::Compat, ImageFormat::Compat),
    ] {
        let wasm = module(3000);
        let reference =
            ImageRef::parse(&format!("{}/app:{expect:?}", registry.host()).to_lowercase()).unwrap();
        let (_d, local) = store();
        build(&local, &reference, format, &wasm);
        let pushed = rt
            .block_on(oci_image::push(
                &local,
                &reference,
                &reference,
                &anonymous(),
            ))
            .unwrap();

        let (_d2, fresh) = store();
        let image = rt
            .block_on(oci_image::pull(&fresh, &reference, &anonymous()))
            .unwrap();
        assert_eq!(image.format, expect);
        assert_eq!(image.record.digest, pushed);
        assert_eq!(image.config.entrypoint, ["/app.wasm"]);
        assert_eq!(fs::read(image.rootfs.join("app.wasm")).unwrap(), wasm);
        if format == BuildFormat::Compat {
            assert_ne!(
                image.record.manifest, image.record.digest,
                "a platform entry was chosen"
            );
        }

        let by_digest = reference.with_digest(&pushed);
        let (_d3, other) = store();
        let image = rt
            .block_on(oci_image::pull(&other, &by_digest, &anonymous()))
            .unwrap();
        assert_eq!(fs::read(image.rootfs.join("app.wasm")).unwrap(), wasm);
        assert_eq!(other.images().unwrap().len(), 1);
    }
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_stored() {
    let registry = Registry::start();
    let rt = rt();
    let reference = ImageRef::parse(&format!("{}/tampered:v1", registry.host())).unwrap();
    let (_d, local) = store();
    let wasm = module(5000);
    build(&local, &reference, BuildFormat::Artifact, &wasm);
    rt.block_on(oci_image::push(
        &local,
        &reference,
        &reference,
        &anonymous(),
    ))
    .unwrap();
    let layer = wasm_oci::digest::sha256(&wasm);
    let data = registry.blob_data(&layer);
    let mut bytes = fs::read(&data).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&data, &bytes).unwrap();

    let (_d2, fresh) = store();
    let err = rt
        .block_on(oci_image::pull(&fresh, &reference, &anonymous()))
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&layer), "{err}");
    assert!(!fresh.has_blob(&layer));
    let hex = layer.strip_prefix("sha256:").unwrap();
    assert!(
        !fresh.dir().join("ingest").join(hex).exists(),
        "no partial copy kept"
    );
    assert!(
        fresh.images().unwrap().is_empty(),
        "the tag is not recorded"
    );
}

/// Records the first `advance` of each blob: a resumed download starts at its offset.
#[derive(Default)]
struct FirstAdvance(Mutex<Vec<(String, u64)>>);

impl Progress for FirstAdvance {
    fn advance(&self, digest: &str, bytes: u64) {
        let mut seen = self.0.lock().unwrap();
        if !seen.iter().any(|(d, _)| d == digest) {
            seen.push((digest.to_owned(), bytes));
        }
    }
}

#[test]
fn an_interrupted_pull_resumes() {
    let registry = Registry::start();
    let rt = rt();
    let reference = ImageRef::parse(&format!("{}/resume:v1", registry.host())).unwrap();
    let (_d, local) = store();
    let wasm = module(1 << 20);
    build(&local, &reference, BuildFormat::Artifact, &wasm);
    rt.block_on(oci_image::push(
        &local,
        &reference,
        &reference,
        &anonymous(),
    ))
    .unwrap();
    let layer = wasm_oci::digest::sha256(&wasm);
    let hex = layer.strip_prefix("sha256:").unwrap();

    // Half the layer arrived before the connection dropped.
    let (_d2, fresh) = store();
    let half = wasm.len() / 2;
    fs::write(fresh.dir().join("ingest").join(hex), &wasm[..half]).unwrap();
    let progress = Arc::new(FirstAdvance::default());
    let options = anonymous().progress(progress.clone());
    let image = rt
        .block_on(oci_image::pull(&fresh, &reference, &options))
        .unwrap();
    assert_eq!(fs::read(image.rootfs.join("app.wasm")).unwrap(), wasm);
    let first = progress
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|(d, _)| *d == layer)
        .cloned();
    assert_eq!(
        first,
        Some((layer.clone(), half as u64)),
        "the download resumed at the offset"
    );

    // A partial file with wrong bytes is detected and the download starts over.
    let (_d3, other) = store();
    fs::write(other.dir().join("ingest").join(hex), vec![0xAA; half]).unwrap();
    let image = rt
        .block_on(oci_image::pull(&other, &reference, &anonymous()))
        .unwrap();
    assert_eq!(fs::read(image.rootfs.join("app.wasm")).unwrap(), wasm);
}

#[test]
fn concurrent_pulls_of_one_image_share_the_store() {
    let registry = Registry::start();
    let reference = ImageRef::parse(&format!("{}/shared:v1", registry.host())).unwrap();
    let (_d, local) = store();
    let wasm = module(2 << 20);
    build(&local, &reference, BuildFormat::Compat, &wasm);
    rt().block_on(oci_image::push(
        &local,
        &reference,
        &reference,
        &anonymous(),
    ))
    .unwrap();

    let (_d2, shared) = store();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (store, reference) = (shared.clone(), reference.clone());
            std::thread::spawn(move || {
                rt().block_on(oci_image::pull(&store, &reference, &anonymous()))
            })
        })
        .collect();
    for t in threads {
        let image = t.join().unwrap().unwrap();
        assert_eq!(fs::read(image.rootfs.join("app.wasm")).unwrap(), wasm);
    }
    assert_eq!(
        fs::read_dir(shared.dir().join("ingest")).unwrap().count(),
        0
    );
    let rootfs: Vec<_> = fs::read_dir(shared.dir().join("rootfs")).unwrap().collect();
    assert_eq!(rootfs.len(), 1, "one unpacked root, no leftovers");
    assert_eq!(shared.prune().unwrap().blobs, 0);
}

#[test]
fn basic_auth() {
    let registry = Registry::start_with_auth();
    let rt = rt();
    let reference = ImageRef::parse(&format!("{}/private:v1", registry.host())).unwrap();
    let (_d, local) = store();
    build(&local, &reference, BuildFormat::Artifact, &module(100));
    let good = PullOptions::default().credentials(Credentials::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    });
    let err = rt
        .block_on(oci_image::push(
            &local,
            &reference,
            &reference,
            &anonymous(),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");
    rt.block_on(oci_image::push(&local, &reference, &reference, &good))
        .unwrap();

    let (_d2, fresh) = store();
    rt.block_on(oci_image::pull(&fresh, &reference, &good))
        .unwrap();
    let bad = PullOptions::default().credentials(Credentials::Basic {
        username: USER.into(),
        password: "wrong".into(),
    });
    let (_d3, other) = store();
    let err = rt
        .block_on(oci_image::pull(&other, &reference, &bad))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{reference}: the registry refused the credentials of user \"{USER}\"")
    );
    let err = rt
        .block_on(oci_image::pull(&other, &reference, &anonymous()))
        .unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");

    // Credentials from a docker config file.
    let dir = tempfile::tempdir().unwrap();
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{USER}:{PASSWORD}"),
    );
    let config = dir.path().join("config.json");
    fs::write(
        &config,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let credentials = Credentials::from_docker_config_file(&config, reference.registry()).unwrap();
    let (_d4, via_config) = store();
    let options = PullOptions::default().credentials(credentials);
    rt.block_on(oci_image::pull(&via_config, &reference, &options))
        .unwrap();
}

#[test]
fn bearer_token_flow() {
    let registry = Registry::start();
    let rt = rt();
    let upstream = ImageRef::parse(&format!("{}/tokened:v1", registry.host())).unwrap();
    let (_d, local) = store();
    let wasm = module(4000);
    build(&local, &upstream, BuildFormat::Compat, &wasm);
    rt.block_on(oci_image::push(&local, &upstream, &upstream, &anonymous()))
        .unwrap();

    let proxy = crate::token_proxy::TokenProxy::start(registry.host(), USER, PASSWORD);
    let reference = ImageRef::parse(&format!("{}/tokened:v1", proxy.host())).unwrap();
    let (_d2, fresh) = store();
    let err = rt
        .block_on(oci_image::pull(&fresh, &reference, &anonymous()))
        .unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");
    let good = PullOptions::default().credentials(Credentials::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    });
    let image = rt
        .block_on(oci_image::pull(&fresh, &reference, &good))
        .unwrap();
    assert_eq!(fs::read(image.rootfs.join("app.wasm")).unwrap(), wasm);
    assert!(proxy.issued.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    let bad = PullOptions::default().credentials(Credentials::Basic {
        username: USER.into(),
        password: "wrong".into(),
    });
    let (_d3, other) = store();
    let err = rt
        .block_on(oci_image::pull(&other, &reference, &bad))
        .unwrap_err();
    assert!(err.to_string().contains("refused the credentials"), "{err}");
}

#[test]
fn clear_errors() {
    let registry = Registry::start();
    let rt = rt();
    let (_d, local) = store();

    let missing = ImageRef::parse(&format!("{}/nothing:here", registry.host())).unwrap();
    let err = rt
        .block_on(oci_image::pull(&local, &missing, &anonymous()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{missing}: tag \"here\" not found in the registry")
    );

    let down =
        ImageRef::parse(&format!("127.0.0.1:{}/x:v1", crate::registry::free_port())).unwrap();
    let err = rt
        .block_on(oci_image::pull(&local, &down, &anonymous()))
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains("cannot reach registry 127.0.0.1:"),
        "{err}"
    );

    // A layer media type nobody knows: named, and nothing downloaded.
    let reference = ImageRef::parse(&format!("{}/odd:v1", registry.host())).unwrap();
    build(&local, &reference, BuildFormat::Artifact, &module(100));
    let record = local.resolve(&reference).unwrap().unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&local.read_blob(&record.digest).unwrap()).unwrap();
    manifest["layers"][0]["mediaType"] = "application/x-rar".into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = local.write_blob(&bytes, None).unwrap();
    local
        .tag(
            &reference,
            oci_image::ImageRecord {
                digest: digest.clone(),
                manifest: digest,
                ..record
            },
        )
        .unwrap();
    rt.block_on(oci_image::push(
        &local,
        &reference,
        &reference,
        &anonymous(),
    ))
    .unwrap();
    let (_d2, fresh) = store();
    let err = rt
        .block_on(oci_image::pull(&fresh, &reference, &anonymous()))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported media type \"application/x-rar\""),
        "{err}"
    );
}

#[test]
fn limits_refuse_an_image_before_its_blobs_and_name_it() {
    let registry = Registry::start();
    let rt = rt();
    let reference = ImageRef::parse(&format!("{}/limits:v1", registry.host())).unwrap();
    let (_d, local) = store();
    let wasm = module(64 << 10);
    build(&local, &reference, BuildFormat::Compat, &wasm);
    rt.block_on(oci_image::push(
        &local,
        &reference,
        &reference,
        &anonymous(),
    ))
    .unwrap();
    let record = local.resolve(&reference).unwrap().unwrap();
    let pull_with = |limits: ImageLimits| {
        let (dir, fresh) = store();
        let options = anonymous().limits(limits);
        let result = rt.block_on(oci_image::pull(&fresh, &reference, &options));
        (dir, fresh, result)
    };
    let defaults = ImageLimits::default();

    let (_d1, fresh, result) = pull_with(ImageLimits {
        max_layers: 0,
        ..defaults
    });
    let err = result.unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "manifest {}: 1 layers, over the limit of 0 layers",
            record.manifest
        )
    );
    // Refused before any layer or config was downloaded, and nothing tagged.
    assert_eq!(fresh.resolve(&reference).unwrap(), None);
    let manifest: serde_json::Value =
        serde_json::from_slice(&local.read_blob(&record.manifest).unwrap()).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert!(!fresh.has_blob(config) && !fresh.has_blob(layer));

    let (_d2, fresh, result) = pull_with(ImageLimits {
        max_document: 100,
        ..defaults
    });
    let err = result.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{reference}: manifest: "))
            && err.ends_with("bytes, over the limit of 100 bytes for a manifest, index or config"),
        "{err}"
    );
    assert_eq!(fresh.resolve(&reference).unwrap(), None);

    let (_d3, fresh, result) = pull_with(ImageLimits {
        max_unpacked: 1000,
        ..defaults
    });
    let err = result.unwrap_err().to_string();
    assert!(
        err.ends_with("unpacks to more than the limit of 1000 bytes"),
        "{err}"
    );
    // The unpack was abandoned whole: no root filesystem, finished or partial.
    assert_eq!(fs::read_dir(fresh.dir().join("rootfs")).unwrap().count(), 0);

    // A layer whose descriptor alone says it cannot unpack within the limit (a 4 MiB wasm
    // layer under a 1 MiB limit, which allows 3 MiB of download) is not downloaded at all.
    let big = ImageRef::parse(&format!("{}/limits-big:v1", registry.host())).unwrap();
    build(&local, &big, BuildFormat::Artifact, &module(4 << 20));
    rt.block_on(oci_image::push(&local, &big, &big, &anonymous()))
        .unwrap();
    let (_d4, fresh) = store();
    let options = anonymous().limits(ImageLimits {
        max_unpacked: 1 << 20,
        ..defaults
    });
    let err = rt
        .block_on(oci_image::pull(&fresh, &big, &options))
        .unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("layers to download, more than an image within the unpacked limit of 1048576 bytes can take (3145728)"),
        "{text}"
    );
    let record = local.resolve(&big).unwrap().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&local.read_blob(&record.manifest).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert!(!fresh.has_blob(layer));
    let ingest = fresh.dir().join("ingest");
    let partial = fs::read_dir(&ingest).map_or(0, |d| d.count());
    assert_eq!(partial, 0, "nothing of the layer in {}", ingest.display());
    assert_eq!(fresh.resolve(&big).unwrap(), None);
}

/// Promotion, staging to production: a pull keeps the whole index but fetches only this
/// host's manifest; pushing it on to another registry copies the same image — the same
/// index digest, every platform's manifest and blobs — fetching what the store lacks from
/// the registry it came from.
#[test]
fn a_pulled_image_pushed_on_is_the_same_image() {
    let (staging, production) = (Registry::start(), Registry::start());
    let rt = rt();
    let staged = ImageRef::parse(&format!("{}/app:v1", staging.host())).unwrap();
    let promoted = ImageRef::parse(&format!("{}/team/app:v1", production.host())).unwrap();
    let (_d, built) = store();
    build(&built, &staged, BuildFormat::Compat, &module(2000));
    let digest = rt
        .block_on(oci_image::push(&built, &staged, &staged, &anonymous()))
        .unwrap();

    let (_d2, node) = store();
    rt.block_on(oci_image::pull(&node, &staged, &anonymous()))
        .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&node.read_blob(&digest).unwrap()).unwrap();
    let entries: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(entries.len(), 3, "{index}");
    assert!(
        entries.iter().any(|d| !node.has_blob(d)),
        "the pull fetched every platform, so this test shows nothing"
    );

    let pushed = rt
        .block_on(oci_image::push(&node, &staged, &promoted, &anonymous()))
        .unwrap();
    assert_eq!(pushed, digest, "the promoted image is another image");
    for d in entries.iter().chain([&digest]) {
        let status = production.get(&format!("/v2/team/app/manifests/{d}"));
        assert!(
            status.as_deref().is_some_and(|s| s.contains(" 200 ")),
            "production lacks manifest {d}: {status:?}"
        );
    }
    // And it pulls from production as it did from staging.
    let (_d3, other) = store();
    let image = rt
        .block_on(oci_image::pull(&other, &promoted, &anonymous()))
        .unwrap();
    assert_eq!(image.record.digest, digest);
}
