//! The `OTEL_*` variables read as containerd reads them, the caller's span found in ttrpc
//! metadata, and spans exported over both protocols to a receiver on loopback.

use std::collections::HashMap;
use std::time::Duration;

use test_support::otlp::{Received, Receiver};
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn tracing_is_off_without_an_endpoint_and_when_disabled() {
    let off = |vars: &[(&str, &str)]| Settings::from_env(env(vars), "shim").unwrap();
    assert_eq!(off(&[]), None);
    assert_eq!(off(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]), None);
    assert_eq!(off(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), None);
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
    assert_eq!(off(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]), None);
    assert_eq!(off(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]), None);
    assert!(off(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).is_some());
    assert!(off(&[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")]).is_some());
}

#[test]
fn the_protocol_and_service_follow_containerds_variables() {
    let on = |vars: &[(&str, &str)]| {
        Settings::from_env(env(vars), "containerd-shim-wasm-v1")
            .unwrap()
            .unwrap()
    };
    let endpoint = (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://127.0.0.1:4317",
    );
    let default = on(&[endpoint]);
    assert_eq!(default.protocol, Protocol::HttpProtobuf);
    // containerd sets its own name in the environment its shims inherit.
    assert_eq!(default.service, "containerd-shim-wasm-v1");
    assert_eq!(
        on(&[endpoint, ("OTEL_SERVICE_NAME", "containerd")]).service,
        "containerd-shim-wasm-v1"
    );
    assert_eq!(
        on(&[endpoint, ("OTEL_SERVICE_NAME", "node-7")]).service,
        "node-7"
    );
    assert_eq!(
        on(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).protocol,
        Protocol::Grpc
    );
    // The traces' own variable wins over the general one.
    let both = on(&[
        endpoint,
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
    ]);
    assert_eq!(both.protocol, Protocol::HttpProtobuf);
}

#[test]
fn an_unknown_protocol_is_named() {
    let err = Settings::from_env(
        env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]),
        "shim",
    )
    .unwrap_err();
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json"),
        "{err}"
    );
}

#[test]
fn a_traceparent_in_ttrpc_metadata_is_the_parent_and_anything_else_is_not() {
    let md = |k: &str, v: &str| HashMap::from([(k.to_owned(), vec![v.to_owned()])]);
    let parent = parent_in(&md(
        "Traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ))
    .expect("a parent");
    let cx = parent.span().span_context().clone();
    assert_eq!(
        cx.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(cx.span_id().to_string(), "b7ad6b7169203331");
    assert!(cx.is_remote() && cx.is_sampled());
    assert!(parent_in(&HashMap::new()).is_none());
    assert!(parent_in(&md("traceparent", "00-zz-yy-01")).is_none());
    assert!(parent_in(&md(
        "traceparent",
        &format!("00-{}-{}-01", "0".repeat(32), "1".repeat(16))
    ))
    .is_none());
}

/// A call's span under the caller's, a phase under the call, exported to a receiver.
async fn export_through(protocol: Protocol) -> (Vec<Received>, String) {
    let receiver = Receiver::start().unwrap();
    let endpoint = match protocol {
        Protocol::Grpc => receiver.grpc_endpoint(),
        Protocol::HttpProtobuf => receiver.http_endpoint(),
    };
    let settings = Settings {
        protocol,
        service: "shim-under-test".into(),
        endpoint: Some(endpoint),
    };
    let provider = provider(&settings).unwrap();
    let subscriber = tracing_subscriber::registry().with(exporting(&provider));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let metadata = HashMap::from([(
        "traceparent".to_owned(),
        vec![format!("00-{trace}-{caller}-01")],
    )]);
    tracing::subscriber::with_default(subscriber, || {
        let call = crate::task::span("c1", "create");
        let _ = call.set_parent(parent_in(&metadata).unwrap());
        call.in_scope(|| {
            let _phase = crate::logging::phase("create.spec").entered();
            tracing::info!("inside the phase");
            // Not exported: neither a call, a phase nor a compile.
            let _other = tracing::info_span!("elsewhere").entered();
        });
    });
    let done =
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5)));
    done.await.unwrap().unwrap();
    let spans = receiver.wait_for(Duration::from_secs(5), |s| s.len() >= 2);
    (spans, caller.to_owned())
}

async fn check_export(protocol: Protocol) {
    let (spans, caller) = export_through(protocol).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let call = spans
        .iter()
        .find(|s| s.name == "create")
        .expect("the call's span");
    let phase = spans
        .iter()
        .find(|s| s.name == "create.spec")
        .expect("the phase's span");
    assert_eq!(call.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(call.parent_id, caller);
    assert_eq!(phase.trace_id, call.trace_id);
    assert_eq!(phase.parent_id, call.span_id);
    assert_eq!(call.service, "shim-under-test");
    assert_eq!(call.attributes.get("id").map(String::as_str), Some("c1"));
    assert!(phase.start_unix_ns >= call.start_unix_ns && phase.end_unix_ns <= call.end_unix_ns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_grpc_as_children_of_the_callers() {
    check_export(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_http_protobuf_as_children_of_the_callers() {
    check_export(Protocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_single_threaded_runtime_exports_too() {
    check_export(Protocol::Grpc).await;
}
