//! Runs an image under a runtime through containerd's gRPC API alone — create the
//! container, create and start its task, wait, delete — the way a client library does,
//! without `ctr run`. The e2e uses it for Wasm OCI artifacts, which Debian's containerd
//! 1.6.20 `ctr run` refuses ("mismatched image rootfs and manifest layers").
//!
//! ```text
//! run-via-api [--env K=V]... [--clear-env] [--mount SRC:DST]... [--no-root] \
//!     [--annotation K=V]... [--resources JSON] [--update JSON] \
//!     SOCKET NAMESPACE RUNTIME IMAGE ID OUTPUT-FILE [ARGS...]
//! ```
//! The task's stdout goes to OUTPUT-FILE and its stderr to OUTPUT-FILE.err (`file://`
//! URIs); the exit status is printed and becomes this program's. `--env` gives the whole
//! environment (`PATH=/` without any, nothing with `--clear-env`), `--mount` a read-write bind mount, `--no-root` a
//! spec without a root filesystem (the WASI testsuite's runs: nothing preopened unless a
//! test asks). `--resources` gives the spec's `linux.resources` (JSON) at Create, and
//! `--update` sends the Task API's Update with those `LinuxResources` once the task runs
//! (fields no `ctr` flag reaches: pids, blockIO). `--cgroup` gives `linux.cgroupsPath`.

use grpc_api::containerd::services::containers::v1::container::Runtime;
use grpc_api::containerd::services::containers::v1::{
    Container, CreateContainerRequest, DeleteContainerRequest,
};
use grpc_api::containerd::services::tasks::v1::{
    CreateTaskRequest, DeleteTaskRequest, StartRequest, UpdateTaskRequest, WaitRequest,
};
use grpc_api::{namespaced, Client};
use prost_types::Any;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut env, mut mounts, mut root, mut clear_env) = (Vec::new(), Vec::new(), true, false);
    let mut annotations = serde_json::Map::new();
    let (mut resources, mut update, mut cgroup) = (None, None, None::<String>);
    while let Some(flag) = argv.first().cloned() {
        match flag.as_str() {
            "--env" if argv.len() > 1 => env.push(argv.remove(1)),
            "--mount" if argv.len() > 1 => {
                let m = argv.remove(1);
                let (src, dst) = m.split_once(':').ok_or("--mount SRC:DST")?;
                mounts.push(serde_json::json!({
                    "destination": dst, "type": "bind", "source": src, "options": ["rbind", "rw"]
                }));
            }
            "--annotation" if argv.len() > 1 => {
                let a = argv.remove(1);
                let (k, v) = a.split_once('=').ok_or("--annotation K=V")?;
                annotations.insert(k.to_owned(), v.into());
            }
            "--resources" if argv.len() > 1 => {
                resources = Some(serde_json::from_str::<serde_json::Value>(&argv.remove(1))?);
            }
            "--cgroup" if argv.len() > 1 => cgroup = Some(argv.remove(1)),
            "--update" if argv.len() > 1 => {
                update = Some(serde_json::from_str::<serde_json::Value>(&argv.remove(1))?);
            }
            "--no-root" => root = false,
            "--clear-env" => clear_env = true,
            _ => break,
        }
        argv.remove(0);
    }
    if env.is_empty() && !clear_env {
        env.push("PATH=/".to_owned());
    }
    let [socket, ns, runtime, image, id, output, args @ ..] = argv.as_slice() else {
        return Err(
            "usage: run-via-api [--env K=V]... [--clear-env] [--mount SRC:DST]... [--no-root] \
                    [--annotation K=V]... [--resources JSON] [--update JSON] [--cgroup PATH] SOCKET NAMESPACE RUNTIME IMAGE ID OUTPUT-FILE [ARGS...]"
                .into(),
        );
    };
    let client = Client::connect(socket).await?;
    let mut spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": args, "cwd": "/", "env": env, "user": {"uid": 0, "gid": 0}},
        "mounts": mounts,
        // As ctr names a container's cgroup, unless told.
        "linux": {"cgroupsPath": cgroup.unwrap_or_else(|| format!("/{ns}/{id}"))},
        "annotations": annotations,
    });
    if let Some(resources) = resources {
        spec["linux"]["resources"] = resources;
    }
    if root {
        spec["root"] = serde_json::json!({"path": "rootfs"});
    }
    let container = Container {
        id: id.clone(),
        image: image.clone(),
        runtime: Some(Runtime {
            name: runtime.clone(),
            options: None,
        }),
        spec: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: serde_json::to_vec(&spec)?,
        }),
        ..Default::default()
    };
    client
        .containers()
        .create(namespaced(
            CreateContainerRequest {
                container: Some(container),
            },
            ns,
        ))
        .await?;
    let uri = format!("file://{output}");
    let err_uri = format!("file://{output}.err");
    let result = async {
        client
            .tasks()
            .create(namespaced(
                CreateTaskRequest {
                    container_id: id.clone(),
                    stdout: uri.clone(),
                    stderr: err_uri.clone(),
                    ..Default::default()
                },
                ns,
            ))
            .await?;
        client
            .tasks()
            .start(namespaced(
                StartRequest {
                    container_id: id.clone(),
                    ..Default::default()
                },
                ns,
            ))
            .await?;
        if let Some(update) = &update {
            client
                .tasks()
                .update(namespaced(
                    UpdateTaskRequest {
                        container_id: id.clone(),
                        resources: Some(Any {
                            type_url:
                                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                                    .into(),
                            value: serde_json::to_vec(update)?,
                        }),
                        ..Default::default()
                    },
                    ns,
                ))
                .await?;
            eprintln!("updated");
        }
        let status = client
            .tasks()
            .wait(namespaced(
                WaitRequest {
                    container_id: id.clone(),
                    ..Default::default()
                },
                ns,
            ))
            .await?
            .into_inner()
            .exit_status;
        client
            .tasks()
            .delete(namespaced(
                DeleteTaskRequest {
                    container_id: id.clone(),
                },
                ns,
            ))
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(status)
    }
    .await;
    client
        .containers()
        .delete(namespaced(DeleteContainerRequest { id: id.clone() }, ns))
        .await?;
    let status = result?;
    println!("exit status {status}");
    std::process::exit(i32::try_from(status).unwrap_or(1));
}
