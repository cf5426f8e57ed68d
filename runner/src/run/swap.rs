//! Swapping the scenario of a running run: the new component is compiled,
//! linked and asked for its options off the hot path; only then does the
//! driver put it in force, and each VU continues on it from its next
//! iteration. A component that fails any step leaves the run as it was.

use std::collections::HashMap;
use std::sync::Arc;

use super::control::{ControlError, Swap};
use crate::engine::{self, EngineSettings};

pub use crate::events::Phase;

/// What checking a new component needs from the run.
pub struct Swapper {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) settings: EngineSettings,
    pub(crate) limits_cpu: std::time::Duration,
    pub(crate) fuel: Option<u64>,
    pub(crate) http: host_api::http::ClientConfig,
    pub(crate) egress: Arc<host_api::egress::Egress>,
    pub(crate) env: Arc<HashMap<String, String>>,
    pub(crate) classes: Vec<String>,
    /// Whether checks need an epoch ticker of their own (no run's engine
    /// ticks for them: a coordinator's).
    pub(crate) tick: bool,
    /// The run's seed.
    pub(crate) seed: u64,
    /// One check at a time: each probes on the pool's one spare instance.
    pub(crate) one_at_a_time: tokio::sync::Mutex<()>,
}

impl Swapper {
    /// Compiles and checks `bytes` (known as `name`) for this run. The
    /// error says what is wrong with the component, as the CLI would.
    pub async fn prepare(&self, name: &str, bytes: Arc<[u8]>) -> Result<Swap, ControlError> {
        let _turn = self.one_at_a_time.lock().await;
        let (engine, settings) = (self.engine.clone(), self.settings);
        let shown = name.to_owned();
        let kept = bytes.clone();
        let scenario =
            tokio::task::spawn_blocking(move || engine::load(&engine, &shown, &bytes, &settings))
                .await
                .map_err(|e| ControlError::Scenario(format!("compiling {name} failed: {e}")))?
                .map_err(|e| ControlError::Scenario(engine::root_message(&e)))?;
        let limits = engine::probe::ProbeLimits {
            settings: self.settings,
            cpu_limit: self.limits_cpu,
            fuel: self.fuel,
            http: self.http.clone(),
            egress: self.egress.clone(),
            tick: self.tick,
            seed: self.seed,
        };
        let options = engine::probe::options(
            &self.engine,
            &scenario.component,
            name,
            self.env.clone(),
            &limits,
        )
        .await
        .map_err(|e| ControlError::Scenario(engine::root_message(&e)))?;
        if !options.classes.is_empty() {
            if let Some(missing) = self
                .classes
                .iter()
                .find(|c| !options.classes.iter().any(|k| &k.name == *c))
            {
                return Err(ControlError::Scenario(format!(
                    "{name} does not declare the VU class {missing:?} that this run is running"
                )));
            }
        }
        let pre = engine::link(&self.engine, &scenario.component, name)
            .map_err(|e| ControlError::Scenario(engine::root_message(&e)))?;
        Ok(Swap {
            pre,
            bytes: kept,
            scenario: crate::spec::ScenarioRef {
                name: name.to_owned(),
                sha256: scenario.sha256,
                bytes: scenario.size,
            },
        })
    }
}
