//! Delete: what a container left on the node goes — its cgroup (and whatever still runs
//! in it), the artifact's program file, the root filesystem mount — and containerd hears
//! the exit it reports.

use containerd_shim::api;
use wasm_engine::EXIT_CANNOT_START;

use super::TaskService;
use crate::error::{Error, Result};
use crate::events::timestamp;
use crate::{process, rootfs};

impl TaskService {
    /// Delete: a stopped or never-started task goes, with its cgroup, program file and
    /// mount; a failed Create's leftover id answers as a task that could not start.
    pub(super) async fn delete_task(
        &self,
        req: &api::DeleteRequest,
    ) -> Result<api::DeleteResponse> {
        Self::no_exec(&req.exec_id, &req.id)?;
        let container = {
            let mut map = self.containers();
            let Some(c) = map.get(&req.id) else {
                drop(map);
                if self.forget_failed(&req.id) {
                    tracing::debug!("deleted after a failed create");
                    return Ok(api::DeleteResponse {
                        pid: 0,
                        exit_status: u32::try_from(EXIT_CANNOT_START).unwrap_or(126),
                        exited_at: Some(timestamp(std::time::SystemTime::now())).into(),
                        ..Default::default()
                    });
                }
                return Err(Error::NotFound(req.id.clone()));
            };
            c.check_delete()?;
            // A waiter still hears the exit, even from a Delete that came first.
            c.announce();
            map.remove(&req.id)
                .expect("present: looked up under the same lock")
        };
        let exit = container.exit();
        container.instance.delete(&req.id).await?;
        let _ = std::fs::remove_file(container.bundle.join(process::PROGRAM_FILE));
        self.stop_pod_holder(&req.id).await;
        if container.rootfs_mounted {
            rootfs::unmount(&req.id, &container.bundle)?;
        }
        let code = exit.map_or(0, |e| e.code);
        let at = exit.map_or_else(std::time::SystemTime::now, |e| e.at);
        tracing::info!(code, "deleted");
        let task_pid = container.pid();
        self.seams.events.delete(&req.id, task_pid, code, at).await;
        Ok(api::DeleteResponse {
            pid: task_pid,
            exit_status: code,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        })
    }
}
