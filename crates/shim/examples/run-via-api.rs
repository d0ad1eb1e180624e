//! Runs an image under a runtime through containerd's gRPC API alone — create the
//! container, create and start its task, wait, delete — the way a client library does,
//! without `ctr run`. The e2e uses it for Wasm OCI artifacts, which Debian's containerd
//! 1.6.20 `ctr run` refuses ("mismatched image rootfs and manifest layers").
//!
//! ```text
//! run-via-api SOCKET NAMESPACE RUNTIME IMAGE ID OUTPUT-FILE [ARGS...]
//! ```
//! The task's stdout and stderr go to OUTPUT-FILE (a `file://` URI); the exit status is
//! printed and becomes this program's.

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Request;
use containerd_client::{with_namespace, Client};
use prost_types::Any;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let [socket, ns, runtime, image, id, output, args @ ..] = argv.as_slice() else {
        return Err(
            "usage: run-via-api SOCKET NAMESPACE RUNTIME IMAGE ID OUTPUT-FILE [ARGS...]".into(),
        );
    };
    let client = Client::from_path(socket).await?;
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": args, "cwd": "/", "env": ["PATH=/"], "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "linux": {},
    });
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
        .create(with_namespace!(
            CreateContainerRequest {
                container: Some(container)
            },
            ns
        ))
        .await?;
    let uri = format!("file://{output}");
    let result = async {
        client
            .tasks()
            .create(with_namespace!(
                CreateTaskRequest {
                    container_id: id.clone(),
                    stdout: uri.clone(),
                    stderr: uri.clone(),
                    ..Default::default()
                },
                ns
            ))
            .await?;
        client
            .tasks()
            .start(with_namespace!(
                StartRequest {
                    container_id: id.clone(),
                    ..Default::default()
                },
                ns
            ))
            .await?;
        let status = client
            .tasks()
            .wait(with_namespace!(
                WaitRequest {
                    container_id: id.clone(),
                    ..Default::default()
                },
                ns
            ))
            .await?
            .into_inner()
            .exit_status;
        client
            .tasks()
            .delete(with_namespace!(
                DeleteTaskRequest {
                    container_id: id.clone()
                },
                ns
            ))
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(status)
    }
    .await;
    client
        .containers()
        .delete(with_namespace!(
            DeleteContainerRequest { id: id.clone() },
            ns
        ))
        .await?;
    let status = result?;
    println!("exit status {status}");
    std::process::exit(i32::try_from(status).unwrap_or(1));
}
