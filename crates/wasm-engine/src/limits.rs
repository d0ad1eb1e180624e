//! The memory cap: one budget over all linear memories and tables of a store.

use crate::run::MemoryGauge;

/// Bytes charged per table element (a function reference is a pointer).
const TABLE_ELEMENT_BYTES: usize = 8;

/// A [`wasmtime::ResourceLimiter`] that charges every memory and table of a store against
/// one budget. A guest that asks for more sees its growth fail (`memory.grow` returns -1,
/// `malloc` returns NULL), or with `oom_kill` is stopped by an [`OutOfMemory`] trap, as a
/// memory cgroup's OOM killer would stop a process; the host is unaffected either way.
#[derive(Debug, Default)]
pub(crate) struct MemoryBudget {
    used: usize,
    peak: usize,
    denied: bool,
    oom_kill: bool,
    gauge: MemoryGauge,
    /// The gauge is shared with other stores (a server's instances): this store charges
    /// its growth to it and gives its bytes back when dropped, and the cap is theirs
    /// together, as a container's memory limit is.
    shared: bool,
}

/// The trap that ends a guest past its memory cap when the run asked for OOM kills.
#[derive(Debug, thiserror::Error)]
#[error("out of memory: the guest asked for {asked} bytes beyond its {cap}-byte limit")]
pub(crate) struct OutOfMemory {
    pub(crate) cap: usize,
    pub(crate) asked: usize,
}

impl MemoryBudget {
    /// A budget capped at `cap`; the cap lives in `gauge`, where it can be changed while
    /// the guest runs.
    pub(crate) fn new(cap: Option<u64>, oom_kill: bool, gauge: MemoryGauge) -> Self {
        gauge.set_limit(cap);
        Self {
            oom_kill,
            gauge,
            ..Self::default()
        }
    }

    /// A budget charged to `gauge` together with every other store given the same gauge:
    /// their memories and tables together stay under its cap.
    pub(crate) fn shared(gauge: MemoryGauge) -> Self {
        Self {
            gauge,
            shared: true,
            ..Self::default()
        }
    }

    /// The cap now, in bytes.
    fn cap(&self) -> Option<usize> {
        self.gauge
            .limit()
            .map(|c| usize::try_from(c).unwrap_or(usize::MAX))
    }

    /// `grow`, as the limiter answers: refused growth is a trap under `oom_kill`.
    fn answer(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        if self.grow(current, desired) {
            return Ok(true);
        }
        match self.cap() {
            Some(cap) if self.oom_kill => Err(wasmtime::Error::new(OutOfMemory {
                cap,
                asked: desired.saturating_sub(current),
            })),
            _ => Ok(false),
        }
    }

    /// Whether a growth was refused because of the cap.
    pub(crate) fn denied(&self) -> bool {
        self.denied
    }

    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if self.shared {
            let delta = next.saturating_sub(self.used) as u64;
            if !self.gauge.try_charge(delta) {
                self.denied = true;
                tracing::debug!(asked = delta, cap = ?self.cap(), "memory growth refused");
                return false;
            }
            self.used = next;
            self.peak = self.peak.max(next);
            return true;
        }
        let cap = self.cap();
        if cap.is_some_and(|cap| next > cap) {
            self.denied = true;
            tracing::debug!(
                used = self.used,
                asked = desired - current,
                ?cap,
                "memory growth refused"
            );
            return false;
        }
        self.used = next;
        self.peak = self.peak.max(next);
        self.gauge.set(next);
        true
    }
}

impl Drop for MemoryBudget {
    fn drop(&mut self) {
        if self.shared {
            self.gauge.release(self.used as u64);
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.answer(current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.answer(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter as _;

    #[test]
    fn shared_budgets_hold_one_cap_together_and_give_back_on_drop() {
        let gauge = MemoryGauge::default();
        gauge.set_limit(Some(100));
        let mut a = MemoryBudget::shared(gauge.clone());
        let mut b = MemoryBudget::shared(gauge.clone());
        assert!(a.memory_growing(0, 60, None).unwrap());
        assert!(!b.memory_growing(0, 50, None).unwrap(), "60 + 50 > 100");
        assert!(b.memory_growing(0, 40, None).unwrap());
        assert_eq!(gauge.bytes(), 100);
        drop(a);
        assert_eq!(gauge.bytes(), 40);
        assert!(b.memory_growing(40, 90, None).unwrap());
        drop(b);
        assert_eq!(gauge.bytes(), 0);
    }

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut b = MemoryBudget::new(Some(100), false, MemoryGauge::default());
        assert!(b.memory_growing(0, 60, None).unwrap());
        assert!(b.table_growing(0, 5, None).unwrap()); // 40 bytes
        assert_eq!(b.used, 100);
        assert_eq!(b.gauge.bytes(), 100);
        assert!(!b.memory_growing(60, 61, None).unwrap());
        assert!(b.denied());
        assert_eq!(b.used, 100);
    }

    #[test]
    fn growth_replaces_the_old_size() {
        let mut b = MemoryBudget::new(Some(100), false, MemoryGauge::default());
        assert!(b.memory_growing(0, 50, None).unwrap());
        assert!(b.memory_growing(50, 100, None).unwrap());
        assert_eq!(b.used, 100);
        assert_eq!(b.peak, 100);
        assert!(!b.denied());
    }

    #[test]
    fn oom_kill_turns_a_refusal_into_a_trap() {
        let mut b = MemoryBudget::new(Some(100), true, MemoryGauge::default());
        assert!(b.memory_growing(0, 100, None).unwrap());
        let e = b.memory_growing(100, 150, None).unwrap_err();
        let oom = e
            .downcast_ref::<OutOfMemory>()
            .expect("an OutOfMemory error");
        assert_eq!((oom.cap, oom.asked), (100, 50));
        assert!(b.denied());
        // A declared maximum is the module's own rule, not an OOM.
        assert!(!b.memory_growing(0, 10, Some(5)).unwrap());
    }

    #[test]
    fn the_cap_can_change_while_the_guest_runs() {
        let gauge = MemoryGauge::default();
        let mut b = MemoryBudget::new(Some(100), false, gauge.clone());
        assert_eq!(gauge.limit(), Some(100));
        assert!(b.memory_growing(0, 80, None).unwrap());
        gauge.set_limit(Some(50));
        assert!(
            !b.memory_growing(80, 90, None).unwrap(),
            "the new cap holds"
        );
        assert_eq!(b.used, 80, "memory already held stays");
        gauge.set_limit(None);
        assert!(b.memory_growing(80, 1 << 30, None).unwrap());
    }

    #[test]
    fn no_cap_means_unbounded_but_declared_maximums_hold() {
        let mut b = MemoryBudget::new(None, true, MemoryGauge::default());
        assert!(b.memory_growing(0, 1 << 40, None).unwrap());
        assert!(!b.memory_growing(0, 10, Some(5)).unwrap());
        assert!(!b.denied());
    }
}
