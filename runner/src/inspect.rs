//! `runner inspect`: what a scenario component is and asks for, without
//! running it: its size, the interfaces it imports and exports, and the
//! options (VU classes, load models, thresholds) it declares.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use host_api::ScenarioOptions;
use serde::Serialize;

use crate::engine::{self, EngineSettings};

/// What `inspect` reports.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The file.
    pub scenario: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Interfaces the component imports (WIT names).
    pub imports: Vec<String>,
    /// Interfaces it exports.
    pub exports: Vec<String>,
    /// Whether it imports WASI (built with std for wasm32-wasip1/p2).
    pub uses_wasi: bool,
    /// The language and toolchain it was built with, when that shows.
    pub language: Option<String>,
    /// Core instances one VU of it creates (what the pool is sized for).
    pub core_instances: u32,
    /// Tables one VU of it creates.
    pub tables: u32,
    /// Linear memory one VU starts with, bytes.
    pub initial_memory: u64,
    /// The memory limit a VU gets without `--memory-limit`, bytes.
    pub memory_limit: u64,
    /// The options it declares.
    pub options: OptionsView,
}

/// The declared options, in plain units.
#[derive(Debug, Serialize)]
pub struct OptionsView {
    /// Run length, seconds.
    pub duration_s: Option<f64>,
    /// The VU classes.
    pub classes: Vec<ClassView>,
    /// Threshold expressions.
    pub thresholds: Vec<String>,
}

/// One declared VU class.
#[derive(Debug, Serialize)]
pub struct ClassView {
    /// Name.
    pub name: String,
    /// VUs (allocated up front, for an open-model class).
    pub vus: u32,
    /// Open model: arrivals per second.
    pub rate: Option<f64>,
    /// Open model: VU cap.
    pub max_vus: Option<u32>,
    /// Stages as (seconds, target).
    pub stages: Vec<(f64, f64)>,
    /// VU start rate per second, and whether Poisson.
    pub start_rate: Option<(f64, bool)>,
    /// Think time, seconds.
    pub think_time_s: Option<f64>,
    /// Pacing, seconds.
    pub pacing_s: Option<f64>,
    /// Iterations per VU.
    pub iterations: Option<u64>,
    /// Environment keys the class sets.
    pub env: Vec<String>,
}

fn secs(ns: u64) -> f64 {
    Duration::from_nanos(ns).as_secs_f64()
}

impl From<ScenarioOptions> for OptionsView {
    fn from(o: ScenarioOptions) -> Self {
        OptionsView {
            duration_s: o.duration.map(secs),
            classes: o
                .classes
                .into_iter()
                .map(|c| ClassView {
                    name: c.name,
                    vus: c.vus,
                    rate: c.rate,
                    max_vus: c.max_vus,
                    stages: c
                        .stages
                        .iter()
                        .map(|s| (secs(s.duration), s.target))
                        .collect(),
                    start_rate: c.start_rate.map(|r| (r, c.poisson_start)),
                    think_time_s: c.think_time.map(secs),
                    pacing_s: c.pacing.map(secs),
                    iterations: c.iterations,
                    env: c.env.into_iter().map(|(k, _)| k).collect(),
                })
                .collect(),
            thresholds: o.thresholds,
        }
    }
}

/// Inspects the component at `path`; `env` is passed to its `options()`.
pub async fn inspect(path: &Path, env: &[(String, String)]) -> Result<Report> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read scenario {shown}"))?;
    let small_tables = engine::small_tables(&bytes);
    let settings = EngineSettings {
        instances: 1,
        memory_limit: 256 << 20,
        fuel: false,
        core_instances: 64,
        tables: 64,
        memories: engine::MAX_MEMORIES_PER_VU,
        table_elements: 1_000_000,
        cow: engine::wants_cow(&bytes),
        eager_tables: small_tables,
        pool: !small_tables,
        wide: true,
    };
    let engine = engine::build(&settings, false)?;
    let scenario = engine::load(&engine, &shown, &bytes, &settings)?;
    let ty = scenario.component.component_type();
    let mut imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_owned()).collect();
    let mut exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_owned()).collect();
    imports.sort();
    exports.sort();
    let uses_wasi = imports.iter().any(|i| i.starts_with("wasi:"));
    let limits = engine::probe::ProbeLimits {
        settings,
        cpu_limit: Duration::from_secs(2),
        fuel: None,
        http: host_api::http::ClientConfig::new(Duration::from_secs(10), 1 << 20, false),
        // Inspecting never reaches out.
        egress: Arc::new(
            host_api::egress::Egress::new(&[], &["0.0.0.0/0".into(), "::/0".into()])
                .unwrap_or_default(),
        ),
        tick: true,
        seed: 0,
    };
    let env = Arc::new(env.iter().cloned().collect::<HashMap<_, _>>());
    let options =
        engine::probe::options(&engine, &scenario.component, &shown, env, &limits).await?;
    Ok(Report {
        scenario: path.display().to_string(),
        bytes: scenario.size,
        imports,
        exports,
        uses_wasi,
        language: engine::guest_language(&bytes),
        core_instances: scenario.core_instances,
        tables: scenario.tables,
        initial_memory: engine::initial_memory_bytes(&bytes),
        memory_limit: engine::memory_limit_for(&bytes, crate::spec::defaults::MEMORY_LIMIT),
        options: options.into(),
    })
}

impl Report {
    /// The report as text.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario  {} ({} KiB)",
            self.scenario,
            self.bytes.div_ceil(1024)
        );
        let _ = writeln!(s, "exports   {}", self.exports.join(", "));
        let _ = writeln!(s, "imports   {}", self.imports.join(", "));
        let _ = writeln!(
            s,
            "wasi      {}",
            if self.uses_wasi {
                "yes (std guest; no files, sockets or env granted)"
            } else {
                "no"
            }
        );
        if let Some(l) = &self.language {
            let _ = writeln!(s, "language  {l}");
        }
        let _ = writeln!(
            s,
            "per VU    {} core instances, {} table(s), {} of memory to start (limit {} unless --memory-limit)",
            self.core_instances,
            self.tables,
            crate::units::format_size(self.initial_memory),
            crate::units::format_size(self.memory_limit)
        );
        let o = &self.options;
        if let Some(d) = o.duration_s {
            let _ = writeln!(s, "duration  {d}s");
        }
        if o.classes.is_empty() {
            let _ = writeln!(
                s,
                "classes   none declared: one class `default`, sized by --vus"
            );
        }
        for c in &o.classes {
            let mut parts = vec![format!("{} VUs", c.vus)];
            if let Some(r) = c.rate {
                parts.push(format!("open model {r}/s"));
            }
            if let Some(m) = c.max_vus {
                parts.push(format!("max {m} VUs"));
            }
            if !c.stages.is_empty() {
                let st: Vec<String> = c.stages.iter().map(|(d, t)| format!("{d}s:{t}")).collect();
                parts.push(format!("stages {}", st.join(" ")));
            }
            if let Some((r, p)) = c.start_rate {
                parts.push(format!(
                    "start {r} VUs/s{}",
                    if p { " (Poisson)" } else { "" }
                ));
            }
            if let Some(t) = c.think_time_s {
                parts.push(format!("think {t}s"));
            }
            if let Some(p) = c.pacing_s {
                parts.push(format!("pacing {p}s"));
            }
            if let Some(i) = c.iterations {
                parts.push(format!("{i} iterations/VU"));
            }
            if !c.env.is_empty() {
                parts.push(format!("env {}", c.env.join(",")));
            }
            let _ = writeln!(s, "class     {}: {}", c.name, parts.join(", "));
        }
        for t in &o.thresholds {
            let _ = writeln!(s, "threshold {t}");
        }
        s
    }
}
