//! wasmtime engines, the linker of granted imports, and the epoch ticker that enforces
//! per-invocation time limits.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::bindings::MessageHandler as Handler;
use super::cache::Cache;
use super::recent::Recent;
use super::state::HostState;

/// How the host is set up.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where precompiled components are kept; `None` disables the cache. Created with mode
    /// 0700; one its group or others can write is refused (a cache file is native code).
    pub cache_dir: Option<PathBuf>,
    /// Most component instances alive at once, per engine (each plugin keeps up to its
    /// `instances` warm). Sizes the pooling allocator.
    pub max_instances: u32,
    /// Largest linear memory any plugin may be granted, in bytes.
    pub max_memory_bytes: u64,
    /// Granularity of time limits.
    pub epoch_tick: Duration,
    /// Compiled code of recently loaded components kept in memory, in bytes, so that loading
    /// one again skips its precompiled file (see `recent.rs`); 0 keeps none.
    pub memory_cache_bytes: usize,
}

/// The default of [`HostOptions::memory_cache_bytes`] (and of `server.compiled_cache_memory`).
pub const DEFAULT_MEMORY_CACHE_BYTES: usize = 128 << 20;

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            cache_dir: None,
            max_instances: 128,
            max_memory_bytes: 4 << 30,
            epoch_tick: Duration::from_millis(1),
            memory_cache_bytes: DEFAULT_MEMORY_CACHE_BYTES,
        }
    }
}

impl HostOptions {
    /// Sets the precompiled-component cache directory.
    #[must_use]
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Sets how much compiled code of recently loaded components is kept in memory.
    #[must_use]
    pub fn memory_cache_bytes(mut self, bytes: usize) -> Self {
        self.memory_cache_bytes = bytes;
        self
    }

    /// Sets the size of the instance pool.
    #[must_use]
    pub fn max_instances(mut self, n: u32) -> Self {
        self.max_instances = n;
        self
    }
}

/// One engine and the linker of host imports for it.
pub(super) struct EngineSet {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    /// The linker of aggregates (world `aggregate`: `log` only).
    pub aggregate_linker: Linker<HostState>,
}

/// The wasm host. Cheap to share behind an `Arc`; plugins keep it alive.
pub struct Host {
    /// Without fuel metering.
    pub(super) plain: EngineSet,
    /// With fuel metering, for plugins that set a fuel limit.
    pub(super) metered: EngineSet,
    pub(super) cache: Option<Cache>,
    /// The memory tier of the cache: recently loaded components, ready to instantiate.
    pub(super) recent: Recent,
    pub(super) options: HostOptions,
    /// Threads for compiling while traffic flows, half the cores (made on first use).
    background: std::sync::OnceLock<rayon::ThreadPool>,
    _ticker: Ticker,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Builds the engines and starts the epoch ticker.
    pub fn new(options: HostOptions) -> anyhow::Result<Arc<Host>> {
        let plain = engine_set(&options, false)?;
        let metered = engine_set(&options, true)?;
        if let Some(dir) = &options.cache_dir {
            super::cache::ensure_private_dir(dir)
                .context("cannot use the precompiled-component cache")?;
        }
        let cache = options.cache_dir.clone().map(Cache::new);
        let ticker = Ticker::start(
            vec![plain.engine.clone(), metered.engine.clone()],
            options.epoch_tick,
        );
        Ok(Arc::new(Host {
            plain,
            metered,
            cache,
            recent: Recent::new(options.memory_cache_bytes),
            options,
            background: std::sync::OnceLock::new(),
            _ticker: ticker,
        }))
    }

    /// Runs `f` (a load that may compile) on the background pool of half the cores, so a
    /// deploy while traffic flows leaves the other cores to invocations. Falls back to the
    /// calling thread if the pool cannot be made.
    pub fn in_background<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let pool = match self.background.get() {
            Some(p) => Some(p),
            None => match super::background::pool() {
                Ok(p) => Some(self.background.get_or_init(|| p)),
                Err(e) => {
                    tracing::warn!(
                        "no background compile threads ({e:#}); compiling on the deploying thread"
                    );
                    None
                }
            },
        };
        match pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Epoch ticks allowed for an invocation of `timeout`.
    pub(super) fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = self.options.epoch_tick.as_nanos().max(1);
        // +1: the current tick may be about to end.
        (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
    }
}

/// The engine settings weir uses. Stated in the README's performance section.
fn engine_config(options: &HostOptions, fuel: bool) -> anyhow::Result<Config> {
    let mut pool = PoolingAllocationConfig::default();
    let n = options.max_instances;
    pool.total_component_instances(n)
        // A componentized module has a few core instances (the module, shims, adapters); a
        // Python or JavaScript one dozens (see below). A limit on the count, not a reservation.
        .total_core_instances(n * 16)
        .total_memories(n)
        .total_tables(n * 2)
        .max_memory_size(usize::try_from(options.max_memory_bytes)?)
        .max_component_instance_size(1 << 20)
        // componentize-py and componentize-js components link dozens of core instances
        // (the interpreter, libc, shims, adapters): 38 for a Python handler.
        .max_core_instances_per_component(64)
        .max_memories_per_component(2)
        .max_tables_per_component(4);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .cranelift_opt_level(OptLevel::Speed)
        .epoch_interruption(true)
        .consume_fuel(fuel)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(config)
}

fn engine_set(options: &HostOptions, fuel: bool) -> anyhow::Result<EngineSet> {
    let engine = Engine::new(&engine_config(options, fuel)?)?;
    let mut linker = Linker::new(&engine);
    Handler::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    // The projection world imports the same interfaces (defined again, identically) plus the
    // type-only `es-types`.
    linker.allow_shadowing(true);
    super::bindings::projection::Projection::add_to_linker::<HostState, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )?;
    linker.allow_shadowing(false);
    let aggregate_linker = super::aggregate::linker(&engine)?;
    Ok(EngineSet {
        engine,
        linker,
        aggregate_linker,
    })
}

/// Advances the engines' epochs every tick until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engines: Vec<Engine>, tick: Duration) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    for e in &engines {
                        e.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch thread");
        Ticker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
