//! The systemd cgroup driver: a process-level container whose `linux.cgroupsPath` is in
//! systemd's `slice:prefix:name` form (what containerd's CRI writes when the runtime's
//! `SystemdCgroup = true`) lives in a transient scope that systemd creates, as runc's
//! systemd driver does it: `StartTransientUnit` over D-Bus with `Delegate=yes`, the
//! container's limits as unit properties, and the cgroup systemd made for it.
//!
//! The manager is reached on the system bus, as runc's driver reaches it:
//! `DBUS_SYSTEM_BUS_ADDRESS`, else `/run/dbus/system_bus_socket`. Not systemd's private
//! socket `/run/systemd/private`: replies on it name `org.freedesktop.systemd1` as their
//! sender, where D-Bus wants a unique name, and zbus refuses such messages.

use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxResources, Spec};
use zbus::blocking::Connection;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

use crate::cgroup::{blkio_weight_to_io_weight, shares_to_weight};
use crate::error::{Error, Result};

/// The system bus.
const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// How long systemd may take to run a scope's start or stop job.
const JOB_LIMIT: Duration = Duration::from_secs(30);

/// A container's transient scope, as `linux.cgroupsPath` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The slice it goes under (`kubepods-besteffort-pod1.slice`; `system.slice` when the
    /// path leaves it empty).
    pub slice: String,
    /// The unit: `prefix-name.scope`.
    pub unit: String,
}

impl Scope {
    /// The scope a spec's `linux.cgroupsPath` names in systemd's `slice:prefix:name` form;
    /// `None` for a cgroupfs path (or none). A name that is itself a `.slice` is a slice,
    /// which runc's driver makes without a scope: refused here, as no process can live
    /// in a slice.
    pub fn of(spec: &Spec) -> Result<Option<Scope>> {
        let Some(given) = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
        else {
            return Ok(None);
        };
        let [slice, prefix, name] = given.split(':').collect::<Vec<_>>()[..] else {
            return Ok(None);
        };
        let field = || format!("linux.cgroupsPath {given:?}");
        if name.is_empty() || name.contains('/') || slice.contains('/') || prefix.contains('/') {
            return Err(Error::Spec(format!(
                "{}: systemd's form is slice:prefix:name, each a unit name without '/'",
                field()
            )));
        }
        if name.ends_with(".slice") {
            return Err(Error::Spec(format!(
                "{}: names a slice for the container; a container needs a scope \
                 (slice:prefix:name, with a name that is not a .slice)",
                field()
            )));
        }
        let slice = if slice.is_empty() {
            "system.slice".to_owned()
        } else if slice.ends_with(".slice") {
            slice.to_owned()
        } else {
            return Err(Error::Spec(format!(
                "{}: {slice:?} is not a .slice",
                field()
            )));
        };
        let unit = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        Ok(Some(Scope { slice, unit }))
    }
}

/// A connection to systemd's manager.
pub struct Systemd {
    conn: Connection,
    /// Where it was reached, for errors.
    address: String,
}

impl std::fmt::Debug for Systemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Systemd")
            .field("address", &self.address)
            .finish()
    }
}

/// The system bus's address: `DBUS_SYSTEM_BUS_ADDRESS` when it is set, else the
/// standard socket.
fn system_bus() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| format!("unix:path={SYSTEM_BUS}"))
}

/// A property of a unit, as `StartTransientUnit` and `SetUnitProperties` take them.
type Property = (&'static str, OwnedValue);

fn owned<'a>(value: impl Into<Value<'a>>) -> OwnedValue {
    // Only plain values are built here (numbers, strings, booleans, arrays of them),
    // which never hold file descriptors: the conversion cannot fail.
    OwnedValue::try_from(value.into()).unwrap_or_else(|_| OwnedValue::from(0u32))
}

/// The unit properties for `resources`, as runc's systemd driver sets them (v2 names,
/// or v1's where the host mounts v1): memory limit, CPU weight or shares, CPU quota and
/// its period, tasks limit, block I/O weight. The cgroup's files are written as well
/// ([`crate::Cgroup::update`]); the properties keep systemd from undoing them.
pub fn resource_properties(resources: &LinuxResources, v2: bool) -> Vec<Property> {
    let mut props: Vec<Property> = Vec::new();
    if let Some(limit) = resources.memory().as_ref().and_then(|m| m.limit()) {
        let value = u64::try_from(limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(u64::MAX);
        props.push((if v2 { "MemoryMax" } else { "MemoryLimit" }, owned(value)));
    }
    if let Some(cpu) = resources.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            if v2 {
                props.push(("CPUWeight", owned(shares_to_weight(shares))));
            } else {
                props.push(("CPUShares", owned(shares)));
            }
        }
        let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
        if let Some(quota) = cpu.quota() {
            // systemd takes the quota per second; none is infinity.
            let per_second = u64::try_from(quota)
                .ok()
                .filter(|q| *q > 0)
                .map_or(u64::MAX, |q| {
                    // Rounded up to whole 10 ms of a second, as systemd keeps it.
                    let us = q.saturating_mul(1_000_000) / period;
                    us.div_ceil(10_000) * 10_000
                });
            props.push(("CPUQuotaPerSecUSec", owned(per_second)));
            if v2 && cpu.period().is_some() {
                props.push(("CPUQuotaPeriodUSec", owned(period)));
            }
        }
    }
    if let Some(limit) = resources.pids().as_ref().map(|p| p.limit()) {
        let value = u64::try_from(limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(u64::MAX);
        props.push(("TasksMax", owned(value)));
    }
    if let Some(weight) = resources
        .block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .filter(|w| *w > 0)
    {
        if v2 {
            props.push(("IOWeight", owned(blkio_weight_to_io_weight(weight))));
        } else {
            props.push(("BlockIOWeight", owned(u64::from(weight))));
        }
    }
    props
}

impl Systemd {
    /// Connects to systemd's manager. The error says that the spec asked for the systemd
    /// driver, and where systemd was looked for.
    pub fn connect() -> Result<Self> {
        Self::connect_to(system_bus())
    }

    fn connect_to(address: String) -> Result<Self> {
        let built = zbus::blocking::connection::Builder::address(address.as_str())
            .and_then(|b| b.method_timeout(JOB_LIMIT).build());
        let e = match built {
            Ok(conn) => return Ok(Self { conn, address }),
            Err(e) => e.to_string(),
        };
        let failure = if e.contains(&address) {
            e
        } else {
            format!("{address}: {e}")
        };
        Err(Error::Cgroup {
            path: "(systemd driver)".into(),
            reason: format!(
                "linux.cgroupsPath is in systemd's slice:prefix:name form, so the container's \
                 cgroup is a systemd scope, but systemd cannot be reached on the system bus \
                 ({failure}). Run the shim on a node whose init is systemd, with D-Bus, or \
                 give the container a cgroupfs path (SystemdCgroup = false)"
            ),
        })
    }

    fn manager<R>(
        &self,
        method: &str,
        body: &(impl serde::Serialize + zbus::zvariant::DynamicType),
    ) -> zbus::Result<R>
    where
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        self.conn
            .call_method(Some(DESTINATION), MANAGER_PATH, Some(MANAGER), method, body)?
            .body()
            .deserialize()
    }

    fn property(
        &self,
        path: &ObjectPath<'_>,
        interface: &str,
        name: &str,
    ) -> zbus::Result<OwnedValue> {
        self.conn
            .call_method(
                Some(DESTINATION),
                path,
                Some(PROPERTIES),
                "Get",
                &(interface, name),
            )?
            .body()
            .deserialize()
    }

    fn failed(&self, unit: &str, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Cgroup {
            path: unit.to_owned(),
            reason: format!("{what} (systemd at {}): {e}", self.address),
        }
    }

    /// Starts `scope` with process `pid` in it, delegated, with `resources` as its
    /// properties, and waits for systemd's job: the cgroup path systemd gives it
    /// (`ControlGroup`, from the hierarchy's root).
    pub fn start_scope(
        &self,
        scope: &Scope,
        pid: u32,
        description: &str,
        resources: Option<&LinuxResources>,
        v2: bool,
    ) -> Result<String> {
        let unit = scope.unit.as_str();
        let mut props: Vec<Property> = vec![
            ("Description", owned(description)),
            ("Slice", owned(scope.slice.as_str())),
            ("Delegate", owned(true)),
            ("PIDs", owned(vec![pid])),
            ("DefaultDependencies", owned(false)),
            ("MemoryAccounting", owned(true)),
            ("CPUAccounting", owned(true)),
            ("TasksAccounting", owned(true)),
        ];
        if v2 {
            props.push(("IOAccounting", owned(true)));
        } else {
            props.push(("BlockIOAccounting", owned(true)));
        }
        if let Some(resources) = resources {
            props.extend(resource_properties(resources, v2));
        }
        let aux: Vec<(&str, Vec<Property>)> = Vec::new();
        let job: OwnedObjectPath = self
            .manager("StartTransientUnit", &(unit, "replace", props, aux))
            .map_err(|e| self.failed(unit, "starting the transient scope", e))?;
        self.wait_job(unit, &job, "active")?;
        let path = self
            .scope_string(unit, "ControlGroup")
            .map_err(|e| self.failed(unit, "reading the scope's cgroup", e))?;
        if path.is_empty() {
            return Err(self.failed(unit, "the scope has no cgroup", "ControlGroup is empty"));
        }
        Ok(path)
    }

    /// The cgroup of `unit` while it is loaded; `None` when systemd does not know it.
    pub fn control_group(&self, unit: &str) -> Option<String> {
        self.scope_string(unit, "ControlGroup")
            .ok()
            .filter(|p| !p.is_empty())
    }

    /// Gives a running scope new limits (containerd's Update), as runtime properties.
    pub fn set_properties(&self, unit: &str, resources: &LinuxResources, v2: bool) -> Result<()> {
        let props = resource_properties(resources, v2);
        if props.is_empty() {
            return Ok(());
        }
        self.manager::<()>("SetUnitProperties", &(unit, true, props))
            .map_err(|e| self.failed(unit, "setting the scope's limits", e))
    }

    /// Stops `unit` (what is left in it is killed) and waits until systemd has removed it.
    /// A unit systemd no longer knows is already gone.
    pub fn stop(&self, unit: &str) -> Result<()> {
        match self.manager::<OwnedObjectPath>("StopUnit", &(unit, "replace")) {
            Ok(job) => self.wait_job(unit, &job, "inactive"),
            Err(e) if no_such_unit(&e) => Ok(()),
            Err(e) => Err(self.failed(unit, "stopping the scope", e)),
        }
    }

    /// A string property of scope `unit` (`ControlGroup`, `Result`).
    fn scope_string(&self, unit: &str, name: &str) -> zbus::Result<String> {
        let path = self.unit_path(unit)?;
        let value = self.property(&path, "org.freedesktop.systemd1.Scope", name)?;
        Ok(String::try_from(value)?)
    }

    fn unit_path(&self, unit: &str) -> zbus::Result<OwnedObjectPath> {
        self.manager("GetUnit", &(unit,))
    }

    /// Waits until `job` has run and `unit` is `wanted` (`active`, `inactive`): a unit
    /// that ends elsewhere fails, naming its state and result.
    fn wait_job(&self, unit: &str, job: &ObjectPath<'_>, wanted: &str) -> Result<()> {
        let deadline = Instant::now() + JOB_LIMIT;
        let mut pause = Duration::from_micros(200);
        loop {
            // A job object exists until its job has run.
            let running = self
                .property(job, "org.freedesktop.systemd1.Job", "State")
                .is_ok();
            if !running {
                let state = match self.unit_path(unit) {
                    Ok(path) => self
                        .property(&path, "org.freedesktop.systemd1.Unit", "ActiveState")
                        .ok()
                        .and_then(|v| String::try_from(v).ok())
                        .unwrap_or_default(),
                    // An ended transient unit is unloaded at once.
                    Err(e) if no_such_unit(&e) => "inactive".to_owned(),
                    Err(e) => return Err(self.failed(unit, "reading the unit's state", e)),
                };
                if state == wanted {
                    return Ok(());
                }
                if !matches!(state.as_str(), "activating" | "deactivating" | "reloading") {
                    let result = self
                        .scope_string(unit, "Result")
                        .unwrap_or_else(|_| "unknown".into());
                    return Err(self.failed(
                        unit,
                        &format!("the scope did not become {wanted}"),
                        format!("it is {state} (result: {result})"),
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(self.failed(
                    unit,
                    &format!("the scope did not become {wanted}"),
                    format!("systemd's job ran past {JOB_LIMIT:?}"),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

fn no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The properties by name.
    fn by_name(props: Vec<Property>) -> HashMap<&'static str, OwnedValue> {
        props.into_iter().collect()
    }

    fn spec(path: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","linux":{{"cgroupsPath":"{path}"}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn the_scope_follows_runcs_naming() {
        assert_eq!(
            Scope::of(&spec("kubepods-besteffort-pod1.slice:cri-containerd:abc")).unwrap(),
            Some(Scope {
                slice: "kubepods-besteffort-pod1.slice".into(),
                unit: "cri-containerd-abc.scope".into()
            })
        );
        assert_eq!(
            Scope::of(&spec(":wasmpod:x")).unwrap(),
            Some(Scope {
                slice: "system.slice".into(),
                unit: "wasmpod-x.scope".into()
            })
        );
        assert_eq!(
            Scope::of(&spec("machine.slice::x")).unwrap().unwrap().unit,
            "x.scope"
        );
        assert_eq!(Scope::of(&spec("/k8s.io/abc")).unwrap(), None);
        for bad in [
            "a.slice:p:b.slice",
            "notaslice:p:x",
            "a.slice:p:",
            "a.slice:p:x/y",
        ] {
            let e = Scope::of(&spec(bad)).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    fn u64_of(props: &HashMap<&'static str, OwnedValue>, name: &str) -> u64 {
        u64::try_from(
            props
                .get(name)
                .unwrap_or_else(|| panic!("no {name}: {props:?}"))
                .clone(),
        )
        .unwrap()
    }

    #[test]
    fn limits_become_unit_properties() {
        let r = resources(
            r#"{"memory":{"limit":33554432},"cpu":{"shares":1024,"quota":50000,"period":100000},
                "pids":{"limit":20},"blockIO":{"weight":500}}"#,
        );
        let v2 = by_name(resource_properties(&r, true));
        assert_eq!(u64_of(&v2, "MemoryMax"), 33_554_432);
        assert_eq!(u64_of(&v2, "CPUWeight"), shares_to_weight(1024));
        assert_eq!(u64_of(&v2, "CPUQuotaPerSecUSec"), 500_000);
        assert_eq!(u64_of(&v2, "CPUQuotaPeriodUSec"), 100_000);
        assert_eq!(u64_of(&v2, "TasksMax"), 20);
        assert_eq!(u64_of(&v2, "IOWeight"), blkio_weight_to_io_weight(500));
        let v1 = by_name(resource_properties(&r, false));
        assert_eq!(u64_of(&v1, "MemoryLimit"), 33_554_432);
        assert_eq!(u64_of(&v1, "CPUShares"), 1024);
        assert_eq!(u64_of(&v1, "BlockIOWeight"), 500);
        assert!(!v1.contains_key("CPUQuotaPeriodUSec"));
        // No limit is infinity; a quota that is not a multiple of 10 ms rounds up.
        let r = resources(r#"{"memory":{"limit":-1},"cpu":{"quota":-1},"pids":{"limit":0}}"#);
        let p = by_name(resource_properties(&r, true));
        assert_eq!(u64_of(&p, "MemoryMax"), u64::MAX);
        assert_eq!(u64_of(&p, "CPUQuotaPerSecUSec"), u64::MAX);
        assert_eq!(u64_of(&p, "TasksMax"), u64::MAX);
        let r = resources(r#"{"cpu":{"quota":1234,"period":100000}}"#);
        let p = by_name(resource_properties(&r, true));
        assert_eq!(u64_of(&p, "CPUQuotaPerSecUSec"), 20_000);
        assert!(resource_properties(&resources("{}"), true).is_empty());
    }

    #[test]
    fn no_systemd_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}", dir.path().join("bus").display());
        let e = Systemd::connect_to(address.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("systemd cannot be reached"), "{e}");
        assert!(e.contains(&address), "{e}");
        assert!(e.contains("slice:prefix:name"), "{e}");
    }
}
