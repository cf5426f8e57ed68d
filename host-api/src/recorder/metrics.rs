//! [`Metrics`]: the mergeable, serializable aggregate of everything
//! measured over some span of a run, and its parts.

use serde::{Deserialize, Serialize};

use super::hist::Hist;
use super::messaging::MessagingStats;
use super::Map;

/// Statistics of the requests sharing one name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestStats {
    /// Requests that got a response (any status).
    pub responses: u64,
    /// Responses by status code.
    pub statuses: Map<u16, u64>,
    /// Requests that got no response, by error kind.
    pub errors: Map<String, u64>,
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
            statuses: Map::default(),
            errors: Map::default(),
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
        self.responses = self.responses.saturating_add(o.responses);
        merge_counts(&mut self.statuses, &o.statuses);
        merge_counts(&mut self.errors, &o.errors);
        self.latency.merge(&o.latency);
        self.wait.merge(&o.wait);
        self.corrected.merge(&o.corrected);
        self.bytes_sent = self.bytes_sent.saturating_add(o.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(o.bytes_received);
        self.connections = self.connections.saturating_add(o.connections);
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

/// What one VU class's VUs cost: CPU in guest code and in host calls,
/// memory, fuel, traps, and the VUs that cost the most.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClassUsage {
    /// Iterations run (any outcome).
    pub iterations: u64,
    /// CPU time in guest code, microseconds.
    pub guest_cpu_us: u64,
    /// CPU time in host calls, microseconds.
    pub host_cpu_us: u64,
    /// The most linear memory one VU held, bytes.
    pub peak_memory: u64,
    /// Fuel consumed, when metered.
    pub fuel: u64,
    /// Iterations ended early, by kind.
    pub traps: Map<String, u64>,
    /// The VUs with the most CPU over the run so far: (VU id,
    /// microseconds), most first.
    pub top_cpu: Vec<(u32, u64)>,
    /// The VUs with the most linear memory: (VU id, bytes), most first.
    pub top_memory: Vec<(u32, u64)>,
}

/// VUs kept in each of [`ClassUsage`]'s top lists.
pub const TOP_VUS: usize = 5;

impl ClassUsage {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &ClassUsage) {
        self.iterations = self.iterations.saturating_add(o.iterations);
        self.guest_cpu_us = self.guest_cpu_us.saturating_add(o.guest_cpu_us);
        self.host_cpu_us = self.host_cpu_us.saturating_add(o.host_cpu_us);
        self.peak_memory = self.peak_memory.max(o.peak_memory);
        self.fuel = self.fuel.saturating_add(o.fuel);
        merge_counts(&mut self.traps, &o.traps);
        for &(vu, v) in &o.top_cpu {
            top(&mut self.top_cpu, vu, v);
        }
        for &(vu, v) in &o.top_memory {
            top(&mut self.top_memory, vu, v);
        }
    }
}

/// Keeps `(vu, value)` in `list` if it is among the [`TOP_VUS`] largest
/// (one entry per VU, its largest value).
pub fn top(list: &mut Vec<(u32, u64)>, vu: u32, value: u64) {
    // Called at every iteration's end: a call that changes nothing returns
    // before the sort.
    if let Some(e) = list.iter_mut().find(|e| e.0 == vu) {
        if value <= e.1 {
            return;
        }
        e.1 = value;
    } else if list.len() < TOP_VUS || list.last().is_some_and(|l| value > l.1) {
        list.push((vu, value));
    } else {
        return;
    }
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    list.truncate(TOP_VUS);
}

/// A mergeable aggregate of everything measured over some span of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// HTTP requests by metric name.
    pub http: Map<String, RequestStats>,
    /// MQTT connections, topics and subscriptions by metric name.
    #[serde(default)]
    pub mqtt: Map<String, MessagingStats>,
    /// NATS connections, subjects and subscriptions by metric name.
    #[serde(default)]
    pub nats: Map<String, MessagingStats>,
    /// Checks by name.
    pub checks: Map<String, CheckStats>,
    /// Custom counters.
    pub counters: Map<String, u64>,
    /// Custom gauges.
    pub gauges: Map<String, GaugeStats>,
    /// Custom timings, microseconds.
    pub timings: Map<String, Hist>,
    /// Custom integer histograms.
    pub histograms: Map<String, Hist>,
    /// Iterations ended early, by kind (`panic`, `cpu-limit`, ...).
    pub traps: Map<String, u64>,
    /// Iteration outcomes.
    pub iterations: IterationStats,
    /// Connections refused by the egress rules, by destination
    /// (`host:port`).
    #[serde(default)]
    pub denied: Map<String, u64>,
    /// What each VU class cost.
    #[serde(default)]
    pub usage: Map<String, ClassUsage>,
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
            c.pass = c.pass.saturating_add(v.pass);
            c.fail = c.fail.saturating_add(v.fail);
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
        merge_counts(&mut self.denied, &o.denied);
        for (k, v) in &o.usage {
            self.usage.entry_ref(k).merge(v);
        }
        self.iterations.ok = self.iterations.ok.saturating_add(o.iterations.ok);
        self.iterations.failed = self.iterations.failed.saturating_add(o.iterations.failed);
        self.iterations.aborted = self.iterations.aborted.saturating_add(o.iterations.aborted);
        self.iterations.duration.merge(&o.iterations.duration);
        self.iterations.latency.merge(&o.iterations.latency);
        self.iterations.dropped = self.iterations.dropped.saturating_add(o.iterations.dropped);
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

pub(crate) trait EntryRef<V> {
    fn entry_ref(&mut self, k: &str) -> &mut V;
}

impl<V: Default> EntryRef<V> for Map<String, V> {
    /// Like `entry(k.to_owned()).or_default()` without allocating on a hit.
    fn entry_ref(&mut self, k: &str) -> &mut V {
        if !self.contains_key(k) {
            self.insert(k.to_owned(), V::default());
        }
        self.get_mut(k)
            .unwrap_or_else(|| unreachable!("inserted just above"))
    }
}

fn merge_counts<K: Clone + Eq + std::hash::Hash>(a: &mut Map<K, u64>, b: &Map<K, u64>) {
    for (k, v) in b {
        let n = a.entry(k.clone()).or_default();
        *n = n.saturating_add(*v);
    }
}

fn merge_hists(a: &mut Map<String, Hist>, b: &Map<String, Hist>) {
    for (k, v) in b {
        match a.get_mut(k) {
            Some(h) => h.merge(v),
            None => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}
