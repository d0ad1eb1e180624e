//! The start path of our shim, phase by phase, from the timings its spans write under
//! `WASMPOD_TIMINGS` (`crates/shim/src/logging.rs`): one line per closed phase,
//! `<unix µs at start> <µs> <phase> <container id> <pid>`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{median, ms};

/// The phases in the order a container goes through them, and what each is.
const PHASES: &[(&str, &str)] = &[
    (
        "shim.start",
        "`start`: find or spawn the serving shim, answer containerd",
    ),
    ("create", "Create, whole"),
    ("create.mount", "  mount the rootfs snapshot"),
    ("create.spec", "  read config.json"),
    ("create.policy", "  spec → run policy"),
    ("create.read", "  read the entrypoint"),
    (
        "create.load",
        "  precompile cache lookup (or compile) + check",
    ),
    ("create.stdio", "  open the FIFOs"),
    ("start", "Start, whole"),
    (
        "guest.setup",
        "  WASI context + instantiate, to the first guest instruction",
    ),
    ("guest.run", "the guest's task: setup, run, exit queued"),
    ("delete", "Delete, whole"),
    (
        "create.event",
        "TaskCreate, queued → acknowledged by containerd (after Create answers)",
    ),
    ("start.event", "TaskStart, likewise"),
    ("exit.event", "TaskExit, likewise"),
    ("delete.event", "TaskDelete, likewise"),
];

/// One phase of one container.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    pub(crate) start_us: u128,
    pub(crate) took: Duration,
}

/// Every timed phase of the containers whose id starts with `prefix`: phase → id → the
/// phase (the last one of that name, should a call repeat).
pub(crate) fn read(
    timings: &Path,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, Phase>>> {
    let text = std::fs::read_to_string(timings)?;
    let mut out: BTreeMap<String, BTreeMap<String, Phase>> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [start, took, phase, id, _pid] = fields[..] else {
            continue;
        };
        if !id.starts_with(prefix) {
            continue;
        }
        let (Ok(start_us), Ok(took_us)) = (start.parse::<u128>(), took.parse::<u64>()) else {
            continue;
        };
        out.entry(phase.to_owned()).or_default().insert(
            id.to_owned(),
            Phase {
                start_us,
                took: Duration::from_micros(took_us),
            },
        );
    }
    Ok(out)
}

/// Prints the median of each phase over the containers whose id starts with `prefix`,
/// and what of `wall` (the median `ctr run --rm`) is left to containerd and ctr.
pub(crate) fn print(timings: &Path, prefix: &str, wall: Duration) -> anyhow::Result<()> {
    let phases = read(timings, prefix)?;
    println!("| phase | median | what |");
    println!("|---|---|---|");
    let med = |name: &str| {
        phases
            .get(name)
            .filter(|by_id| !by_id.is_empty())
            .map(|by_id| median(by_id.values().map(|p| p.took).collect()))
    };
    for (name, what) in PHASES {
        if let Some(m) = med(name) {
            println!("| {name} | {} | {what} |", ms(m));
        }
    }
    // First guest instruction, counted from the Start call.
    if let (Some(start), Some(setup)) = (phases.get("start"), phases.get("guest.setup")) {
        let to_first: Vec<Duration> = start
            .iter()
            .filter_map(|(id, s)| {
                let g = setup.get(id)?;
                let end = g.start_us + g.took.as_micros();
                Some(Duration::from_micros(
                    u64::try_from(end.saturating_sub(s.start_us)).unwrap_or(u64::MAX),
                ))
            })
            .collect();
        if !to_first.is_empty() {
            println!(
                "| Start → first guest instruction | {} | |",
                ms(median(to_first))
            );
        }
    }
    let ours: Duration = ["shim.start", "create", "start", "guest.run", "delete"]
        .iter()
        .filter_map(|p| med(p))
        .sum();
    println!(
        "| in our shim (the phases above, whole) | {} | of {} per `ctr run --rm` |",
        ms(ours),
        ms(wall)
    );
    println!(
        "| the rest: ctr, containerd, process starts | {} | |",
        ms(wall.saturating_sub(ours))
    );
    Ok(())
}
