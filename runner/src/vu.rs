//! The VU engine: one task per virtual user, each with its own wasmtime
//! store. A trap ends that VU's iteration only: it is counted by kind,
//! logged, the poisoned store is dropped and the VU goes on with a fresh
//! instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use host_api::limits::MemoryCapExceeded;
use host_api::{LoadTest, LoadTestPre, RunContext, VuState};
use tokio_util::sync::CancellationToken;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use crate::engine::{EngineSettings, TICK};

/// Pause before instantiating again after instantiation itself failed, so a
/// scenario whose start-up always traps does not spin.
const REINSTANTIATE_BACKOFF: Duration = Duration::from_secs(1);

/// First restart delay after a trap; it doubles with each consecutive trap
/// of the same VU up to [`MAX_RESTART_BACKOFF`], so a class that traps on
/// every iteration cannot starve the well-behaved VUs of CPU.
const RESTART_BACKOFF: Duration = Duration::from_millis(10);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// What every VU task shares.
pub struct Shared {
    /// The pooled engine.
    pub engine: Engine,
    /// The linked scenario.
    pub pre: LoadTestPre<VuState>,
    /// Host state shared by all VUs.
    pub ctx: Arc<RunContext>,
    /// Engine limits (for the per-store limiter).
    pub settings: EngineSettings,
    /// CPU time per iteration.
    pub cpu_limit: Duration,
    /// Fuel per iteration, if metered.
    pub fuel: Option<u64>,
    /// Wall-clock limit per iteration.
    pub iteration_timeout: Option<Duration>,
    /// Iterations per VU.
    pub iterations: Option<u64>,
    /// Cancelled when no new iteration may start.
    pub stop: CancellationToken,
    /// Cancelled when in-flight iterations must end now.
    pub hard_stop: CancellationToken,
    /// VUs currently started and not finished.
    pub active: AtomicUsize,
    /// VUs that have instantiated at least once.
    pub ready: AtomicUsize,
    /// How long after the start every VU had instantiated.
    pub all_ready: std::sync::OnceLock<Duration>,
    /// VUs in the run.
    pub total: usize,
    /// When the VUs were spawned.
    pub started: tokio::time::Instant,
    /// Per-kind counts of trap log lines, to keep the log readable.
    pub trap_log: TrapLog,
}

/// A VU's live instance.
struct Instance {
    store: Store<VuState>,
    bindings: LoadTest,
}

/// Why an iteration did not complete normally.
#[derive(Debug)]
pub struct Abort {
    /// Short kind: `panic`, `cpu-limit`, `memory-limit`, ...
    pub kind: &'static str,
    /// One line of detail.
    pub message: String,
}

/// Creates a fresh store and instance for a VU.
async fn instantiate(shared: &Shared, id: u32, class: &Arc<str>) -> Result<Instance, Abort> {
    let state = VuState::new(
        shared.ctx.clone(),
        id,
        class.clone(),
        shared.settings.limiter(),
        shared.cpu_limit,
    );
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut cx| {
        if cx.data_mut().budget.charge(TICK) {
            Ok(UpdateDeadline::Yield(1))
        } else {
            Ok(UpdateDeadline::Interrupt)
        }
    });
    if let Some(f) = shared.fuel {
        store.set_fuel(f).map_err(|e| classify(&e, store.data()))?;
    }
    store.data_mut().begin_iteration(0);
    match shared.pre.instantiate_async(&mut store).await {
        Ok(bindings) => Ok(Instance { store, bindings }),
        Err(e) => Err(classify(&e, store.data())),
    }
}

/// Names the reason for a failed guest call.
pub fn classify(e: &wasmtime::Error, state: &VuState) -> Abort {
    let detail = || {
        let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        parts.dedup();
        parts.join(": ").replace('\n', " ")
    };
    if let Some(msg) = &state.panic_message {
        return Abort {
            kind: "panic",
            message: msg.clone(),
        };
    }
    if let Some(m) = e.downcast_ref::<MemoryCapExceeded>() {
        return Abort {
            kind: "memory-limit",
            message: m.to_string(),
        };
    }
    let trap = e
        .chain()
        .find_map(|c| c.downcast_ref::<Trap>())
        .or_else(|| e.downcast_ref::<Trap>());
    let (kind, message) = match trap {
        Some(Trap::Interrupt) => (
            "cpu-limit",
            format!(
                "used more than {:?} of CPU in one iteration",
                state.budget.limit()
            ),
        ),
        Some(Trap::OutOfFuel) => ("fuel", "ran out of fuel in one iteration".to_owned()),
        Some(Trap::StackOverflow) => ("stack-overflow", "wasm stack overflow".to_owned()),
        Some(Trap::UnreachableCodeReached) => (
            "unreachable",
            "wasm `unreachable` (an abort without a panic message)".to_owned(),
        ),
        Some(Trap::MemoryOutOfBounds) => (
            "memory-fault",
            "out-of-bounds memory access (a guest stack overflow, or unsafe code)".to_owned(),
        ),
        Some(t) => ("trap", t.to_string()),
        None => ("error", detail()),
    };
    Abort { kind, message }
}

/// Logs trap lines: every one of the first few of each kind, then only at
/// powers of two, so a scenario that panics in every VU cannot flood the log.
#[derive(Default)]
pub struct TrapLog {
    seen: Mutex<HashMap<&'static str, u64>>,
}

impl TrapLog {
    fn log(&self, vu: u32, iteration: u64, abort: &Abort) {
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let n = seen.entry(abort.kind).or_default();
            *n += 1;
            *n
        };
        if n <= 10 || n.is_power_of_two() {
            let nth = if n > 10 {
                format!(" (#{n} of this kind)")
            } else {
                String::new()
            };
            tracing::warn!(
                "vu {vu}: iteration {iteration} ended by {}: {}{nth}",
                abort.kind,
                abort.message
            );
        }
    }
}

/// Marks a VU active for as long as it lives.
struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs one VU: waits for its start time, then iterates until the plan or
/// a stop says otherwise.
pub async fn run(shared: Arc<Shared>, id: u32, class: Arc<str>, start_at: tokio::time::Instant) {
    tokio::select! {
        _ = tokio::time::sleep_until(start_at) => {}
        _ = shared.stop.cancelled() => return,
    }
    shared.active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(&shared.active);
    let recorder = shared.ctx.recorder.clone();
    let mut instance: Option<Instance> = None;
    let mut iteration: u64 = 0;
    let mut consecutive_traps: u32 = 0;
    loop {
        if shared.stop.is_cancelled() || shared.iterations.is_some_and(|n| iteration >= n) {
            return;
        }
        if instance.is_none() && consecutive_traps > 0 {
            let backoff = RESTART_BACKOFF
                .saturating_mul(1 << (consecutive_traps - 1).min(16))
                .min(MAX_RESTART_BACKOFF);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shared.stop.cancelled() => return,
            }
        }
        let inst = match instance.as_mut() {
            Some(i) => i,
            None => match instantiate(&shared, id, &class).await {
                Ok(i) => {
                    if iteration == 0
                        && shared.ready.fetch_add(1, Ordering::Relaxed) + 1 == shared.total
                    {
                        let _ = shared.all_ready.set(shared.started.elapsed());
                    }
                    instance.insert(i)
                }
                Err(abort) => {
                    recorder.trap("instantiate");
                    let abort = Abort {
                        kind: "instantiate",
                        message: format!("{}: {}", abort.kind, abort.message),
                    };
                    shared.trap_log.log(id, iteration, &abort);
                    iteration += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(REINSTANTIATE_BACKOFF) => continue,
                        _ = shared.stop.cancelled() => return,
                    }
                }
            },
        };
        inst.store.data_mut().begin_iteration(iteration);
        if let Some(f) = shared.fuel {
            // Cannot fail: fuel is enabled whenever `shared.fuel` is set.
            let _ = inst.store.set_fuel(f);
        }
        let started = Instant::now();
        let call = inst
            .bindings
            .runner_scenario_scenario()
            .call_run(&mut inst.store, &class);
        let outcome = tokio::select! {
            biased;
            _ = shared.hard_stop.cancelled() => Err(Abort { kind: "interrupted", message: "cancelled at the end of the grace period".into() }),
            r = with_timeout(shared.iteration_timeout, call) => r,
        };
        let outcome = match outcome {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(classify(&e, inst.store.data())),
            Err(abort) => Err(abort),
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Ok(Ok(())) => {
                consecutive_traps = 0;
                recorder.iteration(true, micros);
            }
            Ok(Err(msg)) => {
                consecutive_traps = 0;
                recorder.iteration(false, micros);
                let abort = Abort {
                    kind: "failed",
                    message: msg,
                };
                shared.trap_log.log(id, iteration, &abort);
            }
            Err(abort) => {
                consecutive_traps = consecutive_traps.saturating_add(1);
                recorder.trap(abort.kind);
                shared.trap_log.log(id, iteration, &abort);
                // The store refuses re-entry after a trap or a cancel: drop
                // it (closing its connections) and start afresh.
                instance = None;
                if abort.kind == "interrupted" {
                    return;
                }
            }
        }
        iteration += 1;
    }
}

async fn with_timeout<F, T>(limit: Option<Duration>, fut: F) -> Result<T, Abort>
where
    F: std::future::Future<Output = T>,
{
    match limit {
        None => Ok(fut.await),
        Some(d) => tokio::time::timeout(d, fut).await.map_err(|_| Abort {
            kind: "timeout",
            message: format!("iteration took longer than {d:?}"),
        }),
    }
}
