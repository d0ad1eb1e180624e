//! The task API's lifecycle without containerd or root: a real engine running WAT guests,
//! a recorder for events, a stand-in content store, and a stand-in process level whose
//! "children" end when signalled or told to. Each test drives the service through the
//! `Task` trait, as containerd does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::protos::events::task::TaskCreate;
use containerd_shim::protos::ttrpc;
use containerd_shim::{Task, TtrpcContext};
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::*;
use crate::content::{ImageProgram, WasmLayer};
use crate::process::ProcessWorkload;

/// Everything a test's service published, in order: `create c1`, `exit c1 0`, ...
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }
}

#[async_trait]
impl Publish for Recorder {
    async fn create(&self, event: TaskCreate) {
        self.push(format!("create {}", event.container_id));
    }
    async fn start(&self, id: &str, _pid: u32) {
        self.push(format!("start {id}"));
    }
    async fn oom(&self, id: &str) {
        self.push(format!("oom {id}"));
    }
    async fn exit(&self, id: &str, _pid: u32, code: u32, _at: SystemTime) {
        self.push(format!("exit {id} {code}"));
    }
    async fn delete(&self, id: &str, _pid: u32, code: u32, _at: SystemTime) {
        self.push(format!("delete {id} {code}"));
    }
}

/// A content store: no image, or one whose wasm layer is `layer`; and the images on the
/// node by name, with their programs (`None`: a Linux image).
#[derive(Default)]
struct Store {
    layer: Option<Vec<u8>>,
    images: HashMap<String, Option<Vec<u8>>>,
}

#[async_trait]
impl Images for Store {
    async fn wasm_layer(&self, _id: &str, max_size: u64) -> Result<Option<WasmLayer>> {
        Ok(self.layer.clone().map(|bytes| {
            assert!(bytes.len() as u64 <= max_size);
            WasmLayer {
                image: "localhost/artifact:v1".into(),
                bytes,
            }
        }))
    }
    async fn image_name(&self, _id: &str) -> Option<String> {
        None
    }
    async fn exposed_ports(&self, _id: &str) -> Result<Vec<u16>> {
        Ok(Vec::new())
    }
    async fn program(
        &self,
        image: &str,
        scratch_parent: &Path,
        max_size: u64,
    ) -> Result<std::result::Result<ImageProgram, String>> {
        assert!(scratch_parent.is_dir(), "{scratch_parent:?}");
        match self.images.get(image) {
            Some(Some(bytes)) => {
                assert!(bytes.len() as u64 <= max_size);
                Ok(Ok(ImageProgram {
                    name: format!("{image} (layer sha256:0)"),
                    bytes: bytes.clone(),
                }))
            }
            Some(None) => Ok(Err("linux/amd64, entrypoint /bin/sh".into())),
            None => Err(Error::Content(format!(
                "image {image} is not on this node (containerd namespace k8s.io): pull it first"
            ))),
        }
    }
}

/// A cgroup that remembers what was done to it.
#[derive(Debug, Default)]
struct FakeGroup {
    path: String,
    deleted: AtomicBool,
    oom_kills: AtomicU64,
    memory_limit: Mutex<Option<i64>>,
}

impl Group for FakeGroup {
    fn path(&self) -> &str {
        &self.path
    }
    fn stats(&self) -> sandbox::CgroupStats {
        sandbox::CgroupStats {
            oom_kills: self.oom_kills.load(Ordering::SeqCst),
            memory_usage: 4096,
            ..Default::default()
        }
    }
    fn update(&self, resources: &LinuxResources) -> sandbox::Result<()> {
        *self.memory_limit.lock().unwrap() = resources.memory().as_ref().and_then(|m| m.limit());
        Ok(())
    }
    fn delete(&self) -> sandbox::Result<()> {
        self.deleted.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The process level without processes: a "child" is a pid and a channel its exit
/// status arrives on (a signal's 128 + n, or what the test says).
#[derive(Default)]
struct FakeChildren {
    groups: Mutex<Vec<Arc<FakeGroup>>>,
    exits: Mutex<HashMap<u32, watch::Sender<Option<i32>>>>,
    next_pid: AtomicU32,
    signals: Mutex<Vec<(u32, u32)>>,
    /// The exec process file each child was given, with its contents then.
    execs: Mutex<Vec<Option<(PathBuf, String)>>>,
    /// The program file each child was given, with its contents then.
    programs: Mutex<Vec<Option<FileCopy>>>,
}

impl FakeChildren {
    fn group(&self, i: usize) -> Arc<FakeGroup> {
        self.groups.lock().unwrap()[i].clone()
    }

    fn end(&self, pid: u32, code: i32) {
        self.exits.lock().unwrap()[&pid].send_replace(Some(code));
    }
}

struct FakeWait(Arc<FakeChildren>);

#[async_trait]
impl ExitWait for FakeWait {
    async fn wait(self: Box<Self>, pid: u32) -> i32 {
        let mut rx = self.0.exits.lock().unwrap()[&pid].subscribe();
        let code = rx.wait_for(Option::is_some).await.unwrap();
        code.unwrap()
    }
    async fn cancel(self: Box<Self>) {}
}

/// A file a child was given, and what it held then.
type FileCopy = (PathBuf, Vec<u8>);

/// [`FakeChildren`] shared with the service.
#[derive(Clone, Default)]
struct Children(Arc<FakeChildren>);

#[async_trait]
impl Processes for Children {
    fn create_group(
        &self,
        _id: &str,
        path: &str,
        _scope: Option<&sandbox::Scope>,
        _resources: Option<&LinuxResources>,
    ) -> sandbox::Result<SharedGroup> {
        let group = Arc::new(FakeGroup {
            path: path.to_owned(),
            ..Default::default()
        });
        self.0.groups.lock().unwrap().push(group.clone());
        Ok(group)
    }
    async fn watch(&self) -> Result<Box<dyn ExitWait>> {
        Ok(Box::new(FakeWait(self.0.clone())))
    }
    fn spawn(
        &self,
        _id: &str,
        _bundle: &Path,
        _group: &dyn Group,
        workload: ProcessWorkload,
    ) -> Result<u32> {
        let exec = workload.exec.map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            (file, text)
        });
        self.0.execs.lock().unwrap().push(exec);
        let program = workload.program.map(|file| {
            let bytes = std::fs::read(&file).unwrap();
            (file, bytes)
        });
        self.0.programs.lock().unwrap().push(program);
        let pid = 40_000 + self.0.next_pid.fetch_add(1, Ordering::SeqCst);
        self.0
            .exits
            .lock()
            .unwrap()
            .insert(pid, watch::channel(None).0);
        Ok(pid)
    }
    fn signal(&self, _id: &str, pid: u32, signal: u32) -> Result<()> {
        self.0.signals.lock().unwrap().push((pid, signal));
        self.0.end(pid, 128 + i32::try_from(signal).unwrap());
        Ok(())
    }
}

/// A service with its recorder and stand-ins.
struct Harness {
    service: TaskService,
    events: Arc<Recorder>,
    children: Children,
    exit: Arc<ExitSignal>,
    dir: tempfile::TempDir,
}

fn ctx() -> TtrpcContext {
    TtrpcContext {
        fd: -1,
        mh: Default::default(),
        metadata: Default::default(),
        timeout_nano: 0,
    }
}

/// A guest: `hello` prints `hello` and exits 0, `exit3` exits 3, `spin` loops until
/// killed, `grow` grows its memory 16 pages at a time until refused.
fn wat(kind: &str) -> Vec<u8> {
    let body = match kind {
        "hello" => {
            r#"(func (export "_start")
                 (i32.store (i32.const 0) (i32.const 16))
                 (i32.store (i32.const 4) (i32.const 6))
                 (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
               (data (i32.const 16) "hello\n")"#
        }
        "exit3" => r#"(func (export "_start") (call $proc_exit (i32.const 3)))"#,
        "spin" => r#"(func (export "_start") (loop $l (br $l)))"#,
        "grow" => {
            r#"(func (export "_start")
                 (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))))"#
        }
        other => panic!("no guest {other}"),
    };
    let text = format!(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
             (memory (export "memory") 1)
             {body})"#
    );
    wat::parse_str(text).unwrap()
}

impl Harness {
    fn new() -> Self {
        Self::with_store(Store::default())
    }

    fn with_store(store: Store) -> Self {
        let engine = Engine::new(wasm_engine::EngineConfig::default()).unwrap();
        let events = Arc::new(Recorder::default());
        let children = Children::default();
        let exit = Arc::new(ExitSignal::default());
        let seams = Seams {
            events: events.clone(),
            images: Arc::new(store),
            processes: Arc::new(children.clone()),
        };
        Self {
            service: TaskService::new(engine, seams, exit.clone()),
            events,
            children,
            exit,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A bundle for container `id` running guest `guest`, its spec `extra` merged over a
    /// minimal one; stdout to a file.
    fn bundle(&self, id: &str, guest: &str, extra: Value) -> PathBuf {
        let bundle = self.dir.path().join(id);
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        if !guest.is_empty() {
            std::fs::write(bundle.join("rootfs/app.wasm"), wat(guest)).unwrap();
        }
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/app.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"cgroupsPath": format!("/wasmpod-test/{id}")},
        });
        merge(&mut spec, extra);
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        bundle
    }

    fn stdout(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{id}.out"))).unwrap_or_default()
    }

    fn create_request(&self, id: &str, bundle: &Path) -> api::CreateTaskRequest {
        api::CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            stdout: format!(
                "file://{}",
                self.dir.path().join(format!("{id}.out")).display()
            ),
            ..Default::default()
        }
    }

    async fn create(&self, id: &str, guest: &str, extra: Value) -> ttrpc::Result<u32> {
        let bundle = self.bundle(id, guest, extra);
        let req = self.create_request(id, &bundle);
        self.service.create(&ctx(), req).await.map(|r| r.pid)
    }

    async fn start(&self, id: &str) -> ttrpc::Result<u32> {
        let req = api::StartRequest {
            id: id.into(),
            ..Default::default()
        };
        self.service.start(&ctx(), req).await.map(|r| r.pid)
    }

    async fn kill(&self, id: &str, signal: u32) -> ttrpc::Result<()> {
        let req = api::KillRequest {
            id: id.into(),
            signal,
            ..Default::default()
        };
        self.service.kill(&ctx(), req).await.map(drop)
    }

    async fn wait(&self, id: &str) -> ttrpc::Result<u32> {
        let req = api::WaitRequest {
            id: id.into(),
            ..Default::default()
        };
        let ctx = ctx();
        let wait = self.service.wait(&ctx, req);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("the task ended within 30 s")
            .map(|r| r.exit_status)
    }

    async fn delete(&self, id: &str) -> ttrpc::Result<u32> {
        let req = api::DeleteRequest {
            id: id.into(),
            ..Default::default()
        };
        self.service
            .delete(&ctx(), req)
            .await
            .map(|r| r.exit_status)
    }

    async fn state(&self, id: &str) -> ttrpc::Result<api::StateResponse> {
        let req = api::StateRequest {
            id: id.into(),
            ..Default::default()
        };
        self.service.state(&ctx(), req).await
    }

    async fn shutdown(&self) {
        self.service
            .shutdown(&ctx(), api::ShutdownRequest::default())
            .await
            .unwrap();
    }

    /// The events so far, once `n` have been published (exit events come from the run's
    /// own task, after Wait may already have answered).
    async fn events_when(&self, n: usize) -> Vec<String> {
        for _ in 0..300 {
            let events = self.events.events();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.events.events()
    }
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// The gRPC code of a failed call.
fn code<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match result.unwrap_err() {
        ttrpc::Error::RpcStatus(status) => (status.code(), status.message),
        other => panic!("not a status: {other:?}"),
    }
}

fn process_level() -> Value {
    json!({"annotations": {"wasmpod.io/isolation": "process"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_runs_through_create_start_wait_delete() {
    let h = Harness::new();
    let pid = h.create("c1", "hello", json!({})).await.unwrap();
    assert_eq!(pid, std::process::id(), "a shared-level task is the shim's");
    assert_eq!(h.state("c1").await.unwrap().status(), api::Status::CREATED);
    h.start("c1").await.unwrap();
    assert_eq!(h.wait("c1").await.unwrap(), 0);
    assert_eq!(h.stdout("c1"), "hello\n");
    assert_eq!(h.state("c1").await.unwrap().status(), api::Status::STOPPED);
    assert_eq!(h.delete("c1").await.unwrap(), 0);
    assert_eq!(
        h.events_when(4).await,
        ["create c1", "start c1", "exit c1 0", "delete c1 0"]
    );
    assert_eq!(code(h.state("c1").await).0, ttrpc::Code::NOT_FOUND);
    h.shutdown().await;
    tokio::time::timeout(Duration::from_secs(1), h.exit.wait())
        .await
        .expect("the last Delete and Shutdown end the shim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guests_exit_code_is_the_tasks() {
    let h = Harness::new();
    h.create("c1", "exit3", json!({})).await.unwrap();
    h.start("c1").await.unwrap();
    assert_eq!(h.wait("c1").await.unwrap(), 3);
    assert_eq!(h.delete("c1").await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_a_spinning_guest_with_its_signals_status() {
    let h = Harness::new();
    h.create("term", "spin", json!({})).await.unwrap();
    h.create("kill", "spin", json!({})).await.unwrap();
    h.start("term").await.unwrap();
    h.start("kill").await.unwrap();
    h.kill("term", 15).await.unwrap();
    h.kill("kill", 9).await.unwrap();
    assert_eq!(h.wait("term").await.unwrap(), 143);
    assert_eq!(h.wait("kill").await.unwrap(), 137);
    // A stopped task cannot be killed again; a running one cannot be deleted.
    assert_eq!(code(h.kill("term", 15).await).0, ttrpc::Code::NOT_FOUND);
    h.create("busy", "spin", json!({})).await.unwrap();
    h.start("busy").await.unwrap();
    let (c, message) = code(h.delete("busy").await);
    assert_eq!(c, ttrpc::Code::FAILED_PRECONDITION, "{message}");
    assert!(message.contains("while the task is running"), "{message}");
    h.kill("busy", 9).await.unwrap();
    h.wait("busy").await.unwrap();
    for id in ["term", "kill", "busy"] {
        h.delete(id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_before_it_starts_ends_at_once() {
    let h = Harness::new();
    h.create("c1", "spin", json!({})).await.unwrap();
    h.kill("c1", 9).await.unwrap();
    assert_eq!(h.wait("c1").await.unwrap(), 137);
    let (c, _) = code(h.start("c1").await);
    assert_eq!(c, ttrpc::Code::FAILED_PRECONDITION);
    assert_eq!(h.delete("c1").await.unwrap(), 137);
    assert_eq!(
        h.events_when(3).await,
        ["create c1", "exit c1 137", "delete c1 137"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_create_leaves_nothing_and_its_delete_succeeds() {
    let h = Harness::new();
    // Not wasm: the request's fault, named in the answer.
    let bundle = h.bundle("bad", "", json!({}));
    std::fs::write(bundle.join("rootfs/app.wasm"), b"hello, not a program\n").unwrap();
    let (c, message) = code(
        h.service
            .create(&ctx(), h.create_request("bad", &bundle))
            .await,
    );
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{message}");
    assert!(message.contains("container bad"), "{message}");
    assert!(message.contains("/app.wasm"), "{message}");
    // A missing entrypoint, too.
    let (c, message) = code(h.create("missing", "", json!({})).await);
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{message}");
    assert_eq!(code(h.state("bad").await).0, ttrpc::Code::NOT_FOUND);
    assert!(h.events.events().is_empty(), "no event for a failed Create");
    // containerd's cleanup Delete after the failure answers as a task that never started.
    assert_eq!(h.delete("bad").await.unwrap(), 126);
    assert_eq!(code(h.delete("bad").await).0, ttrpc::Code::NOT_FOUND);
    // The id is free again.
    h.create("bad", "hello", json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_one_id() {
    let h = Harness::new();
    let bundle = h.bundle("c1", "spin", json!({}));
    let (ca, cb) = (ctx(), ctx());
    let (a, b) = tokio::join!(
        h.service.create(&ca, h.create_request("c1", &bundle)),
        h.service.create(&cb, h.create_request("c1", &bundle)),
    );
    let refused = [&a, &b].iter().filter(|r| r.is_err()).count();
    assert_eq!(refused, 1, "one of two Creates of c1: {a:?} {b:?}");
    let err = if a.is_err() { a } else { b };
    assert_eq!(code(err).0, ttrpc::Code::ALREADY_EXISTS);
    let (a, b) = tokio::join!(h.start("c1"), h.start("c1"));
    assert_eq!([&a, &b].iter().filter(|r| r.is_ok()).count(), 1);
    let err = if a.is_err() { a } else { b };
    assert_eq!(code(err).0, ttrpc::Code::FAILED_PRECONDITION);
    let (a, b, w) = tokio::join!(h.kill("c1", 9), h.kill("c1", 15), h.wait("c1"));
    assert!(a.is_ok() || b.is_ok());
    let status = w.unwrap();
    assert!(status == 137 || status == 143, "{status}");
    let (a, b) = tokio::join!(h.delete("c1"), h.delete("c1"));
    assert_eq!([&a, &b].iter().filter(|r| r.is_ok()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_past_its_memory_limit_ends_as_oom_after_an_oom_event() {
    let h = Harness::new();
    let limit = json!({"linux": {"resources": {"memory": {"limit": 1 << 20}}}});
    h.create("c1", "grow", limit).await.unwrap();
    h.start("c1").await.unwrap();
    assert_eq!(h.wait("c1").await.unwrap(), 137);
    assert_eq!(
        h.events_when(4).await,
        ["create c1", "start c1", "oom c1", "exit c1 137"]
    );
    h.delete("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_stats_of_a_shared_level_guest() {
    let h = Harness::new();
    h.create("c1", "spin", json!({})).await.unwrap();
    let update = |json: &str| api::UpdateTaskRequest {
        id: "c1".into(),
        resources: Some(
            containerd_shim::protos::protobuf::well_known_types::any::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: json.as_bytes().to_vec(),
                ..Default::default()
            },
        )
        .into(),
        ..Default::default()
    };
    h.service
        .update(&ctx(), update(r#"{"memory":{"limit":33554432}}"#))
        .await
        .unwrap();
    let stats = h
        .service
        .stats(
            &ctx(),
            api::StatsRequest {
                id: "c1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let any = stats.stats.unwrap();
    assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
    use containerd_shim::protos::protobuf::Message as _;
    let metrics =
        containerd_shim::protos::cgroups::metrics::Metrics::parse_from_bytes(&any.value).unwrap();
    assert_eq!(metrics.memory.usage.limit, 32 << 20);
    let (c, _) = code(h.service.update(&ctx(), update("{nope")).await);
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    h.kill("c1", 9).await.unwrap();
    h.delete("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifacts_program_comes_from_the_content_store() {
    let h = Harness::with_store(Store {
        layer: Some(wat("exit3")),
        ..Default::default()
    });
    // No snapshot mounts, and no program in the root filesystem.
    h.create("c1", "", json!({})).await.unwrap();
    h.start("c1").await.unwrap();
    assert_eq!(h.wait("c1").await.unwrap(), 3);
    h.delete("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_sandbox_is_held_until_killed() {
    let h = Harness::new();
    let sandbox = json!({"annotations": {"io.kubernetes.cri.container-type": "sandbox"}});
    h.create("pod", "", sandbox).await.unwrap();
    h.start("pod").await.unwrap();
    assert_eq!(h.state("pod").await.unwrap().status(), api::Status::RUNNING);
    h.kill("pod", 15).await.unwrap();
    assert_eq!(h.wait("pod").await.unwrap(), 143);
    h.delete("pod").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_level_runs_a_child_in_its_cgroup_and_removes_it() {
    let h = Harness::new();
    h.create("c1", "spin", process_level()).await.unwrap();
    let group = h.children.0.group(0);
    assert_eq!(group.path(), "/wasmpod-test/c1");
    let pid = h.start("c1").await.unwrap();
    assert_ne!(pid, std::process::id(), "a process-level task is its child");
    assert_eq!(h.state("c1").await.unwrap().pid, pid);
    h.kill("c1", 15).await.unwrap();
    assert_eq!(*h.children.0.signals.lock().unwrap(), [(pid, 15)]);
    assert_eq!(h.wait("c1").await.unwrap(), 143);
    assert!(!group.deleted.load(Ordering::SeqCst));
    assert_eq!(h.delete("c1").await.unwrap(), 143);
    assert!(
        group.deleted.load(Ordering::SeqCst),
        "Delete removes the cgroup"
    );
    assert_eq!(
        h.events_when(4).await,
        ["create c1", "start c1", "exit c1 143", "delete c1 143"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_killed_by_its_cgroups_oom_killer_is_reported_as_oom() {
    let h = Harness::new();
    h.create("c1", "spin", process_level()).await.unwrap();
    let pid = h.start("c1").await.unwrap();
    h.children.0.group(0).oom_kills.store(1, Ordering::SeqCst);
    h.children.0.end(pid, 137);
    assert_eq!(h.wait("c1").await.unwrap(), 137);
    assert_eq!(
        h.events_when(4).await,
        ["create c1", "start c1", "oom c1", "exit c1 137"]
    );
    h.delete("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_level_updates_and_reads_its_cgroup() {
    let h = Harness::new();
    h.create("c1", "spin", process_level()).await.unwrap();
    let req = api::UpdateTaskRequest {
        id: "c1".into(),
        resources: Some(
            containerd_shim::protos::protobuf::well_known_types::any::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: br#"{"memory":{"limit":67108864}}"#.to_vec(),
                ..Default::default()
            },
        )
        .into(),
        ..Default::default()
    };
    h.service.update(&ctx(), req).await.unwrap();
    assert_eq!(
        *h.children.0.group(0).memory_limit.lock().unwrap(),
        Some(64 << 20)
    );
    let stats = h
        .service
        .stats(
            &ctx(),
            api::StatsRequest {
                id: "c1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    use containerd_shim::protos::protobuf::Message as _;
    let metrics = containerd_shim::protos::cgroups::metrics::Metrics::parse_from_bytes(
        &stats.stats.unwrap().value,
    )
    .unwrap();
    assert_eq!(metrics.memory.usage.usage, 4096, "the cgroup's figure");
    // Deleted before it started: the cgroup goes too.
    assert_eq!(h.delete("c1").await.unwrap(), 0);
    assert!(h.children.0.group(0).deleted.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_level_create_that_fails_after_its_cgroup_removes_it() {
    let h = Harness::new();
    // A terminal cannot be given to a guest: stdio fails after the cgroup was made.
    let bundle = h.bundle("c1", "spin", process_level());
    let mut req = h.create_request("c1", &bundle);
    req.terminal = true;
    let (c, message) = code(h.service.create(&ctx(), req).await);
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{message}");
    assert!(h.children.0.group(0).deleted.load(Ordering::SeqCst));
    assert_eq!(code(h.state("c1").await).0, ttrpc::Code::NOT_FOUND);
}

mod exec;
