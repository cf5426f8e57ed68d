//! Executing a plan: one task per virtual user, each with its own wasmtime
//! store ([`vu`]); VUs looping in the closed model ([`closed`]) or handed
//! arrivals at a rate in the open model ([`open`]). Each class's load (its
//! VU count or its rate) is a [`Load`] that can change while the run goes
//! on.

pub mod busy;
pub mod closed;
pub mod open;
pub mod vu;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use host_api::{LoadTestPre, RunContext, VuState};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use wasmtime::Engine;

use crate::engine::EngineSettings;
use crate::plan::profile::Profile;
use crate::plan::{ClassPlan, Plan};

/// The linked scenario VUs instantiate; replaced when the scenario is
/// swapped mid-run.
pub struct Code {
    /// The linked, pre-instantiated component.
    pub pre: LoadTestPre<VuState>,
    /// Counts swaps: 0 for the scenario the run started with.
    pub generation: u64,
}

/// What every VU task shares.
pub struct Shared {
    /// The pooled engine.
    pub engine: Engine,
    /// The scenario code in force.
    pub code: RwLock<Arc<Code>>,
    /// The generation of `code`, readable without a lock.
    pub generation: AtomicU64,
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
    /// Cancelled when no new iteration may start.
    pub stop: CancellationToken,
    /// Cancelled when in-flight iterations must end now.
    pub hard_stop: CancellationToken,
    /// VUs currently started and not finished.
    pub active: AtomicUsize,
    /// The most VUs active at once so far.
    pub peak: AtomicUsize,
    /// VUs that have instantiated at least once.
    pub ready: AtomicUsize,
    /// How long after the start every VU had instantiated.
    pub all_ready: OnceLock<Duration>,
    /// VUs expected to instantiate at the start.
    pub total: usize,
    /// When the VUs were spawned.
    pub started: tokio::time::Instant,
    /// Per-kind counts of trap log lines, to keep the log readable.
    pub trap_log: vu::TrapLog,
    /// The instances of VUs that ended after the run's stop, kept until
    /// every VU has: see [`Shared::retire`].
    pub retired: Mutex<Vec<vu::Remains>>,
}

impl Shared {
    /// The scenario code in force now.
    pub fn code(&self) -> Arc<Code> {
        self.code.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `pre` in force: each VU picks it up before its next iteration.
    pub fn swap_code(&self, pre: LoadTestPre<VuState>) -> u64 {
        let mut code = self.code.write().unwrap_or_else(|p| p.into_inner());
        let generation = code.generation + 1;
        *code = Arc::new(Code { pre, generation });
        self.generation.store(generation, Ordering::Release);
        generation
    }

    /// Lets go of a VU that has ended. After the run's stop, its store is
    /// kept for [`Shared::bury`]: tearing a store down (unmapping its
    /// memory and stack, one TLB flush each) takes about 50 µs of CPU,
    /// and 100,000 VUs doing so inside the grace period would starve the
    /// VUs still finishing their iterations.
    pub fn retire(&self, vu: vu::Vu) {
        if self.stop.is_cancelled() {
            if let Some(r) = vu.remains() {
                lock(&self.retired).push(r);
            }
        }
    }

    /// Tears down the retired VUs, on as many blocking threads as there
    /// are cores, and waits for them; their connections close meanwhile.
    pub async fn bury(&self) {
        let mut retired = std::mem::take(&mut *lock(&self.retired));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = retired.len().div_ceil(threads).max(1);
        let mut teardowns = Vec::new();
        while !retired.is_empty() {
            let chunk = retired.split_off(retired.len().saturating_sub(per));
            teardowns.push(tokio::task::spawn_blocking(move || drop(chunk)));
        }
        for t in teardowns {
            let _ = t.await;
        }
    }
}

/// The load a class is asked for, over time; a live change rewrites the
/// rest of the profile from the moment it is made.
pub enum Load {
    /// Closed model: how many VUs should be running.
    Closed {
        /// Running VUs over time.
        vus: Mutex<Profile>,
        /// The most the class may be raised to.
        max: u32,
        /// Whether the count may change (not in runs of a set number of
        /// iterations).
        changeable: bool,
    },
    /// Open model: iterations started per second.
    Open {
        /// Arrivals per second over time (this process's part).
        rate: Mutex<Profile>,
        /// The whole run's arrivals per second (the same as `rate` but in
        /// a worker of a distributed run).
        global: Mutex<Profile>,
        /// Bumped at every change, so the scheduler re-reads `rate`.
        version: AtomicU64,
        /// VUs the class may grow to.
        max_vus: u32,
    },
}

impl Load {
    /// The value asked for `t` seconds into the run (VUs, or arrivals per
    /// second).
    pub fn value_at(&self, t: f64) -> f64 {
        match self {
            Load::Closed { vus, .. } => lock(vus).value_at(t),
            Load::Open { rate, .. } => lock(rate).value_at(t),
        }
    }
}

/// Locks a mutex whose holder cannot leave it inconsistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the VUs of one class share.
pub struct Class {
    /// The class name passed to the scenario's `run`.
    pub name: Arc<str>,
    /// What `vu.env` reads: `-e` values with the class's own over them.
    pub env: Arc<HashMap<String, String>>,
    /// Iterations per VU (closed model).
    pub iterations: Option<u64>,
    /// Pause after each iteration (closed model).
    pub think: Option<Duration>,
    /// Least time from one iteration's start to the next (closed model).
    pub pacing: Option<Duration>,
    /// Iterations left to share among all VUs, if they are shared.
    pub shared: Option<Arc<AtomicU64>>,
    /// The load asked of the class.
    pub load: Load,
    /// VUs of this class running now.
    pub active: AtomicUsize,
    /// Closed model: VUs of this process the count in force asks for.
    pub target: AtomicU32,
    /// Closed model, distributed: the global indices this process runs
    /// (sorted; grows when it adopts a lost worker's); `None`: all.
    pub owned: Option<Mutex<Vec<u32>>>,
    /// This process's fraction of the class's load (1 when alone); an
    /// open class's rate changes are scaled by it.
    pub fraction: Mutex<f64>,
    /// Pool room left for adopted VUs (closed model) or for more VUs when
    /// the class's share of the rate grows (open model).
    pub spare: AtomicU32,
    /// Open model: the most VUs this process starts for the class (grows
    /// with its share of the rate, within the spare room).
    pub cap: AtomicU32,
    /// The fraction the class started with.
    pub base_fraction: f64,
    /// Closed model: the global indices of the VUs iterating now (a VU
    /// handed to another worker is gone once its index leaves this).
    pub running: Mutex<std::collections::HashSet<u32>>,
}

impl Class {
    /// The runtime side of a planned class; `env` holds the `-e` values.
    pub fn new(plan: &ClassPlan, env: &HashMap<String, String>, run: &Plan) -> Self {
        let load = match (&plan.open, run.duration) {
            (Some(open), Some(_)) => Load::Open {
                rate: Mutex::new(open.rate.clone()),
                global: Mutex::new(open.global.clone().unwrap_or_else(|| open.rate.clone())),
                version: AtomicU64::new(0),
                max_vus: plan.max_vus(),
            },
            _ => Load::Closed {
                vus: Mutex::new(match &plan.ramp {
                    Some(ramp) => ramp.clone(),
                    None => Profile::constant(
                        f64::from(plan.vus),
                        run.duration.unwrap_or(Duration::ZERO),
                    ),
                }),
                max: plan.max_vus(),
                changeable: run.duration.is_some() && plan.shared.is_none(),
            },
        };
        Self {
            name: plan.name.clone(),
            env: Arc::new(plan.env_over(env)),
            iterations: plan.iterations,
            think: plan.think,
            pacing: plan.pacing,
            shared: plan.shared.clone(),
            load,
            active: AtomicUsize::new(0),
            target: AtomicU32::new(0),
            owned: plan.owned.clone().map(Mutex::new),
            fraction: Mutex::new(plan.fraction),
            spare: AtomicU32::new(plan.spare),
            cap: AtomicU32::new(plan.max_vus()),
            base_fraction: plan.fraction,
            running: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Whether this process runs global VU `index`.
    pub fn owns(&self, index: u32) -> bool {
        self.owned
            .as_ref()
            .is_none_or(|o| lock(o).binary_search(&index).is_ok())
    }

    /// Hands global VUs `indices` to another worker: each leaves after its
    /// iteration, and its pool room is free again.
    pub fn release(&self, indices: &[u32]) {
        let Some(owned) = &self.owned else {
            return;
        };
        let mut o = lock(owned);
        let before = o.len();
        o.retain(|i| indices.binary_search(i).is_err());
        self.spare
            .fetch_add((before - o.len()) as u32, Ordering::Relaxed);
    }

    /// Whether any of `indices` (sorted) is still iterating.
    pub fn any_running(&self, indices: &[u32]) -> bool {
        lock(&self.running)
            .iter()
            .any(|i| indices.binary_search(i).is_ok())
    }

    /// Open model: lets the class start VUs for a share `fraction` of the
    /// rate (up to that times its own VUs per its first fraction), within
    /// the spare room.
    pub fn grow(&self, fraction: f64) {
        let Load::Open { max_vus, .. } = &self.load else {
            return;
        };
        let most = max_vus.saturating_add(self.spare.load(Ordering::Relaxed));
        let want = if self.base_fraction > 0.0 {
            let k = fraction / self.base_fraction;
            (f64::from(*max_vus) * k).ceil().min(f64::from(u32::MAX)) as u32
        } else {
            // A worker that joined mid-run, with no part of its own yet.
            most
        };
        self.cap.fetch_max(want.min(most), Ordering::Relaxed);
    }

    /// How many of this process's VUs a global count of `n` asks for.
    pub fn local_count(&self, n: u32) -> u32 {
        match &self.owned {
            None => n,
            Some(o) => lock(o).partition_point(|&i| i < n) as u32,
        }
    }

    /// Takes on global VU `index`, if the pool has room and it is not
    /// already this process's.
    pub fn adopt(&self, index: u32) -> bool {
        let Some(owned) = &self.owned else {
            return false;
        };
        let mut o = lock(owned);
        let Err(at) = o.binary_search(&index) else {
            return false;
        };
        let room = self
            .spare
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_sub(1));
        if room.is_err() {
            return false;
        }
        o.insert(at, index);
        true
    }

    /// Takes one iteration from the shared pool; `false` when none is left
    /// (always `true` when iterations are not shared).
    pub fn take_shared(&self) -> bool {
        self.shared.as_ref().is_none_or(|left| {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    /// Whether this class runs in the open model.
    pub fn is_open(&self) -> bool {
        matches!(self.load, Load::Open { .. })
    }
}

/// Marks a VU active (in the run and in its class) for as long as it lives.
pub struct ActiveGuard<'a> {
    shared: &'a Shared,
    class: &'a Class,
}

impl<'a> ActiveGuard<'a> {
    /// Counts one more active VU of `class`.
    pub fn new(shared: &'a Shared, class: &'a Class) -> Self {
        let now = shared.active.fetch_add(1, Ordering::Relaxed) + 1;
        shared.peak.fetch_max(now, Ordering::Relaxed);
        class.active.fetch_add(1, Ordering::Relaxed);
        Self { shared, class }
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
        self.class.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The running VUs of a plan.
pub struct Execution {
    /// One task per VU (closed model) or per open class; the run is over
    /// when they all are.
    pub tasks: JoinSet<()>,
    /// Tasks that publish each closed class's VU count; they end with the
    /// run's stop, or are aborted when the run is over.
    pub followers: Vec<JoinHandle<()>>,
    /// The classes, in the plan's order.
    pub classes: Vec<Arc<Class>>,
    /// The closed-model classes, for VUs adopted later.
    pub closed: Vec<ClosedClass>,
}

impl Drop for Execution {
    fn drop(&mut self) {
        for f in &self.followers {
            f.abort();
        }
    }
}

/// Starts every class of `plan`: VU ids are unique across classes, each
/// class taking as many as it may ever run.
pub fn start(plan: &Plan, shared: &Arc<Shared>) -> Execution {
    let mut exec = Execution {
        tasks: JoinSet::new(),
        followers: Vec::new(),
        classes: Vec::new(),
        closed: Vec::new(),
    };
    let started = shared.started;
    let mut id = 0u32;
    // Counts the VUs that the run's ramp-up spreads out.
    let mut ramped = 0u32;
    for planned in &plan.classes {
        let class = Arc::new(Class::new(planned, &shared.ctx.env, plan));
        exec.classes.push(class.clone());
        if let (Some(duration), true) = (plan.duration, class.is_open()) {
            exec.tasks.spawn(open::run_class(
                shared.clone(),
                class,
                planned.vus,
                id + planned.id_offset,
                plan.arrival,
                started,
                duration,
            ));
            id += planned.id_span();
            continue;
        }
        let initial = match &planned.ramp {
            Some(r) => r.value_at(0.0).round() as u32,
            None => planned.vus,
        };
        class
            .target
            .store(class.local_count(initial), Ordering::Relaxed);
        let (tx, rx) = tokio::sync::watch::channel(initial);
        exec.followers.push(tokio::spawn(closed::follow(
            class.clone(),
            tx,
            started,
            shared.stop.clone(),
        )));
        let own = planned.start_offsets(host_api::seeds::derive(
            shared.ctx.seed,
            id,
            host_api::seeds::Stream::Starts,
        ));
        for index in 0..planned.max_vus() {
            // Staged classes follow their profile from the start; the
            // others spread their starts over the ramp-up (or their own
            // start rate). VUs beyond the initial count start when wanted.
            // Offsets count every VU of the run, so a worker's VUs start
            // when they would on one machine.
            let offset = if planned.ramp.is_some() || index >= planned.vus {
                Duration::ZERO
            } else if let Some(offsets) = &own {
                offsets[index as usize]
            } else {
                ramped += 1;
                plan.start_offset(ramped - 1)
            };
            if planned.owns(index) {
                exec.tasks.spawn(closed::run_vu(
                    shared.clone(),
                    id + index,
                    class.clone(),
                    index,
                    index < planned.vus,
                    started + offset,
                    rx.clone(),
                    plan.grace,
                ));
            }
        }
        exec.closed.push(ClosedClass {
            class,
            first_id: id,
            target: rx,
        });
        id += planned.max_vus();
    }
    exec
}

impl Execution {
    /// Starts the VUs of global indices `indices` of closed-model class
    /// `name` (taken over from a lost worker), from `at`; returns how many
    /// it started.
    pub fn adopt(
        &mut self,
        shared: &Arc<Shared>,
        name: &str,
        indices: &[u32],
        at: tokio::time::Instant,
        grace: Duration,
    ) -> usize {
        let Some(c) = self.closed.iter().find(|c| *c.class.name == *name) else {
            return 0;
        };
        let mut started = 0;
        for &index in indices {
            if !c.class.adopt(index) {
                continue;
            }
            self.tasks.spawn(closed::run_vu(
                shared.clone(),
                c.first_id + index,
                c.class.clone(),
                index,
                false,
                at,
                c.target.clone(),
                grace,
            ));
            started += 1;
        }
        started
    }
}

/// What adopting more VUs of a closed-model class needs.
pub struct ClosedClass {
    /// The class.
    pub class: Arc<Class>,
    /// The VU id of its global index 0.
    pub first_id: u32,
    /// The class's VU count, as its VUs follow it.
    pub target: tokio::sync::watch::Receiver<u32>,
}
