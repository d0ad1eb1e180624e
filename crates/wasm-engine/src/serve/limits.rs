//! What one served container may hold of its server: connections, time and instance
//! slots. Every container's server has its own, so a tenant that floods its service or
//! never answers uses up only its own share.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one served container.
///
/// The defaults suit a service behind a kubelet or a load balancer; each is a handler
/// option of the shim (`http_max_connections`, …) and a flag of `wasmpod run --serve`.
///
/// ```
/// let limits = wasm_engine::HttpLimits::default();
/// assert_eq!(limits.max_connections, 1024);
/// let limits = limits.with("http_header_timeout", "2s").unwrap();
/// assert_eq!(limits.header_timeout, std::time::Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Connections open at once. Past it, no further connection is accepted until one
    /// closes: the rest wait in the kernel's backlog, holding no descriptor of the server.
    pub max_connections: u32,
    /// How long a connection may take to send a request's head, counted from when the
    /// server starts waiting for it (a new connection, or a kept-alive one after its last
    /// response). A client that drips its head a byte at a time is closed at this point.
    pub header_timeout: Duration,
    /// How long a connection may move no byte in either direction while the component is
    /// not working out a response (a stalled upload, a client that stops reading).
    pub idle_timeout: Duration,
    /// How long one request's instance may live, from its arrival to the last byte of its
    /// response; the instance is then stopped, and a request still unanswered gets 504.
    pub request_timeout: Duration,
    /// Instances of the container alive at once (requests in flight). A request past it
    /// waits for one to end, within its `request_timeout`.
    pub max_instances: u32,
    /// Instance slots of the engine's pool set aside for this container alone while it
    /// serves, so that its neighbours cannot take them. Its instances past these share
    /// the rest of the pool with the other containers, up to `max_instances`.
    pub reserved_instances: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(300),
            max_instances: 100,
            reserved_instances: 8,
        }
    }
}

impl HttpLimits {
    /// The option names [`with`](Self::with) takes, as handler options spell them.
    pub const KEYS: [&str; 6] = [
        "http_max_connections",
        "http_header_timeout",
        "http_idle_timeout",
        "http_request_timeout",
        "http_max_instances",
        "http_reserved_instances",
    ];

    /// These limits with the option `key` (one of [`KEYS`](Self::KEYS)) set to `value`:
    /// a count, or a duration such as `"10s"` or `"5m"` (a bare number is seconds). A
    /// zero, an unknown key or a value that is not of its kind is an error naming it.
    pub fn with(mut self, key: &str, value: &str) -> Result<Self, String> {
        let value = value.trim();
        let count = || -> Result<u32, String> {
            match value.parse::<u32>() {
                Ok(0) => Err(format!("{key}: must be at least 1")),
                Ok(n) => Ok(n),
                Err(_) => Err(format!("{key}: {value:?} is not a count")),
            }
        };
        let duration = || -> Result<Duration, String> {
            let d = match value.parse::<u64>() {
                Ok(secs) => Duration::from_secs(secs),
                Err(_) => humantime::parse_duration(value).map_err(|e| {
                    format!("{key}: {value:?} is not a duration (like \"10s\" or \"5m\"): {e}")
                })?,
            };
            if d.is_zero() {
                return Err(format!("{key}: must be longer than zero"));
            }
            Ok(d)
        };
        match key {
            "http_max_connections" => self.max_connections = count()?,
            "http_header_timeout" => self.header_timeout = duration()?,
            "http_idle_timeout" => self.idle_timeout = duration()?,
            "http_request_timeout" => self.request_timeout = duration()?,
            "http_max_instances" => self.max_instances = count()?,
            "http_reserved_instances" => self.reserved_instances = count()?,
            _ => {
                return Err(format!(
                    "{key}: not an HTTP limit (known: {})",
                    Self::KEYS.join(", ")
                ))
            }
        }
        Ok(self)
    }

    /// These limits as `key=value` pairs joined by commas, which [`parse`](Self::parse)
    /// reads back: how a parent hands them to a child process.
    pub fn to_text(&self) -> String {
        let secs = |d: Duration| humantime::format_duration(d).to_string().replace(' ', "");
        format!(
            "http_max_connections={},http_header_timeout={},http_idle_timeout={},\
             http_request_timeout={},http_max_instances={},http_reserved_instances={}",
            self.max_connections,
            secs(self.header_timeout),
            secs(self.idle_timeout),
            secs(self.request_timeout),
            self.max_instances,
            self.reserved_instances,
        )
    }

    /// Reads [`to_text`](Self::to_text)'s form; an empty text is the defaults.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|pair| !pair.trim().is_empty())
            .try_fold(Self::default(), |limits, pair| {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{pair:?}: expected key=value"))?;
                limits.with(key.trim(), value)
            })
    }
}

/// The engine's instance slots as served containers share them: the pool's size, less
/// what each serving container has set aside for itself.
#[derive(Debug)]
pub(crate) struct Slots {
    shared: Arc<Semaphore>,
}

impl Slots {
    /// `total` slots (the pooling allocator's component instances).
    pub(crate) fn new(total: u32) -> Self {
        let total = usize::try_from(total)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS);
        Self {
            shared: Arc::new(Semaphore::new(total)),
        }
    }

    /// One container's share: `reserved` slots set aside for it (fewer if the pool has
    /// no more to set aside, said in the log), at most `max` at once.
    pub(crate) fn quota(&self, limits: &HttpLimits) -> Quota {
        let max = limits.max_instances.max(1);
        let wanted = limits.reserved_instances.min(max);
        let mut reserved = wanted;
        let set_aside = loop {
            if let Ok(permit) = self.shared.clone().try_acquire_many_owned(reserved) {
                break Some(permit);
            }
            if reserved == 0 {
                break None;
            }
            reserved /= 2;
        };
        if reserved < wanted {
            tracing::warn!(
                wanted,
                reserved,
                "the instance pool has fewer free slots than this service reserves; \
                 it shares the rest of the pool"
            );
        }
        Quota {
            shared: self.shared.clone(),
            own: Arc::new(Semaphore::new(reserved as usize)),
            cap: Arc::new(Semaphore::new(max as usize)),
            _set_aside: set_aside,
        }
    }
}

/// What one served container may take of the engine's instance slots.
#[derive(Debug)]
pub(crate) struct Quota {
    shared: Arc<Semaphore>,
    own: Arc<Semaphore>,
    cap: Arc<Semaphore>,
    /// The slots taken out of the shared pool for `own`, returned when serving ends.
    _set_aside: Option<OwnedSemaphorePermit>,
}

/// A slot held by one instance, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _cap: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
}

impl Quota {
    /// Waits for a slot: one of the container's own, or else one of the shared pool's,
    /// never more than its cap at once.
    pub(crate) async fn slot(&self) -> Slot {
        // Neither semaphore is ever closed.
        let Ok(cap) = self.cap.clone().acquire_owned().await else {
            unreachable!("the quota's semaphores are never closed")
        };
        let slot = match self.own.clone().try_acquire_owned() {
            Ok(own) => own,
            Err(_) => match self.shared.clone().try_acquire_owned() {
                Ok(shared) => shared,
                Err(_) => tokio::select! {
                    Ok(own) = self.own.clone().acquire_owned() => own,
                    Ok(shared) = self.shared.clone().acquire_owned() => shared,
                },
            },
        };
        Slot {
            _cap: cap,
            _slot: slot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_go_to_text_and_back() {
        let limits = HttpLimits::default()
            .with("http_max_connections", "7")
            .unwrap()
            .with("http_header_timeout", "1500ms")
            .unwrap()
            .with("http_request_timeout", "2m")
            .unwrap()
            .with("http_reserved_instances", "3")
            .unwrap();
        assert_eq!(HttpLimits::parse(&limits.to_text()), Ok(limits));
        assert_eq!(HttpLimits::parse(""), Ok(HttpLimits::default()));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let bad = |k, v| HttpLimits::default().with(k, v).unwrap_err();
        assert_eq!(
            bad("http_max_connections", "many"),
            "http_max_connections: \"many\" is not a count"
        );
        assert_eq!(
            bad("http_max_instances", "0"),
            "http_max_instances: must be at least 1"
        );
        assert!(bad("http_idle_timeout", "soon")
            .starts_with("http_idle_timeout: \"soon\" is not a duration (like \"10s\" or \"5m\")"));
        assert!(bad("http_speed", "1").starts_with("http_speed: not an HTTP limit"));
        assert_eq!(
            HttpLimits::parse("http_max_connections").unwrap_err(),
            "\"http_max_connections\": expected key=value"
        );
    }

    #[tokio::test]
    async fn a_container_at_its_cap_leaves_the_pool_to_others() {
        let slots = Slots::new(10);
        let limits = |max, reserved| HttpLimits {
            max_instances: max,
            reserved_instances: reserved,
            ..HttpLimits::default()
        };
        let greedy = slots.quota(&limits(6, 2));
        let other = slots.quota(&limits(100, 2));
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(greedy.slot().await);
        }
        // At its cap: the seventh waits.
        let seventh = tokio::time::timeout(Duration::from_millis(50), greedy.slot()).await;
        assert!(seventh.is_err(), "a container went past its cap");
        // The other's two reserved and the two shared slots left are its to take.
        for _ in 0..4 {
            let got = tokio::time::timeout(Duration::from_millis(50), other.slot()).await;
            held.push(got.expect("a neighbour's slot was taken"));
        }
        held.clear();
        drop(greedy);
        assert_eq!(slots.shared.available_permits(), 8);
    }
}
