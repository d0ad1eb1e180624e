//! A container's network: the port a `wasi:http` handler is served on, and the
//! [`NetworkPolicy`] its sockets and outgoing requests are held to.

use oci_spec::runtime::Spec;
use wasm_engine::NetworkPolicy;

use crate::error::{Error, Result};
use crate::HandlerOptions;

/// Annotation naming the port a `wasi:http` handler is served on.
pub const PORT_ANNOTATION: &str = "wasmpod.io/port";
/// Annotation listing the outbound destinations a guest may reach:
/// `host:port,...`, where the host is `*`, an IP address or a name and the port a number
/// or `*`.
pub const ALLOWED_OUTBOUND_ANNOTATION: &str = "wasmpod.io/allowed-outbound";
/// The port a handler is served on when nothing names one.
pub const DEFAULT_PORT: u16 = 8080;

/// What one container may do on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// Where a `wasi:http` handler is served (TCP, all addresses of the container's network
    /// namespace).
    pub port: u16,
    /// Its sockets and outgoing requests: listening on [`port`](Self::port) only; outbound
    /// to what the annotation, else the handler's `allowed_outbound`, lists.
    pub policy: NetworkPolicy,
}

impl NetworkPlan {
    /// Decides for `spec`. The port: the `wasmpod.io/port` annotation, else the `PORT`
    /// environment variable, else the first TCP port of `image_ports` (the image's
    /// `ExposedPorts`), else 8080. Outbound: the `wasmpod.io/allowed-outbound` annotation,
    /// else the handler's option, else none. Errors name the annotation, variable or option.
    pub fn decide(spec: &Spec, handler: &HandlerOptions, image_ports: &[u16]) -> Result<Self> {
        let annotation = |key| crate::isolation::annotation(spec, key).map(str::trim);
        let env_port = spec
            .process()
            .as_ref()
            .and_then(|p| p.env().as_ref())
            .and_then(|env| env.iter().rev().find_map(|e| e.strip_prefix("PORT=")))
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let port = match (annotation(PORT_ANNOTATION), env_port) {
            (Some(v), _) => parse_port(v, &format!("annotation {PORT_ANNOTATION}"))?,
            (None, Some(v)) => parse_port(v, "environment variable PORT")?,
            (None, None) => image_ports.first().copied().unwrap_or(DEFAULT_PORT),
        };
        let outbound = match annotation(ALLOWED_OUTBOUND_ANNOTATION) {
            Some(list) => NetworkPolicy::parse_outbound(list).map_err(|e| {
                Error::Spec(format!("annotation {ALLOWED_OUTBOUND_ANNOTATION}: {e}"))
            })?,
            None => handler.allowed_outbound.clone(),
        };
        Ok(Self {
            port,
            policy: NetworkPolicy {
                listen_ports: vec![port],
                outbound,
                listen_any: false,
            },
        })
    }
}

fn parse_port(value: &str, source: &str) -> Result<u16> {
    value
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Error::Spec(format!("{source}: {value:?} is not a port (1-65535)")))
}

/// The TCP ports of an image config's `ExposedPorts` keys (`8080/tcp`, `80`), in order.
pub fn exposed_tcp_ports<'a>(keys: impl IntoIterator<Item = &'a String>) -> Vec<u16> {
    let mut ports: Vec<u16> = keys
        .into_iter()
        .filter_map(|k| match k.split_once('/') {
            Some((port, proto)) if proto.eq_ignore_ascii_case("tcp") => port.parse().ok(),
            Some(_) => None,
            None => k.parse().ok(),
        })
        .filter(|p| *p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    fn spec(annotations: &[(&str, &str)], env: &[&str]) -> Spec {
        let mut spec = Spec::default();
        spec.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        let process = ProcessBuilder::default()
            .args(vec!["x.wasm".to_string()])
            .env(env.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap();
        spec.set_process(Some(process));
        spec
    }

    #[test]
    fn the_port_comes_from_annotation_then_env_then_image_then_8080() {
        let none = HandlerOptions::default();
        let port = |s: &Spec, image: &[u16]| NetworkPlan::decide(s, &none, image).unwrap().port;
        assert_eq!(port(&spec(&[], &[]), &[]), 8080);
        assert_eq!(port(&spec(&[], &[]), &[3000]), 3000);
        assert_eq!(port(&spec(&[], &["PORT=9000"]), &[3000]), 9000);
        assert_eq!(
            port(&spec(&[(PORT_ANNOTATION, "7000")], &["PORT=9000"]), &[3000]),
            7000
        );
        let plan = NetworkPlan::decide(&spec(&[], &["PORT=9000"]), &none, &[]).unwrap();
        assert_eq!(plan.policy.listen_ports, vec![9000]);
        assert!(
            plan.policy.outbound.is_empty(),
            "outbound is denied by default"
        );
    }

    #[test]
    fn bad_ports_and_lists_name_their_source() {
        let none = HandlerOptions::default();
        let e =
            NetworkPlan::decide(&spec(&[(PORT_ANNOTATION, "http")], &[]), &none, &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("annotation wasmpod.io/port: \"http\""),
            "{e}"
        );
        let e = NetworkPlan::decide(&spec(&[], &["PORT=0"]), &none, &[]).unwrap_err();
        assert!(e.to_string().contains("environment variable PORT"), "{e}");
        let e = NetworkPlan::decide(
            &spec(&[(ALLOWED_OUTBOUND_ANNOTATION, "db:5432,cache")], &[]),
            &none,
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("annotation wasmpod.io/allowed-outbound: \"cache\""),
            "{e}"
        );
    }

    #[test]
    fn the_annotation_list_wins_over_the_handlers() {
        let handler =
            HandlerOptions::from_toml("allowed_outbound = \"10.0.0.1:*\"", "options").unwrap();
        let plan = NetworkPlan::decide(&spec(&[], &[]), &handler, &[]).unwrap();
        assert_eq!(plan.policy.outbound[0].to_string(), "10.0.0.1:*");
        let plan = NetworkPlan::decide(
            &spec(
                &[(ALLOWED_OUTBOUND_ANNOTATION, "api.example:443, *:53")],
                &[],
            ),
            &handler,
            &[],
        )
        .unwrap();
        let list: Vec<String> = plan.policy.outbound.iter().map(|d| d.to_string()).collect();
        assert_eq!(list, ["api.example:443", "*:53"]);
        let e = HandlerOptions::from_toml("allowed_outbound = \"x\"", "options").unwrap_err();
        assert!(e.to_string().contains("options: allowed_outbound"), "{e}");
    }

    #[test]
    fn exposed_ports_keep_tcp() {
        let keys: Vec<String> = ["8080/tcp", "53/udp", "80", "x/tcp", "0/tcp", "8080/TCP"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(exposed_tcp_ports(&keys), vec![80, 8080]);
    }
}
