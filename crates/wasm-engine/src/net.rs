//! What a guest may do on the network: `wasi:sockets` (TCP, UDP, name lookup) and outgoing
//! `wasi:http` requests, under one [`NetworkPolicy`]. Listening is allowed on the declared
//! ports only; outbound traffic only to the destinations the policy lists. A denial fails
//! inside the guest with an access error (`access-denied`, `HTTP-request-denied`) and is
//! logged, in the span of whoever runs the guest (the shim names the container).

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::WasiCtxBuilder;

/// The network a guest is given. The default denies everything but accepting connections
/// on a listener the host hands it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Ports the guest may bind and listen on (TCP) or bind (UDP).
    pub listen_ports: Vec<u16>,
    /// Whether it may bind and listen on any port, an ephemeral one (0) included, as
    /// `wasmtime run -Sinherit-network` lets it: for a run that trusts the guest with the
    /// host's ports (`wasmpod run --allow-listen '*'`), never a container's default.
    pub listen_any: bool,
    /// Where outbound connections and requests may go; empty denies them all. Name
    /// lookup is allowed only when this is not empty.
    pub outbound: Vec<Destination>,
}

/// One allowed outbound destination: `host:port`, where the host is `*`, an IP address
/// (IPv6 in brackets) or a name, and the port a number or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Which hosts.
    pub host: HostPattern,
    /// Which port; `None` for any.
    pub port: Option<u16>,
}

/// The host part of a [`Destination`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Any host.
    Any,
    /// One address.
    Ip(IpAddr),
    /// A name: matches requests to it, and connections to any address it resolves to.
    Name(String),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
            HostPattern::Name(name) => f.write_str(name)?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => f.write_str(":*"),
        }
    }
}

impl FromStr for Destination {
    type Err = String;

    /// Parses `host:port`; the error says what is wrong with the entry.
    fn from_str(s: &str) -> Result<Self, String> {
        let entry = s.trim();
        let bad = |why: &str| format!("{entry:?} is not host:port ({why})");
        let (host, port) = entry
            .rsplit_once(':')
            .ok_or_else(|| bad("no port; use host:* for any port"))?;
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port must be 1-65535 or *"))?,
            ),
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            HostPattern::Ip(v6.parse().map_err(|_| bad("not an IPv6 address"))?)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else if !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|label| !label.is_empty() && label.len() <= 63)
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            HostPattern::Name(host.to_ascii_lowercase())
        } else {
            return Err(bad("the host must be *, an IP address or a DNS name"));
        };
        Ok(Destination { host, port })
    }
}

impl NetworkPolicy {
    /// Parses a comma-separated list of [`Destination`]s (`a.example:443,10.0.0.1:*`).
    pub fn parse_outbound(list: &str) -> Result<Vec<Destination>, String> {
        list.split(',')
            .filter(|e| !e.trim().is_empty())
            .map(str::parse)
            .collect()
    }

    /// Whether an outbound connection to `addr` is allowed; names are resolved to check.
    pub async fn allows_addr(&self, addr: SocketAddr) -> bool {
        for d in &self.outbound {
            if d.port.is_some_and(|p| p != addr.port()) {
                continue;
            }
            let hit = match &d.host {
                HostPattern::Any => true,
                HostPattern::Ip(ip) => same_ip(*ip, addr.ip()),
                HostPattern::Name(name) => {
                    match tokio::net::lookup_host((name.as_str(), addr.port())).await {
                        Ok(mut found) => found.any(|a| same_ip(a.ip(), addr.ip())),
                        Err(_) => false,
                    }
                }
            };
            if hit {
                return true;
            }
        }
        false
    }

    /// Whether an outbound request to `host` (a name or an address) on `port` is allowed.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok();
        self.outbound.iter().any(|d| {
            d.port.is_none_or(|p| p == port)
                && match &d.host {
                    HostPattern::Any => true,
                    HostPattern::Ip(allowed) => ip.is_some_and(|ip| same_ip(*allowed, ip)),
                    HostPattern::Name(name) => name.eq_ignore_ascii_case(host),
                }
        })
    }

    /// Whether the guest may bind or listen on `port` (0 is the implicit bind of a client
    /// socket, allowed to bind; listening needs a declared port).
    fn allows_bind(&self, port: u16) -> bool {
        port == 0 || self.listen_any || self.listen_ports.contains(&port)
    }

    /// Whether the guest may listen on `port` (its bound one; 0 only with `listen_any`).
    fn allows_listen(&self, port: u16) -> bool {
        self.listen_any || (port != 0 && self.listen_ports.contains(&port))
    }

    /// Gives `builder` TCP, UDP and (with outbound destinations) name lookup, each use
    /// checked against this policy.
    pub(crate) fn apply(&self, builder: &mut WasiCtxBuilder) {
        let policy = Arc::new(self.clone());
        builder
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(!self.outbound.is_empty())
            .socket_addr_check(move |addr, use_| {
                let policy = policy.clone();
                Box::pin(async move { policy.check(addr, use_).await })
                    as Pin<Box<dyn Future<Output = bool> + Send + Sync>>
            });
    }

    async fn check(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let (allowed, what) = match use_ {
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                (self.allows_bind(addr.port()), "binding")
            }
            SocketAddrUse::TcpListen => (self.allows_listen(addr.port()), "listening on"),
            // Inbound: whoever reaches a declared port may talk to it.
            SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive => (true, "receiving from"),
            SocketAddrUse::TcpConnect => (self.allows_addr(addr).await, "connecting to"),
            SocketAddrUse::UdpSend => (self.allows_addr(addr).await, "sending to"),
        };
        if !allowed {
            tracing::warn!(
                %addr,
                "network policy: denied {what} {addr} (allowed outbound: {}; listening ports: {})",
                self.describe_outbound(),
                self.describe_listen(),
            );
        }
        allowed
    }

    fn describe_listen(&self) -> String {
        if self.listen_any {
            return "any".into();
        }
        format!("{:?}", self.listen_ports)
    }

    fn describe_outbound(&self) -> String {
        if self.outbound.is_empty() {
            return "none".into();
        }
        let list: Vec<String> = self.outbound.iter().map(ToString::to_string).collect();
        list.join(",")
    }
}

/// Addresses compared with IPv4-mapped IPv6 seen as IPv4.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// The `wasi:http` hooks of a guest: outgoing requests under its [`NetworkPolicy`].
pub(crate) struct PolicyHooks(pub(crate) Arc<NetworkPolicy>);

impl wasmtime_wasi_http::WasiHttpHooks for PolicyHooks {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_owned();
        let tls = uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if !self.0.allows_host(&host, port) {
            tracing::warn!(
                url = %uri,
                "network policy: denied an HTTP request to {host}:{port} (allowed outbound: {})",
                self.0.describe_outbound(),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let default = wasmtime_wasi_http::default_hooks();
        default.send_request(request, options, fut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &str) -> NetworkPolicy {
        NetworkPolicy {
            listen_ports: vec![8080],
            outbound: NetworkPolicy::parse_outbound(list).unwrap(),
            listen_any: false,
        }
    }

    #[test]
    fn destinations_parse_and_print_back() {
        for entry in [
            "*:443",
            "10.0.0.1:*",
            "[::1]:80",
            "api.example.com:8443",
            "*:*",
        ] {
            let d: Destination = entry.parse().unwrap();
            assert_eq!(d.to_string(), entry);
        }
        assert_eq!(
            "API.Example.com:1".parse::<Destination>().unwrap().host,
            HostPattern::Name("api.example.com".into())
        );
    }

    #[test]
    fn bad_destinations_name_the_entry_and_the_fault() {
        for (entry, fault) in [
            ("example.com", "no port"),
            ("example.com:0", "1-65535"),
            ("example.com:http", "1-65535"),
            ("[zz]:80", "IPv6"),
            ("exa mple:80", "DNS name"),
            (":80", "DNS name"),
        ] {
            let e = entry.parse::<Destination>().unwrap_err();
            assert!(e.contains(entry) && e.contains(fault), "{entry}: {e}");
        }
        let e = NetworkPolicy::parse_outbound("a.example:80, b.example").unwrap_err();
        assert!(e.contains("\"b.example\""), "{e}");
    }

    #[tokio::test]
    async fn addresses_match_ip_port_and_wildcards() {
        let p = policy("10.0.0.1:80,10.0.0.2:*,localhost:9000");
        let ok = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(p.allows_addr(ok("10.0.0.1:80")).await);
        assert!(!p.allows_addr(ok("10.0.0.1:81")).await);
        assert!(p.allows_addr(ok("10.0.0.2:1")).await);
        assert!(p.allows_addr(ok("[::ffff:10.0.0.2]:5")).await);
        assert!(!p.allows_addr(ok("10.0.0.3:80")).await);
        assert!(
            p.allows_addr(ok("127.0.0.1:9000")).await,
            "localhost resolves"
        );
        assert!(!p.allows_addr(ok("127.0.0.1:9001")).await);
        assert!(
            !NetworkPolicy::default()
                .allows_addr(ok("127.0.0.1:80"))
                .await
        );
        assert!(policy("*:443").allows_addr(ok("192.0.2.1:443")).await);
    }

    #[test]
    fn requests_match_names_and_addresses() {
        let p = policy("api.example.com:443,10.0.0.1:*");
        assert!(p.allows_host("API.example.com", 443));
        assert!(!p.allows_host("api.example.com", 80));
        assert!(!p.allows_host("other.example.com", 443));
        assert!(p.allows_host("10.0.0.1", 8080));
        assert!(!NetworkPolicy::default().allows_host("10.0.0.1", 80));
    }

    #[tokio::test]
    async fn binding_and_listening_need_a_declared_port() {
        let p = policy("");
        let at = |port| SocketAddr::from(([0, 0, 0, 0], port));
        assert!(p.check(at(8080), SocketAddrUse::TcpBind).await);
        assert!(p.check(at(0), SocketAddrUse::TcpBind).await);
        assert!(!p.check(at(9090), SocketAddrUse::TcpBind).await);
        assert!(p.check(at(8080), SocketAddrUse::TcpListen).await);
        assert!(!p.check(at(0), SocketAddrUse::TcpListen).await);
        assert!(!p.check(at(9090), SocketAddrUse::UdpBind).await);
        assert!(!p.check(at(53), SocketAddrUse::UdpSend).await);
        assert!(p.check(at(1234), SocketAddrUse::TcpAccept).await);
        // --allow-listen '*': any port, the ephemeral one too; outbound is still its own.
        let any = NetworkPolicy {
            listen_any: true,
            ..policy("")
        };
        for port in [0, 8080, 9090] {
            assert!(any.check(at(port), SocketAddrUse::TcpBind).await);
            assert!(any.check(at(port), SocketAddrUse::TcpListen).await);
            assert!(any.check(at(port), SocketAddrUse::UdpBind).await);
        }
        assert!(!any.check(at(53), SocketAddrUse::UdpSend).await);
        assert!(!any.check(at(80), SocketAddrUse::TcpConnect).await);
    }
}
