//! The wasmtime engine: configuration sized for many small stores
//! (here), loading and checking a component ([`load`]), asking it for its
//! options ([`probe`]), naming its traps ([`trap`]), and the epoch
//! [`ticker`] that interrupts runaway guests.

mod load;
pub mod probe;
mod ticker;
pub mod trap;

pub use load::{
    guest_language, initial_memory_bytes, link, load, memory_limit_for, root_message, sha256_hex,
    transfer, Scenario,
};
pub use ticker::{EpochTicker, TICK};

use anyhow::{Context, Result};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Memories one component instance may hold: a wasip1-adapted component
/// has two (the guest's and the adapter's), a wasip2 one one. The pool is
/// sized for what the component needs ([`EngineSettings::memories`]).
pub const MAX_MEMORIES_PER_VU: u32 = 2;
/// Guard after each linear memory in the dense layout. Small, so 100,000
/// memories fit in the address space; bounds checks are explicit instead.
const MEMORY_GUARD: u64 = 64 << 10;
/// Address space each memory reserves in the wide layout: all a 32-bit
/// index can reach, so Cranelift needs no bounds check on loads and
/// stores (a memory-bound loop ran 1.3× slower with them).
const WIDE_RESERVATION: u64 = 4 << 30;
/// Guard after each memory in the wide layout: accesses whose static
/// offset is within it need no check either (statics sit at offsets of a
/// few MiB).
const WIDE_GUARD: u64 = 32 << 20;
/// Address space the wide layout may take for all memories: half of
/// x86-64's 128 TiB for user space, about 8,000 VUs of two memories or
/// 16,000 of one.
const WIDE_BUDGET: u64 = 64 << 40;
/// Stack of the fiber each VU runs guest code on (address space only).
const ASYNC_STACK: usize = 1 << 20;
/// Wasm stack a guest may use before a stack-overflow trap.
const MAX_WASM_STACK: usize = 512 << 10;
/// Host frames a sleep may sit under besides the guest's (the entry
/// trampolines, the host call's own frames), with a wide margin.
const HOST_FRAMES: usize = 256 << 10;
// A sleeping VU gives back its stack's dead pages below it; that range must
// stay inside its own fiber stack however deep the guest recursed. The
// bound holds because a sleep sits under one guest stack and the host's
// own frames: a host import that re-entered the guest (store access from a
// host call, component-model async nesting) would stack guest frames twice
// and must revisit HOST_FRAMES.
const _: () =
    assert!(MAX_WASM_STACK + HOST_FRAMES + host_api::fiber_stack::min_stack() <= ASYNC_STACK);

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
    /// Linear memories per VU (at most [`MAX_MEMORIES_PER_VU`]).
    pub memories: u32,
    /// Elements per table.
    pub table_elements: u32,
    /// Map initial memories copy-on-write from one image (see
    /// [`wants_cow`]).
    pub cow: bool,
    /// The wide memory layout (see [`EngineSettings::wide_fits`]): code
    /// compiled for one layout runs only in an engine of that layout.
    pub wide: bool,
    /// Fill tables at instantiation rather than at each element's first
    /// indirect call (see [`small_tables`]). Compiled code follows the
    /// choice.
    pub eager_tables: bool,
    /// Take the run's instances from wasmtime's pooling allocator (see
    /// [`small_tables`]); otherwise each VU maps its own memories and
    /// stack, and its tables live in the heap.
    pub pool: bool,
}

/// Whether a component's initial memories are big enough to share: an
/// interpreter's heap snapshot (megabytes, mostly never written) is then
/// mapped copy-on-write, so VUs share its untouched pages; a small Rust
/// guest is cheaper copied.
pub fn wants_cow(bytes: &[u8]) -> bool {
    load::initial_data_bytes(bytes) > COW_FROM
}

/// Initial data, bytes, from which memories are mapped copy-on-write.
const COW_FROM: u64 = 1 << 20;

/// Whether a component's tables are small: a Rust guest's few dozen
/// elements, against an interpreter's thousands. Small tables are filled
/// at instantiation and kept in the heap, out of wasmtime's pool:
/// - the pool gives every table a slot of whole pages, so a Rust guest's
///   two tables of a few hundred bytes took 8 KiB per VU (and a page
///   first mapped read-only, from the kernel's zero page, faulted again at
///   the first indirect call, with a TLB flush that interrupts every core
///   running the process: 7% of the CPU of starting 10,000 VUs);
/// - an interpreter's tables are mostly never called: in the pool, filled
///   lazily, their untouched pages cost nothing (and its copy-on-write
///   heap image maps as cheaply there).
pub fn small_tables(bytes: &[u8]) -> bool {
    load::initial_table_elements(bytes) <= SMALL_TABLES_UP_TO
}

/// Table elements, all tables together, up to which a component's tables
/// count as small: one page of them.
const SMALL_TABLES_UP_TO: u64 = 512;

impl EngineSettings {
    /// Whether the wide layout suits these VUs, `memories` each, which
    /// may grow to `memory_limit`: each memory reserves 4 GiB of address
    /// space and bounds checks vanish from compiled code, while that fits
    /// in [`WIDE_BUDGET`]; more VUs get the dense layout (a reservation
    /// the size of the limit, explicit bounds checks).
    pub fn wide_fits(&self) -> bool {
        let per_vu = u64::from(self.memories) * (WIDE_RESERVATION + WIDE_GUARD);
        self.memory_limit <= WIDE_RESERVATION && u64::from(self.instances) * per_vu <= WIDE_BUDGET
    }

    /// Each memory's reservation and guard, bytes.
    fn reservation(&self) -> (u64, u64) {
        if self.wide {
            (WIDE_RESERVATION, WIDE_GUARD)
        } else {
            (self.memory_limit, MEMORY_GUARD)
        }
    }

    /// The per-store limiter matching these settings.
    pub fn limiter(&self) -> host_api::Limiter {
        host_api::Limiter {
            memory: usize::try_from(self.memory_limit).unwrap_or(usize::MAX),
            table_elements: self.table_elements as usize,
            instances: self.core_instances as usize + 1,
            tables: self.tables as usize,
            memories: self.memories as usize,
            held: 0,
        }
    }

    /// Kernel memory mappings the VUs will need, roughly.
    pub fn map_count_needed(&self) -> u64 {
        // Measured: ~2 per async stack (guard page) and ~2 per live
        // instance's memory and pooled tables; plus a margin for the
        // runtime.
        u64::from(self.instances) * if self.cow { 7 } else { 5 } + 4_096
    }

    /// Virtual address space the VUs' memories and stacks reserve, bytes.
    pub fn address_space_needed(&self) -> u64 {
        let n = u64::from(self.instances);
        let (reservation, guard) = self.reservation();
        let memories = n * u64::from(self.memories) * (reservation + guard);
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
        .total_memories(n.saturating_mul(settings.memories))
        .total_tables(n.saturating_mul(settings.tables))
        .total_stacks(n)
        .max_core_instances_per_component(settings.core_instances)
        .max_memories_per_component(settings.memories)
        .max_tables_per_component(settings.tables)
        .max_memories_per_module(1)
        .max_tables_per_module(settings.tables)
        .table_elements(settings.table_elements as usize)
        .max_memory_size(memory)
        .decommit_batch_size(32);

    let (reservation, guard) = settings.reservation();
    let mut cfg = Config::new();
    cfg.epoch_interruption(true)
        .consume_fuel(settings.fuel)
        .async_stack_size(ASYNC_STACK)
        .max_wasm_stack(MAX_WASM_STACK)
        .memory_reservation(reservation)
        .memory_guard_size(guard)
        .memory_reservation_for_growth(0)
        // Copy-on-write init costs two more mappings per VU and buys
        // nothing for small guests.
        .memory_init_cow(settings.cow)
        .table_lazy_init(!settings.eager_tables)
        // Traps are classified by code; capturing backtraces would make a
        // VU that traps in a loop expensive for everyone else.
        .wasm_backtrace_max_frames(None);
    if pooling {
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    // Compiled code is kept on disk by the component's hash: an
    // interpreter (CPython, a JS engine) takes seconds to compile, then
    // loads in a fraction of one the next time.
    cfg.cache(compile_cache());
    Engine::new(&cfg)
        .map_err(anyhow::Error::from)
        .context("cannot set up the WebAssembly engine")
}

/// The on-disk cache of compiled components: `$RUNNER_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/runner`, else `~/.cache/runner`; none if it cannot be
/// made (the run then compiles, as without a cache).
fn compile_cache() -> Option<wasmtime::Cache> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    };
    let dir = env("RUNNER_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("runner")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/runner")))?
        .join("compiled");
    std::fs::create_dir_all(&dir).ok()?;
    let dir = std::fs::canonicalize(&dir).ok()?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(dir);
    match wasmtime::Cache::new(config) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::debug!("no compile cache: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(instances: u32, wide: bool) -> EngineSettings {
        EngineSettings {
            instances,
            memory_limit: 32 << 20,
            fuel: false,
            core_instances: 4,
            tables: 2,
            memories: 2,
            table_elements: 1000,
            cow: false,
            wide,
            eager_tables: true,
            pool: false,
        }
    }

    #[test]
    fn a_rust_guests_tables_are_small_and_an_interpreters_are_not() {
        const HEADER: [u8; 8] = [0, b'a', b's', b'm', 1, 0, 0, 0];
        // Table sections: hello-http's two tables (55 and 12 funcrefs),
        // and CPython's 5,714.
        let rust = [&HEADER[..], &[4, 7, 2, 0x70, 0, 55, 0x70, 0, 12]].concat();
        let python = [&HEADER[..], &[4, 5, 1, 0x70, 0, 0xD2, 0x2C]].concat();
        assert_eq!(load::initial_table_elements(&rust), 67);
        assert_eq!(load::initial_table_elements(&python), 5_714);
        assert!(small_tables(&rust));
        assert!(!small_tables(&python));
    }

    #[test]
    fn the_wide_layout_is_for_runs_whose_memories_fit_and_code_follows_it() {
        let fits = |instances, memories, memory_limit| {
            EngineSettings {
                instances,
                memories,
                memory_limit,
                ..settings(1, true)
            }
            .wide_fits()
        };
        assert!(fits(1, 2, 32 << 20));
        assert!(fits(7_000, 2, 256 << 20));
        assert!(!fits(10_000, 2, 32 << 20));
        // A component with one memory (wasip2) fits twice as many VUs.
        assert!(fits(10_000, 1, 32 << 20));
        assert!(fits(15_000, 1, 32 << 20));
        assert!(!fits(17_000, 1, 32 << 20));
        assert!(!fits(1, 1, 8 << 30));
        // 4 GiB and a guard per memory, against the limit and 64 KiB.
        assert_eq!(
            settings(1000, true).address_space_needed()
                - settings(1000, false).address_space_needed(),
            1000 * 2 * ((4 << 30) + (32 << 20) - (32 << 20) - (64 << 10))
        );
        // Code compiled for one layout does not load into the other, which
        // is why a run too big for the wide layout compiles again.
        let wat = "(component (core module (memory 1) (func (export \"f\") (result i32) i32.const 0 i32.load)))";
        let wide = build(&settings(1, true), false).expect("engine");
        let dense = build(&settings(1, false), true).expect("engine");
        let component = wasmtime::component::Component::new(&wide, wat).expect("compiles");
        assert!(load::transfer(&component, &dense).is_err());
        let also_wide = build(&settings(2, true), true).expect("engine");
        assert!(load::transfer(&component, &also_wide).is_ok());
    }
}
