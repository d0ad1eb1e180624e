//! What the task service talks to besides the engine, as traits: containerd's event
//! service, its content store, and the process level's cgroups and children. The shim
//! plugs in the real ones (`events::Events`, `content::ContentStore`, `process::Children`);
//! the unit tests plug in recorders and stand-ins, so the whole task lifecycle runs
//! without containerd or root.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::protos::events::task::TaskCreate;
use oci_spec::runtime::LinuxResources;
use sandbox::CgroupStats;

use crate::content::{ImageProgram, WasmLayer};
use crate::error::Result;
use crate::process::ProcessWorkload;

/// Where task events go (containerd's `Events` service), in the order published. Publishing
/// never fails the task call: a publisher logs what it could not send.
#[async_trait]
pub(crate) trait Publish: Send + Sync {
    /// TaskCreate.
    async fn create(&self, event: TaskCreate);
    /// TaskStart of container `id`, whose task has `pid`.
    async fn start(&self, id: &str, pid: u32);
    /// TaskOOM: the container went past its memory limit.
    async fn oom(&self, id: &str);
    /// TaskExit.
    async fn exit(&self, id: &str, pid: u32, code: u32, at: SystemTime);
    /// TaskDelete.
    async fn delete(&self, id: &str, pid: u32, code: u32, at: SystemTime);
    /// Returns once every event published so far has reached containerd (or been given
    /// up): a publisher that sends later must not lose them when the shim ends.
    async fn flush(&self) {}
}

/// What the service asks about a container's image (containerd's content store).
#[async_trait]
pub(crate) trait Images: Send + Sync {
    /// The wasm layer of container `id`'s image, at most `max_size` bytes; `None` when it
    /// names no image or its image has no wasm layer.
    async fn wasm_layer(&self, id: &str, max_size: u64) -> Result<Option<WasmLayer>>;
    /// The name of container `id`'s image, for errors; `None` when nobody can say.
    async fn image_name(&self, id: &str) -> Option<String>;
    /// The TCP ports container `id`'s image exposes.
    async fn exposed_ports(&self, id: &str) -> Result<Vec<u16>>;
    /// The wasm program of image `image` (its full name), at most `max_size` bytes, read
    /// with a scratch directory under `scratch_parent`; `Ok(Err(why))` when the image is
    /// not a wasm image.
    async fn program(
        &self,
        image: &str,
        scratch_parent: &Path,
        max_size: u64,
    ) -> Result<std::result::Result<ImageProgram, String>>;
}

/// A process-level container's cgroup.
pub(crate) trait Group: Send + Sync + std::fmt::Debug {
    /// Its path (as `linux.cgroupsPath` resolved).
    fn path(&self) -> &str;
    /// Its figures, for Stats and for telling an OOM kill.
    fn stats(&self) -> CgroupStats;
    /// Takes new resources (Update).
    fn update(&self, resources: &LinuxResources) -> sandbox::Result<()>;
    /// Kills what is left in it and removes it (Delete, or a failed Create).
    fn delete(&self) -> sandbox::Result<()>;
}

/// A cgroup shared by the container and its running task.
pub(crate) type SharedGroup = Arc<dyn Group>;

/// The process level: a cgroup and a child process per container.
#[async_trait]
pub(crate) trait Processes: Send + Sync {
    /// Makes container `id`'s cgroup with `resources`: at `path` (cgroupfs), or a
    /// transient systemd `scope` when the spec asks for the systemd driver.
    fn create_group(
        &self,
        id: &str,
        path: &str,
        scope: Option<&sandbox::Scope>,
        resources: Option<&LinuxResources>,
    ) -> sandbox::Result<SharedGroup>;
    /// Starts watching for child exits: taken before the child exists, so that its exit
    /// cannot be missed.
    async fn watch(&self) -> Result<Box<dyn ExitWait>>;
    /// Starts container `id`'s child in `group`; its pid.
    fn spawn(
        &self,
        id: &str,
        bundle: &Path,
        group: &dyn Group,
        workload: ProcessWorkload,
    ) -> Result<u32>;
    /// Sends `signal` to the child `pid` of container `id`.
    fn signal(&self, id: &str, pid: u32, signal: u32) -> Result<()>;
}

/// A watch for one child's exit.
#[async_trait]
pub(crate) trait ExitWait: Send {
    /// Waits for `pid` to end; its exit status (128 + signal for a signal).
    async fn wait(self: Box<Self>, pid: u32) -> i32;
    /// Stops watching (the child was never started).
    async fn cancel(self: Box<Self>);
}

/// Everything the task service talks to besides the engine.
#[derive(Clone)]
pub(crate) struct Seams {
    /// Task events.
    pub(crate) events: Arc<dyn Publish>,
    /// Images' wasm layers and configs.
    pub(crate) images: Arc<dyn Images>,
    /// The process level's cgroups and children.
    pub(crate) processes: Arc<dyn Processes>,
}
