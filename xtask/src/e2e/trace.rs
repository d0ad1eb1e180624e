//! OpenTelemetry through containerd into the shim: containerd and its shims export to one
//! OTLP receiver started by the check, and the shim's spans continue containerd's trace.

use std::time::Duration;

use anyhow::{ensure, Context};
use test_support::otlp::{tree, Received, Receiver};

use super::{Containerd, Flavor};

/// The shim's `service.name` in a trace.
const SHIM: &str = "containerd-shim-wasm-v1";

/// `ctr run` with containerd and the shim exporting over OTLP/gRPC: the shim's Create and
/// Start are children of containerd's ttrpc client spans in containerd's traces (2.x; 1.x
/// sends no trace context to shims, so there they are roots), each with its phases under
/// it, and the guest's run under the Start.
pub(crate) fn check_otel_trace(env: &Containerd) -> anyhow::Result<()> {
    let receiver = Receiver::start().context("starting the OTLP receiver")?;
    let endpoint = receiver.grpc_endpoint();
    env.restart_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        // containerd batches its spans for 5 s unless told otherwise.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])?;
    let ran = env.run_wasm("traced", &[], &["exit", "7"]);
    // Tracing off again for the checks after this one, the receiver still up for
    // containerd's last export.
    // The shim's spans, and the containerd spans they name as parents: the two processes
    // export on their own schedules.
    let spans = receiver.wait_for(Duration::from_secs(15), |spans| {
        ["create", "start", "guest.run", "delete"]
            .iter()
            .all(|name| {
                shim_span(spans, name).is_some_and(|span| {
                    span.parent_id.is_empty() || spans.iter().any(|s| s.span_id == span.parent_id)
                })
            })
    });
    env.restart_with_env(&[])?;
    let (code, _, err) = ran?;
    ensure!(code == 7, "ctr run: exit {code}: {err}");
    let create = shim_span(&spans, "create").context("no Create span from the shim")?;
    let start = shim_span(&spans, "start").context("no Start span from the shim")?;
    for (phase, parent) in [
        ("create.mount", create),
        ("create.spec", create),
        ("create.load", create),
        ("guest.run", start),
    ] {
        let span = shim_span(&spans, phase).with_context(|| format!("no {phase} span"))?;
        ensure!(
            span.parent_id == parent.span_id && span.trace_id == parent.trace_id,
            "{phase} is not under {}: {span:?}",
            parent.name
        );
    }
    let run = shim_span(&spans, "guest.run").context("guest.run")?;
    let setup = shim_span(&spans, "guest.setup").context("no guest.setup span")?;
    ensure!(
        setup.parent_id == run.span_id,
        "guest.setup is not under guest.run: {setup:?}"
    );
    for call in [create, start] {
        ensure!(
            call.attributes.get("id").map(String::as_str) == Some("traced"),
            "the shim's {} span names another container: {call:?}",
            call.name
        );
        if env.flavor != Flavor::V2 {
            ensure!(
                call.parent_id.is_empty(),
                "containerd {} sent no trace context, yet {} has a parent: {call:?}",
                env.flavor.name(),
                call.name
            );
            continue;
        }
        let parent = spans
            .iter()
            .find(|s| s.span_id == call.parent_id)
            .with_context(|| format!("the parent of the shim's {} was not exported", call.name))?;
        ensure!(
            parent.service == "containerd" && parent.trace_id == call.trace_id,
            "the shim's {} is not a child of a containerd span: parent {parent:?}",
            call.name
        );
        ensure!(
            parent
                .name
                .ends_with(&format!("Task/{}", capitalised(&call.name))),
            "the shim's {} is under containerd's {}, not its ttrpc call",
            call.name,
            parent.name
        );
    }
    for call in [create, start] {
        eprintln!(
            "  trace {}:\n{}",
            call.trace_id,
            indent(&tree(&spans, &call.trace_id))
        );
    }
    Ok(())
}

/// The span the shim exported under `name` for the check's container.
fn shim_span<'a>(spans: &'a [Received], name: &str) -> Option<&'a Received> {
    spans.iter().find(|s| {
        s.service == SHIM
            && s.name == name
            && s.attributes.get("id").is_none_or(|id| id == "traced")
    })
}

fn capitalised(verb: &str) -> String {
    let mut chars = verb.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
