//! The wasmtime host side of the `runner:scenario` WIT world.
//!
//! The WIT files in `wit/` are the contract; this crate implements each
//! imported interface in a module named after it ([`http`], [`vu`],
//! [`metrics`], [`types`]). [`VuState`] is the per-VU store data every host
//! call works on; [`RunContext`] is what all VUs of a run share.
//!
//! Measurements go to a [`recorder::Recorder`] whose aggregates
//! ([`recorder::Metrics`]) merge exactly, within a process and across nodes.

#![warn(missing_docs)]

pub mod client;
pub mod egress;
pub mod fiber_stack;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod limits;
pub mod messaging;
pub mod metrics;
pub mod mqtt;
mod mqtt_client;
pub mod nats;
mod nats_url;
pub mod recorder;
pub mod seeds;
pub mod source;
pub mod stdio;
mod stream;
pub mod types;
pub mod vu;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use limits::{CpuBudget, Limiter};
pub use recorder::{Metrics, Recorder};

/// Bindings generated from `wit/`.
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "load-test",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "runner:scenario/http.response": crate::http::ResponseData,
            "runner:scenario/mqtt.connection": crate::mqtt::Connection,
            "runner:scenario/nats.connection": crate::nats::Connection,
            "runner:scenario/nats.subscription": crate::nats::Subscription,
        },
    });
}

pub use bindings::exports::runner::scenario::scenario::{ScenarioOptions, VuClass};
pub use bindings::{LoadTest, LoadTestPre};

/// The WIT package this host implements, as guests name it.
pub const WIT_PACKAGE: &str = "runner:scenario@0.1.0";

/// What every VU of a run shares.
pub struct RunContext {
    /// Where measurements go.
    pub recorder: Arc<Recorder>,
    /// Values from `-e KEY=VALUE`.
    pub env: Arc<HashMap<String, String>>,
    /// When the run started; `vu.now` counts from here.
    pub started: Instant,
    /// HTTP client settings.
    pub http: http::ClientConfig,
    /// Where VUs may connect (HTTP, MQTT, NATS).
    pub egress: Arc<egress::Egress>,
    /// Rate limiter for guest log lines, so 10,000 chatty VUs cannot flood
    /// the runner's output.
    pub log_limit: Arc<stdio::LogLimit>,
    /// The run's seed: each VU's random streams derive from it and its id.
    pub seed: u64,
    /// The tasks that drive VUs' MQTT connections. A VU that ends leaves
    /// its connection saying DISCONNECT from its task; the run waits for
    /// them (see [`RunContext::connections_closed`]) so that the process
    /// does not exit with goodbyes unsent.
    pub connections: tokio_util::task::TaskTracker,
}

impl RunContext {
    /// Waits, at most [`CLOSE_WAIT`], until every connection task has
    /// ended; call it once every VU is gone. Returns how many were still
    /// open when the wait ran out.
    pub async fn connections_closed(&self) -> usize {
        self.connections.close();
        match tokio::time::timeout(CLOSE_WAIT, self.connections.wait()).await {
            Ok(()) => 0,
            Err(_) => self.connections.len(),
        }
    }
}

/// The longest a run waits at its end for its VUs' connections to close:
/// a connection's task is aborted `CLOSE_GRACE` (2 s) after its
/// VU let go of it; one second more covers the abort itself.
pub const CLOSE_WAIT: std::time::Duration =
    mqtt_client::CLOSE_GRACE.saturating_add(std::time::Duration::from_secs(1));

/// Per-VU store data: everything a host call of this VU can touch.
pub struct VuState {
    run: Arc<RunContext>,
    vu_id: u32,
    class: Arc<str>,
    env: Arc<HashMap<String, String>>,
    iteration: u64,
    table: ResourceTable,
    /// Boxed: most guests never call WASI, and a VU should not carry
    /// its 272 bytes inline for nothing.
    wasi: Option<Box<WasiCtx>>,
    http: client::Connections,
    live_responses: usize,
    mqtt_connections: usize,
    nats_connections: usize,
    subscriptions: usize,
    lag: Option<Duration>,
    /// Memory, table and instance caps of this VU.
    pub limiter: Limiter,
    /// CPU time allowed and used in the current iteration.
    pub budget: CpuBudget,
    /// Message of the guest's panic, if it reported one before trapping.
    pub panic_message: Option<String>,
}

impl VuState {
    /// Fresh state for VU `vu_id` of `class`.
    pub fn new(
        run: Arc<RunContext>,
        vu_id: u32,
        class: Arc<str>,
        limiter: Limiter,
        cpu: Duration,
    ) -> Self {
        let env = run.env.clone();
        Self {
            run,
            vu_id,
            class,
            env,
            iteration: 0,
            table: {
                let mut t = ResourceTable::new();
                t.set_max_capacity(limits::sizes::HANDLES);
                t
            },
            wasi: None,
            http: client::Connections::default(),
            live_responses: 0,
            mqtt_connections: 0,
            nats_connections: 0,
            subscriptions: 0,
            lag: None,
            limiter,
            budget: CpuBudget::new(cpu),
            panic_message: None,
        }
    }

    /// Sets the iteration number the guest sees and resets the CPU budget.
    /// `lag` is how late the iteration started against its schedule (open
    /// model); requests then also record their latency from the intended
    /// time.
    pub fn begin_iteration(&mut self, iteration: u64, lag: Option<Duration>) {
        self.iteration = iteration;
        self.lag = lag;
        self.budget.reset();
    }

    /// Replaces the values `vu.env` reads (a class's own, over `-e`).
    pub fn with_env(mut self, env: Arc<HashMap<String, String>>) -> Self {
        self.env = env;
        self
    }

    /// What the current iteration cost so far (fuel aside).
    pub fn cost(&self) -> recorder::IterationCost {
        let (guest, host) = self.budget.this_iteration();
        recorder::IterationCost {
            guest_us: u64::try_from(guest.as_micros()).unwrap_or(u64::MAX),
            host_us: u64::try_from(host.as_micros()).unwrap_or(u64::MAX),
            memory: self.limiter.held as u64,
            fuel: 0,
        }
    }

    /// This VU's id.
    pub fn vu_id(&self) -> u32 {
        self.vu_id
    }

    /// The shared run context.
    pub fn run(&self) -> &RunContext {
        &self.run
    }

    /// Marks the end of a host call that may have parked the VU, so the
    /// parked time is not charged to its CPU budget.
    fn resumed(&mut self) {
        self.budget.resumed();
    }
}

impl WasiView for VuState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Built on first use: a guest that never calls WASI never pays for a
        // WASI context. Nothing is granted: no preopened directories, no
        // sockets, no environment, no arguments; stdout and stderr go to the
        // runner's log.
        let vu_id = self.vu_id;
        let limit = &self.run.log_limit;
        let seed = self.run.seed;
        let ctx = self.wasi.get_or_insert_with(|| {
            Box::new(
                // Every random stream is seeded from the run and the VU id, so
                // `--seed` replays what each VU does.
                WasiCtx::builder()
                    .secure_random(seeds::rng(seed, vu_id, seeds::Stream::Secure))
                    .insecure_random(seeds::rng(seed, vu_id, seeds::Stream::Insecure))
                    .insecure_random_seed(seeds::insecure_seed(seed, vu_id))
                    .stdout(stdio::LogStream::new(
                        vu_id,
                        stdio::Which::Stdout,
                        limit.clone(),
                    ))
                    .stderr(stdio::LogStream::new(
                        vu_id,
                        stdio::Which::Stderr,
                        limit.clone(),
                    ))
                    .build(),
            )
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// Adds every import of the world, and WASI p2 (for guests built with std),
/// to `linker`.
pub fn add_to_linker(linker: &mut Linker<VuState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    bindings::LoadTest::add_to_linker::<VuState, HasSelf<VuState>>(linker, |s| s)?;
    Ok(())
}
