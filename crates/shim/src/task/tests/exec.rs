//! Exec into a running container: a wasm program from its root filesystem or from an
//! image, at both levels, and what is refused.

use std::collections::HashMap;
use std::time::Duration;

use containerd_shim::api;
use containerd_shim::protos::ttrpc;
use containerd_shim::Task;
use serde_json::{json, Value};

use super::{code, ctx, process_level, wat, Harness, Store};

/// An Exec request into `container` running `args`, its stdout to `<exec_id>.out`.
fn exec_request(
    h: &Harness,
    container: &str,
    exec_id: &str,
    args: &[&str],
) -> api::ExecProcessRequest {
    let process = json!({"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0}});
    api::ExecProcessRequest {
        id: container.into(),
        exec_id: exec_id.into(),
        stdout: format!(
            "file://{}",
            h.dir.path().join(format!("{exec_id}.out")).display()
        ),
        spec: Some(
            containerd_shim::protos::protobuf::well_known_types::any::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: process.to_string().into_bytes(),
                ..Default::default()
            },
        )
        .into(),
        ..Default::default()
    }
}

impl Harness {
    /// Exec `args` into `container` as `exec_id` and start it.
    async fn exec(&self, container: &str, exec_id: &str, args: &[&str]) -> ttrpc::Result<u32> {
        let req = exec_request(self, container, exec_id, args);
        self.service.exec(&ctx(), req).await?;
        let start = api::StartRequest {
            id: container.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.start(&ctx(), start).await.map(|r| r.pid)
    }

    async fn wait_exec(&self, container: &str, exec_id: &str) -> ttrpc::Result<u32> {
        let req = api::WaitRequest {
            id: container.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let ctx = ctx();
        let wait = self.service.wait(&ctx, req);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("the exec ended within 30 s")
            .map(|r| r.exit_status)
    }

    async fn delete_exec(&self, container: &str, exec_id: &str) -> ttrpc::Result<u32> {
        let req = api::DeleteRequest {
            id: container.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service
            .delete(&ctx(), req)
            .await
            .map(|r| r.exit_status)
    }

    async fn kill_exec(&self, container: &str, exec_id: &str, signal: u32) -> ttrpc::Result<()> {
        let req = api::KillRequest {
            id: container.into(),
            exec_id: exec_id.into(),
            signal,
            ..Default::default()
        };
        self.service.kill(&ctx(), req).await.map(drop)
    }

    /// Puts guest `guest` into container `id`'s root filesystem as `/<name>`.
    fn add_program(&self, id: &str, name: &str, guest: &str) {
        let path = self.dir.path().join(id).join("rootfs").join(name);
        std::fs::write(path, wat(guest)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_exec_runs_a_second_program_beside_the_guest_with_its_own_exit_code() {
    let h = Harness::new();
    h.create("c1", "spin", json!({"process": {"env": ["GREETING=hi"]}}))
        .await
        .unwrap();
    h.add_program("c1", "tool.wasm", "exit3");
    h.add_program("c1", "hello.wasm", "hello");
    h.add_program("c1", "spin.wasm", "spin");
    h.start("c1").await.unwrap();
    // In the shim at the shared level: its pid is the shim's.
    assert_eq!(
        h.exec("c1", "e1", &["/tool.wasm"]).await.unwrap(),
        std::process::id()
    );
    assert_eq!(h.wait_exec("c1", "e1").await.unwrap(), 3);
    assert_eq!(h.delete_exec("c1", "e1").await.unwrap(), 3);
    // Found on the container's PATH, its output on the exec's own stdout.
    h.exec("c1", "e2", &["hello.wasm"]).await.unwrap();
    assert_eq!(h.wait_exec("c1", "e2").await.unwrap(), 0);
    let out = std::fs::read_to_string(h.dir.path().join("e2.out")).unwrap();
    assert_eq!(out, "hello\n");
    assert_eq!(
        h.stdout("c1"),
        "",
        "the guest's own stdout is not the exec's"
    );
    // A signal ends it with its status; the container goes on.
    h.exec("c1", "e3", &["/spin.wasm"]).await.unwrap();
    h.kill_exec("c1", "e3", 15).await.unwrap();
    assert_eq!(h.wait_exec("c1", "e3").await.unwrap(), 143);
    assert_eq!(h.state("c1").await.unwrap().status(), api::Status::RUNNING);
    // One still running when the container stops ends with it.
    h.exec("c1", "e4", &["/spin.wasm"]).await.unwrap();
    h.kill("c1", 9).await.unwrap();
    assert_eq!(h.wait("c1").await.unwrap(), 137);
    assert_eq!(h.wait_exec("c1", "e4").await.unwrap(), 137);
    h.delete("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_into_a_wasm_guest_is_refused_unless_it_names_a_wasm_program() {
    let h = Harness::new();
    h.create("c1", "spin", json!({})).await.unwrap();
    h.start("c1").await.unwrap();
    let refused = async |args: &[&str], exec_id: &str| {
        let req = exec_request(&h, "c1", exec_id, args);
        code(h.service.exec(&ctx(), req).await)
    };
    let (status, message) = refused(&["/bin/ls"], "e1").await;
    assert_eq!(status, ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        message.contains("\"/bin/ls\" cannot run in a wasm container")
            && message.contains("execs wasm programs")
            && message.contains("its own \"/app.wasm\""),
        "{message}"
    );
    let rootfs = h.dir.path().join("c1/rootfs");
    std::fs::write(rootfs.join("tool"), b"\x7fELF\x02\x01\x01").unwrap();
    let (_, message) = refused(&["/tool"], "e1").await;
    assert!(message.contains("it is a Linux executable"), "{message}");
    std::fs::write(rootfs.join("run.sh"), b"#!/bin/sh\n").unwrap();
    let (_, message) = refused(&["/run.sh"], "e1").await;
    assert!(message.contains("it is a script"), "{message}");
    let (_, message) = refused(&["/app.wasm"], "../x").await;
    assert!(message.contains("not a valid identifier"), "{message}");
    let req = exec_request(&h, "nope", "e1", &["/app.wasm"]);
    assert_eq!(
        code(h.service.exec(&ctx(), req).await).0,
        ttrpc::Code::NOT_FOUND
    );
    // Calls by an exec id nobody added are answered as not found, not as the container's.
    let start = api::StartRequest {
        id: "c1".into(),
        exec_id: "e1".into(),
        ..Default::default()
    };
    assert_eq!(
        code(h.service.start(&ctx(), start).await).0,
        ttrpc::Code::NOT_FOUND
    );
    assert_eq!(
        code(h.wait_exec("c1", "e1").await).0,
        ttrpc::Code::NOT_FOUND
    );
    h.kill("c1", 9).await.unwrap();
    assert_eq!(h.wait("c1").await.unwrap(), 137);
    // A container that has stopped takes no exec.
    let req = exec_request(&h, "c1", "e2", &["/app.wasm"]);
    assert_eq!(
        code(h.service.exec(&ctx(), req).await).0,
        ttrpc::Code::FAILED_PRECONDITION
    );
    h.delete("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_level_wasm_exec_is_a_child_in_the_containers_cgroup() {
    let h = Harness::new();
    h.create("c1", "spin", process_level()).await.unwrap();
    h.add_program("c1", "tool.wasm", "exit3");
    let init = h.start("c1").await.unwrap();
    let pid = h.exec("c1", "e1", &["/tool.wasm", "x"]).await.unwrap();
    assert_ne!(pid, init);
    let (file, process) = h.children.0.execs.lock().unwrap()[1].clone().unwrap();
    assert!(file.starts_with(h.dir.path().join("c1")), "{file:?}");
    let process: Value = serde_json::from_str(&process).unwrap();
    assert_eq!(process["args"], json!(["/tool.wasm", "x"]));
    h.children.0.end(pid, 5);
    assert_eq!(h.wait_exec("c1", "e1").await.unwrap(), 5);
    assert!(
        !file.exists(),
        "the exec's process file is removed once it ended"
    );
    // One still running when the container ends is killed with it.
    let pid = h.exec("c1", "e2", &["/tool.wasm"]).await.unwrap();
    h.children.0.end(init, 0);
    assert_eq!(h.wait("c1").await.unwrap(), 0);
    assert_eq!(h.wait_exec("c1", "e2").await.unwrap(), 137);
    assert!(h.children.0.signals.lock().unwrap().contains(&(pid, 9)));
    h.delete("c1").await.unwrap();
}

/// A store holding a wasm image `localhost/tools/hello:v1` whose program prints `hello`,
/// `docker.io/library/exit3:latest` whose program exits 3, and a Linux image
/// `docker.io/library/busybox:latest`; and, when `layer`, a wasm layer for containers.
fn tool_images(layer: Option<Vec<u8>>) -> Store {
    Store {
        layer,
        images: HashMap::from([
            ("localhost/tools/hello:v1".to_owned(), Some(wat("hello"))),
            (
                "docker.io/library/exit3:latest".to_owned(),
                Some(wat("exit3")),
            ),
            ("docker.io/library/busybox:latest".to_owned(), None),
        ]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_exec_runs_an_images_program_named_as_oci() {
    let h = Harness::with_store(tool_images(None));
    h.create("c1", "spin", json!({})).await.unwrap();
    h.start("c1").await.unwrap();
    h.exec("c1", "e1", &["oci://localhost/tools/hello:v1"])
        .await
        .unwrap();
    assert_eq!(h.wait_exec("c1", "e1").await.unwrap(), 0);
    let out = std::fs::read_to_string(h.dir.path().join("e1.out")).unwrap();
    assert_eq!(out, "hello\n");
    // A short name is read as docker and containerd read it.
    h.exec("c1", "e2", &["oci://exit3", "arg"]).await.unwrap();
    assert_eq!(h.wait_exec("c1", "e2").await.unwrap(), 3);
    let refused = async |args: &[&str], exec_id: &str| {
        let req = exec_request(&h, "c1", exec_id, args);
        code(h.service.exec(&ctx(), req).await)
    };
    let (status, message) = refused(&["oci://busybox"], "e3").await;
    assert_eq!(status, ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        message.contains("image docker.io/library/busybox:latest is not a wasm image")
            && message.contains("linux/amd64"),
        "{message}"
    );
    let (_, message) = refused(&["oci://localhost/absent:v1"], "e3").await;
    assert!(
        message.contains("\"oci://localhost/absent:v1\"")
            && message.contains("not on this node")
            && message.contains("pull it first"),
        "{message}"
    );
    let (_, message) = refused(&["oci://Not A Name"], "e3").await;
    assert!(message.contains("\"oci://Not A Name\""), "{message}");
    // A refused exec leaves no id behind: the same id runs after.
    h.exec("c1", "e3", &["oci://exit3"]).await.unwrap();
    assert_eq!(h.wait_exec("c1", "e3").await.unwrap(), 3);
    h.kill("c1", 9).await.unwrap();
    assert_eq!(h.wait("c1").await.unwrap(), 137);
    h.delete("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_from_a_wasm_layer_execs_only_images_programs() {
    let h = Harness::with_store(tool_images(Some(wat("spin"))));
    h.create("c1", "", json!({})).await.unwrap();
    h.start("c1").await.unwrap();
    let req = exec_request(&h, "c1", "e1", &["/tool.wasm"]);
    let (status, message) = code(h.service.exec(&ctx(), req).await);
    assert_eq!(status, ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        message.contains("no root filesystem") && message.contains("oci://IMAGE"),
        "{message}"
    );
    h.exec("c1", "e2", &["oci://exit3"]).await.unwrap();
    assert_eq!(h.wait_exec("c1", "e2").await.unwrap(), 3);
    h.kill("c1", 9).await.unwrap();
    assert_eq!(h.wait("c1").await.unwrap(), 137);
    h.delete("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_level_exec_of_an_images_program_hands_the_child_its_program() {
    let h = Harness::with_store(tool_images(None));
    h.create("c1", "spin", process_level()).await.unwrap();
    h.start("c1").await.unwrap();
    let pid = h.exec("c1", "e1", &["oci://exit3", "x"]).await.unwrap();
    let (file, bytes) = h.children.0.programs.lock().unwrap()[1].clone().unwrap();
    assert!(file.starts_with(h.dir.path().join("c1")), "{file:?}");
    assert_eq!(bytes, wat("exit3"));
    let (process_file, process) = h.children.0.execs.lock().unwrap()[1].clone().unwrap();
    let process: Value = serde_json::from_str(&process).unwrap();
    assert_eq!(process["args"], json!(["oci://exit3", "x"]));
    h.children.0.end(pid, 3);
    assert_eq!(h.wait_exec("c1", "e1").await.unwrap(), 3);
    assert!(
        !file.exists() && !process_file.exists(),
        "the exec's files are removed once it ended"
    );
    h.kill("c1", 9).await.unwrap();
    h.wait("c1").await.unwrap();
    h.delete("c1").await.unwrap();
}
