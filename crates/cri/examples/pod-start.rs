//! Pod start latency through the CRI, for `cargo xtask bench pod`: runs the Pod of a
//! manifest N times — RunPodSandbox, then CreateContainer + StartContainer of each container
//! (images already present) — and prints the milliseconds from RunPodSandbox to the last
//! container started, one run a line; each pod is removed before the next.
//!
//! usage: pod-start ENDPOINT MANIFEST RUNS LOG_DIR PODS_DIR

use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, manifest, runs, log_dir, pods_dir] = args.as_slice() else {
        return Err("usage: pod-start ENDPOINT MANIFEST RUNS LOG_DIR PODS_DIR".into());
    };
    let cri = cri::Cri::connect(endpoint).await?;
    let manifests = cri::Manifests::load(&[manifest])?;
    let pod = manifests.pods.first().ok_or("no Pod in the manifest")?;
    for run in 0..runs.parse::<u32>()? {
        let plan = cri::PodPlan::new(
            pod,
            &manifests,
            &cri::PlanOptions::new(
                log_dir,
                pods_dir,
                format!("bench-{}-{run}", std::process::id()),
                cri::hostname(),
            ),
        )?;
        let mut sink = |_: &str, _: &cri::Entry| {};
        let t0 = Instant::now();
        let outcome = cri::run_pod(
            &cri,
            &plan,
            &|_| Ok(None),
            true,
            &mut sink,
            std::future::pending(),
        )
        .await?;
        let took = t0.elapsed();
        println!("{:.3}", took.as_secs_f64() * 1000.0);
        let sandboxes = cri::find_pods(&cri, &outcome.sandbox_id).await?;
        cri::remove_pods(&cri, &sandboxes, 0, pods_dir.as_ref()).await?;
    }
    Ok(())
}
