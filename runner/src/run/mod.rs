//! A run as an object: [`prepare`] checks a [`RunSpec`] and its component
//! and plans the load; [`Prepared::start`] starts the VUs and returns a
//! [`RunHandle`]: a control channel ([`control`]), the [`hub`] where every
//! snapshot, event and the summary are kept for observers, and the summary
//! itself when the run is over. The command line, the REST API and a
//! federation worker all run scenarios this one way.

pub mod control;
mod driver;
pub(crate) mod finish;
pub mod hub;
pub mod memory;
pub mod sink;
pub mod snapshot;
pub mod swap;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, Result};
use host_api::{Recorder, RunContext, ScenarioOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::events::short;
pub use control::{ControlError, ControlEvent, Controller, LoadChange, LoadTarget, StopBy};
pub use driver::INTERVAL;
pub use hub::{Hub, RunState};
pub use sink::Sink;
pub use snapshot::{ClassState, Point, Snapshot};

use crate::engine::{self, EngineSettings, Scenario};
use crate::exec::{self, Code, Shared};
use crate::oslimits;
use crate::plan::Plan;
use crate::report::Meta;
use crate::spec::RunSpec;
use crate::thresholds::Threshold;

/// Why a run could not be prepared: the REST API answers each with its own
/// status.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The options are wrong on their own or for this scenario.
    #[error("{0}")]
    Spec(String),
    /// The component is not a scenario of this runner's world, or it
    /// failed while declaring its options.
    #[error("{0}")]
    Scenario(String),
    /// This machine cannot hold the run (OS limits, address space).
    #[error("{0}")]
    System(String),
}

/// A checked, planned run, not yet started.
pub struct Prepared {
    spec: RunSpec,
    scenario: Scenario,
    plan: Plan,
    thresholds: Vec<Threshold>,
    settings: EngineSettings,
    options: ScenarioOptions,
}

/// What a process does with a run.
#[derive(Clone, Debug)]
pub enum Role {
    /// Runs it all, here.
    Local,
    /// Coordinates workers: plans the whole run, runs no VU itself.
    Coordinator,
    /// Runs its share of a distributed run.
    Worker(crate::plan::share::Share),
}

/// Checks `spec` and the component `bytes`, asks the scenario for its
/// options and plans the load, to run here. Nothing runs yet.
pub async fn prepare(spec: RunSpec, bytes: Arc<[u8]>) -> Result<Prepared, PrepareError> {
    prepare_as(spec, bytes, Role::Local).await
}

/// [`prepare`] for a `role` in a distributed run.
pub async fn prepare_as(
    mut spec: RunSpec,
    bytes: Arc<[u8]>,
    role: Role,
) -> Result<Prepared, PrepareError> {
    let o = &spec.options;
    o.validate().map_err(PrepareError::Spec)?;
    // Any run can be replayed: the seed used is recorded even when drawn.
    let seed = *spec.options.seed.get_or_insert_with(host_api::seeds::fresh);
    // The limit in force is recorded too: given, or sized from the component.
    let memory_limit = *spec.options.memory_limit.get_or_insert_with(|| {
        engine::memory_limit_for(&bytes, crate::spec::defaults::MEMORY_LIMIT)
    });
    let initial = engine::initial_memory_bytes(&bytes);
    if initial > memory_limit {
        return Err(PrepareError::Scenario(format!(
            "{} starts with {} of linear memory per VU; raise --memory-limit (now {}) to at least that",
            spec.scenario.name,
            crate::units::format_size(initial),
            crate::units::format_size(memory_limit)
        )));
    }
    let o = &spec.options;
    let egress = Arc::new(spec.egress().map_err(PrepareError::Spec)?);
    if !matches!(role, Role::Coordinator) {
        let local = host_api::source::expand(&o.local_addrs).map_err(PrepareError::Spec)?;
        host_api::source::check(&local).map_err(PrepareError::Spec)?;
    }
    let small_tables = engine::small_tables(&bytes);
    let mut settings = EngineSettings {
        instances: 1,
        memory_limit,
        fuel: o.fuel.is_some(),
        core_instances: o.instance_limit,
        tables: o.table_limit,
        memories: engine::MAX_MEMORIES_PER_VU,
        table_elements: o.table_elements,
        cow: engine::wants_cow(&bytes),
        eager_tables: small_tables,
        pool: !small_tables,
        // Compiled for one VU first; recompiled below if the run has more
        // VUs than the wide layout fits.
        wide: true,
    };
    settings.wide = wide_layout(&settings);
    let probe_engine =
        engine::build(&settings, false).map_err(|e| PrepareError::System(message(&e)))?;
    let scenario = {
        let (engine, name) = (probe_engine.clone(), spec.scenario.name.clone());
        let bytes = bytes.clone();
        tokio::task::spawn_blocking(move || engine::load(&engine, &name, &bytes, &settings))
            .await
            .map_err(|e| PrepareError::System(format!("compiling the scenario failed: {e}")))?
            .map_err(|e| PrepareError::Scenario(message(&e)))?
    };
    memory::release_freed();
    // The flags are ceilings: the pool holds what this component needs.
    settings.core_instances = scenario.core_instances;
    settings.tables = scenario.tables;
    settings.memories = scenario.memories;
    spec.scenario.sha256 = scenario.sha256.clone();
    spec.scenario.bytes = scenario.size;
    let o = &spec.options;
    let limits = engine::probe::ProbeLimits {
        settings,
        cpu_limit: o.cpu_limit,
        fuel: o.fuel,
        http: http_config(&spec),
        egress: egress.clone(),
        tick: true,
        seed,
    };
    let options = engine::probe::options(
        &probe_engine,
        &scenario.component,
        &spec.scenario.name,
        Arc::new(env(&spec)),
        &limits,
    )
    .await
    .map_err(|e| PrepareError::Scenario(message(&e)))?;
    let mut plan = Plan::new(o, &options).map_err(|e| PrepareError::Spec(message(&e)))?;
    if let Role::Worker(share) = &role {
        plan.apply(share)
            .map_err(|e| PrepareError::Spec(message(&e)))?;
    }
    let thresholds = thresholds_for(&spec, &options)?;
    let most = plan.pool_vus();
    settings.instances = most.saturating_add(1);
    let mut scenario = scenario;
    let wide = wide_layout(&settings);
    if wide != settings.wide && !matches!(role, Role::Coordinator) {
        // Too many VUs for 4 GiB of address space each: compile again
        // for the dense layout, with explicit bounds checks.
        settings.wide = wide;
        let engine =
            engine::build(&settings, false).map_err(|e| PrepareError::System(message(&e)))?;
        let name = spec.scenario.name.clone();
        scenario =
            tokio::task::spawn_blocking(move || engine::load(&engine, &name, &bytes, &settings))
                .await
                .map_err(|e| PrepareError::System(format!("compiling the scenario failed: {e}")))?
                .map_err(|e| PrepareError::Scenario(message(&e)))?;
    }
    if !matches!(role, Role::Coordinator) {
        oslimits::check(&oslimits::Needs {
            engine: settings,
            connecting_vus: if scenario.uses_network {
                u64::from(most)
            } else {
                0
            },
        })
        .map_err(|e| PrepareError::System(message(&e)))?;
    }
    Ok(Prepared {
        spec,
        scenario,
        plan,
        thresholds,
        settings,
        options,
    })
}

/// Whether `settings`' VUs get the wide memory layout: it fits the
/// engine's budget and `ulimit -v`.
fn wide_layout(settings: &EngineSettings) -> bool {
    let wide = EngineSettings {
        wide: true,
        ..*settings
    };
    settings.wide_fits() && oslimits::address_space_allows(wide.address_space_needed())
}

fn message(e: &anyhow::Error) -> String {
    engine::root_message(e)
}

fn env(spec: &RunSpec) -> HashMap<String, String> {
    spec.options
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn http_config(spec: &RunSpec) -> host_api::http::ClientConfig {
    let o = &spec.options;
    // Validated with the spec: expanding cannot fail here.
    let local = host_api::source::expand(&o.local_addrs).unwrap_or_default();
    host_api::http::ClientConfig::new(o.http_timeout, o.max_body, o.insecure)
        .with_local_addrs(local)
}

/// The thresholds in force: the spec's if it gives any, else the
/// scenario's.
fn thresholds_for(
    spec: &RunSpec,
    options: &ScenarioOptions,
) -> Result<Vec<Threshold>, PrepareError> {
    let (texts, whose) = if spec.options.thresholds.is_empty() {
        (&options.thresholds, "the scenario's options: ")
    } else {
        (&spec.options.thresholds, "")
    };
    texts
        .iter()
        .map(|text| {
            let t = Threshold::parse(text).and_then(|t| t.validate().map(|()| t));
            t.map_err(|e| {
                let e = format!("{whose}{e}");
                if whose.is_empty() {
                    PrepareError::Spec(e)
                } else {
                    PrepareError::Scenario(e)
                }
            })
        })
        .collect()
}

impl Prepared {
    /// The scenario's declared thresholds, or the spec's, parsed.
    pub fn thresholds(&self) -> &[Threshold] {
        &self.thresholds
    }

    /// The spec, with the scenario's hash and size filled in.
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    /// The load plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What the scenario declared.
    pub fn options(&self) -> &ScenarioOptions {
        &self.options
    }

    /// The most VUs of the run that may hold a network connection at
    /// once (0 if the scenario imports no networking interface).
    pub fn connecting_vus(&self) -> u64 {
        if self.scenario.uses_network {
            u64::from(self.plan.pool_vus())
        } else {
            0
        }
    }

    /// Shares this machine's default memory ceiling among `processes`
    /// processes of the run (`--processes`), when `--max-memory` was not
    /// given: each would otherwise take 80% of the machine for itself.
    pub fn share_memory(&mut self, processes: u32) {
        let o = &mut self.spec.options;
        if o.max_memory.is_none() && processes > 1 {
            o.max_memory = memory::ceiling(None).map(|m| m / u64::from(processes));
        }
    }

    /// What checks a replacement component for this run when no local
    /// run's engine is at hand (a coordinator's): an engine of its own.
    pub fn checker(&self) -> Result<Arc<swap::Swapper>> {
        let settings = EngineSettings {
            instances: 2,
            ..self.settings
        };
        Ok(Arc::new(swap::Swapper {
            engine: engine::build(&settings, false)?,
            settings,
            limits_cpu: self.spec.options.cpu_limit,
            fuel: self.spec.options.fuel,
            http: http_config(&self.spec),
            egress: Arc::new(self.spec.egress().map_err(|e| anyhow!(e))?),
            env: Arc::new(env(&self.spec)),
            classes: self
                .plan
                .classes
                .iter()
                .map(|c| c.name.to_string())
                .collect(),
            tick: true,
            seed: self.spec.options.seed.unwrap_or(0),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }))
    }

    /// Starts the run now, feeding `sinks` from its driver (the caller
    /// opens the spec's time-series outputs among them; the JSON summary
    /// is written by the run itself).
    pub fn start(self, sinks: Vec<Box<dyn Sink>>) -> Result<RunHandle> {
        self.start_at(sinks, None)
    }

    /// [`Prepared::start`], with the VUs' time zero at `at` (a distributed
    /// run's common start), or now.
    pub fn start_at(
        self,
        sinks: Vec<Box<dyn Sink>>,
        at: Option<std::time::Instant>,
    ) -> Result<RunHandle> {
        let Prepared {
            spec,
            scenario,
            plan,
            thresholds,
            settings,
            options: _,
        } = self;
        let engine = engine::build(&settings, settings.pool)?;
        let component = engine::transfer(&scenario.component, &engine)?;
        let pre = engine::link(&engine, &component, &spec.scenario.name)?;
        let ticker = engine::EpochTicker::start(engine.clone())?;
        let recorder = Arc::new(Recorder::with_max_series(
            shard_count(),
            spec.options.max_series as usize,
        ));
        let env = Arc::new(env(&spec));
        let egress = Arc::new(spec.egress().map_err(|e| anyhow!(e))?);
        let ctx = Arc::new(RunContext {
            recorder: recorder.clone(),
            env: env.clone(),
            started: at.unwrap_or_else(Instant::now),
            http: http_config(&spec),
            egress: egress.clone(),
            log_limit: Arc::new(host_api::stdio::LogLimit::new(spec.options.log_rate)),
            seed: spec.options.seed.unwrap_or(0),
            connections: Default::default(),
        });
        let started_wall = SystemTime::now();
        let shared = Arc::new(Shared {
            engine: engine.clone(),
            code: RwLock::new(Arc::new(Code { pre, generation: 0 })),
            generation: AtomicU64::new(0),
            ctx,
            settings,
            cpu_limit: spec.options.cpu_limit,
            fuel: spec.options.fuel,
            iteration_timeout: plan.iteration_timeout,
            stop: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            all_ready: OnceLock::new(),
            total: plan.local_vus() as usize,
            started: at.map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std),
            trap_log: exec::vu::TrapLog::default(),
            retired: Default::default(),
        });
        let exec = exec::start(&plan, &shared);
        let (stop, hard_stop) = (shared.stop.clone(), shared.hard_stop.clone());
        let swapper = Arc::new(swap::Swapper {
            engine,
            settings,
            limits_cpu: spec.options.cpu_limit,
            fuel: spec.options.fuel,
            http: http_config(&spec),
            egress,
            env,
            classes: plan.classes.iter().map(|c| c.name.to_string()).collect(),
            tick: false,
            seed: spec.options.seed.unwrap_or(0),
            one_at_a_time: tokio::sync::Mutex::new(()),
        });
        let hub = Arc::new(Hub::new(Meta::initial(&spec, &plan), thresholds.clone()));
        let (controller, commands) = Controller::channel();
        let driver = driver::Driver {
            spec: spec.clone(),
            plan,
            thresholds,
            shared: shared.clone(),
            exec,
            recorder,
            hub: hub.clone(),
            sinks,
            commands,
            started_wall,
            _ticker: ticker,
            _stop_on_drop: driver::StopOnDrop(shared.clone()),
        };
        let task = tokio::spawn(driver.run());
        Ok(RunHandle {
            spec,
            controller,
            hub,
            swapper: Some(swapper),
            task,
            stops: Some((stop, hard_stop)),
        })
    }
}

/// A started run.
pub struct RunHandle {
    spec: RunSpec,
    controller: Controller,
    hub: Arc<Hub>,
    swapper: Option<Arc<swap::Swapper>>,
    task: JoinHandle<Arc<crate::report::Summary>>,
    /// The VUs' stop and hard-stop signals, for a stop that must not wait
    /// for the driver (a worker whose lease ran out).
    stops: Option<(CancellationToken, CancellationToken)>,
}

impl RunHandle {
    /// A handle over a run driven elsewhere (a distributed run's
    /// coordinator), whose replacement components `swapper` checks.
    pub(crate) fn from_parts(
        spec: RunSpec,
        controller: Controller,
        hub: Arc<Hub>,
        swapper: Option<Arc<swap::Swapper>>,
        task: JoinHandle<Arc<crate::report::Summary>>,
    ) -> Self {
        Self {
            spec,
            controller,
            hub,
            swapper,
            task,
            stops: None,
        }
    }

    /// The VUs' stop and hard-stop signals (a local run's): cancelling
    /// them stops the load at once, whatever the driver is doing.
    pub fn stop_tokens(&self) -> Option<(CancellationToken, CancellationToken)> {
        self.stops.clone()
    }

    /// The run's spec.
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    /// Its control channel.
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// Its history, totals, state and summary.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// What checking a replacement scenario needs.
    pub fn swapper(&self) -> Option<Arc<swap::Swapper>> {
        self.swapper.clone()
    }

    /// Waits for the end of the run and returns its summary.
    pub async fn wait(self) -> Result<Arc<crate::report::Summary>> {
        match self.task.await {
            Ok(s) => Ok(s),
            Err(e) => {
                let why = format!("the run's driver failed: {e}");
                self.hub.fail(why.clone());
                Err(anyhow!(why))
            }
        }
    }
}

/// Shards for the recorder: enough that worker threads rarely share one.
fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        * 2
}
