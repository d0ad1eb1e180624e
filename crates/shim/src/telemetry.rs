//! OpenTelemetry: the shim's spans exported over OTLP when the standard variables ask for
//! it, each task call's span a child of the containerd span that made the call.
//!
//! It follows containerd 2.x's own rules, whose environment every shim inherits: tracing is
//! on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set,
//! off when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER` names another exporter; the
//! protocol is `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, `http/protobuf` unless it says
//! `grpc`. containerd sends the W3C `traceparent` of its ttrpc client span in each call's
//! metadata ([`adopt`]). Off, nothing here runs: no layer, no thread, no parent lookups.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The exporter's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) protocol: Protocol,
    /// `service.name`: `OTEL_SERVICE_NAME`, unless that is containerd's own (containerd
    /// sets it in its environment, which its shims inherit).
    pub(crate) service: String,
    /// The endpoint, when the caller names it rather than the environment.
    pub(crate) endpoint: Option<String>,
}

impl Settings {
    /// Reads the `OTEL_*` variables through `var`: `Ok(None)` when tracing is off, an
    /// error naming the variable when it is on but cannot be followed.
    pub(crate) fn from_env(
        var: impl Fn(&str) -> Option<String>,
        default_service: &str,
    ) -> Result<Option<Self>, String> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() != "otlp") {
            return Ok(None);
        }
        if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        let (name, protocol) = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .iter()
        .find_map(|name| set(name).map(|v| (*name, v)))
        .unwrap_or(("", String::new()));
        let protocol = match protocol.trim() {
            "" | "http/protobuf" => Protocol::HttpProtobuf,
            "grpc" => Protocol::Grpc,
            other => {
                return Err(format!(
                    "{name}={other}: the shim exports traces over grpc or http/protobuf"
                ))
            }
        };
        let service = set("OTEL_SERVICE_NAME")
            .filter(|s| s != "containerd")
            .unwrap_or_else(|| default_service.to_owned());
        Ok(Some(Self {
            protocol,
            service,
            endpoint: None,
        }))
    }
}

/// The provider while tracing is on: flushed by [`shutdown`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported.
pub(crate) fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// The span processor's exports run as tasks of the runtime this is called in.
fn provider(settings: &Settings) -> Result<SdkTracerProvider, String> {
    let exporter = match settings.protocol {
        Protocol::Grpc => {
            let builder = SpanExporter::builder().with_tonic();
            match &settings.endpoint {
                Some(e) => builder.with_endpoint(e).build(),
                None => builder.build(),
            }
        }
        Protocol::HttpProtobuf => {
            // reqwest with rustls wants a process-wide crypto provider for https.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let builder = SpanExporter::builder().with_http();
            match &settings.endpoint {
                Some(e) => builder
                    .with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')))
                    .build(),
                None => builder.build(),
            }
        }
    }
    .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(settings.service.clone())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    use opentelemetry_sdk::runtime;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    let flavor = tokio::runtime::Handle::try_current()
        .map_err(|_| "tracing needs the shim's async runtime".to_owned())?
        .runtime_flavor();
    Ok(match flavor {
        tokio::runtime::RuntimeFlavor::CurrentThread => builder.with_span_processor(
            BatchSpanProcessor::builder(exporter, runtime::TokioCurrentThread).build(),
        ),
        _ => builder
            .with_span_processor(BatchSpanProcessor::builder(exporter, runtime::Tokio).build()),
    }
    .build())
}

/// The layer that exports the shim's spans (a container's calls and runs, the start path's
/// phases, the precompile agent's compiles) and the events inside them at `info` and above.
/// `Ok(None)` when the environment does not ask for tracing.
pub(crate) fn layer<S>(
    settings: Option<Settings>,
) -> Result<Option<Box<dyn Layer<S> + Send + Sync>>, String>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Some(settings) = settings else {
        return Ok(None);
    };
    let provider = provider(&settings)?;
    let layer = exporting(&provider);
    if PROVIDER.set(provider).is_err() {
        return Err("tracing was set up twice".into());
    }
    Ok(Some(Box::new(layer)))
}

/// The layer exporting through `provider`: spans named `container`, `phase` and
/// `precompile`, and events at `info` and above as their events.
fn exporting<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let filter = tracing_subscriber::filter::filter_fn(|meta| {
        if meta.is_span() {
            matches!(meta.name(), "container" | "phase" | "precompile")
        } else {
            *meta.level() <= tracing::Level::INFO
        }
    });
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("containerd-shim-wasm-v1"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter)
}

/// ttrpc's request metadata, as W3C trace context reads it (its keys case-blind).
struct Metadata<'a>(&'a HashMap<String, Vec<String>>);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| v.first())
            .map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Makes `span` (a task call's) the child of the caller's span that `metadata` carries,
/// when tracing is on and the caller sent one.
pub(crate) fn adopt(span: &tracing::Span, metadata: &HashMap<String, Vec<String>>) {
    if !enabled() {
        return;
    }
    if let Some(parent) = parent_in(metadata) {
        let _ = span.set_parent(parent);
    }
}

/// The caller's span context that `metadata` carries (`traceparent`, `tracestate`).
fn parent_in(metadata: &HashMap<String, Vec<String>>) -> Option<opentelemetry::Context> {
    let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
    parent.span().span_context().is_valid().then_some(parent)
}

/// Makes `span` (a guest's run, a root in the shim's own log) the child of the current span
/// in the trace: the call that started it.
pub(crate) fn follow_current(span: &tracing::Span) {
    if enabled() {
        let _ = span.set_parent(tracing::Span::current().context());
    }
}

/// How long a shim that ends waits for its last spans to go.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Exports what is left, waiting at most `timeout`: the last thing a shim does.
pub(crate) async fn shutdown(timeout: Duration) {
    let Some(provider) = PROVIDER.get().cloned() else {
        return;
    };
    let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
    match tokio::time::timeout(timeout + Duration::from_millis(100), done).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "traces not all exported"),
        _ => tracing::warn!(?timeout, "traces not exported before the shim ended"),
    }
}

#[cfg(test)]
mod tests;
