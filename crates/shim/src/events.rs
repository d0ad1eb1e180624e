//! Task events published to containerd, so `ctr task ls`, `ctr events` and the CRI plugin
//! see every transition.

use std::time::{Duration, SystemTime};

use containerd_shim::protos::api::Envelope;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::topics;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

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
/// How many events may wait to be sent before publishing waits for room.
const QUEUE: usize = 1024;

/// Publishes events in the shim's containerd namespace, in order, as containerd's own
/// shims do: `publish` queues the event and returns, and one task sends the queue, each
/// event acknowledged by containerd before the next — so a task call does not wait on
/// containerd's events service (0.1–0.2 ms an event, four in a `ctr run --rm`), and
/// containerd still sees a container's events in the order they happened. [`flush`]
/// waits until everything queued so far is sent, so a shim ending after its last Delete
/// loses no event and leaves no request half-sent (the `containerd-shim` crate's
/// publisher can lose the last ones, and containerd logs `failed sending message on
/// channel ... broken pipe`). One connection; a failed send reconnects and tries once
/// more. A failure is logged, never fatal: the task goes on whether or not containerd
/// heard about it.
///
/// [`flush`]: Events::flush
#[derive(Clone)]
pub(crate) struct Events {
    queue: mpsc::Sender<Queued>,
    namespace: String,
}

/// What the sending task is given.
enum Queued {
    /// An event, and its timing phase (open from the publishing to the acknowledgement).
    Event {
        topic: &'static str,
        request: ForwardRequest,
        phase: tracing::Span,
    },
    /// Answered once everything queued before it is sent.
    Flush(oneshot::Sender<()>),
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
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

/// The sending task: the queue's events to containerd at `address`, one at a time, until
/// every [`Events`] is gone.
async fn forward(address: String, mut queue: mpsc::Receiver<Queued>) {
    let mut client = None;
    while let Some(queued) = queue.recv().await {
        match queued {
            Queued::Event {
                topic,
                request,
                phase,
            } => {
                send(&address, &mut client, topic, &request)
                    .instrument(phase)
                    .await;
            }
            Queued::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Sends one event on `client` (connected first if need be); a failed send reconnects and
/// tries once more.
async fn send(
    address: &str,
    client: &mut Option<EventsClient>,
    topic: &str,
    request: &ForwardRequest,
) {
    for attempt in 0..2 {
        if client.is_none() {
            match connect(address) {
                Ok(c) => *client = Some(c),
                Err(error) => {
                    tracing::warn!(topic, %error, "cannot publish event");
                    return;
                }
            }
        }
        let Some(c) = client.as_ref() else { return };
        let ctx = containerd_shim::Context::default();
        match tokio::time::timeout(PUBLISH_TIMEOUT, c.forward(ctx, request)).await {
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

impl Events {
    /// Events for containerd at `address` (its ttrpc socket), in `namespace`; connects on
    /// the first event. Starts the sending task: call it in the runtime.
    pub(crate) fn new(address: String, namespace: String) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(forward(address, receiver));
        Self { queue, namespace }
    }

    /// Queues `event` of container `id` on `topic`, its type URL from [`type_url`], timed
    /// as the phase `phase` (`create.event`: from here until containerd acknowledged it):
    /// the one generic step, so the queueing below is compiled once.
    async fn publish<M: Message>(
        &self,
        topic: &'static str,
        phase: &'static str,
        id: &str,
        event: &M,
    ) {
        match event.write_to_bytes() {
            Ok(value) => self.enqueue(topic, phase, id, type_url::<M>(), value).await,
            Err(error) => tracing::warn!(topic, %error, "cannot encode event"),
        }
    }

    async fn enqueue(
        &self,
        topic: &'static str,
        phase: &'static str,
        id: &str,
        type_url: String,
        value: Vec<u8>,
    ) {
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
        // A root span, its container named in it: a child of the call's span would hold
        // the call's own phase open until the event is sent. In a trace it is the call's.
        let phase = tracing::debug_span!(parent: None, "phase", phase, id, otel.name = phase);
        crate::telemetry::follow_current(&phase);
        let queued = Queued::Event {
            topic,
            request,
            phase,
        };
        if self.queue.send(queued).await.is_err() {
            tracing::warn!(topic, "cannot publish event: the sending task has ended");
        }
    }

    /// Waits until every event queued before this call is sent (or given up).
    pub(crate) async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = sent.await;
        }
    }

    pub(crate) async fn create(&self, event: TaskCreate) {
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            "create.event",
            &event.container_id,
            &event,
        )
        .await;
    }

    pub(crate) async fn start(&self, container_id: &str, pid: u32) {
        let event = TaskStart {
            container_id: container_id.to_owned(),
            pid,
            ..Default::default()
        };
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            "start.event",
            container_id,
            &event,
        )
        .await;
    }

    /// The container went past its memory limit: containerd's CRI plugin reports the
    /// exit that follows with reason `OOMKilled`.
    pub(crate) async fn oom(&self, container_id: &str) {
        let event = TaskOOM {
            container_id: container_id.to_owned(),
            ..Default::default()
        };
        self.publish(
            topics::TASK_OOM_EVENT_TOPIC,
            "oom.event",
            container_id,
            &event,
        )
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
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            "exit.event",
            container_id,
            &event,
        )
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
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            "delete.event",
            container_id,
            &event,
        )
        .await;
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

    async fn flush(&self) {
        Events::flush(self).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::api::Empty;
    use containerd_shim::protos::protobuf::MessageFull;
    use containerd_shim::protos::shim_async::create_events;
    use containerd_shim::protos::ttrpc::r#async::{Server, TtrpcContext};
    use std::sync::{Arc, Mutex};

    /// containerd's events service, as far as a shim sees it: it records each event's
    /// topic, type and namespace, and answers none until `open` has permits.
    struct Containerd {
        forwarded: Mutex<Vec<(String, String, String)>>,
        open: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl containerd_shim::protos::shim_async::Events for Containerd {
        async fn forward(
            &self,
            _ctx: &TtrpcContext,
            req: ForwardRequest,
        ) -> containerd_shim::protos::ttrpc::Result<Empty> {
            let _open = self.open.acquire().await;
            let envelope = req.envelope.unwrap_or_default();
            let type_url = envelope.event.unwrap_or_default().type_url;
            self.forwarded
                .lock()
                .unwrap()
                .push((envelope.topic, type_url, envelope.namespace));
            Ok(Empty::new())
        }
    }

    #[tokio::test]
    async fn events_are_queued_sent_in_order_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix://{}", dir.path().join("ttrpc").display());
        let containerd = Arc::new(Containerd {
            forwarded: Mutex::default(),
            open: tokio::sync::Semaphore::new(0),
        });
        let mut server = Server::new()
            .bind(&address)
            .unwrap()
            .register_service(create_events(containerd.clone()));
        server.start().await.unwrap();

        let events = Events::new(address, "k8s.io".into());
        let at = SystemTime::now();
        // containerd answers nothing yet: publishing must not wait for it.
        Events::create(
            &events,
            TaskCreate {
                container_id: "c".into(),
                ..Default::default()
            },
        )
        .await;
        events.start("c", 7).await;
        events.exit("c", 7, 3, at).await;
        events.delete("c", 7, 3, at).await;
        assert!(containerd.forwarded.lock().unwrap().is_empty());

        containerd.open.add_permits(100);
        events.flush().await;
        let forwarded = containerd.forwarded.lock().unwrap().clone();
        let expected = [
            ("/tasks/create", "TaskCreate"),
            ("/tasks/start", "TaskStart"),
            ("/tasks/exit", "TaskExit"),
            ("/tasks/delete", "TaskDelete"),
        ]
        .map(|(topic, name)| {
            (
                topic.to_owned(),
                format!("containerd.events.{name}"),
                "k8s.io".to_owned(),
            )
        });
        assert_eq!(forwarded, expected);
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_containerd_that_is_not_there_loses_events_but_not_the_shim() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix://{}", dir.path().join("nobody").display());
        let events = Events::new(address, "default".into());
        events.start("c", 7).await;
        // Flush returns: the event was given up (and logged), not kept waiting.
        events.flush().await;
    }

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
