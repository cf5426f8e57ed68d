//! One virtual user: its own wasmtime store, instantiated on demand. A
//! trap ends that VU's iteration only: it is counted by kind, logged, the
//! poisoned store is dropped and the VU goes on with a fresh instance.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use host_api::{LoadTest, VuState};
use wasmtime::{CallHook, Store, UpdateDeadline};

use super::busy::BusyFlag;
use super::{Class, Shared};
use crate::engine::trap::{classify, Abort};
use crate::engine::TICK;

/// Pause before instantiating again after instantiation itself failed, so a
/// scenario whose start-up always traps does not spin.
const REINSTANTIATE_BACKOFF: Duration = Duration::from_secs(1);

/// First restart delay after a trap; it doubles with each consecutive trap
/// of the same VU up to [`MAX_RESTART_BACKOFF`], so a class that traps on
/// every iteration cannot starve the well-behaved VUs of CPU.
const RESTART_BACKOFF: Duration = Duration::from_millis(10);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// A VU's live instance.
struct Instance {
    store: Store<VuState>,
    bindings: LoadTest,
    /// The scenario code generation it was made from.
    generation: u64,
}

/// Ticks in a row a VU may keep the CPU busy (10 ms) before it moves to
/// the busy VUs' threads ([`super::busy`]). Until then it takes 1 ms
/// slices on the steady VUs' threads, so a lower bound keeps the
/// neighbours' latency (a steady VU may wait behind every such slice
/// queued on its thread) and a higher one lets ordinary compute (parsing a
/// large response) finish where it is.
pub const HOG_STREAK: u32 = (10 / TICK.as_millis()) as u32;

/// Creates a fresh store and instance for a VU.
async fn instantiate(
    shared: &Shared,
    id: u32,
    class: &Class,
    busy: &BusyFlag,
) -> Result<Instance, Abort> {
    let state = VuState::new(
        shared.ctx.clone(),
        id,
        class.name.clone(),
        shared.settings.limiter(),
        shared.cpu_limit,
    )
    .with_env(class.env.clone());
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    let busy = busy.clone();
    store.epoch_deadline_callback(move |mut cx| {
        let budget = &mut cx.data_mut().budget;
        if !budget.charge(TICK) {
            return Ok(UpdateDeadline::Interrupt);
        }
        // The epoch check is a host call too; its yield is nobody's CPU.
        budget.not_host();
        if budget.fresh() {
            // Back from a park: it has let the others run already.
            return Ok(UpdateDeadline::Continue(1));
        }
        // A VU that keeps the CPU busy goes on at the busy VUs' priority.
        if budget.busy_streak() >= HOG_STREAK {
            busy.store(true, Ordering::Relaxed);
        }
        // tokio's own yield goes behind the tasks already waiting (a plain
        // wake-up would run this VU again at once, and busy VUs would
        // starve their neighbours).
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    // Measures the host calls' share of the budget.
    // A host call's time runs from its start (or its resumption, for one
    // that parked) to its return, at most a tick.
    store.call_hook(|mut cx, hook| {
        let (into_guest, host_call) = match hook {
            CallHook::CallingHost => (false, true),
            CallHook::ReturningFromHost => (true, true),
            CallHook::CallingWasm => (true, false),
            CallHook::ReturningFromWasm => (false, false),
        };
        cx.data_mut().budget.cross(into_guest, host_call, TICK);
        Ok(())
    });
    if let Some(f) = shared.fuel {
        store.set_fuel(f).map_err(|e| classify(&e, store.data()))?;
    }
    store.data_mut().begin_iteration(0, None);
    let code = shared.code();
    match code.pre.instantiate_async(&mut store).await {
        Ok(bindings) => Ok(Instance {
            store,
            bindings,
            generation: code.generation,
        }),
        Err(e) => Err(classify(&e, store.data())),
    }
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

/// Whether a VU goes on after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ready for the next iteration.
    Continue,
    /// The run is stopping: leave.
    Stop,
}

/// What is left of an ended VU: its store and instance, holding its
/// memory and its connections until dropped.
pub struct Remains {
    _instance: Instance,
}

/// One virtual user: its instance (created on demand, replaced after a
/// trap) and its iteration count.
pub struct Vu {
    shared: Arc<Shared>,
    id: u32,
    class: Arc<Class>,
    instance: Option<Instance>,
    iteration: u64,
    consecutive_traps: u32,
    /// CPU spent in the run so far, guest and host, microseconds.
    cpu_us: u64,
    counted_ready: bool,
    busy: BusyFlag,
}

impl Vu {
    /// VU `id` of `class`, not yet instantiated; `initial` if it is one of
    /// the VUs the run starts with (those count for the start-up time).
    /// Run it inside [`super::busy::contain`] with its [`Vu::busy`] flag.
    pub fn new(shared: Arc<Shared>, id: u32, class: Arc<Class>, initial: bool) -> Self {
        Self {
            busy: BusyFlag::default(),
            shared,
            id,
            class,
            instance: None,
            iteration: 0,
            consecutive_traps: 0,
            cpu_us: 0,
            counted_ready: !initial,
        }
    }

    /// Ends the VU, handing back its instance (if it has one) to be torn
    /// down later.
    pub fn remains(mut self) -> Option<Remains> {
        self.instance.take().map(|i| Remains { _instance: i })
    }

    /// The flag its instances raise when they keep the CPU busy.
    pub fn busy(&self) -> BusyFlag {
        self.busy.clone()
    }

    /// Iterations started so far.
    pub fn iterations(&self) -> u64 {
        self.iteration
    }

    /// Ends an iteration cancelled from outside (its future was dropped):
    /// counts it under `kind` and drops the instance, which cannot be
    /// re-entered.
    pub fn abandon(&mut self, kind: &'static str, message: &str) {
        self.shared.ctx.recorder.trap(kind);
        let abort = Abort {
            kind,
            message: message.to_owned(),
        };
        self.shared
            .trap_log
            .log(self.id, self.iteration.saturating_sub(1), &abort);
        self.instance = None;
    }

    /// Makes sure the VU has an instance, after the back-off a trap asks
    /// for. `Err` carries the step to take when that failed.
    async fn ensure_instance(&mut self) -> Result<(), Step> {
        let shared = self.shared.clone();
        if self
            .instance
            .as_ref()
            .is_some_and(|i| i.generation != shared.generation.load(Ordering::Acquire))
        {
            // The scenario was swapped: continue on the new code.
            self.instance = None;
        }
        if self.instance.is_some() {
            return Ok(());
        }
        if self.consecutive_traps > 0 {
            let backoff = RESTART_BACKOFF
                .saturating_mul(1 << (self.consecutive_traps - 1).min(16))
                .min(MAX_RESTART_BACKOFF);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shared.stop.cancelled() => return Err(Step::Stop),
            }
        }
        // Boxed: its state (wasmtime's instantiation) would otherwise be
        // reserved in every VU's future for its whole life.
        match Box::pin(instantiate(&shared, self.id, &self.class, &self.busy)).await {
            Ok(i) => {
                if !self.counted_ready {
                    self.counted_ready = true;
                    if shared.ready.fetch_add(1, Ordering::Relaxed) + 1 == shared.total {
                        let _ = shared.all_ready.set(shared.started.elapsed());
                    }
                }
                self.instance = Some(i);
                Ok(())
            }
            Err(abort) => {
                shared.ctx.recorder.trap("instantiate");
                let abort = Abort {
                    kind: "instantiate",
                    message: format!("{}: {}", abort.kind, abort.message),
                };
                shared.trap_log.log(self.id, self.iteration, &abort);
                self.iteration += 1;
                tokio::select! {
                    _ = tokio::time::sleep(REINSTANTIATE_BACKOFF) => Err(Step::Continue),
                    _ = shared.stop.cancelled() => Err(Step::Stop),
                }
            }
        }
    }

    /// Instantiates ahead of the first iteration (open model: the first
    /// arrival should not wait for it).
    pub async fn prepare(&mut self) -> Step {
        match self.ensure_instance().await {
            Ok(()) => Step::Continue,
            Err(step) => step,
        }
    }

    /// Runs one iteration. `intended` is when it should have started (open
    /// model); latency from then is recorded as well as service time.
    pub async fn iterate(&mut self, intended: Option<Instant>) -> Step {
        if let Err(step) = self.ensure_instance().await {
            return step;
        }
        let shared = self.shared.clone();
        let recorder = &shared.ctx.recorder;
        let Some(inst) = self.instance.as_mut() else {
            return Step::Continue;
        };
        let started = Instant::now();
        let lag = intended.map(|t| started.saturating_duration_since(t));
        inst.store.data_mut().begin_iteration(self.iteration, lag);
        if let Some(f) = shared.fuel {
            // Cannot fail: fuel is enabled whenever `shared.fuel` is set.
            let _ = inst.store.set_fuel(f);
        }
        let call = inst
            .bindings
            .runner_scenario_scenario()
            .call_run(&mut inst.store, &self.class.name);
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
        let mut cost = inst.store.data().cost();
        if let Some(f) = shared.fuel {
            cost.fuel = f.saturating_sub(inst.store.get_fuel().unwrap_or(0));
        }
        let trap = match &outcome {
            Err(a) => Some(a.kind),
            Ok(_) => None,
        };
        self.cpu_us = self
            .cpu_us
            .saturating_add(cost.guest_us.saturating_add(cost.host_us));
        recorder.usage(&self.class.name, self.id, &cost, self.cpu_us, trap);
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let service = micros(started.elapsed());
        let from_intended = intended.map(|t| micros(t.elapsed()));
        let iteration = self.iteration;
        self.iteration += 1;
        match outcome {
            Ok(Ok(())) => {
                self.consecutive_traps = 0;
                recorder.iteration(true, service, from_intended);
            }
            Ok(Err(msg)) => {
                self.consecutive_traps = 0;
                recorder.iteration(false, service, from_intended);
                let abort = Abort {
                    kind: "failed",
                    message: host_api::limits::cut(msg, host_api::limits::sizes::MESSAGE),
                };
                shared.trap_log.log(self.id, iteration, &abort);
            }
            Err(abort) => {
                self.consecutive_traps = self.consecutive_traps.saturating_add(1);
                recorder.trap(abort.kind);
                shared.trap_log.log(self.id, iteration, &abort);
                // The store refuses re-entry after a trap or a cancel: drop
                // it (closing its connections) and start afresh.
                self.instance = None;
                if abort.kind == "interrupted" {
                    return Step::Stop;
                }
            }
        }
        Step::Continue
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
