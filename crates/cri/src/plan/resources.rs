//! CPU and memory: a container's requests and limits as the CRI's resources, the pod's
//! quality-of-service class, and the cgroup parent the kubelet names for it (the node's
//! cgroup layout that containerd's CRI places the pod's containers under).

use std::collections::BTreeMap;

use grpc_api::cri::v1 as api;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Context;
use crate::error::Result as PlanResult;
use crate::quantity;

impl Context<'_> {
    /// `resources` as the kubelet maps them: memory limit; CPU limit → CFS quota over a
    /// 100 ms period; CPU request (or the limit) → shares.
    pub(super) fn resources(
        &self,
        c: &Container,
        field: &str,
    ) -> PlanResult<api::LinuxContainerResources> {
        let get = |map: Option<&BTreeMap<String, Quantity>>,
                   which: &str,
                   key: &str,
                   scale: u32|
         -> PlanResult<Option<i64>> {
            quantity_in(map, key, scale)
                .map_err(|reason| self.bad(format!("{field}.resources.{which}.{key}"), reason))
        };
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let mut out = api::LinuxContainerResources::default();
        if let Some(bytes) = get(limits, "limits", "memory", 0)? {
            out.memory_limit_in_bytes = bytes;
        }
        let cpu_limit = get(limits, "limits", "cpu", 3)?;
        if let Some(milli) = cpu_limit {
            out.cpu_period = 100_000;
            out.cpu_quota = (milli * 100).max(1000);
        }
        if let Some(milli) = get(requests, "requests", "cpu", 3)?.or(cpu_limit) {
            out.cpu_shares = (milli * 1024 / 1000).max(2);
        }
        Ok(out)
    }
}

/// The quantity at `key` of a `requests` or `limits` map, in units of 10^-`scale`; `Err`
/// says why it is not a quantity.
fn quantity_in(
    map: Option<&BTreeMap<String, Quantity>>,
    key: &str,
    scale: u32,
) -> Result<Option<i64>, String> {
    match map.and_then(|m| m.get(key)) {
        None => Ok(None),
        Some(q) => quantity::parse(&q.0, scale)
            .map(Some)
            .ok_or_else(|| format!("{:?} is not a quantity", q.0)),
    }
}

/// How the node lays out its cgroups, as the kubelet's `--cgroup-driver` says, and so the
/// form of the cgroup parent each pod's sandbox names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// Paths under the hierarchies' roots: `/kubepods/burstable/pod<uid>`. containerd's
    /// CRI gives a container `<parent>/<id>`.
    Cgroupfs,
    /// systemd slices: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`,
    /// the uid's dashes written as underscores. containerd's CRI gives a container
    /// `<the last slice>:cri-containerd:<id>`, a scope systemd starts in that slice.
    Systemd,
}

/// A pod's quality-of-service class, from its containers' CPU and memory requests and
/// limits (init containers included), as Kubernetes works it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container has CPU and memory limits, and its requests (if given) equal them.
    Guaranteed,
    /// Some container requests or limits CPU or memory, and the pod is not Guaranteed.
    Burstable,
    /// No container requests or limits CPU or memory.
    BestEffort,
}

impl QosClass {
    /// The class's level under `kubepods`: Guaranteed pods sit right under it.
    fn level(self) -> Option<&'static str> {
        match self {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        }
    }
}

/// The QoS class of `spec`. A quantity that does not parse is `Err((field, reason))`.
///
/// As the API server defaults it, a container's missing request for a resource it limits
/// is the limit. Zero quantities count as absent. The pod's requests and limits are summed
/// per resource over all containers: the pod is Guaranteed when every container limits
/// both CPU and memory and the sums of requests equal the sums of limits.
pub(crate) fn qos_class(spec: &PodSpec) -> Result<QosClass, (String, String)> {
    const COMPUTE: [&str; 2] = ["cpu", "memory"];
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (c, "initContainers", i));
    let main = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (c, "containers", i));
    let mut requests: BTreeMap<&str, i64> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i64> = BTreeMap::new();
    let mut guaranteed = true;
    for (c, list, index) in init.chain(main) {
        let resources = c.resources.as_ref();
        let read = |map: Option<&BTreeMap<String, Quantity>>, which: &str, key: &str| {
            // Milli-units for both: exact for CPU, and memory in bytes × 1000 fits an i64
            // up to 9 PB.
            quantity_in(map, key, 3).map_err(|reason| {
                (
                    format!("spec.{list}[{index}].resources.{which}.{key}"),
                    reason,
                )
            })
        };
        let limits_given = resources.and_then(|r| r.limits.as_ref());
        let requests_given = resources.and_then(|r| r.requests.as_ref());
        let mut limited = 0;
        for key in COMPUTE {
            let limit = read(limits_given, "limits", key)?.unwrap_or(0);
            // As the API server defaults it: a missing request is the limit.
            let request = read(requests_given, "requests", key)?.unwrap_or(limit);
            if request > 0 {
                *requests.entry(key).or_default() += request;
            }
            if limit > 0 {
                *limits.entry(key).or_default() += limit;
                limited += 1;
            }
        }
        if limited < COMPUTE.len() {
            guaranteed = false;
        }
    }
    Ok(if requests.is_empty() && limits.is_empty() {
        QosClass::BestEffort
    } else if guaranteed && requests == limits {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    })
}

/// The cgroup parent the kubelet names for pod `uid` of class `qos` under `driver`.
pub(crate) fn cgroup_parent(driver: CgroupDriver, qos: QosClass, uid: &str) -> String {
    let pod = format!("pod{uid}");
    let parts: Vec<&str> = ["kubepods"]
        .into_iter()
        .chain(qos.level())
        .chain([pod.as_str()])
        .collect();
    match driver {
        CgroupDriver::Cgroupfs => format!("/{}", parts.join("/")),
        CgroupDriver::Systemd => {
            // Each level is a slice named by the levels above it and its own, joined by
            // dashes; a dash inside a name is written as an underscore.
            let mut path = String::new();
            let mut prefix = String::new();
            for part in parts {
                let part = part.replace('-', "_");
                prefix = if prefix.is_empty() {
                    part
                } else {
                    format!("{prefix}-{part}")
                };
                path.push_str(&format!("/{prefix}.slice"));
            }
            path
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod spec of containers with these (requests, limits), each a list of
    /// `key=quantity`; `init` marks an init container.
    fn spec(containers: &[(bool, &[&str], &[&str])]) -> PodSpec {
        let map = |kv: &[&str]| {
            let m: serde_json::Map<String, serde_json::Value> = kv
                .iter()
                .map(|s| {
                    let (k, v) = s.split_once('=').unwrap();
                    (k.to_owned(), serde_json::Value::String(v.to_owned()))
                })
                .collect();
            serde_json::Value::Object(m)
        };
        let (init, main): (Vec<_>, Vec<_>) = containers.iter().partition(|c| c.0);
        let list = |cs: Vec<&(bool, &[&str], &[&str])>| -> Vec<serde_json::Value> {
            cs.iter()
                .enumerate()
                .map(|(i, (_, requests, limits))| {
                    let mut resources = serde_json::Map::new();
                    if !requests.is_empty() {
                        resources.insert("requests".into(), map(requests));
                    }
                    if !limits.is_empty() {
                        resources.insert("limits".into(), map(limits));
                    }
                    serde_json::json!({"name": format!("c{i}"), "image": "i", "resources": resources})
                })
                .collect()
        };
        serde_json::from_value(serde_json::json!({
            "containers": list(main),
            "initContainers": list(init),
        }))
        .unwrap()
    }

    fn class(containers: &[(bool, &[&str], &[&str])]) -> QosClass {
        qos_class(&spec(containers)).unwrap()
    }

    #[test]
    fn no_requests_or_limits_is_best_effort() {
        assert_eq!(class(&[(false, &[], &[])]), QosClass::BestEffort);
        // Only CPU and memory count; zero is no request.
        assert_eq!(
            class(&[(false, &["ephemeral-storage=1Gi", "cpu=0"], &[])]),
            QosClass::BestEffort
        );
    }

    #[test]
    fn limits_on_both_with_equal_or_defaulted_requests_is_guaranteed() {
        assert_eq!(
            class(&[(false, &[], &["cpu=500m", "memory=64Mi"])]),
            QosClass::Guaranteed
        );
        assert_eq!(
            class(&[
                (
                    false,
                    &["cpu=0.5", "memory=64Mi"],
                    &["cpu=500m", "memory=67108864"]
                ),
                (true, &[], &["cpu=1", "memory=1Gi"]),
            ]),
            QosClass::Guaranteed
        );
    }

    #[test]
    fn anything_between_is_burstable() {
        // A request below its limit.
        assert_eq!(
            class(&[(false, &["cpu=250m"], &["cpu=500m", "memory=64Mi"])]),
            QosClass::Burstable
        );
        // Memory limited, CPU not.
        assert_eq!(
            class(&[(false, &[], &["memory=64Mi"])]),
            QosClass::Burstable
        );
        // One container Guaranteed, another BestEffort.
        assert_eq!(
            class(&[(false, &[], &["cpu=1", "memory=1Gi"]), (false, &[], &[]),]),
            QosClass::Burstable
        );
        // A request alone.
        assert_eq!(class(&[(true, &["memory=1Mi"], &[])]), QosClass::Burstable);
    }

    #[test]
    fn a_bad_quantity_names_its_field() {
        let err = qos_class(&spec(&[(false, &["memory=lots"], &[])])).unwrap_err();
        assert_eq!(err.0, "spec.containers[0].resources.requests.memory");
        assert!(err.1.contains("\"lots\""), "{}", err.1);
    }

    #[test]
    fn parents_are_named_as_the_kubelet_names_them() {
        let uid = "5c3e-9a1f";
        let cases = [
            (
                CgroupDriver::Cgroupfs,
                QosClass::Guaranteed,
                "/kubepods/pod5c3e-9a1f",
            ),
            (
                CgroupDriver::Cgroupfs,
                QosClass::Burstable,
                "/kubepods/burstable/pod5c3e-9a1f",
            ),
            (
                CgroupDriver::Cgroupfs,
                QosClass::BestEffort,
                "/kubepods/besteffort/pod5c3e-9a1f",
            ),
            (
                CgroupDriver::Systemd,
                QosClass::Guaranteed,
                "/kubepods.slice/kubepods-pod5c3e_9a1f.slice",
            ),
            (
                CgroupDriver::Systemd,
                QosClass::BestEffort,
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod5c3e_9a1f.slice",
            ),
        ];
        for (driver, qos, want) in cases {
            assert_eq!(cgroup_parent(driver, qos, uid), want, "{driver:?} {qos:?}");
        }
    }
}
