//! The process-wide [`Engine`]: wasmtime configuration, the epoch ticker and the cache.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::run::{P1Host, P2Host};

/// How often the epoch advances. A spinning guest yields to the executor (and so can be
/// killed or time out) within about one tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How much of a pooled linear memory, and of a pooled table, is reset in place when its
/// instance ends, rather than handed back to the kernel. Handing it back (`madvise`) made
/// the next instance in the slot fault every page in again, and each of those faults and
/// resets flushed the TLB of every core the server runs on: a quarter of a loaded HTTP
/// server's CPU went to those flushes. Reset in place, the hello handler served 44,000
/// requests a second on two cores instead of 20,000. Where the kernel has `PAGEMAP_SCAN`
/// (Linux 6.7+), only the pages the instance wrote are reset and stay resident (the server
/// grew 25 → 27 MiB RSS under that load); on older kernels the first bytes of the slot up
/// to these sizes are zeroed and stay resident (38 MiB).
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// A tokio runtime fit to run guests on: `worker_threads` workers (0: current thread)
/// that look at timers and I/O after every task poll. A guest that computes yields only at
/// an epoch tick, so one poll of it can last 10 ms; with tokio's default (timers checked
/// every 61 polls) two spinning guests made a neighbour's 10 ms sleep wake over half a
/// second late. Checked after every poll, the lateness is about one tick.
pub fn guest_runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if worker_threads == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(worker_threads);
        b
    };
    builder.event_interval(1).enable_all().build()
}

/// Settings of an [`Engine`]: start from [`EngineConfig::default`] and set what differs,
/// in wasmtime's `Config` style (new settings can come without breaking callers).
///
/// ```
/// let config = wasm_engine::EngineConfig::default()
///     .cache_dir("/var/lib/wasmpod/cache")
///     .pooling(wasm_engine::Pooling::default());
/// assert!(config.cache_dir.is_some());
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Directory of the precompile cache. `None` compiles every load afresh.
    ///
    /// The directory is created with mode 0700. Entries are used only when the directory
    /// and the entry belong to this process's user and nobody else can write them; a
    /// corrupt, truncated or foreign entry is discarded and recompiled.
    pub cache_dir: Option<PathBuf>,
    /// Compile on the calling thread only, starting no compiler threads: for a process that
    /// must stay single-threaded until it has dropped its privileges.
    pub compile_on_caller_thread: bool,
    /// Keep instance slots ready (wasmtime's pooling allocator) instead of allocating
    /// memories, tables and stacks for every instance: for a server that instantiates per
    /// request. `None`: on demand.
    pub pooling: Option<Pooling>,
    /// Compile in a child process started this way, under each load's
    /// [`ProgramLimits`](crate::ProgramLimits) deadline and memory cap. `None`: compile in
    /// this process, without either.
    pub compiler: Option<crate::CompilerProcess>,
}

impl EngineConfig {
    /// Keeps compiled code in the precompile cache at `dir`.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Compiles on the calling thread only (see the field).
    pub fn compile_on_caller_thread(mut self, yes: bool) -> Self {
        self.compile_on_caller_thread = yes;
        self
    }

    /// Keeps instance slots ready, of these sizes.
    pub fn pooling(mut self, pooling: Pooling) -> Self {
        self.pooling = Some(pooling);
        self
    }

    /// Compiles in a child process started this way.
    pub fn compiler(mut self, compiler: crate::CompilerProcess) -> Self {
        self.compiler = Some(compiler);
        self
    }
}

/// The pooling allocator's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pooling {
    /// Component instances alive at once (requests in flight, over every server of the
    /// engine); past it an instantiation fails.
    pub instances: u32,
    /// The largest linear memory of an instance, in bytes.
    pub max_memory: u64,
}

impl Pooling {
    /// At most `instances` component instances at once, each with a linear memory of at
    /// most `max_memory` bytes.
    pub fn new(instances: u32, max_memory: u64) -> Self {
        Self {
            instances,
            max_memory,
        }
    }
}

impl Default for Pooling {
    fn default() -> Self {
        Self {
            instances: 1000,
            max_memory: 1 << 30,
        }
    }
}

/// The WebAssembly engine: compiler, precompile cache and epoch ticker.
///
/// Create one per process and clone it where needed; clones share everything.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) wasmtime: wasmtime::Engine,
    pub(crate) cache: Option<Cache>,
    pub(crate) compiler: Option<crate::CompilerProcess>,
    pub(crate) pooling: Option<Pooling>,
    /// The pool's component instances as served containers share them.
    pub(crate) slots: crate::serve::Slots,
    pub(crate) loaded: crate::program::Loaded,
    pub(crate) p1_linker: OnceLock<wasmtime::Linker<P1Host>>,
    pub(crate) p2_linker: OnceLock<wasmtime::component::Linker<P2Host>>,
    /// Whether the epoch ticker thread runs: it starts with the first run, so a process
    /// can load its program and then drop privileges while it still has one thread.
    ticker: std::sync::Mutex<bool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates the engine. Its epoch ticker thread starts with the first run.
    ///
    /// Defaults: Cranelift with optimisations, async support (guests run as futures that
    /// yield every 10 ms of CPU), epoch interruption, the component model.
    pub fn new(config: EngineConfig) -> Result<Self> {
        let mut wt = wasmtime::Config::new();
        wt.epoch_interruption(true)
            .wasm_component_model(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .parallel_compilation(!config.compile_on_caller_thread);
        if let Some(pool) = config.pooling {
            // A component is its module and the preview 1 adapter's, a few core instances
            // and two memories each.
            let n = pool.instances.max(1);
            let mut p = wasmtime::PoolingAllocationConfig::new();
            p.total_component_instances(n)
                .total_core_instances(n.saturating_mul(8))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(4))
                .total_stacks(n)
                .max_memory_size(usize::try_from(pool.max_memory).unwrap_or(usize::MAX))
                .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                .table_keep_resident(KEEP_RESIDENT_TABLE)
                .pagemap_scan(wasmtime::Enabled::Auto);
            wt.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
        }
        let wasmtime = wasmtime::Engine::new(&wt).map_err(|e| Error::Config(e.to_string()))?;
        let cache = match config.cache_dir {
            Some(dir) => Cache::open(dir, &wasmtime),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                wasmtime,
                cache,
                compiler: config.compiler,
                pooling: config.pooling,
                slots: crate::serve::Slots::new(
                    config.pooling.map_or(u32::MAX, |p| p.instances.max(1)),
                ),
                loaded: Default::default(),
                p1_linker: OnceLock::new(),
                p2_linker: OnceLock::new(),
                ticker: std::sync::Mutex::new(false),
            }),
        })
    }

    /// Starts the epoch ticker unless it runs already.
    pub(crate) fn start_ticker(&self) -> Result<()> {
        let mut started = self.inner.ticker.lock().unwrap_or_else(|p| p.into_inner());
        if !*started {
            spawn_ticker(&self.inner.wasmtime)?;
            *started = true;
        }
        Ok(())
    }

    /// Whether the precompile cache is in use.
    pub fn has_cache(&self) -> bool {
        self.inner.cache.is_some()
    }
}

/// Advances the engine's epoch every tick, until the engine is dropped.
fn spawn_ticker(engine: &wasmtime::Engine) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .map(drop)
        .map_err(|source| Error::Io {
            context: "starting the epoch ticker".into(),
            source,
        })
}
