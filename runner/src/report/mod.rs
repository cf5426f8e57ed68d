//! The end-of-run summary: computed from the merged metrics, printed as a
//! table and written as JSON (which keeps the raw, mergeable aggregates).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use host_api::recorder::Hist;
use host_api::Metrics;
use serde::{Deserialize, Serialize};

pub mod csv;
pub mod html;
mod messaging;
mod table;
pub mod usage;

pub use messaging::MessagingRow;

/// Facts about the run itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// The scenario file.
    pub scenario: String,
    /// Its size in bytes.
    pub scenario_bytes: u64,
    /// SHA-256 of the component, hex.
    #[serde(default)]
    pub sha256: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Wall-clock length of the run, seconds.
    pub duration_s: f64,
    /// VUs in all classes (allocated up front, in the open model).
    pub vus: u32,
    /// The most VUs that could run at once.
    pub max_vus: u32,
    /// The most VUs that did run at once.
    #[serde(default)]
    pub peak_vus: u32,
    /// The open model's settings, if the run used it.
    pub open_model: Option<OpenMeta>,
    /// VUs per class, in order.
    pub classes: Vec<(String, u32)>,
    /// Whether someone stopped the run early (Ctrl-C, SIGTERM, the API).
    pub interrupted: bool,
    /// Who stopped the run early, if someone did.
    #[serde(default)]
    pub stopped_by: Option<crate::events::StopBy>,
    /// The `abort` threshold that stopped the run early, if one did.
    pub aborted_by_threshold: Option<String>,
    /// Why the runner stopped the run for its own memory (`--max-memory`),
    /// if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_stop: Option<String>,
    /// The most memory (RSS) the runner process had during the run, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_peak_rss: Option<u64>,
    /// Seconds from the start until every VU had its instance (includes
    /// the ramp-up); absent if some VU never started.
    pub startup_s: Option<f64>,
    /// Guest log lines dropped by the rate limit.
    pub log_lines_suppressed: u64,
    /// Load changes, stops and scenario swaps made while the run went on.
    #[serde(default)]
    pub events: Vec<crate::events::ControlEvent>,
    /// When the scenario was swapped: each component and how long it ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<crate::events::Phase>,
    /// The options the run was given.
    #[serde(default)]
    pub options: crate::spec::RunOptions,
    /// Output files that could not be written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_errors: Vec<String>,
    /// Measurements counted in a family's overflow row (the scenario made
    /// more series than `--max-series`), by family.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub series_overflow: BTreeMap<String, u64>,
    /// A distributed run's workers and what each did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerRow>,
    /// A distributed run: how far apart the workers may have started, by
    /// the clock probes' round trips (half the slowest lowest round trip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_skew_ms: Option<f64>,
}

/// One worker of a distributed run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerRow {
    /// The coordinator's id for it.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Where it connected from.
    pub address: String,
    /// Its relative capacity.
    pub capacity: f64,
    /// Closed-model VUs it started with (its stripe of them).
    pub vus: u32,
    /// Its fraction of open-model rates.
    pub fraction: f64,
    /// HTTP requests it made.
    pub requests: u64,
    /// Of which failed.
    pub failed: u64,
    /// Iterations it completed.
    pub iterations: u64,
    /// Its clock minus the coordinator's, ms.
    pub clock_offset_ms: f64,
    /// The lowest round trip of the clock probes, ms.
    pub rtt_ms: f64,
    /// `ended`, `lost` or `running`.
    pub status: String,
    /// When it was declared lost, seconds into the run.
    pub lost_at_s: Option<f64>,
    /// Why it ended its part early (it reached its memory ceiling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Its HTTP latency, all request names (HdrHistogram V2, base64): the
    /// summary's merge of all workers' is exactly the merge of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Hist>,
    /// Average size of its snapshots on the wire, bytes.
    #[serde(default)]
    pub snapshot_bytes: u64,
    /// Lost: open-model arrivals of its share that nobody ran (counted in
    /// the dropped iterations).
    #[serde(default)]
    pub missed_iterations: u64,
    /// Lost: closed-model VU-seconds of its share that nobody ran.
    #[serde(default)]
    pub missed_vu_seconds: f64,
}

impl Meta {
    /// The facts known before a run starts.
    pub fn initial(spec: &crate::spec::RunSpec, plan: &crate::plan::Plan) -> Self {
        Meta {
            scenario: spec.scenario.name.clone(),
            scenario_bytes: spec.scenario.bytes,
            sha256: spec.scenario.sha256.clone(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            duration_s: 0.0,
            vus: plan.total_vus(),
            max_vus: plan.max_vus(),
            peak_vus: 0,
            open_model: None,
            classes: plan
                .classes
                .iter()
                .map(|c| (c.name.to_string(), c.vus))
                .collect(),
            interrupted: false,
            stopped_by: None,
            aborted_by_threshold: None,
            memory_stop: None,
            runner_peak_rss: None,
            startup_s: None,
            log_lines_suppressed: 0,
            events: Vec::new(),
            scenarios: Vec::new(),
            options: spec.options.clone(),
            output_errors: Vec::new(),
            series_overflow: BTreeMap::new(),
            workers: Vec::new(),
            start_skew_ms: None,
        }
    }
}

/// Settings of an open-model run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenMeta {
    /// Target arrivals per second, all classes.
    pub rate: f64,
    /// Arrival spacing.
    pub arrival: crate::spec::Arrival,
    /// Seconds during which arrivals were scheduled.
    pub window_s: f64,
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Smallest value.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

impl Percentiles {
    /// From a histogram in `unit`s per millisecond (1000 for microseconds,
    /// 1 for unitless values shown as they are).
    pub fn of(h: &Hist, per_ms: f64) -> Self {
        let i = h.inner();
        let v = |x: u64| x as f64 / per_ms;
        if i.is_empty() {
            return Self {
                min: 0.0,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p95: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Self {
            min: v(i.min()),
            mean: i.mean() / per_ms,
            p50: v(h.quantile(0.50)),
            p90: v(h.quantile(0.90)),
            p95: v(h.quantile(0.95)),
            p99: v(h.quantile(0.99)),
            p999: v(h.quantile(0.999)),
            max: v(i.max()),
        }
    }
}

/// One request name's line of the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpRow {
    /// The request name.
    pub name: String,
    /// The request's tags (a name with different tags has several rows).
    pub tags: BTreeMap<String, String>,
    /// The key of this row in the raw aggregates.
    #[serde(skip)]
    pub key: String,
    /// All requests.
    pub requests: u64,
    /// Requests per second over the run.
    pub rate: f64,
    /// Failed requests: no response, or status >= 400.
    pub failed: u64,
    /// Responses by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a response, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency of requests with a response, milliseconds.
    pub latency_ms: Percentiles,
    /// Time to first byte, milliseconds.
    pub wait_ms: Percentiles,
    /// Open model: latency from each request's intended start (free of
    /// coordinated omission), milliseconds.
    pub latency_corrected_ms: Option<Percentiles>,
    /// Response body bytes.
    pub bytes_received: u64,
    /// Request body bytes.
    pub bytes_sent: u64,
    /// New connections.
    pub connections: u64,
}

impl HttpRow {
    /// The name, with its tags as `name {k=v, ...}` when it has any.
    pub fn label(&self) -> String {
        host_api::recorder::key_label(&self.key)
    }
}

/// All requests carrying one tag, across names.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagRow {
    /// Requests with the tag.
    pub requests: u64,
    /// Of which failed.
    pub failed: u64,
    /// Their latency, milliseconds.
    pub latency_ms: Percentiles,
}

/// One check's line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckRow {
    /// The check name.
    pub name: String,
    /// Its tags (`group`, ...), if any.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Passes.
    pub pass: u64,
    /// Failures.
    pub fail: u64,
    /// Share of passes, 0–1.
    pub rate: f64,
}

/// The whole summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// About the run.
    pub meta: Meta,
    /// HTTP requests per name (and tags), sorted by name.
    pub http: Vec<HttpRow>,
    /// HTTP requests by tag (`key=value`), across names.
    pub http_by_tag: BTreeMap<String, TagRow>,
    /// MQTT per metric name (connection, topic, subscription).
    pub mqtt: Vec<MessagingRow>,
    /// NATS per metric name (connection, subject, subscription).
    pub nats: Vec<MessagingRow>,
    /// Checks, sorted by name.
    pub checks: Vec<CheckRow>,
    /// Iterations: completed ok, failed, aborted.
    pub iterations: IterationRow,
    /// Iterations ended early, by kind.
    pub traps: BTreeMap<String, u64>,
    /// Connections the egress rules refused, by destination (`host:port`).
    #[serde(default)]
    pub denied: BTreeMap<String, u64>,
    /// What each VU class cost (CPU in guest code and host calls, memory,
    /// fuel, traps) and its costliest VUs.
    #[serde(default)]
    pub classes: BTreeMap<String, usage::UsageRow>,
    /// Custom counters.
    pub counters: BTreeMap<String, u64>,
    /// Custom gauges: last, min, max.
    pub gauges: BTreeMap<String, (f64, f64, f64)>,
    /// Custom timings, milliseconds.
    pub timings: BTreeMap<String, Percentiles>,
    /// Custom histograms, raw values.
    pub histograms: BTreeMap<String, Percentiles>,
    /// Thresholds and their outcomes, in the order given.
    pub thresholds: Vec<crate::thresholds::Outcome>,
    /// The raw, mergeable aggregates (histograms as HdrHistogram V2, base64).
    pub raw: Metrics,
}

/// Iteration totals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IterationRow {
    /// Returned ok.
    pub ok: u64,
    /// Returned an error.
    pub failed: u64,
    /// Ended by a trap, a limit or a cancel.
    pub aborted: u64,
    /// Completed iterations per second.
    pub rate: f64,
    /// Duration of completed iterations, milliseconds.
    pub duration_ms: Percentiles,
    /// Open model: from each iteration's scheduled start to its end, ms.
    pub latency_ms: Option<Percentiles>,
    /// Open model: arrivals that found no free VU.
    pub dropped: u64,
    /// Open model: arrivals started per second (completed or not).
    pub arrival_rate: Option<f64>,
    /// Open model: how late the scheduler handed out arrivals, ms.
    pub scheduler_lag_ms: Option<Percentiles>,
}

impl Summary {
    /// Computes the summary of `m`, keeping `m` as its raw aggregates.
    pub fn new(meta: Meta, m: Metrics) -> Self {
        let mut s = Self::of(meta, &m);
        s.raw = m;
        s
    }

    /// Computes the summary of `m` without keeping the raw aggregates (the
    /// live summary of a run that goes on).
    pub fn of(meta: Meta, m: &Metrics) -> Self {
        let secs = meta.duration_s.max(1e-9);
        let mut http: Vec<HttpRow> = m
            .http
            .iter()
            .map(|(key, r)| HttpRow {
                name: host_api::recorder::split_key(key).0.to_owned(),
                tags: host_api::recorder::split_key(key)
                    .1
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                key: key.clone(),
                requests: r.requests(),
                rate: r.requests() as f64 / secs,
                failed: r.failed(),
                statuses: r.statuses.iter().map(|(k, v)| (*k, *v)).collect(),
                errors: r.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                latency_ms: Percentiles::of(&r.latency, 1000.0),
                wait_ms: Percentiles::of(&r.wait, 1000.0),
                latency_corrected_ms: (r.corrected.count() > 0)
                    .then(|| Percentiles::of(&r.corrected, 1000.0)),
                bytes_received: r.bytes_received,
                bytes_sent: r.bytes_sent,
                connections: r.connections,
            })
            .collect();
        http.sort_by(|a, b| a.key.cmp(&b.key));
        let mut by_tag: BTreeMap<String, host_api::recorder::RequestStats> = BTreeMap::new();
        for (key, r) in &m.http {
            for (k, v) in host_api::recorder::split_key(key).1 {
                by_tag.entry(format!("{k}={v}")).or_default().merge(r);
            }
        }
        let http_by_tag = by_tag
            .into_iter()
            .map(|(tag, r)| {
                let row = TagRow {
                    requests: r.requests(),
                    failed: r.failed(),
                    latency_ms: Percentiles::of(&r.latency, 1000.0),
                };
                (tag, row)
            })
            .collect();
        let mut checks: Vec<CheckRow> = m
            .checks
            .iter()
            .map(|(key, c)| CheckRow {
                name: host_api::recorder::split_key(key).0.to_owned(),
                tags: tags_of(key),
                pass: c.pass,
                fail: c.fail,
                rate: c.pass as f64 / (c.pass + c.fail).max(1) as f64,
            })
            .collect();
        checks.sort_by(|a, b| (&a.name, &a.tags).cmp(&(&b.name, &b.tags)));
        let it = &m.iterations;
        Summary {
            iterations: IterationRow {
                ok: it.ok,
                failed: it.failed,
                aborted: it.aborted,
                rate: (it.ok + it.failed) as f64 / secs,
                duration_ms: Percentiles::of(&it.duration, 1000.0),
                latency_ms: (it.latency.count() > 0).then(|| Percentiles::of(&it.latency, 1000.0)),
                dropped: it.dropped,
                arrival_rate: meta
                    .open_model
                    .as_ref()
                    .map(|o| it.scheduler_lag.count() as f64 / o.window_s.max(1e-9)),
                scheduler_lag_ms: (it.scheduler_lag.count() > 0)
                    .then(|| Percentiles::of(&it.scheduler_lag, 1000.0)),
            },
            traps: m.traps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            denied: m.denied.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            classes: m
                .usage
                .iter()
                .map(|(k, u)| (k.clone(), usage::UsageRow::of(u)))
                .collect(),
            counters: m.counters.iter().map(|(k, v)| (label(k), *v)).collect(),
            gauges: m
                .gauges
                .iter()
                .map(|(k, g)| (label(k), (g.last, g.min, g.max)))
                .collect(),
            timings: m
                .timings
                .iter()
                .map(|(k, h)| (label(k), Percentiles::of(h, 1000.0)))
                .collect(),
            histograms: m
                .histograms
                .iter()
                .map(|(k, h)| (label(k), Percentiles::of(h, 1.0)))
                .collect(),
            mqtt: messaging::rows(&m.mqtt, secs),
            nats: messaging::rows(&m.nats, secs),
            meta,
            http,
            http_by_tag,
            checks,
            thresholds: Vec::new(),
            raw: Metrics::default(),
        }
    }

    /// Whether every threshold held.
    pub fn thresholds_passed(&self) -> bool {
        self.thresholds.iter().all(|t| t.pass)
    }

    /// Writes the summary as JSON to `path`, atomically: a reader sees the
    /// old file or the complete new one, never a partial write.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).context("cannot encode the summary")?;
        write_atomic(path, &text)
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`; a `path` that is not a regular file (a device, a pipe:
/// `/dev/stdout`) is written in place, never replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(bytes).and_then(|()| f.flush()))
            .with_context(|| format!("cannot write {}", path.display()));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// A metric key as people read it: `name {k=v, ...}`.
fn label(key: &str) -> String {
    host_api::recorder::key_label(key)
}

/// The tags of a metric key.
fn tags_of(key: &str) -> BTreeMap<String, String> {
    host_api::recorder::split_key(key)
        .1
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub(crate) use crate::units::ms;

fn clip(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
