//! Task events published to containerd, so `ctr task ls`, `ctr events` and the CRI plugin
//! see every transition.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim::protos::api::Envelope;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::topics;

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

/// The protobuf package of containerd's task events.
const EVENTS_PACKAGE: &str = "containerd.events";

/// The type URL containerd expects of event `M` (`containerd.events.TaskCreate`), named
/// from the message's own name rather than its reflection descriptor: building the
/// descriptors parses the whole file descriptor set of containerd's protos, about 0.8 MB
/// of heap at the first event, most of which a shim keeps for its life.
fn type_url<M: Message>() -> String {
    format!("{EVENTS_PACKAGE}.{}", M::NAME)
}

/// How long one event may take to reach containerd before it is given up (logged).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes events in the shim's containerd namespace, each one sent and acknowledged by
/// containerd before `publish` returns — so an event published before a task call answers
/// is with containerd when the answer is, and a shim that ends after its last Delete has
/// lost nothing and leaves no request half-sent (the `containerd-shim` crate's publisher
/// queues events and sends them later, which loses the last ones of an exiting shim and
/// makes containerd log `failed sending message on channel ... broken pipe`). One
/// connection, taken in turn, keeps events in the order they were published; a failed
/// send reconnects and tries once more. A failure is logged, never fatal: the task goes
/// on whether or not containerd heard about it.
#[derive(Clone)]
pub(crate) struct Events {
    /// containerd's ttrpc socket.
    address: String,
    client: Arc<tokio::sync::Mutex<Option<EventsClient>>>,
    namespace: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// A connection to containerd's ttrpc socket `address`.
fn connect(address: &str) -> Result<EventsClient, String> {
    let fd = containerd_shim::util::connect(address.trim_start_matches("unix://"))
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    Ok(EventsClient::new(Client::new(fd)))
}

impl Events {
    /// Events for containerd at `address` (its ttrpc socket), in `namespace`; connects on
    /// first use.
    pub(crate) fn new(address: String, namespace: String) -> Self {
        Self {
            address,
            client: Arc::new(tokio::sync::Mutex::new(None)),
            namespace,
        }
    }

    /// Publishes `event` on `topic`, its type URL from [`type_url`]: the one generic
    /// step, so the sending below is compiled once.
    async fn publish<M: Message>(&self, topic: &str, event: &M) {
        match event.write_to_bytes() {
            Ok(value) => self.send(topic, type_url::<M>(), value).await,
            Err(error) => tracing::warn!(topic, %error, "cannot encode event"),
        }
    }

    async fn send(&self, topic: &str, type_url: String, value: Vec<u8>) {
        let mut envelope = Envelope::new();
        envelope.topic = topic.to_owned();
        envelope.namespace = self.namespace.clone();
        envelope.timestamp = Some(timestamp(SystemTime::now())).into();
        let mut any = Any::new();
        any.type_url = type_url;
        any.value = value;
        envelope.event = Some(any).into();
        let mut request = ForwardRequest::new();
        request.envelope = Some(envelope).into();
        let mut client = self.client.lock().await;
        for attempt in 0..2 {
            if client.is_none() {
                match connect(&self.address) {
                    Ok(c) => *client = Some(c),
                    Err(error) => {
                        tracing::warn!(topic, %error, "cannot publish event");
                        return;
                    }
                }
            }
            let Some(c) = client.as_ref() else { return };
            let ctx = containerd_shim::Context::default();
            match tokio::time::timeout(PUBLISH_TIMEOUT, c.forward(ctx, &request)).await {
                Ok(Ok(_)) => return,
                Ok(Err(error)) if attempt == 0 => {
                    tracing::debug!(topic, %error, "publishing an event: reconnecting");
                    *client = None;
                }
                Ok(Err(error)) => {
                    tracing::warn!(topic, %error, "cannot publish event");
                    *client = None;
                }
                Err(_) => {
                    tracing::warn!(topic, timeout = ?PUBLISH_TIMEOUT, "cannot publish event: containerd did not answer");
                    *client = None;
                    return;
                }
            }
        }
    }

    pub(crate) async fn create(&self, event: TaskCreate) {
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, &event).await;
    }

    pub(crate) async fn start(&self, container_id: &str, pid: u32) {
        let event = TaskStart {
            container_id: container_id.to_owned(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_START_EVENT_TOPIC, &event).await;
    }

    /// The container went past its memory limit: containerd's CRI plugin reports the
    /// exit that follows with reason `OOMKilled`.
    pub(crate) async fn oom(&self, container_id: &str) {
        let event = TaskOOM {
            container_id: container_id.to_owned(),
            ..Default::default()
        };
        self.publish(topics::TASK_OOM_EVENT_TOPIC, &event).await;
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
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, &event).await;
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
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, &event).await;
    }
}

#[async_trait::async_trait]
impl crate::task::Publish for Events {
    async fn create(&self, event: TaskCreate) {
        Events::create(self, event).await;
    }

    async fn start(&self, id: &str, pid: u32) {
        Events::start(self, id, pid).await;
    }

    async fn oom(&self, id: &str) {
        Events::oom(self, id).await;
    }

    async fn exit(&self, id: &str, pid: u32, code: u32, at: SystemTime) {
        Events::exit(self, id, pid, code, at).await;
    }

    async fn delete(&self, id: &str, pid: u32, code: u32, at: SystemTime) {
        Events::delete(self, id, pid, code, at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    fn named_as_its_descriptor<M: MessageFull>() {
        assert_eq!(type_url::<M>(), M::descriptor().full_name());
    }

    #[test]
    fn every_event_is_named_as_its_descriptor_names_it() {
        named_as_its_descriptor::<TaskCreate>();
        named_as_its_descriptor::<TaskStart>();
        named_as_its_descriptor::<TaskOOM>();
        named_as_its_descriptor::<TaskExit>();
        named_as_its_descriptor::<TaskDelete>();
    }
}
