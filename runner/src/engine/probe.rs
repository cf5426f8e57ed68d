//! Asking a scenario for its options (classes, load models, thresholds) on
//! a throwaway instance, with the run's limits and a wall-clock timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use host_api::{Recorder, RunContext, ScenarioOptions, VuState};
use wasmtime::component::Component;
use wasmtime::{Engine, Store};

use super::EngineSettings;

/// Longest the scenario's `options()` may take.
pub const OPTIONS_TIMEOUT: Duration = Duration::from_secs(10);

/// What the probe's instance may use.
pub struct ProbeLimits {
    /// Engine limits (for the store's limiter).
    pub settings: EngineSettings,
    /// CPU time the call may use.
    pub cpu_limit: Duration,
    /// Fuel, if metered.
    pub fuel: Option<u64>,
    /// HTTP settings, should `options()` make a request.
    pub http: host_api::http::ClientConfig,
    /// Where it may connect.
    pub egress: Arc<host_api::egress::Egress>,
    /// Start an epoch ticker for the call (not when the engine already
    /// has one: two would halve every running VU's CPU budget).
    pub tick: bool,
    /// The run's seed (the options call's random streams derive from it).
    pub seed: u64,
}

/// Calls `options()` of `component` (known as `shown`) with `env`; what it
/// records goes nowhere. Every failure is one sentence with what to do.
pub async fn options(
    engine: &Engine,
    component: &Component,
    shown: &str,
    env: Arc<HashMap<String, String>>,
    limits: &ProbeLimits,
) -> Result<ScenarioOptions> {
    let pre = super::link(engine, component, shown)?;
    let ctx = Arc::new(RunContext {
        recorder: Arc::new(Recorder::new(1)),
        env,
        started: Instant::now(),
        http: limits.http.clone(),
        egress: limits.egress.clone(),
        log_limit: Arc::new(host_api::stdio::LogLimit::new(100)),
        seed: limits.seed,
        connections: Default::default(),
    });
    let state = VuState::new(
        ctx,
        u32::MAX,
        "options".into(),
        limits.settings.limiter(),
        limits.cpu_limit,
    );
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    if let Some(f) = limits.fuel {
        store.set_fuel(f).map_err(anyhow::Error::from)?;
    }
    // Yield on every tick so the wall-clock timeout below can fire even if
    // the guest spins.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let call = async {
        let bindings = pre.instantiate_async(&mut store).await?;
        bindings
            .runner_scenario_scenario()
            .call_options(&mut store)
            .await
    };
    let ticker = match limits.tick {
        true => Some(super::EpochTicker::start(engine.clone())?),
        false => None,
    };
    let result = tokio::time::timeout(OPTIONS_TIMEOUT, call).await;
    drop(ticker);
    match result {
        Err(_) => Err(anyhow!(
            "{shown}: the scenario's options() did not return within {OPTIONS_TIMEOUT:?}"
        )),
        Ok(Err(e)) => {
            let abort = super::trap::classify(&e, store.data());
            let hint = if abort.kind == "memory-limit" {
                "; raise --memory-limit"
            } else if abort.message.contains("instance count") {
                "; raise --instance-limit"
            } else if abort.message.contains("table") {
                "; raise --table-elements or --table-limit"
            } else {
                ""
            };
            Err(anyhow!(
                "{shown}: the scenario failed while starting up ({}: {}){hint}",
                abort.kind,
                abort.message
            ))
        }
        Ok(Ok(o)) => Ok(o),
    }
}
