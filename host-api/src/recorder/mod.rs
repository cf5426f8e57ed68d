//! Where every measurement lands: a sharded, lock-light recorder on the hot
//! path, and [`Metrics`], the mergeable, serializable aggregate it produces.
//!
//! VUs record into one of several shards, chosen per OS thread, so two tokio
//! workers never contend for a lock; the runner drains the shards on an
//! interval and merges them. Every aggregate merges exactly (histograms are
//! HdrHistograms, shipped as V2 encodings), so a distributed run can merge
//! the results of many nodes without losing percentiles.

mod hist;
mod keys;
mod messaging;
mod metrics;
pub mod series;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

pub use hist::Hist;
pub use keys::{clean_tags, key_label, split_key, tagged_key, TAG_SEPARATOR};
pub use messaging::{Event, MessagingStats, Protocol};
use metrics::EntryRef;
pub use metrics::{
    CheckStats, ClassUsage, GaugeStats, IterationStats, Metrics, RequestStats, TOP_VUS,
};

/// The maps of [`Metrics`]: keyed by names a scenario chooses and looked
/// up several times per request, so hashed with foldhash (randomly
/// seeded) rather than SipHash. A scenario cannot flood them: each family
/// admits a bounded number of names ([`series`]).
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

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

/// What one iteration cost (see [`Recorder::usage`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct IterationCost {
    /// CPU in guest code, microseconds.
    pub guest_us: u64,
    /// CPU in host calls, microseconds.
    pub host_us: u64,
    /// Linear memory the VU holds, bytes.
    pub memory: u64,
    /// Fuel consumed (0 unless metered).
    pub fuel: u64,
}

/// Distinct denied destinations a run keeps (the rest are counted under
/// one row): a scenario that tries ever new host names must not grow the
/// runner's memory or its summary without end.
pub const MAX_DENIED: usize = 100;

/// The longest denied destination kept, bytes (a host name has at most
/// 253; a longer one is cut, marked).
const DENIED_NAME: usize = 300;

/// Where denied destinations past [`MAX_DENIED`] are counted.
const OTHERS: &str = "(others)";

/// The hot-path recorder shared by all VUs of a process.
pub struct Recorder {
    shards: Box<[Mutex<Metrics>]>,
    series: series::Series,
    /// The denied destinations admitted so far, run-wide.
    denied: Mutex<std::collections::HashSet<String>>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: Cell<usize> = Cell::new(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
}

impl Recorder {
    /// A recorder with `shards` shards; use at least the number of threads
    /// that record.
    pub fn new(shards: usize) -> Self {
        Self::with_max_series(shards, series::DEFAULT_MAX_SERIES)
    }

    /// A recorder that keeps at most `max_series` series per metric family
    /// (see [`series`]).
    pub fn with_max_series(shards: usize, max_series: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Mutex::new(Metrics::default()))
            .collect();
        Self {
            shards,
            series: series::Series::new(max_series),
            denied: Mutex::default(),
        }
    }

    /// Measurements folded into overflow rows, per family that had any.
    pub fn folded(&self) -> Vec<(&'static str, u64)> {
        self.series.folded()
    }

    /// `key` if the shard has it already (the common case, no lock), else
    /// as the series bound admits it.
    fn key<'a, V>(&self, map: &Map<String, V>, family: series::Family, key: &'a str) -> &'a str {
        if map.contains_key(key) {
            key
        } else {
            self.series.admit(family, key)
        }
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
        let name = self.key(&m.http, series::Family::Http, name);
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
        let (map, family) = match protocol {
            Protocol::Mqtt => (&mut m.mqtt, series::Family::Mqtt),
            Protocol::Nats => (&mut m.nats, series::Family::Nats),
        };
        let name = self.key(map, family, name);
        map.entry_ref(name).record(event);
    }

    /// Records a check outcome.
    pub fn check(&self, name: &str, pass: bool) {
        let mut m = self.shard();
        let name = self.key(&m.checks, series::Family::Checks, name);
        let c = m.checks.entry_ref(name);
        if pass {
            c.pass += 1;
        } else {
            c.fail += 1;
        }
    }

    /// Adds to a counter.
    pub fn counter(&self, name: &str, delta: u64) {
        let mut m = self.shard();
        let name = self.key(&m.counters, series::Family::Counters, name);
        *m.counters.entry_ref(name) += delta;
    }

    /// Sets a gauge at time `at` (nanoseconds since the run started).
    pub fn gauge(&self, name: &str, value: f64, at: u64) {
        let mut m = self.shard();
        let name = self.key(&m.gauges, series::Family::Gauges, name);
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
        let name = self.key(&m.timings, series::Family::Timings, name);
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
        let name = self.key(&m.histograms, series::Family::Histograms, name);
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

    /// Records what one iteration of VU `vu` of `class` cost (and how it
    /// ended, if early); `vu_cpu_us` is the CPU the VU has spent in the
    /// whole run so far, which ranks it among the costliest.
    pub fn usage(
        &self,
        class: &str,
        vu: u32,
        cost: &IterationCost,
        vu_cpu_us: u64,
        trap: Option<&str>,
    ) {
        let mut m = self.shard();
        let u = m.usage.entry_ref(class);
        u.iterations += 1;
        u.guest_cpu_us += cost.guest_us;
        u.host_cpu_us += cost.host_us;
        u.peak_memory = u.peak_memory.max(cost.memory);
        u.fuel += cost.fuel;
        if let Some(kind) = trap {
            *u.traps.entry_ref(kind) += 1;
        }
        metrics::top(&mut u.top_cpu, vu, vu_cpu_us);
        metrics::top(&mut u.top_memory, vu, cost.memory);
    }

    /// Records a connection the egress rules refused, by destination: the
    /// first [`MAX_DENIED`] distinct ones of the run by name, the rest
    /// counted as `(others)`.
    pub fn denied(&self, destination: &str) {
        let cut;
        let destination = if destination.len() > DENIED_NAME {
            cut = crate::limits::cut(destination.to_owned(), DENIED_NAME);
            cut.as_str()
        } else {
            destination
        };
        let admitted = {
            let mut known = self.denied.lock().unwrap_or_else(|p| p.into_inner());
            if known.contains(destination) {
                true
            } else if known.len() < MAX_DENIED {
                known.insert(destination.to_owned());
                true
            } else {
                false
            }
        };
        let mut m = self.shard();
        *m.denied
            .entry_ref(if admitted { destination } else { OTHERS }) += 1;
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
    fn denied_destinations_are_bounded_over_the_whole_run() {
        let r = Recorder::new(2);
        let mut total = Metrics::default();
        // Ever new names, drained each "second" as a run drains them.
        for second in 0..5 {
            for i in 0..MAX_DENIED {
                r.denied(&format!("h{second}-{i}.invalid:80"));
            }
            r.denied("h0-0.invalid:80");
            r.drain_into(&mut total);
        }
        assert_eq!(total.denied.len(), MAX_DENIED + 1);
        assert_eq!(total.denied[OTHERS], 4 * MAX_DENIED as u64);
        assert_eq!(total.denied["h0-0.invalid:80"], 6);
        assert_eq!(
            total.denied.values().sum::<u64>(),
            5 * (MAX_DENIED as u64 + 1)
        );
        // A giant name is kept cut, marked.
        let r = Recorder::new(1);
        r.denied(&"x".repeat(10_000));
        let mut m = Metrics::default();
        r.drain_into(&mut m);
        let name = m.denied.keys().next().expect("one row");
        assert!(name.len() <= DENIED_NAME && name.ends_with(crate::limits::sizes::CUT));
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
