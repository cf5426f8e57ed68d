//! The wasmtime engine: configuration sized for many small stores, and
//! loading and validating a scenario component.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use host_api::{LoadTestPre, VuState};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch ticker advances; the granularity of CPU limits.
pub const TICK: Duration = Duration::from_millis(10);

/// Memories one component instance may hold (a wasip1-adapted component
/// has two: the guest's and the adapter's).
const MEMORIES_PER_VU: u32 = 2;
/// Guard after each linear memory. Small, so 100,000 memories fit in the
/// address space; bounds checks are explicit instead.
const MEMORY_GUARD: u64 = 64 << 10;
/// Stack of the fiber each VU runs guest code on (address space only).
const ASYNC_STACK: usize = 1 << 20;
/// Wasm stack a guest may use before a stack-overflow trap.
const MAX_WASM_STACK: usize = 512 << 10;

/// Engine settings that depend on the run.
#[derive(Clone, Copy, Debug)]
pub struct EngineSettings {
    /// Instances to provision: the number of VUs, plus spares.
    pub instances: u32,
    /// Linear memory cap per VU, bytes.
    pub memory_limit: u64,
    /// Meter fuel as well as epochs.
    pub fuel: bool,
    /// Core instances per VU (a wasip1-adapted component has several:
    /// the module, the adapter, shims).
    pub core_instances: u32,
    /// Tables per VU.
    pub tables: u32,
    /// Elements per table.
    pub table_elements: u32,
}

impl EngineSettings {
    /// The per-store limiter matching these settings.
    pub fn limiter(&self) -> host_api::Limiter {
        host_api::Limiter {
            memory: usize::try_from(self.memory_limit).unwrap_or(usize::MAX),
            table_elements: self.table_elements as usize,
            instances: self.core_instances as usize + 1,
            tables: self.tables as usize,
            memories: MEMORIES_PER_VU as usize,
        }
    }

    /// Kernel memory mappings the pooling allocator will need, roughly.
    pub fn map_count_needed(&self) -> u64 {
        // Measured: ~2 per async stack slot (guard page) and ~2 per live
        // instance's memory and tables; plus a margin for the runtime.
        u64::from(self.instances) * 5 + 4_096
    }

    /// Virtual address space the pools reserve, bytes.
    pub fn address_space_needed(&self) -> u64 {
        let n = u64::from(self.instances);
        let memories = n * u64::from(MEMORIES_PER_VU) * (self.memory_limit + MEMORY_GUARD);
        let stacks = n * (ASYNC_STACK as u64 + 4096);
        memories + stacks
    }
}

/// Builds the engine: epoch interruption, async, and with `pooling` a
/// pooling allocator sized for `settings.instances` VUs. Code compiled by
/// an engine built without pooling loads into one built with it.
pub fn build(settings: &EngineSettings, pooling: bool) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    let n = settings.instances;
    let memory = usize::try_from(settings.memory_limit)
        .context("--memory-limit is too large for this machine")?;
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(settings.core_instances))
        .total_memories(n.saturating_mul(MEMORIES_PER_VU))
        .total_tables(n.saturating_mul(settings.tables))
        .total_stacks(n)
        .max_core_instances_per_component(settings.core_instances)
        .max_memories_per_component(MEMORIES_PER_VU)
        .max_tables_per_component(settings.tables)
        .max_memories_per_module(1)
        .max_tables_per_module(settings.tables)
        .table_elements(settings.table_elements as usize)
        .max_memory_size(memory)
        .decommit_batch_size(32);

    let mut cfg = Config::new();
    cfg.epoch_interruption(true)
        .consume_fuel(settings.fuel)
        .async_stack_size(ASYNC_STACK)
        .max_wasm_stack(MAX_WASM_STACK)
        .memory_reservation(settings.memory_limit)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(0)
        // Copy-on-write init costs two more mappings per VU and buys
        // nothing for small guests.
        .memory_init_cow(false)
        // Traps are classified by code; capturing backtraces would make a
        // VU that traps in a loop expensive for everyone else.
        .wasm_backtrace_max_frames(None);
    if pooling {
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&cfg)
        .map_err(anyhow::Error::from)
        .context("cannot set up the WebAssembly engine")
}

/// A compiled, checked scenario component.
pub struct Scenario {
    /// The compiled component.
    pub component: Component,
    /// Size of the component file, bytes.
    pub size: u64,
    /// Whether it imports a networking interface (and may hold sockets).
    pub uses_network: bool,
}

const WASM_MAGIC: [u8; 4] = *b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Reads, checks, compiles and links the scenario at `path`. Every failure
/// is one clear sentence naming the file and what to do.
pub fn load(engine: &Engine, path: &Path, settings: &EngineSettings) -> Result<Scenario> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read scenario {shown}"))?;
    if bytes.len() < 8 || bytes[..4] != WASM_MAGIC {
        bail!("{shown} is not a WebAssembly file; build a scenario with `cargo component build --release`");
    }
    if bytes[4..8] == CORE_VERSION {
        bail!(
            "{shown} is a core WebAssembly module, not a component; build it with `cargo component build --release` \
             (or wrap it with `wasm-tools component new`)"
        );
    }
    let component = Component::new(engine, &bytes).map_err(|e| {
        anyhow::anyhow!(
            "{shown} is not a valid WebAssembly component: {}",
            root_message(&e.into())
        )
    })?;
    if let Some(r) = component.resources_required() {
        if r.num_memories > MEMORIES_PER_VU {
            bail!(
                "{shown} needs {} memories per instance; the runner allows {MEMORIES_PER_VU}",
                r.num_memories
            );
        }
        if r.num_tables > settings.tables {
            bail!(
                "{shown} needs {} tables per instance; raise --table-limit to at least that",
                r.num_tables
            );
        }
    }
    // Link once here so a component for another world fails now, not in
    // every VU.
    link(engine, &component, path)?;
    let uses_network = component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("runner:scenario/http"));
    Ok(Scenario {
        component,
        size: bytes.len() as u64,
        uses_network,
    })
}

/// Links `component` against the host's imports and pre-instantiates it.
pub fn link(engine: &Engine, component: &Component, path: &Path) -> Result<LoadTestPre<VuState>> {
    let shown = path.display();
    let mut linker: Linker<VuState> = Linker::new(engine);
    host_api::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
    let pre = linker.instantiate_pre(component).map_err(|e| {
        anyhow::anyhow!(
            "{shown} does not fit the {} world: {}; rebuild it against this runner's wit/ (guest-sdk)",
            host_api::WIT_PACKAGE,
            root_message(&e.into())
        )
    })?;
    let pre = LoadTestPre::new(pre).map_err(|e| {
        anyhow::anyhow!(
            "{shown} does not export the {} scenario interface: {}; export it with guest_sdk::export_scenario!",
            host_api::WIT_PACKAGE,
            root_message(&e.into())
        )
    })?;
    Ok(pre)
}

/// Moves a component compiled by one engine into another with the same
/// code-generation settings, without compiling it again.
pub fn transfer(component: &Component, to: &Engine) -> Result<Component> {
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    // SAFETY: the bytes were produced just above by wasmtime's own
    // serializer, and wasmtime checks they match the target engine.
    unsafe { Component::deserialize(to, &bytes) }
        .map_err(anyhow::Error::from)
        .context("cannot move the compiled scenario into the pooled engine")
}

/// The most specific message of an error chain, on one line.
pub fn root_message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.join(": ").replace('\n', " ")
}

/// Advances the engine's epoch every [`TICK`] until dropped.
pub struct EpochTicker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the ticker thread. A plain thread, not a tokio task, so a
    /// busy runtime cannot delay the ticks that interrupt runaway guests.
    pub fn start(engine: Engine) -> Result<Self> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
