//! Time-series outputs: one record per interval, as NDJSON (`--out
//! ndjson=FILE`), CSV (`--out csv=FILE`) or raw snapshots (`--out
//! snapshots=FILE`).
//!
//! Each file is written as the run goes, one whole line at a time, and
//! flushed every second: a run that is killed leaves every second it
//! completed (the JSON and HTML summaries, written at the end, are
//! replaced atomically instead).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use host_api::recorder::Hist;
use host_api::recorder::MessagingStats;
use host_api::Metrics;
use serde::Serialize;

use crate::report::Summary;
use crate::run::{Sink, Snapshot};
use crate::spec::Output;

/// Per-name figures of one interval.
#[derive(Debug, Serialize)]
pub struct IntervalStats {
    /// Requests (or iterations) completed in the interval.
    pub count: u64,
    /// Of which failed.
    pub failed: u64,
    /// Per second over the interval.
    pub rate: f64,
    /// Latency percentiles of the interval, milliseconds.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl IntervalStats {
    fn new(count: u64, failed: u64, h: &Hist, seconds: f64) -> Self {
        let ms = |q: f64| h.quantile(q) as f64 / 1000.0;
        Self {
            count,
            failed,
            rate: count as f64 / seconds.max(1e-9),
            p50: ms(0.5),
            p90: ms(0.9),
            p95: ms(0.95),
            p99: ms(0.99),
            max: ms(1.0),
        }
    }
}

/// One NDJSON line.
#[derive(Debug, Serialize)]
pub struct Record {
    /// Seconds since the run started, at the end of the interval.
    pub t: f64,
    /// Length of the interval, seconds.
    pub interval: f64,
    /// VUs active at the end of the interval.
    pub vus: usize,
    /// HTTP requests by name.
    pub http: BTreeMap<String, IntervalStats>,
    /// Iterations (failed = returned an error or were aborted).
    pub iterations: IntervalStats,
    /// Check passes and failures by name.
    pub checks: BTreeMap<String, (u64, u64)>,
    /// Iterations ended early, by kind.
    pub traps: BTreeMap<String, u64>,
    /// MQTT by metric name, then by measure (`connect`, `publish`,
    /// `receive` with the end-to-end latency of stamped messages,
    /// `errors`).
    pub mqtt: BTreeMap<String, BTreeMap<&'static str, IntervalStats>>,
    /// NATS likewise, with `request` for request/reply round trips.
    pub nats: BTreeMap<String, BTreeMap<&'static str, IntervalStats>>,
    /// What each VU class cost in the interval (CPU in guest code and in
    /// host calls, memory, fuel, traps, the costliest VUs so far).
    pub classes: BTreeMap<String, crate::report::usage::UsageRow>,
}

/// The non-empty measures of each messaging metric name in an interval.
fn messaging(
    m: &host_api::recorder::Map<String, MessagingStats>,
    secs: f64,
) -> BTreeMap<String, BTreeMap<&'static str, IntervalStats>> {
    let empty = Hist::micros();
    m.iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(name, s)| {
            let measures = [
                ("connect", s.connects, &s.connect_time),
                ("publish", s.published, &s.publish_time),
                ("receive", s.received, &s.message_latency),
                ("request", s.requests, &s.request_time),
                ("errors", s.failed(), &empty),
            ];
            let stats = measures
                .into_iter()
                .filter(|(_, n, _)| *n > 0)
                .map(|(what, n, h)| {
                    let failed = if what == "errors" { n } else { 0 };
                    (what, IntervalStats::new(n, failed, h, secs))
                })
                .collect();
            (name.clone(), stats)
        })
        .collect()
}

impl Record {
    /// The record of a run's snapshot.
    pub fn of(s: &Snapshot) -> Self {
        Self::new(
            Duration::from_secs_f64(s.t),
            Duration::from_secs_f64(s.interval),
            s.active_vus() as usize,
            &s.metrics,
        )
    }

    /// The record of `m`, the metrics of an interval of `dt` ending at `t`.
    pub fn new(t: Duration, dt: Duration, vus: usize, m: &Metrics) -> Self {
        let secs = dt.as_secs_f64();
        let it = &m.iterations;
        Record {
            t: round3(t.as_secs_f64()),
            interval: round3(secs),
            vus,
            http: m
                .http
                .iter()
                .map(|(k, r)| {
                    (
                        host_api::recorder::key_label(k),
                        IntervalStats::new(r.requests(), r.failed(), &r.latency, secs),
                    )
                })
                .collect(),
            iterations: IntervalStats::new(
                it.ok + it.failed + it.aborted,
                it.failed + it.aborted,
                &it.duration,
                secs,
            ),
            checks: m
                .checks
                .iter()
                .map(|(k, c)| (host_api::recorder::key_label(k), (c.pass, c.fail)))
                .collect(),
            traps: m.traps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            mqtt: messaging(&m.mqtt, secs),
            nats: messaging(&m.nats, secs),
            classes: m
                .usage
                .iter()
                .map(|(k, u)| (k.clone(), crate::report::usage::UsageRow::of(u)))
                .collect(),
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// CSV columns, one row per interval and name.
const CSV_HEADER: &str =
    "t,interval,vus,metric,name,count,failed,rate,p50_ms,p90_ms,p95_ms,p99_ms,max_ms";

/// A file written as the run goes.
struct Staged {
    dest: PathBuf,
    file: BufWriter<File>,
}

impl Staged {
    fn create(dest: &Path) -> Result<Self> {
        let file =
            File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
        Ok(Self {
            dest: dest.to_owned(),
            file: BufWriter::new(file),
        })
    }

    /// Writes a whole line and hands it to the kernel (a killed run then
    /// keeps it).
    fn line(&mut self, text: &[u8]) -> std::io::Result<()> {
        self.file.write_all(text)?;
        self.file.flush()
    }

    fn commit(mut self) -> Result<()> {
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().sync_all())
            .with_context(|| format!("cannot write {}", self.dest.display()))
    }
}

/// Writes the interval records of a run.
#[derive(Default)]
pub struct Series {
    ndjson: Option<Staged>,
    csv: Option<Staged>,
    snapshots: Option<Staged>,
    error: Option<anyhow::Error>,
}

impl Series {
    /// Opens the time-series files among `outputs` (the others are
    /// written at the end).
    pub fn open(outputs: &[Output]) -> Result<Self> {
        let mut s = Self::default();
        for out in outputs {
            match out {
                Output::Ndjson(p) => s.ndjson = Some(Staged::create(p)?),
                Output::Csv(p) => {
                    let mut c = Staged::create(p)?;
                    c.line(format!("{CSV_HEADER}\n").as_bytes())
                        .context("cannot write the CSV header")?;
                    s.csv = Some(c);
                }
                Output::Snapshots(p) => s.snapshots = Some(Staged::create(p)?),
                Output::Json(_) | Output::Html(_) => {}
            }
        }
        Ok(s)
    }

    /// Whether any output is open.
    pub fn is_active(&self) -> bool {
        self.ndjson.is_some() || self.csv.is_some() || self.snapshots.is_some()
    }

    /// Appends one interval. A write error is kept and reported by
    /// [`Series::finish`]; the run goes on.
    pub fn write(&mut self, record: &Record) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.try_write(record) {
            self.error = Some(e);
        }
    }

    fn try_write(&mut self, r: &Record) -> Result<()> {
        if let Some(n) = self.ndjson.as_mut() {
            let mut line = serde_json::to_vec(r)?;
            line.push(b'\n');
            n.line(&line)?;
        }
        if let Some(c) = self.csv.as_mut() {
            // The second's rows go out together.
            let mut text = Vec::new();
            let mut row = |metric: &str, name: &str, s: &IntervalStats| {
                writeln!(
                    text,
                    "{},{},{},{metric},{},{},{},{:.3},{},{},{},{},{}",
                    r.t,
                    r.interval,
                    r.vus,
                    csv_field(name),
                    s.count,
                    s.failed,
                    s.rate,
                    s.p50,
                    s.p90,
                    s.p95,
                    s.p99,
                    s.max
                )
            };
            row("iterations", "", &r.iterations)?;
            for (name, s) in &r.http {
                row("http", name, s)?;
            }
            for (proto, names) in [("mqtt", &r.mqtt), ("nats", &r.nats)] {
                for (name, measures) in names {
                    for (what, s) in measures {
                        row(&format!("{proto}_{what}"), name, s)?;
                    }
                }
            }
            c.line(&text)?;
        }
        Ok(())
    }

    /// Flushes every output to disk.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e.context("cannot write the time series"));
        }
        if let Some(n) = self.ndjson.take() {
            n.commit()?;
        }
        if let Some(c) = self.csv.take() {
            c.commit()?;
        }
        if let Some(r) = self.snapshots.take() {
            r.commit()?;
        }
        Ok(())
    }

    fn write_raw(&mut self, s: &Snapshot) {
        let Some(r) = self.snapshots.as_mut() else {
            return;
        };
        if self.error.is_some() {
            return;
        }
        let written = serde_json::to_vec(s)
            .map_err(anyhow::Error::from)
            .and_then(|mut line| {
                line.push(b'\n');
                r.line(&line).map_err(anyhow::Error::from)
            });
        if let Err(e) = written {
            self.error = Some(e);
        }
    }
}

impl Sink for Series {
    fn snapshot(&mut self, s: &Snapshot) {
        if self.ndjson.is_some() || self.csv.is_some() {
            self.write(&Record::of(s));
        }
        self.write_raw(s);
    }

    fn finish(&mut self, _summary: &Summary) -> Result<()> {
        Series::finish(self)
    }
}

/// Quotes a CSV field when it needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_api::recorder::{HttpOutcome, Recorder};

    #[test]
    fn writes_each_second_as_it_goes() {
        let dir = std::env::temp_dir().join(format!("series-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (nd, csv) = (dir.join("s.ndjson"), dir.join("s.csv"));
        std::fs::write(&nd, "previous").expect("write");
        let mut s =
            Series::open(&[Output::Ndjson(nd.clone()), Output::Csv(csv.clone())]).expect("open");
        let r = Recorder::new(1);
        r.http(
            "GET \"x\", y",
            0,
            false,
            HttpOutcome::Response {
                status: 200,
                total_us: 1500,
                wait_us: 1,
                corrected_us: None,
                received: 0,
            },
        );
        let mut m = Metrics::default();
        r.drain_into(&mut m);
        s.write(&Record::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            3,
            &m,
        ));
        // The second is on disk before the run ends (a killed run keeps
        // it), and the previous file's content is gone.
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&nd).expect("read").trim()).expect("json");
        assert_eq!(line["http"]["GET \"x\", y"]["count"], 1);
        assert_eq!(line["http"]["GET \"x\", y"]["p50"], 1.5);
        let text = std::fs::read_to_string(&csv).expect("read");
        assert!(text.starts_with(CSV_HEADER));
        assert!(text.contains(",http,\"GET \"\"x\"\", y\",1,0,"), "{text}");
        s.finish().expect("finish");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
