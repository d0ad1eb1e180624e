//! Task events published to containerd, so `ctr task ls`, `ctr events` and the CRI plugin
//! see every transition.

use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;

/// A protobuf timestamp of `at`.
pub(crate) fn timestamp(at: SystemTime) -> Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

/// Publishes events in the shim's containerd namespace. A failure is logged, never fatal:
/// the task goes on whether or not containerd heard about it.
#[derive(Clone)]
pub(crate) struct Events {
    publisher: Arc<RemotePublisher>,
    namespace: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(publisher: RemotePublisher, namespace: String) -> Self {
        Self {
            publisher: Arc::new(publisher),
            namespace,
        }
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = containerd_shim::Context::default();
        if let Err(error) = self
            .publisher
            .publish(ctx, topic, &self.namespace, event)
            .await
        {
            tracing::warn!(topic, %error, "cannot publish event");
        }
    }

    pub(crate) async fn create(&self, event: TaskCreate) {
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub(crate) async fn start(&self, container_id: &str, pid: u32) {
        let event = TaskStart {
            container_id: container_id.to_owned(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// The container went past its memory limit: containerd's CRI plugin reports the
    /// exit that follows with reason `OOMKilled`.
    pub(crate) async fn oom(&self, container_id: &str) {
        let event = TaskOOM {
            container_id: container_id.to_owned(),
            ..Default::default()
        };
        self.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub(crate) async fn exit(&self, container_id: &str, pid: u32, code: u32, at: SystemTime) {
        let event = TaskExit {
            container_id: container_id.to_owned(),
            id: container_id.to_owned(),
            pid,
            exit_status: code,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub(crate) async fn delete(&self, container_id: &str, pid: u32, code: u32, at: SystemTime) {
        let event = TaskDelete {
            container_id: container_id.to_owned(),
            id: container_id.to_owned(),
            pid,
            exit_status: code,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event))
            .await;
    }
}
