//! [`RunSpec`], the single input of a run: which scenario, the load-model
//! overrides, limits, thresholds, env and outputs. It is built from the
//! command line (`cli`), from a REST body (`web`), or from a coordinator's
//! assignment, and validated here once, whatever its source. The plan never
//! sees clap types.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units;

/// Everything a run needs besides the component's bytes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunSpec {
    /// Which scenario runs.
    pub scenario: ScenarioRef,
    /// The load model, limits, thresholds and env.
    pub options: RunOptions,
    /// Files written when the run ends (or, for time series, as it goes).
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// Egress rules of the process running it (`serve`, `join`), which no
    /// spec can lift; never read from or written to the wire.
    #[serde(skip)]
    pub enforced: Option<Enforced>,
}

/// Egress rules a process holds every run it takes to (on top of the
/// run's own).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Enforced {
    /// `--allow-host` rules; none means loopback only.
    pub allow: Vec<String>,
    /// `--block-host` rules.
    pub block: Vec<String>,
}

impl Enforced {
    /// The operator's rules: what they allow (loopback only if they name
    /// nothing) minus what they block.
    pub fn egress(&self) -> Result<host_api::egress::Egress, String> {
        if self.allow.is_empty() {
            let mut e = host_api::egress::Egress::loopback_only();
            e.block_also(&self.block)?;
            Ok(e)
        } else {
            host_api::egress::Egress::new(&self.allow, &self.block)
        }
    }
}

impl RunSpec {
    /// Where this run's VUs may connect: its own rules, within the
    /// process's.
    pub fn egress(&self) -> Result<host_api::egress::Egress, String> {
        let o = &self.options;
        let own = host_api::egress::Egress::new(&o.allow_hosts, &o.block_hosts)?;
        Ok(match &self.enforced {
            None => own,
            Some(e) => own.within(e.egress()?),
        })
    }
}

/// A scenario component, as a run refers to it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ScenarioRef {
    /// How people know it: the file's path, or the uploaded file's name.
    pub name: String,
    /// SHA-256 of the component's bytes, lower-case hex (set when loaded).
    #[serde(default)]
    pub sha256: String,
    /// Size of the component, bytes (set when loaded).
    #[serde(default)]
    pub bytes: u64,
}

/// A run's options: the command line's `runner run` flags, or the JSON
/// `config` of `POST /api/v1/runs`. Every field is optional; absent fields
/// take the scenario's own settings or the documented defaults.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunOptions {
    /// Virtual users; with several VU classes, scales their counts.
    #[schema(minimum = 1, maximum = 1000000)]
    pub vus: Option<u32>,
    /// Open model: the most VUs started on demand. Closed model: the most
    /// VUs a class may be raised to while the run goes on.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_vus: Option<u32>,
    /// How long to run (`30s`, `5m`).
    #[serde(with = "units::serde_opt_duration")]
    #[schema(value_type = Option<String>, example = "30s")]
    pub duration: Option<Duration>,
    /// Iterations per VU.
    #[schema(minimum = 1)]
    pub iterations: Option<u64>,
    /// Iterations shared by all VUs.
    #[schema(minimum = 1)]
    pub shared_iterations: Option<u64>,
    /// Open model: iterations started per second.
    #[schema(minimum = 0, maximum = 10000000)]
    pub rate: Option<f64>,
    /// Stages, `DURATION:TARGET` each (`"30s:100"`).
    #[schema(value_type = Vec<String>, example = json!(["10s:20", "20s:20", "5s:0"]))]
    pub stages: Vec<Stage>,
    /// Open model: arrival spacing.
    pub arrival: Arrival,
    /// Closed model: pause after each iteration.
    #[serde(with = "units::serde_opt_duration")]
    #[schema(value_type = Option<String>, example = "1s")]
    pub think_time: Option<Duration>,
    /// Closed model: least time between a VU's iteration starts.
    #[serde(with = "units::serde_opt_duration")]
    #[schema(value_type = Option<String>, example = "2s")]
    pub pacing: Option<Duration>,
    /// VU starts are spread evenly over this time.
    #[serde(with = "units::serde_duration")]
    #[schema(value_type = String, example = "1s")]
    pub ramp_up: Duration,
    /// Time in-flight iterations get to finish at the end.
    #[serde(with = "units::serde_duration")]
    #[schema(value_type = String, example = "30s")]
    pub grace: Duration,
    /// Values the scenario reads with `vu::env`.
    pub env: BTreeMap<String, String>,
    /// Pass/fail criteria; replace the scenario's own when given.
    #[schema(example = json!(["http_req_duration p(95)<200ms", "checks rate>0.99"]))]
    pub thresholds: Vec<String>,
    /// CPU time an iteration may spend in guest code.
    #[serde(with = "units::serde_duration")]
    #[schema(value_type = String, example = "2s")]
    pub cpu_limit: Duration,
    /// Fuel units per iteration, if metered.
    #[schema(minimum = 1)]
    pub fuel: Option<u64>,
    /// Linear memory per VU, bytes (or a string such as `"32MiB"`). When
    /// absent, sized from the component: twice its initial memory, at
    /// least 32 MiB; a run's JSON records the value used.
    #[serde(default, with = "units::serde_opt_size")]
    #[schema(value_type = Option<u64>)]
    pub memory_limit: Option<u64>,
    /// Core wasm instances per VU, at most (the pool is sized for what the
    /// component needs).
    #[schema(minimum = 1, maximum = 1000)]
    pub instance_limit: u32,
    /// Tables per VU, at most (the pool is sized for what the component
    /// needs).
    #[schema(minimum = 1, maximum = 1000)]
    pub table_limit: u32,
    /// Elements per table.
    #[schema(minimum = 1, maximum = 10000000)]
    pub table_elements: u32,
    /// Wall-clock limit of an iteration.
    #[serde(with = "units::serde_opt_duration")]
    #[schema(value_type = Option<String>, example = "10s")]
    pub iteration_timeout: Option<Duration>,
    /// Timeout of an HTTP request that sets none.
    #[serde(with = "units::serde_duration")]
    #[schema(value_type = String, example = "60s")]
    pub http_timeout: Duration,
    /// Largest HTTP response body accepted, bytes (or `"16MiB"`).
    #[serde(with = "units::serde_size")]
    #[schema(value_type = u64)]
    pub max_body: u64,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Guest log lines per second across all VUs.
    pub log_rate: u64,
    /// Distinct series (name and tags) per metric family; more are
    /// counted in one overflow row.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_series: u32,
    /// Destinations VUs may connect to (HTTP, MQTT, NATS): `host`,
    /// `host:port`, `*.example.com`, an IP or a CIDR. None: any (on an
    /// agent or worker, what its operator allows).
    pub allow_hosts: Vec<String>,
    /// Destinations VUs may not connect to (same forms); they win over
    /// `allow_hosts`.
    pub block_hosts: Vec<String>,
    /// Local addresses HTTP connections are made from, VUs taking them in
    /// turn: IPs, ranges `A-B` or CIDR blocks `A/N` (at most 65,536 in
    /// all). More than ~28,000 connections to one target need several.
    /// None: the system's choice.
    #[serde(default)]
    pub local_addrs: Vec<String>,
    /// The run's seed: every random source a VU can reach (WASI random,
    /// Poisson arrivals and starts) derives from it and the VU's id, so the
    /// same seed replays the same requests. Drawn at random when not
    /// given; the summary records the one used.
    pub seed: Option<u64>,
    /// The runner stops starting iterations when its own memory (RSS)
    /// reaches this many bytes (or a string such as `"8GiB"`). None: 80%
    /// of the memory of the machine (or container) the run is on.
    #[serde(with = "units::serde_opt_size")]
    #[schema(value_type = Option<u64>, minimum = 33554432)]
    pub max_memory: Option<u64>,
}

/// Defaults, as the command line's `--help` shows them.
pub mod defaults {
    use std::time::Duration;

    /// `--ramp-up`.
    pub const RAMP_UP: Duration = Duration::from_secs(1);
    /// `--grace`.
    pub const GRACE: Duration = Duration::from_secs(30);
    /// `--cpu-limit`.
    pub const CPU_LIMIT: Duration = Duration::from_secs(2);
    /// `--memory-limit`, at least (it is sized from the component).
    pub const MEMORY_LIMIT: u64 = 32 << 20;
    /// `--instance-limit`.
    pub const INSTANCE_LIMIT: u32 = 100;
    /// `--table-limit`.
    pub const TABLE_LIMIT: u32 = 32;
    /// `--table-elements`.
    pub const TABLE_ELEMENTS: u32 = 20_000;
    /// `--http-timeout`.
    pub const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
    /// `--max-body`.
    pub const MAX_BODY: u64 = 16 << 20;
    /// `--log-rate`.
    pub const LOG_RATE: u64 = 100;
    /// `--max-series`.
    pub const MAX_SERIES: u32 = 1000;
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            vus: None,
            max_vus: None,
            duration: None,
            iterations: None,
            shared_iterations: None,
            rate: None,
            stages: Vec::new(),
            arrival: Arrival::Even,
            think_time: None,
            pacing: None,
            ramp_up: defaults::RAMP_UP,
            grace: defaults::GRACE,
            env: BTreeMap::new(),
            thresholds: Vec::new(),
            cpu_limit: defaults::CPU_LIMIT,
            fuel: None,
            memory_limit: None,
            instance_limit: defaults::INSTANCE_LIMIT,
            table_limit: defaults::TABLE_LIMIT,
            table_elements: defaults::TABLE_ELEMENTS,
            iteration_timeout: None,
            http_timeout: defaults::HTTP_TIMEOUT,
            max_body: defaults::MAX_BODY,
            insecure: false,
            log_rate: defaults::LOG_RATE,
            max_series: defaults::MAX_SERIES,
            allow_hosts: Vec::new(),
            block_hosts: Vec::new(),
            local_addrs: Vec::new(),
            seed: None,
            max_memory: None,
        }
    }
}

/// Most iterations per second one runner schedules.
pub const MAX_RATE: f64 = 10_000_000.0;

impl RunOptions {
    /// Checks every field and every combination on its own (what needs the
    /// scenario's options is checked by the plan). The error is one
    /// sentence naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: Option<u64>| match v {
            Some(0) => Err(format!("{name} must be at least 1")),
            _ => Ok(()),
        };
        positive("vus", self.vus.map(u64::from))?;
        positive("max_vus", self.max_vus.map(u64::from))?;
        positive("iterations", self.iterations)?;
        positive("shared_iterations", self.shared_iterations)?;
        positive("fuel", self.fuel)?;
        for (name, d) in [
            ("duration", self.duration),
            ("iteration_timeout", self.iteration_timeout),
            ("http_timeout", Some(self.http_timeout)),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(format!("{name} must be longer than 0"));
            }
        }
        let staged = self
            .stages
            .iter()
            .try_fold(Duration::ZERO, |a, s| a.checked_add(s.duration));
        for (name, d) in [
            ("duration", self.duration),
            ("iteration_timeout", self.iteration_timeout),
            ("http_timeout", Some(self.http_timeout)),
            ("think_time", self.think_time),
            ("pacing", self.pacing),
            ("ramp_up", Some(self.ramp_up)),
            ("grace", Some(self.grace)),
            ("cpu_limit", Some(self.cpu_limit)),
            ("the stages together", Some(staged.unwrap_or(Duration::MAX))),
        ] {
            if d.is_some_and(|d| d > units::MAX_DURATION) {
                return Err(format!("{name} must be at most a year"));
            }
        }
        if let Some(r) = self.rate {
            if !(0.0..=MAX_RATE).contains(&r) {
                return Err(format!("rate must be 0 to {MAX_RATE} per second"));
            }
        }
        for s in &self.stages {
            if !s.target.is_finite() || s.target < 0.0 {
                return Err(format!("stage {s}: the target must be a number >= 0"));
            }
        }
        if self.shared_iterations.is_some()
            && (self.iterations.is_some() || self.rate.is_some() || !self.stages.is_empty())
        {
            return Err(
                "shared_iterations cannot be combined with iterations, rate or stages".into(),
            );
        }
        if self.rate.is_some() && (self.think_time.is_some() || self.pacing.is_some()) {
            return Err("think_time and pacing apply to the closed model, not with rate".into());
        }
        for (name, v, max) in [
            ("max_series", self.max_series, 1_000_000),
            ("instance_limit", self.instance_limit, 1_000),
            ("table_limit", self.table_limit, 1_000),
            ("table_elements", self.table_elements, 10_000_000),
        ] {
            if v == 0 || v > max {
                return Err(format!("{name} must be 1 to {max}"));
            }
        }
        for (name, n) in [
            ("stages", self.stages.len()),
            ("thresholds", self.thresholds.len()),
            ("env", self.env.len()),
        ] {
            if n > 1_000 {
                return Err(format!("{name} has {n} entries; at most 1000"));
            }
        }
        if self.max_memory.is_some_and(|m| m < 32 << 20) {
            return Err(
                "max_memory must be at least 32MiB (the runner itself needs about that)".into(),
            );
        }
        if self.env.keys().any(String::is_empty) {
            return Err("env has an empty key".into());
        }
        if self.allow_hosts.len() + self.block_hosts.len() > 1000 {
            return Err("at most 1000 allow_hosts and block_hosts rules".into());
        }
        host_api::egress::Egress::new(&self.allow_hosts, &self.block_hosts)?;
        if self.local_addrs.len() > 1000 {
            return Err("at most 1000 local_addrs patterns".into());
        }
        host_api::source::expand(&self.local_addrs)?;
        for t in &self.thresholds {
            let parsed = crate::thresholds::Threshold::parse(t)?;
            parsed.validate()?;
        }
        Ok(())
    }
}

/// One stage: reach `target` linearly over `duration`. Written
/// `DURATION:TARGET`, e.g. `30s:100`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    /// How long the ramp takes.
    pub duration: Duration,
    /// The value at its end.
    pub target: f64,
}

impl std::str::FromStr for Stage {
    type Err = String;

    fn from_str(s: &str) -> Result<Stage, String> {
        let (d, t) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not DURATION:TARGET (e.g. 30s:100)"))?;
        let duration = units::parse_duration(d).map_err(|e| format!("stage {s:?}: {e}"))?;
        let target: f64 = t
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("stage {s:?}: the target {t:?} is not a number >= 0"))?;
        Ok(Stage { duration, target })
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}",
            units::format_duration(self.duration).replace(' ', ""),
            self.target
        )
    }
}

impl Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Stage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How arrivals are spaced in the open model.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced: exactly 1/rate apart.
    #[default]
    Even,
    /// A Poisson process: exponential gaps with mean 1/rate.
    Poisson,
}

impl std::fmt::Display for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arrival::Even => "even",
            Arrival::Poisson => "poisson",
        })
    }
}

/// A results file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// The full end-of-run summary as JSON.
    Json(PathBuf),
    /// A time series: one JSON line per interval.
    Ndjson(PathBuf),
    /// A time series: one CSV row per interval and request name.
    Csv(PathBuf),
    /// The run's raw snapshots: one JSON line per interval, every count
    /// and HdrHistogram of it, so runs can be merged exactly afterwards.
    Snapshots(PathBuf),
    /// The HTML report: one offline file with the charts and tables.
    Html(PathBuf),
}

impl std::str::FromStr for Output {
    type Err = String;

    /// Parses `FORMAT=FILE`.
    fn from_str(s: &str) -> Result<Output, String> {
        const KNOWN: &str = "json=FILE, html=FILE, ndjson=FILE, csv=FILE, snapshots=FILE";
        match s.split_once('=') {
            Some((_, "")) => Err(format!("{s:?} names no file ({KNOWN})")),
            Some(("json", path)) => Ok(Output::Json(PathBuf::from(path))),
            Some(("ndjson", path)) => Ok(Output::Ndjson(PathBuf::from(path))),
            Some(("csv", path)) => Ok(Output::Csv(PathBuf::from(path))),
            Some(("snapshots", path)) => Ok(Output::Snapshots(PathBuf::from(path))),
            Some(("html", path)) => Ok(Output::Html(PathBuf::from(path))),
            Some((format, _)) => Err(format!("unknown output format {format:?} (known: {KNOWN})")),
            None => Err(format!("{s:?} is not FORMAT=FILE ({KNOWN})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_from_json_with_defaults_and_refuse_unknown_fields() {
        let o: RunOptions = serde_json::from_str(
            r#"{"vus": 3, "duration": "5s", "stages": ["1s:2", "2s:0"], "memory_limit": "64MiB",
                "env": {"A": "b"}, "arrival": "poisson"}"#,
        )
        .expect("parses");
        assert_eq!(o.vus, Some(3));
        assert_eq!(o.duration, Some(Duration::from_secs(5)));
        assert_eq!(o.stages[1].target, 0.0);
        assert_eq!(o.memory_limit, Some(64 << 20));
        assert_eq!(o.arrival, Arrival::Poisson);
        assert_eq!(o.cpu_limit, defaults::CPU_LIMIT);
        o.validate().expect("valid");
        let e = serde_json::from_str::<RunOptions>(r#"{"vu": 3}"#).expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `vu`"), "{e}");
        let e = serde_json::from_str::<RunOptions>(r#"{"duration": "soon"}"#).expect_err("bad");
        assert!(e.to_string().contains("soon"), "{e}");
        // A round trip keeps every value.
        let back: RunOptions =
            serde_json::from_str(&serde_json::to_string(&o).expect("writes")).expect("reads");
        assert_eq!(back, o);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |o: RunOptions| o.validate().expect_err("invalid");
        assert!(bad(RunOptions {
            vus: Some(0),
            ..Default::default()
        })
        .contains("vus"));
        assert!(bad(RunOptions {
            rate: Some(-1.0),
            ..Default::default()
        })
        .contains("rate"));
        assert!(bad(RunOptions {
            duration: Some(Duration::ZERO),
            ..Default::default()
        })
        .contains("duration"));
        assert!(bad(RunOptions {
            thresholds: vec!["http_req_duration p(95)".into()],
            ..Default::default()
        })
        .contains("threshold"));
        assert!(bad(RunOptions {
            stages: vec![
                "300d:1".parse().expect("stage"),
                "300d:1".parse().expect("stage")
            ],
            ..Default::default()
        })
        .contains("stages"));
        assert!(bad(RunOptions {
            grace: Duration::from_secs(u64::MAX),
            ..Default::default()
        })
        .contains("grace"));
        assert!(bad(RunOptions {
            shared_iterations: Some(3),
            iterations: Some(2),
            ..Default::default()
        })
        .contains("shared_iterations"));
    }

    #[test]
    fn stages_and_outputs_parse() {
        let s: Stage = "30s:100".parse().expect("stage");
        assert_eq!((s.duration, s.target), (Duration::from_secs(30), 100.0));
        assert_eq!(s.to_string().parse::<Stage>(), Ok(s));
        assert!("30s".parse::<Stage>().is_err());
        assert!("soon:1".parse::<Stage>().is_err());
        assert!("1s:-3".parse::<Stage>().is_err());
        assert_eq!("json=r.json".parse(), Ok(Output::Json("r.json".into())));
        assert!("xml=r.xml".parse::<Output>().is_err());
        assert!("json=".parse::<Output>().is_err());
    }
}
