//! Pod manifests → CRI requests, one rule a test.

use super::*;

fn options() -> PlanOptions {
    PlanOptions::new(
        "/var/log/pods",
        "/run/wasmpod/pods",
        "generated-uid",
        "node-1",
    )
}

fn plan(yaml: &str) -> Result<PodPlan> {
    let mut m = Manifests::default();
    m.add("test.yaml", yaml)?;
    PodPlan::new(&m.pods[0], &m, &options())
}

fn err(yaml: &str) -> String {
    plan(yaml).unwrap_err().to_string()
}

const HELLO: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: hello
  labels: {app: hello}
  annotations: {wasmpod.io/isolation: shared}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: hello
    image: localhost:5000/hello:v1
    command: ["/hello.wasm"]
    args: ["$(GREETING)", "$$(GREETING)", "$(UNKNOWN)"]
    env:
    - {name: GREETING, value: hi}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: BOTH, value: "$(GREETING) $(POD)"}
    ports:
    - {containerPort: 8080, hostPort: 18080}
    resources:
      limits: {memory: 64Mi, cpu: 500m}
      requests: {cpu: 250m}
"#;

#[test]
fn hello_pod() {
    let p = plan(HELLO).unwrap();
    assert_eq!(p.pod, "default/hello");
    assert_eq!(p.uid, "generated-uid");
    assert_eq!(p.handler, "wasm", "no RuntimeClass given: handler = name");
    assert_eq!(p.restart, RestartPolicy::Never);
    assert_eq!(p.grace_period, 30);
    let meta = p.sandbox.metadata.as_ref().unwrap();
    assert_eq!(
        (meta.name.as_str(), meta.namespace.as_str()),
        ("hello", "default")
    );
    assert_eq!(p.sandbox.hostname, "hello");
    assert_eq!(
        p.sandbox.log_directory,
        "/var/log/pods/default_hello_generated-uid"
    );
    assert_eq!(p.sandbox.labels["app"], "hello");
    assert_eq!(p.sandbox.labels[POD_NAME_LABEL], "hello");
    assert_eq!(p.sandbox.annotations["wasmpod.io/isolation"], "shared");
    assert_eq!(p.sandbox.port_mappings[0].container_port, 8080);
    assert_eq!(p.sandbox.port_mappings[0].host_port, 18080);
    let ns = p
        .sandbox
        .linux
        .as_ref()
        .unwrap()
        .security_context
        .as_ref()
        .unwrap();
    assert_eq!(
        ns.namespace_options.as_ref().unwrap().network,
        api::NamespaceMode::Pod as i32
    );

    let c = &p.containers[0];
    assert_eq!(c.pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(c.config.command, ["/hello.wasm"]);
    assert_eq!(c.config.args, ["hi", "$(GREETING)", "$(UNKNOWN)"]);
    let env: HashMap<_, _> = c
        .config
        .envs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    assert_eq!(env["POD"], "hello");
    assert_eq!(env["BOTH"], "hi hello");
    assert_eq!(c.config.log_path, "hello/0.log");
    assert_eq!(c.config.labels[CONTAINER_NAME_LABEL], "hello");
    assert_eq!(c.config.labels[POD_UID_LABEL], "generated-uid");
    assert!(!c.config.labels.contains_key("app"));
    let r = c.config.linux.as_ref().unwrap().resources.as_ref().unwrap();
    assert_eq!(r.memory_limit_in_bytes, 64 << 20);
    assert_eq!((r.cpu_period, r.cpu_quota), (100_000, 50_000));
    assert_eq!(r.cpu_shares, 256);
}

#[test]
fn runtime_class_maps_to_its_handler() {
    let p = plan(&format!(
        "{HELLO}---\napiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {{name: wasm}}\nhandler: wasmtime-fast\n"
    ))
    .unwrap();
    assert_eq!(p.handler, "wasmtime-fast");
}

#[test]
fn host_network_leaves_the_hostname_empty() {
    let p = plan(&HELLO.replace(
        "  runtimeClassName: wasm",
        "  runtimeClassName: wasm\n  hostNetwork: true",
    ))
    .unwrap();
    assert_eq!(p.sandbox.hostname, "");
    let ns = p
        .sandbox
        .linux
        .unwrap()
        .security_context
        .unwrap()
        .namespace_options
        .unwrap();
    assert_eq!(ns.network, api::NamespaceMode::Node as i32);
}

#[test]
fn latest_images_are_pulled_always() {
    assert!(image_is_latest("hello"));
    assert!(image_is_latest("localhost:5000/hello"));
    assert!(image_is_latest("hello:latest"));
    assert!(!image_is_latest("localhost:5000/hello:v1"));
    assert!(!image_is_latest("hello@sha256:abcd"));
    let p = plan(&HELLO.replace("hello:v1", "hello")).unwrap();
    assert_eq!(p.containers[0].pull_policy, PullPolicy::Always);
}

const VOLUMES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: vols, namespace: team, uid: u-1}
spec:
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: host, hostPath: {path: /srv/data, type: DirectoryOrCreate}}
  - name: settings
    configMap:
      name: settings
      items: [{key: greeting, path: conf/greeting.txt, mode: 0400}]
  - {name: creds, secret: {secretName: creds}}
  containers:
  - name: app
    image: app:v1
    envFrom: [{configMapRef: {name: settings}, prefix: CFG_}]
    env:
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}
    volumeMounts:
    - {name: scratch, mountPath: /tmp}
    - {name: host, mountPath: /data, readOnly: true}
    - {name: host, mountPath: /logs, subPath: logs}
    - {name: settings, mountPath: /etc/app}
    - {name: creds, mountPath: /creds}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: team}
data: {token: c2VjcmV0}
"#;

#[test]
fn volumes_become_mounts() {
    let p = plan(VOLUMES).unwrap();
    assert_eq!(p.uid, "u-1");
    assert_eq!(p.state_dir, Path::new("/run/wasmpod/pods/u-1"));
    assert_eq!(
        p.volumes[0],
        VolumeSetup::EmptyDir {
            path: "/run/wasmpod/pods/u-1/volumes/empty-dir/scratch".into()
        }
    );
    assert_eq!(
        p.volumes[1],
        VolumeSetup::HostPath {
            path: "/srv/data".into(),
            kind: "DirectoryOrCreate".into()
        }
    );
    let VolumeSetup::Files { files, .. } = &p.volumes[2] else {
        panic!("{:?}", p.volumes[2])
    };
    assert_eq!(files["conf/greeting.txt"], (b"hello".to_vec(), 0o400));
    let VolumeSetup::Files { files, .. } = &p.volumes[3] else {
        panic!("{:?}", p.volumes[3])
    };
    assert_eq!(files["token"], (b"secret".to_vec(), 0o644));

    let c = &p.containers[0].config;
    let m: Vec<(&str, &str, bool)> = c
        .mounts
        .iter()
        .map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.readonly))
        .collect();
    assert_eq!(
        m,
        [
            (
                "/tmp",
                "/run/wasmpod/pods/u-1/volumes/empty-dir/scratch",
                false
            ),
            ("/data", "/srv/data", true),
            ("/logs", "/srv/data/logs", false),
            (
                "/etc/app",
                "/run/wasmpod/pods/u-1/volumes/configmap/settings",
                true
            ),
            ("/creds", "/run/wasmpod/pods/u-1/volumes/secret/creds", true),
        ]
    );
    let env: HashMap<_, _> = c
        .envs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    assert_eq!(env["CFG_greeting"], "hello");
    assert_eq!(env["TOKEN"], "secret");
}

#[test]
fn bad_fields_are_named() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "memory: 64Mi",
            "memory: lots",
            "spec.containers[0].resources.limits.memory: \"lots\" is not a quantity",
        ),
        (
            "restartPolicy: Never",
            "restartPolicy: Sometimes",
            "spec.restartPolicy",
        ),
        (
            "image: localhost:5000/hello:v1",
            "image: \"\"",
            "spec.containers[0].image: missing",
        ),
        ("metadata.name", "spec.nodeName.x", "fieldPath"),
    ];
    for (from, to, expected) in cases {
        let e = err(&HELLO.replace(from, to));
        assert!(e.contains(expected), "{to}: {e}");
        assert!(e.starts_with("pod default/hello:"), "{e}");
    }
}

#[test]
fn missing_references_are_named() {
    let only_pod = VOLUMES.split("---").next().unwrap();
    let e = err(only_pod);
    assert!(
        e.contains("spec.volumes[2].configMap: no ConfigMap \"settings\""),
        "{e}"
    );
    let e = err(&VOLUMES.replace(
        "{name: scratch, mountPath: /tmp}",
        "{name: nope, mountPath: /tmp}",
    ));
    assert!(
        e.contains("spec.containers[0].volumeMounts[0].name: no volume named \"nope\""),
        "{e}"
    );
    let e = err(&VOLUMES.replace("subPath: logs", "subPath: ../../etc"));
    assert!(e.contains("subPath") && e.contains("'..'"), "{e}");
    let e = err(&VOLUMES.replace("path: conf/greeting.txt", "path: /etc/passwd"));
    assert!(e.contains("items[0].path"), "{e}");
    let e = err(&VOLUMES.replace(
        "{name: scratch, emptyDir: {}}",
        "{name: scratch, nfs: {server: x, path: /}}",
    ));
    assert!(e.contains("volume type nfs is not supported"), "{e}");
}

#[test]
fn init_containers_come_first() {
    let yaml = HELLO.replace(
        "  containers:\n",
        "  initContainers:\n  - {name: setup, image: setup:v1}\n  containers:\n",
    );
    let p = plan(&yaml).unwrap();
    let names: Vec<(&str, bool)> = p
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.init))
        .collect();
    assert_eq!(names, [("setup", true), ("hello", false)]);
    let e = err(&yaml.replace("name: setup", "name: hello"));
    assert!(e.contains("two containers are named \"hello\""), "{e}");
}

#[test]
fn pull_secrets_are_found() {
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: reg}}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{{\"auths\":{{}}}}'\n",
        HELLO.replace("  restartPolicy: Never", "  restartPolicy: Never\n  imagePullSecrets: [{name: reg}]")
    );
    let p = plan(&yaml).unwrap();
    assert_eq!(p.pull_secrets, [b"{\"auths\":{}}".to_vec()]);
    let e = err(&HELLO.replace(
        "  restartPolicy: Never",
        "  restartPolicy: Never\n  imagePullSecrets: [{name: reg}]",
    ));
    assert!(
        e.contains("spec.imagePullSecrets[0]: no Secret \"reg\""),
        "{e}"
    );
}

#[test]
fn expansion() {
    let vars = HashMap::from([("A", "1"), ("B", "two")]);
    let check = |input: &str, expected: &str| assert_eq!(expand(input, &vars), expected, "{input}");
    check("$(A)", "1");
    check("x$(A)y$(B)z", "x1ytwoz");
    check("$$(A)", "$(A)");
    check("$(C)", "$(C)");
    check("$(A", "$(A");
    check("cost: $5", "cost: $5");
    check("$", "$");
}

/// The pod's name, namespace and uid become directories on the node, where its volumes are
/// made, emptied and rewritten: none may climb out of the node's pods or log directory (a
/// uid of `../../../etc` planned the pod's volumes under `/etc/volumes/`).
#[test]
fn names_and_uid_cannot_leave_the_node_directories() {
    for (field, value, error) in [
        (
            "uid",
            "../../../etc",
            "metadata.uid: \"../../../etc\" is not a uid",
        ),
        ("uid", "/etc", "metadata.uid: \"/etc\" is not a uid"),
        ("uid", "..", "metadata.uid: \"..\" is not a uid"),
        (
            "name",
            "../x",
            "metadata.name: \"../x\" is not a DNS subdomain",
        ),
        (
            "namespace",
            "a/../../b",
            "metadata.namespace: \"a/../../b\" is not a DNS label",
        ),
    ] {
        let yaml = HELLO.replace(
            "  name: hello\n",
            &format!("  name: hello\n  {field}: {value:?}\n"),
        );
        let yaml = if field == "name" {
            HELLO.replace("  name: hello\n", &format!("  name: {value:?}\n"))
        } else {
            yaml
        };
        let e = err(&yaml);
        assert!(e.contains(error), "{field} {value:?}: {e}");
    }
    let ok = HELLO.replace("  name: hello\n", "  name: hello\n  uid: 0f8e-AB_12.x\n");
    let p = plan(&ok).unwrap();
    assert_eq!(p.state_dir, Path::new("/run/wasmpod/pods/0f8e-AB_12.x"));
}

#[test]
fn the_node_name_comes_from_the_options_not_the_machine() {
    let yaml = HELLO.replace(
        "    - {name: BOTH",
        "    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n    - {name: BOTH",
    );
    let p = plan(&yaml).unwrap();
    let env = &p.containers[0].config.envs;
    let node = env.iter().find(|kv| kv.key == "NODE").unwrap();
    assert_eq!(node.value, "node-1");
    let yaml = yaml.replace(
        "  runtimeClassName: wasm\n",
        "  runtimeClassName: wasm\n  nodeName: given\n",
    );
    let p = plan(&yaml).unwrap();
    let env = &p.containers[0].config.envs;
    assert_eq!(
        env.iter().find(|kv| kv.key == "NODE").unwrap().value,
        "given"
    );
}

#[test]
fn a_cgroup_driver_names_the_pods_parent_and_records_it() {
    let mut m = Manifests::default();
    m.add("test.yaml", HELLO).unwrap();
    let none = PodPlan::new(&m.pods[0], &m, &options()).unwrap();
    let linux = none.sandbox.linux.as_ref().unwrap();
    assert_eq!(linux.cgroup_parent, "");
    assert!(!none
        .sandbox
        .annotations
        .contains_key(CGROUP_PARENT_ANNOTATION));
    let systemd = options().with_cgroup_driver(CgroupDriver::Systemd);
    let plan = PodPlan::new(&m.pods[0], &m, &systemd).unwrap();
    // HELLO requests less CPU than it limits.
    assert_eq!(plan.qos, QosClass::Burstable);
    let parent =
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podgenerated_uid.slice";
    assert_eq!(plan.cgroup_parent.as_deref(), Some(parent));
    assert_eq!(plan.sandbox.linux.as_ref().unwrap().cgroup_parent, parent);
    assert_eq!(plan.sandbox.annotations[CGROUP_PARENT_ANNOTATION], parent);
}
