//! What a run publishes every second: a [`Snapshot`], the exact, mergeable
//! delta of everything measured in the interval (counts and HdrHistograms,
//! never percentiles), with the VUs and rates of each class and the load
//! changes made; and its [`Point`], the few numbers a chart plots, which
//! is what a run keeps of its history.

use std::collections::BTreeMap;

use host_api::recorder::Hist;
use host_api::Metrics;
use serde::{Deserialize, Serialize};

use super::control::ControlEvent;

/// One interval of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// 1 for the first interval, then 2, 3...
    pub seq: u64,
    /// Seconds since the run started, at the end of the interval.
    pub t: f64,
    /// Length of the interval, seconds.
    pub interval: f64,
    /// Each class's VUs and load at the end of the interval.
    pub classes: Vec<ClassState>,
    /// Everything measured in the interval.
    pub metrics: Metrics,
    /// Load changes, stops and swaps made in the interval.
    pub events: Vec<ControlEvent>,
    /// Whether this is the run's last snapshot.
    pub last: bool,
}

/// A VU class's state at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClassState {
    /// The class name.
    pub name: String,
    /// `closed` (VUs looping) or `open` (arrivals at a rate).
    pub model: Model,
    /// VUs running now.
    pub active: u64,
    /// Closed model: VUs asked for now.
    pub target_vus: Option<f64>,
    /// Open model: arrivals per second asked for now.
    pub rate: Option<f64>,
    /// The most VUs the class may run.
    pub max_vus: u64,
}

/// A class's load model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// VUs looping over iterations.
    #[default]
    Closed,
    /// Iterations started at a rate.
    Open,
}

impl Snapshot {
    /// VUs running at the end of the interval, all classes.
    pub fn active_vus(&self) -> u64 {
        self.classes
            .iter()
            .map(|c| c.active)
            .fold(0, u64::saturating_add)
    }

    /// Adds `other`, the same interval measured elsewhere (another worker):
    /// counts and histograms add exactly, classes add by name.
    pub fn merge(&mut self, other: &Snapshot) {
        self.t = self.t.max(other.t);
        self.interval = self.interval.max(other.interval);
        self.metrics.merge(&other.metrics);
        for c in &other.classes {
            match self.classes.iter_mut().find(|k| k.name == c.name) {
                Some(k) => {
                    k.active = k.active.saturating_add(c.active);
                    k.max_vus = k.max_vus.saturating_add(c.max_vus);
                    k.target_vus = sum(k.target_vus, c.target_vus);
                    k.rate = sum(k.rate, c.rate);
                }
                None => self.classes.push(c.clone()),
            }
        }
        self.events.extend(other.events.iter().cloned());
        self.last |= other.last;
    }

    /// The numbers a chart plots for this interval.
    pub fn point(&self) -> Point {
        let m = &self.metrics;
        let dt = self.interval.max(1e-9);
        let mut latency = Hist::micros();
        for r in m.http.values() {
            latency.merge(&r.latency);
        }
        let it = &m.iterations;
        let checks = m
            .checks
            .values()
            .fold((0, 0), |(p, f), c| (p + c.pass, f + c.fail));
        let (bytes_in, bytes_out) = m
            .http
            .values()
            .fold((0, 0), |(i, o), r| (i + r.bytes_received, o + r.bytes_sent));
        let messaging = m.mqtt.values().chain(m.nats.values());
        let (msg_in, msg_out) =
            messaging.fold((0, 0), |(i, o), s| (i + s.bytes_received, o + s.bytes_sent));
        Point {
            seq: self.seq,
            t: self.t,
            interval: self.interval,
            vus: self.active_vus(),
            target_vus: self
                .classes
                .iter()
                .filter_map(|c| c.target_vus)
                .fold(0.0, |a, b| a + b),
            rate_target: self
                .classes
                .iter()
                .filter_map(|c| c.rate)
                .fold(0.0, |a, b| a + b),
            classes: self.classes.clone(),
            requests: m.http_requests(),
            failed: m.http_failed(),
            rps: m.http_requests() as f64 / dt,
            errors_per_s: m.http_failed() as f64 / dt,
            latency_ms: (latency.count() > 0).then(|| Quantiles::of(&latency)),
            iterations: it.ok + it.failed + it.aborted,
            iterations_failed: it.failed + it.aborted,
            iterations_per_s: (it.ok + it.failed + it.aborted) as f64 / dt,
            dropped: it.dropped,
            bytes_in_per_s: (bytes_in + msg_in) as f64 / dt,
            bytes_out_per_s: (bytes_out + msg_out) as f64 / dt,
            messages_sent_per_s: m.messages_sent() as f64 / dt,
            messages_received_per_s: m.messages_received() as f64 / dt,
            checks_pass: checks.0,
            checks_fail: checks.1,
            traps: m.traps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            events: self.events.clone(),
        }
    }
}

fn sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    }
}

/// One interval as a chart plots it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Point {
    /// The snapshot's number.
    pub seq: u64,
    /// Seconds since the run started, at the end of the interval.
    pub t: f64,
    /// Length of the interval, seconds.
    pub interval: f64,
    /// VUs running, all classes.
    pub vus: u64,
    /// VUs asked for, closed-model classes.
    pub target_vus: f64,
    /// Arrivals per second asked for, open-model classes.
    pub rate_target: f64,
    /// Each class's VUs and load.
    pub classes: Vec<ClassState>,
    /// HTTP requests completed in the interval.
    pub requests: u64,
    /// Of which failed.
    pub failed: u64,
    /// HTTP requests per second.
    pub rps: f64,
    /// Failed HTTP requests per second.
    pub errors_per_s: f64,
    /// HTTP latency of the interval, all request names, milliseconds.
    pub latency_ms: Option<Quantiles>,
    /// Iterations ended in the interval (ok, failed or aborted).
    pub iterations: u64,
    /// Of which failed or aborted.
    pub iterations_failed: u64,
    /// Iterations per second.
    pub iterations_per_s: f64,
    /// Open model: arrivals that found no free VU.
    pub dropped: u64,
    /// Bytes received per second (HTTP bodies, MQTT and NATS payloads).
    pub bytes_in_per_s: f64,
    /// Bytes sent per second.
    pub bytes_out_per_s: f64,
    /// MQTT and NATS messages published per second.
    pub messages_sent_per_s: f64,
    /// MQTT and NATS messages received per second.
    pub messages_received_per_s: f64,
    /// Checks that passed in the interval.
    pub checks_pass: u64,
    /// Checks that failed.
    pub checks_fail: u64,
    /// Iterations ended early, by kind.
    pub traps: BTreeMap<String, u64>,
    /// Load changes, stops and swaps made in the interval.
    pub events: Vec<ControlEvent>,
}

/// Latency percentiles of one interval, milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quantiles {
    /// Median.
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

impl Quantiles {
    /// From a histogram in microseconds.
    pub fn of(h: &Hist) -> Self {
        let ms = |q: f64| h.quantile(q) as f64 / 1000.0;
        Self {
            p50: ms(0.5),
            p90: ms(0.9),
            p95: ms(0.95),
            p99: ms(0.99),
            max: ms(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_api::recorder::{HttpOutcome, Recorder};

    fn snapshot(latencies: &[u64], active: u64) -> Snapshot {
        let r = Recorder::new(1);
        for &us in latencies {
            r.http(
                "GET /",
                0,
                false,
                HttpOutcome::Response {
                    status: 200,
                    total_us: us,
                    wait_us: us,
                    corrected_us: None,
                    received: 2,
                },
            );
        }
        let mut metrics = Metrics::default();
        r.drain_into(&mut metrics);
        Snapshot {
            seq: 1,
            t: 1.0,
            interval: 1.0,
            classes: vec![ClassState {
                name: "default".into(),
                active,
                target_vus: Some(active as f64),
                max_vus: active,
                ..ClassState::default()
            }],
            metrics,
            events: Vec::new(),
            last: false,
        }
    }

    #[test]
    fn snapshots_merge_exactly_and_survive_json() {
        let a = snapshot(&[1_000, 2_000, 3_000], 2);
        let b = snapshot(&[10_000; 3], 3);
        let json = serde_json::to_string(&b).expect("json");
        let b: Snapshot = serde_json::from_str(&json).expect("back");
        let mut merged = a.clone();
        merged.merge(&b);
        let p = merged.point();
        assert_eq!(p.requests, 6);
        assert_eq!(p.vus, 5);
        assert_eq!(p.target_vus, 5.0);
        // The merged median is the 3rd of six values: 3 ms, not an average
        // of the two medians.
        let q = p.latency_ms.expect("latency");
        assert!((q.p50 - 3.0).abs() < 0.01, "{q:?}");
        assert!((q.max - 10.0).abs() < 0.01, "{q:?}");
        assert_eq!(p.bytes_in_per_s, 12.0);
    }
}
