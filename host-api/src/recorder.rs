//! Where every measurement lands: a sharded, lock-light recorder on the hot
//! path, and [`Metrics`], the mergeable, serializable aggregate it produces.
//!
//! VUs record into one of several shards, chosen per OS thread, so two tokio
//! workers never contend for a lock; the runner drains the shards on an
//! interval and merges them. Every aggregate merges exactly (histograms are
//! HdrHistograms, shipped as V2 encodings), so a distributed run can merge
//! the results of many nodes without losing percentiles.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::messaging::{Event, MessagingStats, Protocol};

/// Separates a request name from its tags in a metric key.
pub const TAG_SEPARATOR: char = '\u{1f}';

/// The metric key of a request: its name, then `key=value` tags sorted.
pub fn tagged_key(name: &str, tags: &[(String, String)]) -> String {
    if tags.is_empty() {
        return name.to_owned();
    }
    let mut sorted: Vec<&(String, String)> = tags.iter().collect();
    sorted.sort();
    let mut key = name.to_owned();
    for (k, v) in sorted {
        key.push(TAG_SEPARATOR);
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

/// Most tags one measurement keeps.
const MAX_TAGS: usize = 8;

/// Longest tag key or value kept.
const MAX_TAG_LEN: usize = 64;

/// A guest's tags, bounded in number and length and free of the characters
/// metric keys use, so a guest cannot forge or bloat keys through them.
pub fn clean_tags(tags: Vec<(String, String)>) -> Vec<(String, String)> {
    let clean = |mut s: String| {
        s.retain(|c| c != TAG_SEPARATOR && c != '=');
        crate::client::truncate(s, MAX_TAG_LEN)
    };
    tags.into_iter()
        .take(MAX_TAGS)
        .map(|(k, v)| (clean(k), clean(v)))
        .collect()
}

/// Splits a metric key into the request name and its tags.
pub fn split_key(key: &str) -> (&str, Vec<(&str, &str)>) {
    let mut parts = key.split(TAG_SEPARATOR);
    let name = parts.next().unwrap_or_default();
    let tags = parts.filter_map(|t| t.split_once('=')).collect();
    (name, tags)
}

/// A metric key as people read it: `name {k=v, ...}`.
pub fn key_label(key: &str) -> String {
    let (name, tags) = split_key(key);
    if tags.is_empty() {
        return name.to_owned();
    }
    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name} {{{}}}", tags.join(", "))
}

/// Highest value a latency histogram holds: one hour in microseconds.
/// Larger values are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// Highest value a plain histogram holds.
const MAX_VALUE: u64 = u64::MAX / 2;

/// A mergeable HdrHistogram with 3 significant digits.
///
/// Serializes as the base64 of its HdrHistogram V2 encoding, the format
/// other HdrHistogram tools read.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Hist {
    /// A histogram for latencies in microseconds, up to one hour.
    pub fn micros() -> Self {
        Self::with_max(MAX_MICROS)
    }

    /// A histogram for arbitrary non-negative integers.
    pub fn values() -> Self {
        Self::with_max(MAX_VALUE)
    }

    fn with_max(max: u64) -> Self {
        // Bounds are constants known to be valid, so this cannot fail.
        let h = Histogram::new_with_bounds(1, max, 3)
            .or_else(|_| Histogram::new(3))
            .unwrap_or_else(|_| unreachable!("3 significant digits is valid"));
        Self(h)
    }

    /// Records one value, clamping it into the histogram's range.
    pub fn record(&mut self, value: u64) {
        self.0.saturating_record(value.max(1));
    }

    /// Adds every count of `other` into `self`.
    pub fn merge(&mut self, other: &Hist) {
        if self.0.add(&other.0).is_err() {
            // Only possible when ranges differ; fall back to re-recording.
            for v in other.0.iter_recorded() {
                self.0
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// The underlying HdrHistogram.
    pub fn inner(&self) -> &Histogram<u64> {
        &self.0
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0.0–1.0); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    /// Encodes as base64 of the HdrHistogram V2 format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Writing into a Vec cannot fail for a well-formed histogram.
        if V2Serializer::new().serialize(&self.0, &mut buf).is_err() {
            buf.clear();
        }
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    /// Decodes what [`Hist::encode`] produced.
    pub fn decode(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("histogram is not base64: {e}"))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("histogram is not an HdrHistogram V2 encoding: {e:?}"))?;
        Ok(Self(h))
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Hist::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// Statistics of the requests sharing one name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestStats {
    /// Requests that got a response (any status).
    pub responses: u64,
    /// Responses by status code.
    pub statuses: HashMap<u16, u64>,
    /// Requests that got no response, by error kind.
    pub errors: HashMap<String, u64>,
    /// Time from start to the last body byte, in microseconds, of requests
    /// that got a response.
    pub latency: Hist,
    /// Time to first byte (response head), in microseconds.
    pub wait: Hist,
    /// Open model only: time from the request's intended start (its
    /// iteration's scheduled start plus its offset within the iteration) to
    /// the last body byte, microseconds. Free of coordinated omission.
    pub corrected: Hist,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// New connections opened for this name.
    pub connections: u64,
}

impl Default for RequestStats {
    fn default() -> Self {
        Self {
            responses: 0,
            statuses: HashMap::new(),
            errors: HashMap::new(),
            latency: Hist::micros(),
            wait: Hist::micros(),
            corrected: Hist::micros(),
            bytes_sent: 0,
            bytes_received: 0,
            connections: 0,
        }
    }
}

impl RequestStats {
    /// All requests: with a response or without.
    pub fn requests(&self) -> u64 {
        self.responses + self.errors.values().sum::<u64>()
    }

    /// Requests that failed: no response, or a status of 400 or more.
    pub fn failed(&self) -> u64 {
        let bad_status: u64 = self
            .statuses
            .iter()
            .filter(|(s, _)| **s >= 400)
            .map(|(_, n)| n)
            .sum();
        bad_status + self.errors.values().sum::<u64>()
    }

    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &RequestStats) {
        self.responses += o.responses;
        merge_counts(&mut self.statuses, &o.statuses);
        merge_counts(&mut self.errors, &o.errors);
        self.latency.merge(&o.latency);
        self.wait.merge(&o.wait);
        self.corrected.merge(&o.corrected);
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.connections += o.connections;
    }
}

/// Pass and fail counts of one named check.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckStats {
    /// Times the check passed.
    pub pass: u64,
    /// Times the check failed.
    pub fail: u64,
}

/// A gauge: the last value set, and the range it took.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct GaugeStats {
    /// The most recent value.
    pub last: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// When `last` was set, in nanoseconds since the run started; merging
    /// keeps the later one.
    pub at: u64,
}

/// Iteration outcomes of the VUs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IterationStats {
    /// Iterations that returned `ok`.
    pub ok: u64,
    /// Iterations that returned an error.
    pub failed: u64,
    /// Iterations ended by a trap or a limit (see [`Metrics::traps`]).
    pub aborted: u64,
    /// Duration of the completed iterations (ok or failed), microseconds.
    pub duration: Hist,
    /// Open model only: from each iteration's scheduled start to its end,
    /// microseconds.
    pub latency: Hist,
    /// Open model only: arrivals that found no free VU.
    pub dropped: u64,
    /// Open model only: how late the scheduler handed out arrivals,
    /// microseconds.
    pub scheduler_lag: Hist,
}

impl Default for IterationStats {
    fn default() -> Self {
        Self {
            ok: 0,
            failed: 0,
            aborted: 0,
            duration: Hist::micros(),
            latency: Hist::micros(),
            dropped: 0,
            scheduler_lag: Hist::micros(),
        }
    }
}

/// A mergeable aggregate of everything measured over some span of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// HTTP requests by metric name.
    pub http: HashMap<String, RequestStats>,
    /// MQTT connections, topics and subscriptions by metric name.
    #[serde(default)]
    pub mqtt: HashMap<String, MessagingStats>,
    /// NATS connections, subjects and subscriptions by metric name.
    #[serde(default)]
    pub nats: HashMap<String, MessagingStats>,
    /// Checks by name.
    pub checks: HashMap<String, CheckStats>,
    /// Custom counters.
    pub counters: HashMap<String, u64>,
    /// Custom gauges.
    pub gauges: HashMap<String, GaugeStats>,
    /// Custom timings, microseconds.
    pub timings: HashMap<String, Hist>,
    /// Custom integer histograms.
    pub histograms: HashMap<String, Hist>,
    /// Iterations ended early, by kind (`panic`, `cpu-limit`, ...).
    pub traps: HashMap<String, u64>,
    /// Iteration outcomes.
    pub iterations: IterationStats,
}

impl Metrics {
    /// Adds everything in `o` into `self`.
    pub fn merge(&mut self, o: &Metrics) {
        for (k, v) in &o.http {
            self.http.entry_ref(k).merge(v);
        }
        for (k, v) in &o.mqtt {
            self.mqtt.entry_ref(k).merge(v);
        }
        for (k, v) in &o.nats {
            self.nats.entry_ref(k).merge(v);
        }
        for (k, v) in &o.checks {
            let c = self.checks.entry(k.clone()).or_default();
            c.pass += v.pass;
            c.fail += v.fail;
        }
        merge_counts(&mut self.counters, &o.counters);
        for (k, v) in &o.gauges {
            match self.gauges.get_mut(k) {
                Some(g) => {
                    g.min = g.min.min(v.min);
                    g.max = g.max.max(v.max);
                    if v.at >= g.at {
                        g.last = v.last;
                        g.at = v.at;
                    }
                }
                None => {
                    self.gauges.insert(k.clone(), *v);
                }
            }
        }
        merge_hists(&mut self.timings, &o.timings);
        merge_hists(&mut self.histograms, &o.histograms);
        merge_counts(&mut self.traps, &o.traps);
        self.iterations.ok += o.iterations.ok;
        self.iterations.failed += o.iterations.failed;
        self.iterations.aborted += o.iterations.aborted;
        self.iterations.duration.merge(&o.iterations.duration);
        self.iterations.latency.merge(&o.iterations.latency);
        self.iterations.dropped += o.iterations.dropped;
        self.iterations
            .scheduler_lag
            .merge(&o.iterations.scheduler_lag);
    }

    /// Total HTTP requests, all names.
    pub fn http_requests(&self) -> u64 {
        self.http.values().map(RequestStats::requests).sum()
    }

    /// Total failed HTTP requests, all names.
    pub fn http_failed(&self) -> u64 {
        self.http.values().map(RequestStats::failed).sum()
    }

    fn messaging(&self) -> impl Iterator<Item = &MessagingStats> {
        self.mqtt.values().chain(self.nats.values())
    }

    /// MQTT and NATS messages published (and requests answered).
    pub fn messages_sent(&self) -> u64 {
        self.messaging().map(|s| s.published + s.requests).sum()
    }

    /// MQTT and NATS messages received on subscriptions.
    pub fn messages_received(&self) -> u64 {
        self.messaging().map(|s| s.received).sum()
    }

    /// Failed MQTT and NATS operations.
    pub fn messaging_failed(&self) -> u64 {
        self.messaging().map(MessagingStats::failed).sum()
    }
}

trait EntryRef<V> {
    fn entry_ref(&mut self, k: &str) -> &mut V;
}

impl<V: Default> EntryRef<V> for HashMap<String, V> {
    /// Like `entry(k.to_owned()).or_default()` without allocating on a hit.
    fn entry_ref(&mut self, k: &str) -> &mut V {
        if !self.contains_key(k) {
            self.insert(k.to_owned(), V::default());
        }
        self.get_mut(k)
            .unwrap_or_else(|| unreachable!("inserted just above"))
    }
}

fn merge_counts<K: Clone + Eq + std::hash::Hash>(a: &mut HashMap<K, u64>, b: &HashMap<K, u64>) {
    for (k, v) in b {
        *a.entry(k.clone()).or_default() += v;
    }
}

fn merge_hists(a: &mut HashMap<String, Hist>, b: &HashMap<String, Hist>) {
    for (k, v) in b {
        match a.get_mut(k) {
            Some(h) => h.merge(v),
            None => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The outcome of one HTTP request, as the recorder needs it.
#[derive(Clone, Copy, Debug)]
pub enum HttpOutcome<'a> {
    /// A response arrived.
    Response {
        /// Status code.
        status: u16,
        /// Whole request, microseconds.
        total_us: u64,
        /// Time to first byte, microseconds.
        wait_us: u64,
        /// Open model: latency from the intended start, microseconds.
        corrected_us: Option<u64>,
        /// Body bytes received.
        received: u64,
    },
    /// No response; the error kind (`timeout`, `connection-refused`, ...).
    Error(&'a str),
}

/// The hot-path recorder shared by all VUs of a process.
pub struct Recorder {
    shards: Box<[Mutex<Metrics>]>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: Cell<usize> = Cell::new(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
}

impl Recorder {
    /// A recorder with `shards` shards; use at least the number of threads
    /// that record.
    pub fn new(shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Mutex::new(Metrics::default()))
            .collect();
        Self { shards }
    }

    fn shard(&self) -> MutexGuard<'_, Metrics> {
        let i = THREAD_INDEX.with(Cell::get) % self.shards.len();
        // A poisoned shard only means a recording thread panicked mid-update;
        // counts stay usable.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one HTTP request under `name`.
    pub fn http(&self, name: &str, sent: u64, new_connection: bool, outcome: HttpOutcome<'_>) {
        let mut m = self.shard();
        let r = m.http.entry_ref(name);
        r.bytes_sent += sent;
        r.connections += u64::from(new_connection);
        match outcome {
            HttpOutcome::Response {
                status,
                total_us,
                wait_us,
                corrected_us,
                received,
            } => {
                r.responses += 1;
                if let Some(c) = corrected_us {
                    r.corrected.record(c);
                }
                *r.statuses.entry(status).or_default() += 1;
                r.latency.record(total_us);
                r.wait.record(wait_us);
                r.bytes_received += received;
            }
            HttpOutcome::Error(kind) => {
                *r.errors.entry_ref(kind) += 1;
            }
        }
    }

    /// Records one MQTT or NATS event under metric name `name`.
    pub fn messaging(&self, protocol: Protocol, name: &str, event: Event<'_>) {
        let mut m = self.shard();
        let map = match protocol {
            Protocol::Mqtt => &mut m.mqtt,
            Protocol::Nats => &mut m.nats,
        };
        map.entry_ref(name).record(event);
    }

    /// Records a check outcome.
    pub fn check(&self, name: &str, pass: bool) {
        let mut m = self.shard();
        let c = m.checks.entry_ref(name);
        if pass {
            c.pass += 1;
        } else {
            c.fail += 1;
        }
    }

    /// Adds to a counter.
    pub fn counter(&self, name: &str, delta: u64) {
        *self.shard().counters.entry_ref(name) += delta;
    }

    /// Sets a gauge at time `at` (nanoseconds since the run started).
    pub fn gauge(&self, name: &str, value: f64, at: u64) {
        let mut m = self.shard();
        match m.gauges.get_mut(name) {
            Some(g) => {
                g.min = g.min.min(value);
                g.max = g.max.max(value);
                if at >= g.at {
                    g.last = value;
                    g.at = at;
                }
            }
            None => {
                let g = GaugeStats {
                    last: value,
                    min: value,
                    max: value,
                    at,
                };
                m.gauges.insert(name.to_owned(), g);
            }
        }
    }

    /// Records a custom timing in microseconds.
    pub fn timing(&self, name: &str, micros: u64) {
        let mut m = self.shard();
        match m.timings.get_mut(name) {
            Some(h) => h.record(micros),
            None => {
                let mut h = Hist::micros();
                h.record(micros);
                m.timings.insert(name.to_owned(), h);
            }
        }
    }

    /// Records a custom histogram value.
    pub fn histogram(&self, name: &str, value: u64) {
        let mut m = self.shard();
        match m.histograms.get_mut(name) {
            Some(h) => h.record(value),
            None => {
                let mut h = Hist::values();
                h.record(value);
                m.histograms.insert(name.to_owned(), h);
            }
        }
    }

    /// Records a completed iteration: its service time and, in the open
    /// model, its time from the scheduled start.
    pub fn iteration(&self, ok: bool, micros: u64, from_intended: Option<u64>) {
        let mut m = self.shard();
        if let Some(l) = from_intended {
            m.iterations.latency.record(l);
        }
        if ok {
            m.iterations.ok += 1;
        } else {
            m.iterations.failed += 1;
        }
        m.iterations.duration.record(micros);
    }

    /// Records an arrival that found no free VU (open model).
    pub fn dropped(&self) {
        self.shard().iterations.dropped += 1;
    }

    /// Records how late the scheduler handed out an arrival (open model).
    pub fn scheduler_lag(&self, micros: u64) {
        self.shard().iterations.scheduler_lag.record(micros);
    }

    /// Records an iteration ended by a trap or limit of the given kind.
    pub fn trap(&self, kind: &str) {
        let mut m = self.shard();
        m.iterations.aborted += 1;
        *m.traps.entry_ref(kind) += 1;
    }

    /// Moves everything recorded so far into `into`, leaving the shards
    /// empty.
    pub fn drain_into(&self, into: &mut Metrics) {
        for shard in self.shards.iter() {
            let taken = {
                let mut g = shard.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut *g)
            };
            into.merge(&taken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_round_trip_through_v2_encoding() {
        let mut h = Hist::micros();
        for v in [10, 20, 30, 1_000, 50_000] {
            h.record(v);
        }
        let back = Hist::decode(&h.encode()).expect("decodes");
        assert_eq!(back.count(), 5);
        assert_eq!(back.quantile(1.0), h.quantile(1.0));
        assert_eq!(back.quantile(0.5), h.quantile(0.5));
    }

    #[test]
    fn shards_drain_and_merge_exactly() {
        let r = Recorder::new(4);
        std::thread::scope(|s| {
            for t in 0..4 {
                let r = &r;
                s.spawn(move || {
                    for i in 0..1000u64 {
                        let outcome = HttpOutcome::Response {
                            status: if i % 10 == 0 { 500 } else { 200 },
                            total_us: 100 + t,
                            wait_us: 50,
                            corrected_us: None,
                            received: 2,
                        };
                        r.http("GET /", 0, false, outcome);
                        r.check("ok", i % 2 == 0);
                    }
                    r.http("GET /", 0, false, HttpOutcome::Error("timeout"));
                });
            }
        });
        let mut m = Metrics::default();
        r.drain_into(&mut m);
        let s = &m.http["GET /"];
        assert_eq!(s.requests(), 4004);
        assert_eq!(s.failed(), 404);
        assert_eq!(s.latency.count(), 4000);
        assert_eq!(
            m.checks["ok"],
            CheckStats {
                pass: 2000,
                fail: 2000
            }
        );

        // Draining empties the shards.
        let mut again = Metrics::default();
        r.drain_into(&mut again);
        assert!(again.http.is_empty());

        // Serialized metrics merge to the same totals.
        let json = serde_json::to_string(&m).expect("serializes");
        let back: Metrics = serde_json::from_str(&json).expect("parses");
        let mut twice = m.clone();
        twice.merge(&back);
        assert_eq!(twice.http["GET /"].requests(), 8008);
        assert_eq!(
            twice.http["GET /"].latency.quantile(1.0),
            s.latency.quantile(1.0)
        );
    }
}
