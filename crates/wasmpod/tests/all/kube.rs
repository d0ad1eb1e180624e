//! `wasmpod install`, `wasmpod pod` and `wasmpod cri` where no runtime is needed: the
//! installer on a config file, and the errors users see before a CRI call is made. Pods
//! through a real containerd are `cargo xtask e2e`'s `pod-*` checks.

use super::*;

const CONFIG_V2: &str = "version = 2\n\n# ours\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n";

#[test]
fn install_adds_the_handler_once_and_copies_the_shim() {
    let w = Wasmpod::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, CONFIG_V2).unwrap();
    let shim = dir.path().join("shim");
    std::fs::write(&shim, b"a shim build").unwrap();
    let bin = dir.path().join("bin");
    let args = [
        "install",
        "--containerd-config",
        path_str(&config),
        "--shim",
        path_str(&shim),
        "--bin-dir",
        path_str(&bin),
        "--restart-command",
        "echo restarted > restarted.txt",
    ];
    let first = w
        .command()
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_code(&first, 0);
    let text = stdout(&first);
    assert!(
        text.contains("installed") && text.contains("added runtime handler \"wasm\""),
        "{text}"
    );
    assert!(
        text.contains("original config kept as") && text.contains("config.toml.wasmpod-orig"),
        "{text}"
    );
    assert!(
        dir.path().join("restarted.txt").exists(),
        "containerd was not restarted"
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.starts_with(CONFIG_V2.trim_end()),
        "the original is kept as it was:\n{written}"
    );
    assert!(
        written.contains("runtime_type = \"io.containerd.wasm.v1\""),
        "{written}"
    );
    assert_eq!(
        std::fs::read(bin.join("containerd-shim-wasm-v1")).unwrap(),
        b"a shim build"
    );

    std::fs::remove_file(dir.path().join("restarted.txt")).unwrap();
    let second = w
        .command()
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_code(&second, 0);
    assert!(
        stdout(&second).contains("nothing changed"),
        "{}",
        stdout(&second)
    );
    assert!(
        !dir.path().join("restarted.txt").exists(),
        "restarted although nothing changed"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    // uninstall takes it all away again and restarts containerd.
    let out = w
        .command()
        .args([
            "uninstall",
            "--containerd-config",
            path_str(&config),
            "--bin-dir",
            path_str(&bin),
            "--restart-command",
            "echo restarted > restarted.txt",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("removed runtime handler \"wasm\""),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), CONFIG_V2);
    assert!(!bin.join("containerd-shim-wasm-v1").exists());
    assert!(dir.path().join("restarted.txt").exists());
}

#[test]
fn install_failures_name_the_file() {
    let w = Wasmpod::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[plugins.cri]\n").unwrap();
    let out = w.cmd(&[
        "install",
        "--config-only",
        "--no-restart",
        "--containerd-config",
        path_str(&config),
    ]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(path_str(&config)) && err.contains("version 1"),
        "{err}"
    );
    // A failing restart command fails the install.
    std::fs::write(&config, "version = 2\n").unwrap();
    let out = w.cmd(&[
        "install",
        "--config-only",
        "--containerd-config",
        path_str(&config),
        "--restart-command",
        "exit 3",
    ]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("\"exit 3\" failed") && stderr(&out).contains("stays pending"),
        "{}",
        stderr(&out)
    );
    // The restart is owed: the next run does it though nothing else changed (on k3s,
    // with no containerd unit, the first restart command fails and the handler would
    // otherwise never load), and the one after has nothing to do.
    let retry = [
        "install",
        "--config-only",
        "--containerd-config",
        path_str(&config),
        "--restart-command",
        "true",
    ];
    let out = w.cmd(&retry);
    assert_code(&out, 0);
    let said = stdout(&out);
    assert!(
        said.contains("restart is still pending") && said.contains("restarting containerd"),
        "{said}"
    );
    let out = w.cmd(&retry);
    assert!(stdout(&out).contains("nothing changed"), "{}", stdout(&out));
}

#[test]
fn pod_run_errors_come_before_any_runtime_call() {
    let w = Wasmpod::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix://{}", dir.path().join("none.sock").display());
    let out = w.cmd(&["pod", "run", "-r", &sock, "/nonexistent/pod.yaml"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("/nonexistent/pod.yaml"),
        "{}",
        stderr(&out)
    );

    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: x:v1, resources: {limits: {memory: lots}}}\n",
    )
    .unwrap();
    let out = w.cmd(&["pod", "run", "-r", &sock, path_str(&pod)]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("pod default/p: spec.containers[0].resources.limits.memory"),
        "{err}"
    );

    std::fs::write(&pod, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: x:v1}\n").unwrap();
    let out = w.cmd(&["pod", "run", "-r", &sock, path_str(&pod)]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the container runtime") && err.contains("none.sock"),
        "{err}"
    );

    let out = w.cmd(&["cri", "ps", "-r", &sock]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("cannot reach the container runtime"),
        "{}",
        stderr(&out)
    );
}
