//! The installer against sample containerd configs: containerd 1.6 (version 2), 2.0
//! (version 3), kind's and k3s's, a version 1 file, a missing file.

use super::*;

fn sample(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/install/testdata")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn add(text: &str) -> Result<(String, i64)> {
    add_runtime(Path::new("config.toml"), text, "wasm", None, 2, false)
}

/// Parses the result as containerd would and returns the runtime table of `handler`.
fn runtime<'a>(doc: &'a DocumentMut, plugin: &str, handler: &str) -> &'a dyn TableLike {
    doc["plugins"][plugin]["containerd"]["runtimes"][handler]
        .as_table_like()
        .unwrap_or_else(|| panic!("no runtimes.{handler} in\n{doc}"))
}

#[test]
fn each_sample_gains_the_runtime_and_keeps_the_rest() {
    for (name, plugin, version) in [
        ("containerd-1.6.toml", "io.containerd.grpc.v1.cri", 2),
        ("containerd-2.0.toml", "io.containerd.cri.v1.runtime", 3),
        ("kind.toml", "io.containerd.grpc.v1.cri", 2),
        ("k3s.toml", "io.containerd.grpc.v1.cri", 2),
    ] {
        let before = sample(name);
        let (after, found) = add(&before).unwrap();
        assert_eq!(found, version, "{name}");
        let doc: DocumentMut = after.parse().unwrap();
        let wasm = runtime(&doc, plugin, "wasm");
        assert_eq!(
            wasm.get("runtime_type").unwrap().as_str(),
            Some(RUNTIME_TYPE),
            "{name}"
        );
        let annotations = wasm.get("pod_annotations").unwrap().as_array().unwrap();
        assert_eq!(annotations.get(0).unwrap().as_str(), Some(ANNOTATIONS));
        // runc is untouched, and every line of the original is still there, in order.
        let runc = runtime(&doc, plugin, "runc");
        assert_eq!(
            runc.get("runtime_type").unwrap().as_str(),
            Some("io.containerd.runc.v2")
        );
        let mut rest = after.lines();
        for line in before.lines() {
            assert!(
                rest.any(|l| l == line),
                "{name}: lost or moved {line:?}\n{after}"
            );
        }
        // Idempotent: a second run changes nothing.
        let (again, _) = add(&after).unwrap();
        assert_eq!(again, after, "{name}: a rerun changed the config");
        assert_eq!(
            after.matches("runtimes.wasm]").count(),
            1,
            "{name}:\n{after}"
        );
    }
}

/// The snippets in deploy/containerd/ are what the installer writes: a config holding one
/// is left as it is.
#[test]
fn the_shipped_snippets_are_already_installed() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/containerd");
    for (name, version) in [("config-v2.toml", 2), ("config-v3.toml", 3)] {
        let text = std::fs::read_to_string(deploy.join(name)).unwrap();
        let (after, found) = add(&text).unwrap();
        assert_eq!(found, version, "{name}");
        assert_eq!(
            after, text,
            "{name} differs from what wasmpod install writes"
        );
    }
    // The drop-in for containerd 2.3 is what install writes into an imported directory
    // (its comment lines aside).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 4\nimports = ['{}/conf.d/*.toml']\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let report = install(&InstallOptions {
        config,
        handler: "wasm".into(),
        runtime_options: Vec::new(),
        shim: None,
        bin_dir: dir.path().join("bin"),
        new_config_version: 4,
        host_root: None,
        force: false,
    })
    .unwrap();
    assert!(report.drop_in);
    let shipped = std::fs::read_to_string(deploy.join("wasmpod-wasm.toml")).unwrap();
    let shipped: String = shipped
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        std::fs::read_to_string(&report.config_file).unwrap(),
        shipped
    );
}

#[test]
fn a_stale_entry_is_corrected_without_duplicates() {
    // Our handler from an older install, with an annotation of the operator's and without
    // container_annotations: completed, nothing duplicated.
    let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasm]\n  runtime_type = \"io.containerd.wasm.v1\"\n  pod_annotations = [\"other/*\"]\n";
    let (after, _) = add(text).unwrap();
    let doc: DocumentMut = after.parse().unwrap();
    let wasm = runtime(&doc, "io.containerd.grpc.v1.cri", "wasm");
    assert_eq!(
        wasm.get("runtime_type").unwrap().as_str(),
        Some(RUNTIME_TYPE)
    );
    let pod: Vec<_> = wasm
        .get("pod_annotations")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pod, ["other/*", ANNOTATIONS]);
    assert_eq!(after.matches("runtime_type").count(), 1, "{after}");
}

#[test]
fn an_empty_config_gets_a_version() {
    let (after, version) = add("").unwrap();
    assert_eq!(version, 2);
    assert!(after.starts_with("version = 2\n"), "{after}");
    let (after3, version) = add_runtime(Path::new("c.toml"), "", "wasm", None, 3, false).unwrap();
    assert_eq!(version, 3);
    let doc: DocumentMut = after3.parse().unwrap();
    runtime(&doc, "io.containerd.cri.v1.runtime", "wasm");
    assert!(!after.contains("[plugins]\n"), "no empty header: {after}");
}

#[test]
fn unusable_configs_are_refused_with_the_reason() {
    let e = add(&sample("version-1.toml")).unwrap_err().to_string();
    assert!(e.starts_with("containerd config config.toml:"), "{e}");
    assert!(
        e.contains("version 1") && e.contains("containerd config migrate"),
        "{e}"
    );
    let e = add("version = 2\n[plugins\n").unwrap_err().to_string();
    assert!(e.contains("config.toml") && e.contains("line 2"), "{e}");
    let e = add("version = 2\nplugins = 3\n").unwrap_err().to_string();
    assert!(e.contains("plugins is a integer, not a table"), "{e}");
    let e = add("version = 9\n").unwrap_err().to_string();
    assert!(e.contains("version 9"), "{e}");
}

#[test]
fn install_writes_once_keeps_the_original_and_copies_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etc/containerd/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let original = sample("containerd-1.6.toml");
    std::fs::write(&config, &original).unwrap();
    let shim = dir.path().join("shim-build");
    std::fs::write(&shim, b"\x7fELF pretend shim").unwrap();
    let options = InstallOptions {
        config: config.clone(),
        handler: "wasm".into(),
        runtime_options: Vec::new(),
        shim: Some(shim.clone()),
        bin_dir: dir.path().join("bin"),
        new_config_version: 2,
        host_root: None,
        force: false,
    };
    let first = install(&options).unwrap();
    assert!(first.config_changed && first.needs_restart());
    assert_eq!(
        first.shim_installed,
        Some(dir.path().join("bin").join(SHIM_BINARY))
    );
    let installed = dir.path().join("bin").join(SHIM_BINARY);
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let backup = first.backup.clone().unwrap();
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
    let written = std::fs::read_to_string(&config).unwrap();

    // Until containerd was restarted, a rerun owes the restart.
    let pending = install(&options).unwrap();
    assert!(
        pending.restart_pending && pending.needs_restart(),
        "{pending:?}"
    );
    assert!(!pending.config_changed && pending.shim_installed.is_none());
    restarted(&options).unwrap();
    let second = install(&options).unwrap();
    assert!(!second.needs_restart(), "{second:?}");
    assert_eq!(second.backup, None);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    // A new shim build is installed, and only the shim changes.
    std::fs::write(&shim, b"\x7fELF newer shim").unwrap();
    let third = install(&options).unwrap();
    assert!(third.shim_installed.is_some() && !third.config_changed);
    assert_eq!(std::fs::read(&installed).unwrap(), b"\x7fELF newer shim");

    // No file yet: one is created, with no backup.
    let fresh = InstallOptions {
        config: dir.path().join("new/config.toml"),
        shim: None,
        ..options
    };
    let report = install(&fresh).unwrap();
    assert!(report.config_changed && report.backup.is_none());
    assert!(std::fs::read_to_string(dir.path().join("new/config.toml"))
        .unwrap()
        .contains(RUNTIME_TYPE));
}

#[test]
fn a_second_handler_gets_its_options_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, sample("containerd-1.6.toml")).unwrap();
    let options = InstallOptions {
        config: config.clone(),
        handler: "wasm-process".into(),
        runtime_options: vec![("isolation".into(), "process".into())],
        shim: None,
        bin_dir: dir.path().join("bin"),
        new_config_version: 2,
        host_root: None,
        force: false,
    };
    let report = install(&options).unwrap();
    assert!(report.config_changed);
    let file = options_file(&config, "wasm-process");
    assert_eq!(file, dir.path().join("wasmpod-wasm-process.toml"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "isolation = \"process\"\n"
    );
    let doc: DocumentMut = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    let handler = runtime(&doc, "io.containerd.grpc.v1.cri", "wasm-process");
    assert_eq!(
        handler.get("runtime_type").unwrap().as_str(),
        Some(RUNTIME_TYPE)
    );
    assert_eq!(
        handler
            .get("options")
            .and_then(|o| o.get("ConfigPath"))
            .and_then(Item::as_str),
        Some(file.to_str().unwrap())
    );
    // Idempotent: the same options again change nothing.
    let again = install(&options).unwrap();
    assert!(!again.config_changed, "{again:?}");
    // A changed option rewrites the file only.
    let changed = InstallOptions {
        runtime_options: vec![("isolation".into(), "shared".into())],
        ..options
    };
    assert!(install(&changed).unwrap().config_changed);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "isolation = \"shared\"\n"
    );
}

/// `containerd config default` of 2.3.4 (version 4, importing `conf.d/*.toml`) and of
/// 1.6 (version 2, no imports): the handler goes into a drop-in for the first and into the
/// main config for the second; twice in a row, the second run changes nothing.
#[test]
fn the_default_configs_of_2_3_and_1_6() {
    let dir = tempfile::tempdir().unwrap();
    let conf_d = dir.path().join("conf.d");
    // 2.3.4's default, its import pointed into the test's directory.
    let config = dir.path().join("config.toml");
    let original = sample("containerd-2.3.4-default.toml").replace(
        "imports = ['/etc/containerd/conf.d/*.toml']",
        &format!("imports = ['{}/*.toml']", conf_d.display()),
    );
    assert!(original.contains(&conf_d.display().to_string()));
    std::fs::write(&config, &original).unwrap();
    let options = InstallOptions {
        config: config.clone(),
        handler: "wasm".into(),
        runtime_options: Vec::new(),
        shim: None,
        bin_dir: dir.path().join("bin"),
        new_config_version: 4,
        host_root: None,
        force: false,
    };
    let first = install(&options).unwrap();
    let drop_in = conf_d.join("wasmpod-wasm.toml");
    assert!(first.config_changed && first.drop_in, "{first:?}");
    assert_eq!(first.config_file, drop_in);
    assert_eq!(first.config_version, 4);
    assert_eq!(first.backup, None, "a new drop-in has nothing to back up");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
    let text = std::fs::read_to_string(&drop_in).unwrap();
    assert!(text.starts_with("version = 4\n"), "{text}");
    let doc: DocumentMut = text.parse().unwrap();
    let wasm = runtime(&doc, "io.containerd.cri.v1.runtime", "wasm");
    assert_eq!(
        wasm.get("runtime_type").unwrap().as_str(),
        Some(RUNTIME_TYPE)
    );
    let second = install(&options).unwrap();
    assert!(!second.config_changed && second.drop_in, "{second:?}");
    assert_eq!(std::fs::read_to_string(&drop_in).unwrap(), text);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
    // A second handler with options gets a drop-in of its own.
    let node = InstallOptions {
        handler: "wasm-node".into(),
        runtime_options: vec![("grouping".into(), "node".into())],
        ..options.clone()
    };
    let report = install(&node).unwrap();
    assert_eq!(report.config_file, conf_d.join("wasmpod-wasm-node.toml"));
    let doc: DocumentMut = std::fs::read_to_string(&report.config_file)
        .unwrap()
        .parse()
        .unwrap();
    let handler = runtime(&doc, "io.containerd.cri.v1.runtime", "wasm-node");
    assert_eq!(
        handler
            .get("options")
            .and_then(|o| o.get("ConfigPath"))
            .and_then(Item::as_str),
        Some(options_file(&config, "wasm-node").to_str().unwrap())
    );
    assert!(!install(&node).unwrap().config_changed);

    // 1.6's default imports nothing: edited in place, once.
    let config = dir.path().join("config-1.6.toml");
    let original = sample("containerd-1.6-default.toml");
    std::fs::write(&config, &original).unwrap();
    let options = InstallOptions {
        config: config.clone(),
        new_config_version: 2,
        host_root: None,
        force: false,
        ..options
    };
    let first = install(&options).unwrap();
    assert!(first.config_changed && !first.drop_in, "{first:?}");
    assert_eq!(
        (first.config_file.clone(), first.config_version),
        (config.clone(), 2)
    );
    let written = std::fs::read_to_string(&config).unwrap();
    let doc: DocumentMut = written.parse().unwrap();
    runtime(&doc, "io.containerd.grpc.v1.cri", "wasm");
    assert_eq!(
        std::fs::read_to_string(first.backup.unwrap()).unwrap(),
        original
    );
    assert!(!install(&options).unwrap().config_changed);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);
}

#[test]
fn which_imports_take_a_drop_in() {
    let check = |imports: &str, expected: Option<&str>| {
        let text = format!("version = 3\nimports = {imports}\n");
        let found = drop_in_file(
            Path::new("/etc/containerd/config.toml"),
            Some(&text),
            "wasm",
        )
        .unwrap()
        .map(|(p, v)| {
            assert_eq!(v, 3);
            p.display().to_string()
        });
        assert_eq!(found.as_deref(), expected, "{imports}");
    };
    check("[]", None);
    check(
        "['/etc/containerd/conf.d/*.toml']",
        Some("/etc/containerd/conf.d/wasmpod-wasm.toml"),
    );
    // Relative to the main config's directory, as containerd resolves them.
    check(
        "['conf.d/*.toml']",
        Some("/etc/containerd/conf.d/wasmpod-wasm.toml"),
    );
    check("['/etc/x/*']", Some("/etc/x/wasmpod-wasm.toml"));
    // A single file, a pattern our name does not match, a glob in the directory.
    check("['/etc/containerd/extra.toml']", None);
    check("['/etc/containerd/conf.d/*.conf']", None);
    check("['/etc/containerd/*/x.toml']", None);
    check("['/etc/containerd/conf.d/[a-z]*.toml']", None);
    check(
        "['/etc/a/*.conf', '/etc/b/wasmpod-*.toml']",
        Some("/etc/b/wasmpod-wasm.toml"),
    );
    // A main config that already defines the handler keeps it (edited in place).
    let text = "version = 3\nimports = ['/c/*.toml']\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasm]\n  runtime_type = 'io.containerd.wasm.v1'\n";
    assert_eq!(
        drop_in_file(Path::new("/etc/containerd/config.toml"), Some(text), "wasm").unwrap(),
        None
    );
    // No config, or an empty one: nothing imports anything yet.
    assert_eq!(
        drop_in_file(Path::new("/c.toml"), None, "wasm").unwrap(),
        None
    );
    assert_eq!(
        drop_in_file(Path::new("/c.toml"), Some(""), "wasm").unwrap(),
        None
    );
}

#[test]
fn version_4_has_the_tables_of_version_3() {
    let (after, version) =
        add_runtime(Path::new("c.toml"), "version = 4\n", "wasm", None, 2, false).unwrap();
    assert_eq!(version, 4);
    let doc: DocumentMut = after.parse().unwrap();
    runtime(&doc, "io.containerd.cri.v1.runtime", "wasm");
    let (after, _) = add_runtime(Path::new("c.toml"), "", "wasm", None, 4, false).unwrap();
    assert!(after.starts_with("version = 4\n"), "{after}");
}

fn options_for(config: &Path, bin_dir: &Path) -> InstallOptions {
    InstallOptions {
        config: config.to_owned(),
        handler: "wasm".into(),
        runtime_options: Vec::new(),
        shim: None,
        bin_dir: bin_dir.to_owned(),
        new_config_version: 2,
        host_root: None,
        force: false,
    }
}

#[test]
fn another_runtimes_handler_is_replaced_only_with_force() {
    let text = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasm]\n  runtime_type = \"io.containerd.spin.v2\"\n";
    let e = add(text).unwrap_err().to_string();
    assert!(
        e.contains("already runs io.containerd.spin.v2") && e.contains("--force"),
        "{e}"
    );
    let (forced, _) = add_runtime(Path::new("config.toml"), text, "wasm", None, 2, true).unwrap();
    assert!(!forced.contains("spin"), "{forced}");
    assert!(forced.contains(RUNTIME_TYPE), "{forced}");
    // Through install: nothing is written when the config is refused.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let shim = dir.path().join("shim");
    std::fs::write(&shim, b"shim").unwrap();
    let options = InstallOptions {
        shim: Some(shim),
        ..options_for(&config, &dir.path().join("bin"))
    };
    assert!(install(&options).is_err());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    assert!(!dir.path().join("bin").exists(), "the shim was installed");
    install(&InstallOptions {
        force: true,
        ..options
    })
    .unwrap();
}

#[test]
fn the_original_is_kept_once_and_uninstall_takes_the_handler_away() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let original = sample("containerd-1.6.toml");
    std::fs::write(&config, &original).unwrap();
    let bin = dir.path().join("bin");
    let shim = dir.path().join("shim");
    std::fs::write(&shim, b"shim").unwrap();
    let options = InstallOptions {
        shim: Some(shim),
        runtime_options: vec![("isolation".into(), "process".into())],
        ..options_for(&config, &bin)
    };
    let first = install(&options).unwrap();
    assert_eq!(first.backup, Some(original_path(&config)));
    // The user edits the config; a changed install does not overwrite the original.
    let edited = std::fs::read_to_string(&config)
        .unwrap()
        .replace("version = 2", "version = 2\n# edited by the operator");
    std::fs::write(&config, &edited).unwrap();
    let changed = InstallOptions {
        runtime_options: vec![("isolation".into(), "shared".into())],
        ..options.clone()
    };
    assert!(install(&changed).unwrap().backup.is_none());
    assert_eq!(
        std::fs::read_to_string(original_path(&config)).unwrap(),
        original
    );

    let report = uninstall(&options).unwrap();
    assert_eq!(report.config_edited, Some(config.clone()));
    assert_eq!(report.shim_removed, Some(bin.join(SHIM_BINARY)));
    assert!(report.needs_restart());
    let after = std::fs::read_to_string(&config).unwrap();
    assert!(!after.contains(RUNTIME_TYPE), "{after}");
    assert!(after.contains("# edited by the operator"), "{after}");
    assert_eq!(
        after.replace("\n# edited by the operator", ""),
        original,
        "uninstall left more than the operator's edit"
    );
    assert!(!options_file(&config, "wasm").exists());
    assert!(!bin.join(SHIM_BINARY).exists());
    // Twice: nothing more to remove (the restart is still owed).
    let again = uninstall(&options).unwrap();
    assert!(again.config_edited.is_none() && again.files_removed.is_empty());
    restarted(&options).unwrap();
    assert!(!uninstall(&options).unwrap().needs_restart());
}

#[test]
fn uninstall_leaves_another_runtimes_handler() {
    let text = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasm]\n  runtime_type = \"io.containerd.spin.v2\"\n";
    assert_eq!(
        remove_runtime(Path::new("c.toml"), text, "wasm").unwrap(),
        text
    );
}

#[test]
fn a_drop_in_is_deleted_by_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let main = format!(
        "version = 3\nimports = ['{}/conf.d/*.toml']\n",
        dir.path().display()
    );
    std::fs::write(&config, &main).unwrap();
    let options = InstallOptions {
        new_config_version: 3,
        ..options_for(&config, &dir.path().join("bin"))
    };
    let first = install(&options).unwrap();
    assert!(first.drop_in);
    let drop_in = dir.path().join("conf.d/wasmpod-wasm.toml");
    assert!(drop_in.exists());
    let report = uninstall(&options).unwrap();
    assert_eq!(report.files_removed, vec![drop_in.clone()]);
    assert!(!drop_in.exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), main);
}

#[test]
fn paths_are_the_hosts_under_a_host_root() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("etc/containerd")).unwrap();
    std::fs::write(
        host.join("etc/containerd/config.toml"),
        sample("containerd-1.6.toml"),
    )
    .unwrap();
    let shim = dir.path().join("shim");
    std::fs::write(&shim, b"shim").unwrap();
    let options = InstallOptions {
        config: "/etc/containerd/config.toml".into(),
        runtime_options: vec![("isolation".into(), "process".into())],
        shim: Some(shim),
        bin_dir: "/usr/local/bin".into(),
        host_root: Some(host.clone()),
        ..options_for(Path::new("unused"), Path::new("unused"))
    };
    let report = install(&options).unwrap();
    assert_eq!(report.config_file, Path::new("/etc/containerd/config.toml"));
    assert_eq!(
        report.shim_installed.as_deref(),
        Some(Path::new("/usr/local/bin/containerd-shim-wasm-v1"))
    );
    assert!(host.join("usr/local/bin").join(SHIM_BINARY).is_file());
    assert!(host.join("etc/containerd/wasmpod-wasm.toml").is_file());
    let text = std::fs::read_to_string(host.join("etc/containerd/config.toml")).unwrap();
    assert!(
        text.contains("ConfigPath = \"/etc/containerd/wasmpod-wasm.toml\""),
        "ConfigPath is not the host's path:\n{text}"
    );
    // A relative path means nothing on the host.
    let relative = InstallOptions {
        config: "etc/containerd/config.toml".into(),
        ..options.clone()
    };
    let e = install(&relative).unwrap_err().to_string();
    assert!(
        e.contains("--containerd-config must be an absolute path"),
        "{e}"
    );
}

#[test]
fn a_relative_config_gives_an_absolute_config_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, sample("containerd-1.6.toml")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    let relative = pathdiff(&config, &cwd);
    let options = InstallOptions {
        runtime_options: vec![("isolation".into(), "process".into())],
        ..options_for(&relative, &dir.path().join("bin"))
    };
    install(&options).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let expected = format!(
        "ConfigPath = \"{}\"",
        dir.path().join("wasmpod-wasm.toml").display()
    );
    assert!(text.contains(&expected), "{text}");
}

/// `path` relative to `base` (both absolute), through `..` as needed.
fn pathdiff(path: &Path, base: &Path) -> PathBuf {
    let mut base_parts = base.components().peekable();
    let mut path_parts = path.components().peekable();
    while let (Some(a), Some(b)) = (base_parts.peek(), path_parts.peek()) {
        if a != b {
            break;
        }
        base_parts.next();
        path_parts.next();
    }
    let mut out = PathBuf::new();
    for _ in base_parts {
        out.push("..");
    }
    out.extend(path_parts);
    out
}

#[test]
fn k3s_gets_its_template_not_its_generated_config() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("config.toml");
    let k3s = sample("k3s.toml");
    std::fs::write(&generated, &k3s).unwrap();
    let options = options_for(&generated, &dir.path().join("bin"));
    let report = install(&options).unwrap();
    assert!(report.template && report.config_changed, "{report:?}");
    let template = dir.path().join("config.toml.tmpl");
    assert_eq!(report.config_file, template);
    assert_eq!(
        std::fs::read_to_string(&generated).unwrap(),
        k3s,
        "touched k3s's file"
    );
    let text = std::fs::read_to_string(&template).unwrap();
    assert!(text.starts_with("{{ template \"base\" . }}\n"), "{text}");
    // What k3s renders — its base config, then the block — is a config containerd reads,
    // with the handler.
    let rendered = format!("{k3s}\n{}", text.replace("{{ template \"base\" . }}", ""));
    let doc: DocumentMut = rendered.parse().unwrap();
    let wasm = runtime(&doc, "io.containerd.grpc.v1.cri", "wasm");
    assert_eq!(
        wasm.get("runtime_type").unwrap().as_str(),
        Some(RUNTIME_TYPE)
    );
    // Idempotent, and uninstall takes the block away.
    restarted(&options).unwrap();
    assert!(!install(&options).unwrap().needs_restart());
    uninstall(&options).unwrap();
    let after = std::fs::read_to_string(&template).unwrap();
    assert_eq!(after, "{{ template \"base\" . }}\n");
}

#[test]
fn an_existing_k3s_template_keeps_what_it_says() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/containerd");
    for (name, plugin) in [
        ("k3s-config.toml.tmpl", "io.containerd.grpc.v1.cri"),
        ("k3s-config-v3.toml.tmpl", "io.containerd.cri.v1.runtime"),
    ] {
        let text = std::fs::read_to_string(deploy.join(name)).unwrap();
        // The operator's own template, without our handler, and with a runtime of theirs.
        let base_line = "{{ template \"base\" . }}";
        let header = text[..text.find(base_line).unwrap() + base_line.len()].to_owned();
        let theirs = format!("{header}\n[plugins.'{plugin}'.containerd.runtimes.gvisor]\n  runtime_type = \"io.containerd.runsc.v1\"\n");
        let file = Path::new(if name.contains("v3") {
            "config-v3.toml.tmpl"
        } else {
            "config.toml.tmpl"
        });
        let version = template_version(file);
        let once = add_runtime_to_template(file, &theirs, "wasm", None, version).unwrap();
        assert!(once.starts_with(&theirs), "{name}: {once}");
        let rendered = once
            .lines()
            .filter(|l| !l.contains("{{"))
            .collect::<Vec<_>>()
            .join("\n");
        let rendered = rendered.split("*/ -}}").last().unwrap().to_owned();
        let doc: DocumentMut = format!("version = {version}\n{rendered}")
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}\n{once}"));
        runtime(&doc, plugin, "wasm");
        runtime(&doc, plugin, "gvisor");
        let twice = add_runtime_to_template(file, &once, "wasm", None, version).unwrap();
        assert_eq!(twice, once, "{name}: a rerun changed the template");
        // The shipped template is what the installer writes, so a node set up from it
        // by hand is left as it is.
        let base = format!("{header}\n\n");
        let written = add_runtime_to_template(file, &base, "wasm", None, version).unwrap();
        assert_eq!(
            written, text,
            "{name} differs from what wasmpod install writes"
        );
        // A template that defines the handler itself is refused, with the reason.
        let own = format!(
            "{theirs}[plugins.'{plugin}'.containerd.runtimes.wasm]\n  runtime_type = \"x\"\n"
        );
        let e = add_runtime_to_template(file, &own, "wasm", None, version)
            .unwrap_err()
            .to_string();
        assert!(e.contains("defines runtimes.wasm itself"), "{name}: {e}");
    }
}

/// A host root whose node file system is hostile (issue 38's finding 7): links, climbing
/// imports, a FIFO and a huge file where the config is. Nothing lands outside the root.
mod hostile_host_root {
    use super::*;

    /// A host root with containerd 1.6's config, and a shim to install.
    fn host() -> (tempfile::TempDir, PathBuf, InstallOptions) {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        std::fs::create_dir_all(host.join("etc/containerd")).unwrap();
        std::fs::write(
            host.join("etc/containerd/config.toml"),
            sample("containerd-1.6.toml"),
        )
        .unwrap();
        let shim = dir.path().join("shim");
        std::fs::write(&shim, b"shim").unwrap();
        let options = InstallOptions {
            config: "/etc/containerd/config.toml".into(),
            shim: Some(shim),
            bin_dir: "/usr/local/bin".into(),
            host_root: Some(host.clone()),
            ..options_for(Path::new("unused"), Path::new("unused"))
        };
        (dir, host, options)
    }

    /// Every file under `dir`, for "nothing was written here".
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                out.extend(files(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn an_absolute_link_is_the_hosts_and_is_followed_inside_the_root() {
        let (dir, host, options) = host();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        // /usr/local/bin is a link to /opt/bin on the host; here, a link to a directory of
        // this process's own, which the installer must not touch.
        std::fs::create_dir_all(host.join("usr/local")).unwrap();
        std::fs::create_dir_all(host.join("opt/bin")).unwrap();
        std::os::unix::fs::symlink(&outside, host.join("usr/local/bin")).unwrap();
        let outside_in_host = host.join(outside.strip_prefix("/").unwrap());
        install(&options).unwrap();
        assert_eq!(
            files(&outside),
            Vec::<PathBuf>::new(),
            "written outside the root"
        );
        assert!(outside_in_host.join(SHIM_BINARY).is_file());
    }

    #[test]
    fn a_relative_link_that_climbs_out_is_refused() {
        let (_dir, host, options) = host();
        std::fs::create_dir_all(host.join("usr/local")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../tmp", host.join("usr/local/bin")).unwrap();
        let e = install(&options).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "the link /usr/local/bin points to ../../../../../../../tmp, which leaves the \
                 host root {}",
                host.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_link_at_the_shims_place_is_replaced_not_followed_out() {
        let (dir, host, options) = host();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::create_dir_all(host.join("usr/local/bin")).unwrap();
        let relative = Path::new("../../../..").join(victim.strip_prefix("/").unwrap());
        std::os::unix::fs::symlink(&relative, host.join("usr/local/bin").join(SHIM_BINARY))
            .unwrap();
        let e = install(&options).unwrap_err().to_string();
        assert!(e.contains("which leaves the host root"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn imports_that_climb_stop_at_the_root_as_at_the_hosts_slash() {
        let (dir, host, options) = host();
        let escape = "../".repeat(dir.path().components().count() + 4);
        std::fs::write(
            host.join("etc/containerd/config.toml"),
            format!("version = 2\nimports = ['{escape}tmp/wasmpod-escape-test/*.toml']\n"),
        )
        .unwrap();
        install(&options).unwrap();
        assert!(
            !Path::new("/tmp/wasmpod-escape-test").exists(),
            "the drop-in landed outside the root"
        );
        assert!(host
            .join("tmp/wasmpod-escape-test/wasmpod-wasm.toml")
            .is_file());
    }

    #[test]
    fn a_config_that_is_huge_or_a_pipe_is_refused_unread() {
        let (_dir, host, options) = host();
        let config = host.join("etc/containerd/config.toml");
        let huge = std::fs::File::create(&config).unwrap();
        huge.set_len(300 << 20).unwrap();
        let e = install(&options).unwrap_err().to_string();
        assert!(
            e.contains("314572800 bytes, more than a containerd config may be (1048576 bytes)"),
            "{e}"
        );
        std::fs::remove_file(&config).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&config)
            .status()
            .unwrap();
        assert!(made.success());
        let e = install(&options).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
