//! A Pod manifest turned into the CRI requests the kubelet would send for it: the sandbox
//! config, one container config per container, and the volumes to prepare on the node.
//! Pure translation: no I/O, so every rule is a unit test (`plan/tests.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use grpc_api::cri::v1 as api;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Volume};

use crate::error::{Error, Result};
use crate::manifest::Manifests;

/// The kubelet's pod labels, which `wasmpod cri` and `wasmpod pod rm` find pods by.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// The pod's namespace label.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// The pod's uid label.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// The container's name label.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// Where a plan puts things on the node, and which node it is: everything a plan would
/// otherwise read from the machine, so that [`PodPlan::new`] reads nothing. Made by
/// [`PlanOptions::new`]; fields may be added.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlanOptions {
    /// Pod log directories go under it (the kubelet's `/var/log/pods`).
    pub log_dir: PathBuf,
    /// Pod volumes (`emptyDir`, `configMap`, `secret`) go under `<pods_dir>/<uid>/volumes`
    /// (the kubelet's `/var/lib/kubelet/pods`).
    pub pods_dir: PathBuf,
    /// The pod's uid when the manifest has none.
    pub uid: String,
    /// The node's name (`spec.nodeName` when the manifest has none, for the downward
    /// API); the kubelet's default is the hostname ([`crate::hostname`]).
    pub node_name: String,
    /// The node's cgroup driver: the pod's sandbox names the cgroup parent a kubelet
    /// with this driver names for the pod's QoS class. `None` names none, and containerd
    /// places the pod's containers under its own default.
    pub cgroup_driver: Option<CgroupDriver>,
}

impl PlanOptions {
    /// Options for a node named `node_name`, with pod logs under `log_dir`, volumes under
    /// `pods_dir`, and `uid` for a pod whose manifest names none.
    pub fn new(
        log_dir: impl Into<PathBuf>,
        pods_dir: impl Into<PathBuf>,
        uid: impl Into<String>,
        node_name: impl Into<String>,
    ) -> Self {
        Self {
            log_dir: log_dir.into(),
            pods_dir: pods_dir.into(),
            uid: uid.into(),
            node_name: node_name.into(),
            cgroup_driver: None,
        }
    }

    /// The same options, naming cgroup parents as a kubelet with `driver` does.
    pub fn with_cgroup_driver(mut self, driver: CgroupDriver) -> Self {
        self.cgroup_driver = Some(driver);
        self
    }
}

/// The sandbox annotation that records the cgroup parent a plan named, which `wasmpod pod
/// rm` removes after the sandbox, as the kubelet removes a pod's cgroup.
pub const CGROUP_PARENT_ANNOTATION: &str = "wasmpod.io/cgroup-parent";

/// When to restart a container, from `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever the exit status (the default).
    Always,
    /// Restart after a non-zero exit.
    OnFailure,
    /// Never restart: the pod ends when its containers have.
    Never,
}

/// When to pull a container's image, from `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time.
    Always,
    /// Pull when the runtime does not have it.
    IfNotPresent,
    /// Never pull: the runtime must have it.
    Never,
}

/// A volume to make on the node before the containers start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSetup {
    /// An empty directory.
    EmptyDir {
        /// Where.
        path: PathBuf,
    },
    /// A directory of the node, checked (or created) as `hostPath.type` says.
    HostPath {
        /// The host path.
        path: PathBuf,
        /// `hostPath.type` (`""` checks nothing).
        kind: String,
    },
    /// Files written from a ConfigMap or Secret.
    Files {
        /// The directory.
        path: PathBuf,
        /// Relative path → contents and mode.
        files: BTreeMap<String, (Vec<u8>, u32)>,
    },
}

/// One container of the plan.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    /// Its name in the pod.
    pub name: String,
    /// Its image.
    pub image: String,
    /// When to pull it.
    pub pull_policy: PullPolicy,
    /// The CreateContainer config (attempt 0; the runner bumps it on restarts).
    pub config: api::ContainerConfig,
    /// Whether it is an init container (run to completion, in order, before the others).
    pub init: bool,
}

/// Everything `wasmpod pod run` asks the runtime for, for one Pod.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// `namespace/name`.
    pub pod: String,
    /// The pod's uid.
    pub uid: String,
    /// The runtime handler (`""`: the runtime's default).
    pub handler: String,
    /// The RunPodSandbox config.
    pub sandbox: api::PodSandboxConfig,
    /// Init containers first, then the others, in manifest order.
    pub containers: Vec<ContainerPlan>,
    /// The volumes to prepare.
    pub volumes: Vec<VolumeSetup>,
    /// The pod's restart policy.
    pub restart: RestartPolicy,
    /// Seconds a container gets between SIGTERM and SIGKILL.
    pub grace_period: i64,
    /// `kubernetes.io/dockerconfigjson` contents of the pod's `imagePullSecrets`.
    pub pull_secrets: Vec<Vec<u8>>,
    /// The pod's per-pod state directory (`<pods_dir>/<uid>`), removed with the pod.
    pub state_dir: PathBuf,
    /// The pod's QoS class.
    pub qos: QosClass,
    /// The cgroup parent its sandbox names, if the options give a cgroup driver.
    pub cgroup_parent: Option<String>,
}

impl PodPlan {
    /// The plan for `pod`; ConfigMaps, Secrets and RuntimeClasses come from `manifests`.
    pub fn new(pod: &Pod, manifests: &Manifests, options: &PlanOptions) -> Result<Self> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let who = format!("{namespace}/{name}");
        let bad = |field: &str, reason: String| Error::Pod {
            pod: who.clone(),
            field: field.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("metadata.name", "missing".into()));
        }
        // These name directories on the node (the pod's state and volumes, its logs): a
        // `/` or a leading `.` could put them — and the volumes made, emptied and
        // rewritten in them — anywhere.
        if !is_plain_name(&name) {
            return Err(bad(
                "metadata.name",
                format!("{name:?} is not a DNS subdomain (a-z, 0-9, '-', '.')"),
            ));
        }
        if namespace.is_empty() || !is_plain_name(&namespace) {
            return Err(bad(
                "metadata.namespace",
                format!("{namespace:?} is not a DNS label (a-z, 0-9, '-')"),
            ));
        }
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| bad("spec", "missing".into()))?;
        if spec.containers.is_empty() {
            return Err(bad(
                "spec.containers",
                "a pod needs at least one container".into(),
            ));
        }
        let uid = pod
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| options.uid.clone());
        let uid_ok = uid.len() <= 128
            && !uid.starts_with('.')
            && uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !uid_ok {
            return Err(bad(
                "metadata.uid",
                format!("{uid:?} is not a uid (letters, digits, '-', '_', '.')"),
            ));
        }
        let handler = match &spec.runtime_class_name {
            None => String::new(),
            Some(class) => manifests
                .runtime_classes
                .iter()
                .find(|rc| rc.metadata.name.as_deref() == Some(class.as_str()))
                .map_or_else(|| class.clone(), |rc| rc.handler.clone()),
        };
        let restart = match spec.restart_policy.as_deref() {
            None | Some("Always") => RestartPolicy::Always,
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            Some(other) => {
                return Err(bad(
                    "spec.restartPolicy",
                    format!("{other:?}: expected Always, OnFailure or Never"),
                ))
            }
        };
        let ctx = Context {
            who: &who,
            name: &name,
            namespace: &namespace,
            uid: &uid,
            spec,
            manifests,
            state_dir: options.pods_dir.join(&uid),
            node_name: &options.node_name,
        };
        let qos = resources::qos_class(spec).map_err(|(field, reason)| bad(&field, reason))?;
        let cgroup_parent = options
            .cgroup_driver
            .map(|driver| resources::cgroup_parent(driver, qos, &uid));
        let labels: HashMap<String, String> = pod
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain([
                (POD_NAME_LABEL.to_owned(), name.clone()),
                (POD_NAMESPACE_LABEL.to_owned(), namespace.clone()),
                (POD_UID_LABEL.to_owned(), uid.clone()),
            ])
            .collect();
        let sandbox = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: namespace.clone(),
                attempt: 0,
            }),
            hostname: ctx.hostname(),
            log_directory: options
                .log_dir
                .join(format!("{namespace}_{name}_{uid}"))
                .to_string_lossy()
                .into_owned(),
            dns_config: ctx.dns()?,
            port_mappings: ctx.ports()?,
            labels: labels.clone(),
            annotations: pod
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .chain(
                    cgroup_parent
                        .clone()
                        .map(|p| (CGROUP_PARENT_ANNOTATION.to_owned(), p)),
                )
                .collect(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone().unwrap_or_default(),
                ..ctx.linux_sandbox()
            }),
            windows: None,
        };
        let (volumes, mounts_by_name) = ctx.volumes()?;
        let mut names = std::collections::HashSet::new();
        let mut containers = Vec::new();
        let init = spec.init_containers.iter().flatten().map(|c| (c, true));
        let main = spec.containers.iter().map(|c| (c, false));
        for (index, (container, is_init)) in init.chain(main).enumerate() {
            if !names.insert(container.name.clone()) {
                return Err(bad(
                    "spec.containers",
                    format!("two containers are named {:?}", container.name),
                ));
            }
            containers.push(ctx.container(container, index, is_init, &labels, &mounts_by_name)?);
        }
        let pull_secrets = ctx.pull_secrets()?;
        Ok(Self {
            pod: who.clone(),
            uid: uid.clone(),
            handler,
            sandbox,
            containers,
            volumes,
            restart,
            grace_period: spec.termination_grace_period_seconds.unwrap_or(30),
            pull_secrets,
            state_dir: ctx.state_dir,
            qos,
            cgroup_parent,
        })
    }
}

/// What translating one pod needs at hand.
struct Context<'a> {
    who: &'a str,
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    spec: &'a PodSpec,
    manifests: &'a Manifests,
    state_dir: PathBuf,
    node_name: &'a str,
}

/// A volume as containers mount it: its host path, and whether it is always read-only.
type Mountable = (PathBuf, bool);

impl Context<'_> {
    fn bad(&self, field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Pod {
            pod: self.who.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn host_network(&self) -> bool {
        self.spec.host_network == Some(true)
    }

    /// The pod's hostname: empty with host networking (the runtime keeps the node's, as
    /// the kubelet does), else `spec.hostname` or the pod name, at most 63 characters.
    fn hostname(&self) -> String {
        if self.host_network() {
            return String::new();
        }
        let name = self.spec.hostname.as_deref().unwrap_or(self.name);
        name.chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_owned()
    }

    fn dns(&self) -> Result<Option<api::DnsConfig>> {
        let config = self.spec.dns_config.as_ref();
        if self.spec.dns_policy.as_deref() == Some("None") && config.is_none() {
            return Err(self.bad("spec.dnsConfig", "dnsPolicy None needs a dnsConfig"));
        }
        Ok(config.map(|c| api::DnsConfig {
            servers: c.nameservers.clone().unwrap_or_default(),
            searches: c.searches.clone().unwrap_or_default(),
            options: c
                .options
                .iter()
                .flatten()
                .filter_map(|o| {
                    let name = o.name.as_deref()?;
                    Some(match &o.value {
                        Some(v) => format!("{name}:{v}"),
                        None => name.to_owned(),
                    })
                })
                .collect(),
        }))
    }

    fn ports(&self) -> Result<Vec<api::PortMapping>> {
        let mut out = Vec::new();
        for (ci, c) in self.spec.containers.iter().enumerate() {
            for (pi, p) in c.ports.iter().flatten().enumerate() {
                let protocol = match p.protocol.as_deref() {
                    None | Some("TCP") => api::Protocol::Tcp,
                    Some("UDP") => api::Protocol::Udp,
                    Some("SCTP") => api::Protocol::Sctp,
                    Some(other) => {
                        return Err(self.bad(
                            format!("spec.containers[{ci}].ports[{pi}].protocol"),
                            format!("{other:?}: expected TCP, UDP or SCTP"),
                        ))
                    }
                };
                out.push(api::PortMapping {
                    protocol: protocol as i32,
                    container_port: p.container_port,
                    host_port: p.host_port.unwrap_or(0),
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    fn linux_sandbox(&self) -> api::LinuxPodSandboxConfig {
        let node = api::NamespaceMode::Node as i32;
        let psc = self.spec.security_context.as_ref();
        api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: if self.host_network() {
                        node
                    } else {
                        api::NamespaceMode::Pod as i32
                    },
                    pid: if self.spec.host_pid == Some(true) {
                        node
                    } else if self.spec.share_process_namespace == Some(true) {
                        api::NamespaceMode::Pod as i32
                    } else {
                        api::NamespaceMode::Container as i32
                    },
                    ipc: if self.spec.host_ipc == Some(true) {
                        node
                    } else {
                        api::NamespaceMode::Pod as i32
                    },
                    ..Default::default()
                }),
                run_as_user: psc
                    .and_then(|s| s.run_as_user)
                    .map(|value| api::Int64Value { value }),
                run_as_group: psc
                    .and_then(|s| s.run_as_group)
                    .map(|value| api::Int64Value { value }),
                supplemental_groups: psc
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            sysctls: psc
                .and_then(|s| s.sysctls.as_ref())
                .into_iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }
    }

    /// The volumes to set up, and each volume's name → what a mount of it binds.
    fn volumes(&self) -> Result<(Vec<VolumeSetup>, HashMap<String, Mountable>)> {
        let mut setups = Vec::new();
        let mut by_name = HashMap::new();
        let root = self.state_dir.join("volumes");
        for (i, volume) in self.spec.volumes.iter().flatten().enumerate() {
            let field = format!("spec.volumes[{i}]");
            let (setup, read_only) = self.volume(volume, &field, &root)?;
            let path = match &setup {
                VolumeSetup::EmptyDir { path }
                | VolumeSetup::HostPath { path, .. }
                | VolumeSetup::Files { path, .. } => path.clone(),
            };
            if by_name
                .insert(volume.name.clone(), (path, read_only))
                .is_some()
            {
                return Err(self.bad(field, format!("two volumes are named {:?}", volume.name)));
            }
            setups.push(setup);
        }
        Ok((setups, by_name))
    }

    fn volume(&self, volume: &Volume, field: &str, root: &Path) -> Result<(VolumeSetup, bool)> {
        if volume.name.is_empty() || !is_plain_name(&volume.name) {
            return Err(self.bad(
                format!("{field}.name"),
                format!("{:?} is not a volume name", volume.name),
            ));
        }
        if volume.empty_dir.is_some() {
            let path = root.join("empty-dir").join(&volume.name);
            return Ok((VolumeSetup::EmptyDir { path }, false));
        }
        if let Some(host) = &volume.host_path {
            if !host.path.starts_with('/') {
                return Err(self.bad(
                    format!("{field}.hostPath.path"),
                    format!("{:?} is not absolute", host.path),
                ));
            }
            return Ok((
                VolumeSetup::HostPath {
                    path: PathBuf::from(&host.path),
                    kind: host.type_.clone().unwrap_or_default(),
                },
                false,
            ));
        }
        if let Some(cm) = &volume.config_map {
            let field = format!("{field}.configMap");
            let data = self.config_map_data(&cm.name, cm.optional, &field)?;
            let files = self.project(&data, cm.items.as_deref(), cm.default_mode, &field)?;
            let path = root.join("configmap").join(&volume.name);
            return Ok((VolumeSetup::Files { path, files }, true));
        }
        if let Some(secret) = &volume.secret {
            let field = format!("{field}.secret");
            let name = secret.secret_name.as_deref().unwrap_or_default();
            let data = self.secret_data(name, secret.optional, &field)?;
            let files =
                self.project(&data, secret.items.as_deref(), secret.default_mode, &field)?;
            let path = root.join("secret").join(&volume.name);
            return Ok((VolumeSetup::Files { path, files }, true));
        }
        let kind = serde_json::to_value(volume)
            .ok()
            .and_then(|v| {
                v.as_object()
                    .and_then(|o| o.keys().find(|k| *k != "name").cloned())
            })
            .unwrap_or_else(|| "none".into());
        Err(self.bad(
            field,
            format!(
                "volume type {kind} is not supported: use emptyDir, hostPath, configMap or secret"
            ),
        ))
    }

    fn same_namespace(&self, ns: Option<&str>) -> bool {
        ns.unwrap_or("default") == self.namespace
    }

    /// The files of a configMap or secret volume: every key, or the listed `items`.
    fn project(
        &self,
        data: &BTreeMap<String, Vec<u8>>,
        items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
        default_mode: Option<i32>,
        field: &str,
    ) -> Result<BTreeMap<String, (Vec<u8>, u32)>> {
        let mode = |m: Option<i32>| {
            u32::try_from(m.or(default_mode).unwrap_or(0o644)).unwrap_or(0o644) & 0o777
        };
        let mut files = BTreeMap::new();
        match items {
            None => {
                for (key, value) in data {
                    if !is_relative_inside(key) {
                        return Err(self.bad(field, format!("key {key:?} is not a file name")));
                    }
                    files.insert(key.clone(), (value.clone(), mode(None)));
                }
            }
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let value = data.get(&item.key).ok_or_else(|| {
                        self.bad(
                            format!("{field}.items[{i}].key"),
                            format!("no key {:?}", item.key),
                        )
                    })?;
                    if !is_relative_inside(&item.path) {
                        return Err(self.bad(
                            format!("{field}.items[{i}].path"),
                            format!("{:?} must be a relative path without '..'", item.path),
                        ));
                    }
                    files.insert(item.path.clone(), (value.clone(), mode(item.mode)));
                }
            }
        }
        Ok(files)
    }

    fn container(
        &self,
        c: &Container,
        index: usize,
        init: bool,
        pod_labels: &HashMap<String, String>,
        volumes: &HashMap<String, Mountable>,
    ) -> Result<ContainerPlan> {
        let list = if init { "initContainers" } else { "containers" };
        let position = if init {
            index
        } else {
            index - self.spec.init_containers.as_ref().map_or(0, Vec::len)
        };
        let field = format!("spec.{list}[{position}]");
        if c.name.is_empty() || !is_plain_name(&c.name) {
            return Err(self.bad(
                format!("{field}.name"),
                format!("{:?} is not a container name", c.name),
            ));
        }
        let image = c
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| self.bad(format!("{field}.image"), "missing"))?;
        let pull_policy = match c.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            None if image_is_latest(&image) => PullPolicy::Always,
            None => PullPolicy::IfNotPresent,
            Some(other) => {
                return Err(self.bad(
                    format!("{field}.imagePullPolicy"),
                    format!("{other:?}: expected Always, IfNotPresent or Never"),
                ))
            }
        };
        let envs = self.env(c, &field)?;
        let vars: HashMap<&str, &str> = envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        let mut mounts = Vec::new();
        for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
            let (host, always_ro) = volumes.get(&m.name).ok_or_else(|| {
                self.bad(
                    format!("{field}.volumeMounts[{i}].name"),
                    format!("no volume named {:?}", m.name),
                )
            })?;
            if !m.mount_path.starts_with('/') {
                return Err(self.bad(
                    format!("{field}.volumeMounts[{i}].mountPath"),
                    format!("{:?} is not absolute", m.mount_path),
                ));
            }
            let mut host_path = host.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                if !is_relative_inside(sub) {
                    return Err(self.bad(
                        format!("{field}.volumeMounts[{i}].subPath"),
                        format!("{sub:?} must be a relative path without '..'"),
                    ));
                }
                host_path = host_path.join(sub);
            }
            mounts.push(api::Mount {
                container_path: m.mount_path.clone(),
                host_path: host_path.to_string_lossy().into_owned(),
                readonly: *always_ro || m.read_only == Some(true),
                ..Default::default()
            });
        }
        let mut labels = pod_labels.clone();
        labels.retain(|k, _| k.starts_with("io.kubernetes."));
        labels.insert(CONTAINER_NAME_LABEL.to_owned(), c.name.clone());
        let sc = c.security_context.as_ref();
        let psc = self.spec.security_context.as_ref();
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: c.name.clone(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            command: c
                .command
                .iter()
                .flatten()
                .map(|s| expand(s, &vars))
                .collect(),
            args: c.args.iter().flatten().map(|s| expand(s, &vars)).collect(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs,
            mounts,
            labels,
            annotations: HashMap::from([(
                "io.kubernetes.container.restartCount".to_owned(),
                "0".to_owned(),
            )]),
            log_path: format!("{}/0.log", c.name),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
            linux: Some(api::LinuxContainerConfig {
                resources: Some(self.resources(c, &field)?),
                security_context: Some(api::LinuxContainerSecurityContext {
                    privileged: sc.and_then(|s| s.privileged) == Some(true),
                    readonly_rootfs: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
                    no_new_privs: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
                    run_as_user: sc
                        .and_then(|s| s.run_as_user)
                        .or(psc.and_then(|s| s.run_as_user))
                        .map(|value| api::Int64Value { value }),
                    run_as_group: sc
                        .and_then(|s| s.run_as_group)
                        .or(psc.and_then(|s| s.run_as_group))
                        .map(|value| api::Int64Value { value }),
                    capabilities: sc.and_then(|s| s.capabilities.as_ref()).map(|caps| {
                        api::Capability {
                            add_capabilities: caps.add.clone().unwrap_or_default(),
                            drop_capabilities: caps.drop.clone().unwrap_or_default(),
                            ..Default::default()
                        }
                    }),
                    namespace_options: self
                        .linux_sandbox()
                        .security_context
                        .and_then(|s| s.namespace_options),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        Ok(ContainerPlan {
            name: c.name.clone(),
            image,
            pull_policy,
            config,
            init,
        })
    }

    /// The container's environment: `envFrom`, then `env` (later wins), with `$(VAR)`
    /// references to earlier variables expanded.
    fn env(&self, c: &Container, field: &str) -> Result<Vec<api::KeyValue>> {
        let mut vars: Vec<(String, String)> = Vec::new();
        let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
            vars.retain(|(key, _)| *key != k);
            vars.push((k, v));
        };
        for (i, from) in c.env_from.iter().flatten().enumerate() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let data = if let Some(r) = &from.config_map_ref {
                self.config_map_data(
                    &r.name,
                    r.optional,
                    &format!("{field}.envFrom[{i}].configMapRef"),
                )?
            } else if let Some(r) = &from.secret_ref {
                self.secret_data(
                    &r.name,
                    r.optional,
                    &format!("{field}.envFrom[{i}].secretRef"),
                )?
            } else {
                BTreeMap::new()
            };
            for (k, v) in data {
                set(
                    &mut vars,
                    format!("{prefix}{k}"),
                    String::from_utf8_lossy(&v).into_owned(),
                );
            }
        }
        for (i, var) in c.env.iter().flatten().enumerate() {
            let value = self.env_value(var, &format!("{field}.env[{i}]"), &vars)?;
            if let Some(value) = value {
                set(&mut vars, var.name.clone(), value);
            }
        }
        Ok(vars
            .into_iter()
            .map(|(key, value)| api::KeyValue { key, value })
            .collect())
    }

    fn env_value(
        &self,
        var: &EnvVar,
        field: &str,
        earlier: &[(String, String)],
    ) -> Result<Option<String>> {
        let Some(from) = &var.value_from else {
            let map: HashMap<&str, &str> = earlier
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            return Ok(Some(expand(var.value.as_deref().unwrap_or(""), &map)));
        };
        if let Some(r) = &from.config_map_key_ref {
            let data = self.config_map_data(
                &r.name,
                r.optional,
                &format!("{field}.valueFrom.configMapKeyRef"),
            )?;
            return self.key(
                &data,
                &r.key,
                r.optional,
                &format!("{field}.valueFrom.configMapKeyRef.key"),
            );
        }
        if let Some(r) = &from.secret_key_ref {
            let data = self.secret_data(
                &r.name,
                r.optional,
                &format!("{field}.valueFrom.secretKeyRef"),
            )?;
            return self.key(
                &data,
                &r.key,
                r.optional,
                &format!("{field}.valueFrom.secretKeyRef.key"),
            );
        }
        if let Some(r) = &from.field_ref {
            let value = match r.field_path.as_str() {
                "metadata.name" => self.name.to_owned(),
                "metadata.namespace" => self.namespace.to_owned(),
                "metadata.uid" => self.uid.to_owned(),
                "spec.nodeName" => self
                    .spec
                    .node_name
                    .clone()
                    .unwrap_or_else(|| self.node_name.to_owned()),
                "spec.serviceAccountName" => self.spec.service_account_name.clone().unwrap_or_else(|| "default".into()),
                other => {
                    return Err(self.bad(
                        format!("{field}.valueFrom.fieldRef.fieldPath"),
                        format!("{other:?} is not known before the pod runs here: use metadata.name, metadata.namespace, metadata.uid, spec.nodeName or spec.serviceAccountName"),
                    ))
                }
            };
            return Ok(Some(value));
        }
        Err(self.bad(
            format!("{field}.valueFrom"),
            "only configMapKeyRef, secretKeyRef and fieldRef are supported",
        ))
    }

    fn key(
        &self,
        data: &BTreeMap<String, Vec<u8>>,
        key: &str,
        optional: Option<bool>,
        field: &str,
    ) -> Result<Option<String>> {
        match data.get(key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional == Some(true) => Ok(None),
            None => Err(self.bad(field, format!("no key {key:?}"))),
        }
    }

    fn config_map_data(
        &self,
        name: &str,
        optional: Option<bool>,
        field: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        let found = self.manifests.config_maps.iter().find(|c| {
            c.metadata.name.as_deref() == Some(name)
                && self.same_namespace(c.metadata.namespace.as_deref())
        });
        match found {
            Some(c) => Ok(c
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .chain(
                    c.binary_data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.0.clone())),
                )
                .collect()),
            None if optional == Some(true) => Ok(BTreeMap::new()),
            None => Err(self.bad(
                field,
                format!("no ConfigMap {name:?} among the manifests given"),
            )),
        }
    }

    fn secret_data(
        &self,
        name: &str,
        optional: Option<bool>,
        field: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        let found = self.manifests.secrets.iter().find(|s| {
            s.metadata.name.as_deref() == Some(name)
                && self.same_namespace(s.metadata.namespace.as_deref())
        });
        match found {
            Some(s) => Ok(s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .chain(
                    s.string_data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
                )
                .collect()),
            None if optional == Some(true) => Ok(BTreeMap::new()),
            None => Err(self.bad(
                field,
                format!("no Secret {name:?} among the manifests given"),
            )),
        }
    }

    /// The docker config JSON of each `imagePullSecrets` entry.
    fn pull_secrets(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for (i, r) in self.spec.image_pull_secrets.iter().flatten().enumerate() {
            let field = format!("spec.imagePullSecrets[{i}]");
            let data = self.secret_data(&r.name, None, &field)?;
            let json = data
                .get(".dockerconfigjson")
                .or_else(|| data.get(".dockercfg"))
                .ok_or_else(|| {
                    self.bad(
                        &field,
                        format!("Secret {:?} has no .dockerconfigjson", r.name),
                    )
                })?;
            out.push(json.clone());
        }
        Ok(out)
    }
}

/// Whether `image` has no tag or digest, or the tag `latest` (pulled Always by default).
fn image_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        None => true,
        Some((_, tag)) => tag == "latest",
    }
}

/// A DNS-label-like name (volume and container names).
fn is_plain_name(name: &str) -> bool {
    name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
}

/// A relative path that stays inside its directory (no `..`, no root).
fn is_relative_inside(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

mod expand;
mod resources;
pub(crate) use expand::expand;
pub use resources::{CgroupDriver, QosClass};

#[cfg(test)]
mod tests;
