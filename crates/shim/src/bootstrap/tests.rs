//! `start`'s stdin as each containerd version writes it (captured bytes in `testdata/`, and
//! messages built here), `start`'s answers, `-info` and the command line.

use super::*;
use sandbox::{Grouping, Isolation};

fn flags(id: &str, namespace: &str) -> Flags {
    Flags {
        id: id.into(),
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// `runtimeoptions.v1.Options { config_body }` in an `Any`, as the CRI plugin sends it.
fn options_any(body: &str) -> Any {
    let mut value = Vec::new();
    {
        let mut out = CodedOutputStream::vec(&mut value);
        out.write_string(3, body).unwrap();
        out.flush().unwrap();
    }
    let mut any = Any::new();
    any.type_url = "runtimeoptions.v1.Options".into();
    any.value = value;
    any
}

fn testdata(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/bootstrap/testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn params_of_containerd_2_3_carry_the_handler_options() {
    let params = BootstrapParams {
        instance_id: "c1".into(),
        namespace: "k8s.io".into(),
        log_level: -4,
        containerd_version: "2.3.4".into(),
        ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
        grpc_address: "/run/containerd/containerd.sock".into(),
        containerd_binary: "/usr/bin/containerd".into(),
        extensions: vec![options_any(
            "grouping = \"node\"\nisolation = \"process\"\n",
        )],
        socket_dir: Some("/run/containerd/s".into()),
    };
    let launch = Launch::decode(&params.encode(), &flags("c1", "k8s.io")).unwrap();
    assert_eq!(launch.params.as_ref(), Some(&params));
    let handler = launch.handler_options().unwrap();
    assert_eq!(handler.grouping, Some(Grouping::Node));
    assert_eq!(handler.isolation, Some(Isolation::Process));
}

#[test]
fn a_bare_any_of_containerd_1_x_is_not_taken_for_params() {
    let any = options_any("grouping = \"node\"\n");
    let launch = Launch::decode(&any.write_to_bytes().unwrap(), &flags("c1", "k8s.io")).unwrap();
    assert_eq!(launch.params, None);
    assert_eq!(
        launch.handler_options().unwrap().grouping,
        Some(Grouping::Node)
    );
    // Nothing on stdin (ctr run without --runtime-config-path on 1.6): no options.
    let launch = Launch::decode(&[], &flags("c1", "default")).unwrap();
    assert_eq!(launch, Launch::default());
    assert_eq!(launch.handler_options().unwrap(), HandlerOptions::default());
}

#[test]
fn params_without_options_and_garbage() {
    let params = BootstrapParams {
        instance_id: "c1".into(),
        namespace: "default".into(),
        ..Default::default()
    };
    let launch = Launch::decode(&params.encode(), &flags("c1", "default")).unwrap();
    assert!(launch.params.is_some() && launch.options.is_none());
    // Neither a BootstrapParams nor an Any: the error says what was read.
    let e = Launch::decode(b"\xff\xff\xff", &flags("c1", "default")).unwrap_err();
    assert!(e.to_string().contains("runtime options on stdin"), "{e}");
}

#[test]
fn answers_in_each_form() {
    let address = "unix:///run/containerd/s/abc";
    assert_eq!(Answer::Address.encode(address), address.as_bytes());
    let json: serde_json::Value = serde_json::from_slice(&Answer::Json.encode(address)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"version": 3, "address": address, "protocol": "ttrpc"})
    );
    // BootstrapResult { version = 1, address = 2, protocol = 3 }.
    let bytes = Answer::Protobuf.encode(address);
    let mut input = CodedInputStream::from_bytes(&bytes);
    assert_eq!(input.read_raw_tag_or_eof().unwrap(), Some(1 << 3));
    assert_eq!(input.read_int32().unwrap(), 3);
    assert_eq!(input.read_raw_tag_or_eof().unwrap(), Some((2 << 3) | 2));
    assert_eq!(input.read_string().unwrap(), address);
    assert_eq!(input.read_raw_tag_or_eof().unwrap(), Some((3 << 3) | 2));
    assert_eq!(input.read_string().unwrap(), "ttrpc");
    assert_eq!(input.read_raw_tag_or_eof().unwrap(), None);
}

#[test]
fn the_answer_follows_the_version_containerd_reports() {
    for (version, answer) in [
        (Some("1.6.20~ds1"), Answer::Address),
        (Some("v1.7.27"), Answer::Address),
        (Some("v2.0.0"), Answer::Json),
        (Some("2.2.1"), Answer::Json),
        (Some("2.3.4"), Answer::Json),
        (Some(""), Answer::Address),
        (None, Answer::Address),
    ] {
        assert_eq!(Answer::for_version(version), answer, "{version:?}");
    }
}

#[test]
fn version_and_info_flags() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for flag in ["-v", "--version", "-version"] {
        assert!(matches!(
            parse_args(&args(&[flag])).unwrap(),
            Action::Version
        ));
    }
    assert!(matches!(
        parse_args(&args(&["-info"])).unwrap(),
        Action::Info
    ));
    let Action::Shim(f) = parse_args(&args(&[
        "-namespace",
        "k8s.io",
        "-address",
        "/run/c.sock",
        "-publish-binary",
        "/bin/c",
        "-id",
        "c1",
        "-debug",
        "start",
    ]))
    .unwrap() else {
        panic!("not a shim action")
    };
    assert_eq!(
        (
            f.namespace.as_str(),
            f.id.as_str(),
            f.debug,
            f.action.as_str()
        ),
        ("k8s.io", "c1", true, "start")
    );
    assert!(version_text().contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn runtime_info_names_the_shim_its_options_and_features() {
    let info = runtime_info(Some(options_any("isolation = \"process\"")));
    let bytes = info.write_to_bytes().unwrap();
    let back = RuntimeInfo::parse_from_bytes(&bytes).unwrap();
    assert_eq!(back.name, RUNTIME_TYPE);
    assert_eq!(back.version.version, env!("CARGO_PKG_VERSION"));
    assert!(back.options.type_url.ends_with("runtimeoptions.v1.Options"));
    let keys = &back.annotations["io.containerd.wasm.v1.handler-options"];
    for key in HandlerOptions::KEYS {
        assert!(keys.split(',').any(|k| k == key), "{key} in {keys}");
    }
    assert_eq!(back.features.type_url, FEATURES_TYPE);
    let features: serde_json::Value = serde_json::from_slice(&back.features.value).unwrap();
    assert_eq!(features["ociVersionMin"], "1.0.0");
    assert_eq!(features["hooks"], serde_json::json!([]));
}

#[test]
fn both_task_apis_are_served() {
    // Any Task will do: every method of the trait has a default.
    struct Nothing;
    impl containerd_shim::Task for Nothing {}
    let services = task_services(Arc::new(Nothing));
    let mut names: Vec<_> = services.keys().cloned().collect();
    names.sort();
    assert_eq!(names, [TASK_V2, TASK_V3]);
    let methods = |name: &str| {
        let mut m: Vec<_> = services[name].methods.keys().cloned().collect();
        m.sort();
        m
    };
    assert_eq!(methods(TASK_V2), methods(TASK_V3));
    assert!(methods(TASK_V3).contains(&"Create".to_owned()));
}

/// `config_path` of the `runtimeoptions.v1.Options` in `any`.
fn config_path(any: &Any) -> String {
    let mut input = CodedInputStream::from_bytes(&any.value);
    while let Some(tag) = input.read_raw_tag_or_eof().unwrap() {
        if tag == (2 << 3) | 2 {
            return input.read_string().unwrap();
        }
        input
            .skip_field(containerd_shim::protos::protobuf::rt::WireType::new(tag & 7).unwrap())
            .unwrap();
    }
    String::new()
}

#[test]
fn captured_stdin_of_containerd_2_3_4() {
    let id = "2fcffbfe5da97c13d50b258d17faba6c23df8cd53ecbdde04d12b8f311c44437";
    let launch = Launch::decode(
        &testdata("containerd-2.3.4-start.bin"),
        &flags(id, "k8s.io"),
    )
    .unwrap();
    let params = launch.params.as_ref().expect("2.3.4 sends BootstrapParams");
    assert_eq!(params.instance_id, id);
    assert_eq!(params.namespace, "k8s.io");
    assert_eq!(params.containerd_version, "2.3.4");
    assert!(
        params.ttrpc_address.ends_with("/containerd.sock.ttrpc"),
        "{params:?}"
    );
    assert!(
        params.grpc_address.ends_with("/containerd.sock"),
        "{params:?}"
    );
    assert!(
        params.containerd_binary.ends_with("/containerd"),
        "{params:?}"
    );
    assert_eq!(params.socket_dir.as_deref(), Some("/run/containerd/s"));
    let options = launch.options.as_ref().expect("the handler's options");
    assert!(options::is_runtime_options(options), "{}", options.type_url);
    assert!(config_path(options).ends_with("/wasmpod-wasm-node.toml"));
    // The same bytes read as the bare Any of 1.x would have lost the options: what 2.3
    // did to the shim before this module.
    let as_any = Any::parse_from_bytes(&testdata("containerd-2.3.4-start.bin")).unwrap();
    assert!(!options::is_runtime_options(&as_any));
}

#[test]
fn captured_stdin_of_containerd_1_6() {
    let id = "c2c2c0f093ef83e132c23725fb96bac1d490aa5a9237fe60a80a5e5f713a3836";
    let launch =
        Launch::decode(&testdata("containerd-1.6-start.bin"), &flags(id, "k8s.io")).unwrap();
    assert_eq!(launch.params, None, "1.6 sends a bare Any");
    let options = launch.options.as_ref().expect("the handler's options");
    assert!(options::is_runtime_options(options), "{}", options.type_url);
    assert!(config_path(options).ends_with("/wasmpod-wasm-node.toml"));
}

/// The shim socket directory is made 0700, and one of ours others could enter is narrowed
/// (docs/security.md promises 0700; it was 0755).
#[test]
fn the_socket_directory_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("run/containerd/s");
    private_socket_dir(&fresh).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), 0o700);
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    private_socket_dir(&open).unwrap();
    assert_eq!(mode(&open), 0o700);
}

#[tokio::test]
async fn start_binds_a_groups_socket_once_and_replaces_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix://{}", dir.path().join("s").join("group").display());
    let first = listen(&address)
        .await
        .unwrap()
        .expect("a new socket is bound");
    // A second `start` of the group finds the first's socket live (connections queue on
    // it until the serving shim accepts them), and starts no second shim.
    assert!(listen(&address).await.unwrap().is_none());
    drop(first);
    // The shim is gone; its socket file stays, and is bound anew.
    assert!(listen(&address).await.unwrap().is_some());
}

#[test]
fn the_serving_shim_takes_the_socket_start_bound_and_no_other() {
    use std::os::fd::IntoRawFd as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shim.sock");
    let address = format!("unix://{}", path.display());
    let bound = || {
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        sys::set_cloexec(&l, false).unwrap();
        l.into_raw_fd().to_string()
    };

    let fd = bound();
    let listener = inherited_listener(Some(&fd), &address).unwrap();
    assert_eq!(listener.local_addr().unwrap().as_pathname(), Some(&*path));
    assert!(
        sys::is_cloexec(&listener),
        "a guest process must not inherit the shim's socket"
    );
    drop(listener);
    std::fs::remove_file(&path).unwrap();

    let fd = bound();
    let elsewhere = format!("unix://{}", dir.path().join("other.sock").display());
    let e = inherited_listener(Some(&fd), &elsewhere)
        .unwrap_err()
        .to_string();
    assert!(e.contains("other.sock") && e.contains(LISTEN_FD_ENV), "{e}");

    let e = inherited_listener(None, &address).unwrap_err().to_string();
    assert!(e.contains(LISTEN_FD_ENV) && e.contains("start"), "{e}");
    let e = inherited_listener(Some("three"), &address)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"three\"") && e.contains("not a descriptor"),
        "{e}"
    );
    let e = inherited_listener(Some("1"), &address)
        .unwrap_err()
        .to_string();
    assert!(e.contains("standard stream"), "{e}");
}
