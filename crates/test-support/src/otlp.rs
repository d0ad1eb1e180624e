//! An OTLP trace receiver on loopback for tests: the collector's gRPC `TraceService` on one
//! port and HTTP/protobuf (`POST /v1/traces`) on another, keeping every span it is sent.
//! Point containerd and the shim at it with the standard `OTEL_EXPORTER_OTLP_*` variables.
//! Stopped on drop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One span as the receiver got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The `service.name` of the resource that sent it.
    pub service: String,
    pub name: String,
    /// Hex, as W3C `traceparent` writes them.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_id: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// String, integer and boolean attributes, as text.
    pub attributes: HashMap<String, String>,
}

impl Received {
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_ns.saturating_sub(self.start_unix_ns))
    }
}

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    grpc: SocketAddr,
    http: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on two free loopback ports, served by a thread of its own.
    pub fn start() -> std::io::Result<Self> {
        let grpc = std::net::TcpListener::bind("127.0.0.1:0")?;
        let http = std::net::TcpListener::bind("127.0.0.1:0")?;
        for l in [&grpc, &http] {
            l.set_nonblocking(true)?;
        }
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let store = Store(spans.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let grpc = tokio::net::TcpListener::from_std(grpc).expect("gRPC listener");
                    let http = tokio::net::TcpListener::from_std(http).expect("HTTP listener");
                    tokio::select! {
                        () = serve_grpc(grpc, store.clone()) => {}
                        () = serve_http(http, store) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self {
            grpc: grpc_addr,
            http: http_addr,
            spans,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The endpoint for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The endpoint for `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` (the exporter adds
    /// `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The spans once `done` holds of them, or what came within `timeout`.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The spans of one trace as an indented tree, each with its service and duration: what
/// the e2e prints.
pub fn tree(spans: &[Received], trace_id: &str) -> String {
    let spans: Vec<&Received> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut out = String::new();
    let mut roots: Vec<&Received> = spans
        .iter()
        .copied()
        .filter(|s| !ids.contains(s.parent_id.as_str()))
        .collect();
    roots.sort_by_key(|s| s.start_unix_ns);
    for root in roots {
        branch(&spans, root, 0, &mut out);
    }
    out
}

fn branch(spans: &[&Received], span: &Received, depth: usize, out: &mut String) {
    let _ = writeln!(
        out,
        "{:indent$}{} [{}] {:.3} ms",
        "",
        span.name,
        span.service,
        span.duration().as_secs_f64() * 1e3,
        indent = depth * 2
    );
    let mut children: Vec<&Received> = spans
        .iter()
        .copied()
        .filter(|s| s.parent_id == span.span_id)
        .collect();
    children.sort_by_key(|s| s.start_unix_ns);
    for child in children {
        branch(spans, child, depth + 1, out);
    }
}

#[derive(Clone)]
struct Store(Arc<Mutex<Vec<Received>>>);

impl Store {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_id: hex(&span.parent_span_id),
                        start_unix_ns: span.start_time_unix_nano,
                        end_unix_ns: span.end_time_unix_nano,
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
    }
}

fn attributes(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// gRPC over HTTP/2 without TLS, as an `http://` OTLP endpoint is spoken.
async fn serve_grpc(listener: tokio::net::TcpListener, store: Store) {
    let service = TraceServiceServer::new(store);
    while let Ok((stream, _)) = listener.accept().await {
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// HTTP/1.1 `POST /v1/traces` with a protobuf body.
async fn serve_http(listener: tokio::net::TcpListener, store: Store) {
    while let Ok((stream, _)) = listener.accept().await {
        let store = store.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let store = store.clone();
            async move {
                let ok = request.uri().path() == "/v1/traces";
                let body = request.into_body().collect().await.map(|b| b.to_bytes());
                let decoded = body
                    .ok()
                    .and_then(|b| ExportTraceServiceRequest::decode(b).ok());
                let status = match decoded {
                    Some(req) if ok => {
                        store.keep(req);
                        200
                    }
                    _ => 400,
                };
                let reply = ExportTraceServiceResponse::default().encode_to_vec();
                let response = hyper::Response::builder()
                    .status(status)
                    .header("content-type", "application/x-protobuf")
                    .body(Full::new(Bytes::from(reply)))
                    .expect("a response");
                Ok::<_, Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
