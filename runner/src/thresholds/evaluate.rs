//! Judging a threshold: observing its metric's aggregate in a run's
//! metrics and comparing it with the bound.

use host_api::recorder::{Hist, MessagingStats};
use host_api::Metrics;

use super::{is_latency, messaging_metric, Aggregate, Outcome, Threshold};

impl Threshold {
    /// Evaluates against metrics gathered over `seconds`.
    pub fn evaluate(&self, m: &Metrics, seconds: f64) -> Outcome {
        let value = self.observe(m, seconds);
        Outcome {
            threshold: self.source.clone(),
            // No data fails: a threshold on requests that never happened
            // must not pass silently.
            pass: value.is_some_and(|v| self.op.holds(v, self.bound)),
            value,
            unit: if self.in_ms(m) {
                "ms".into()
            } else {
                String::new()
            },
        }
    }

    /// Whether the observed value is a duration in milliseconds: a trend
    /// aggregate of a built-in latency or of a custom timing.
    fn in_ms(&self, m: &Metrics) -> bool {
        self.aggregate.is_trend()
            && (is_latency(&self.metric)
                || m.timings
                    .keys()
                    .any(|k| host_api::recorder::split_key(k).0 == self.metric))
    }

    /// Whether a metric key (a request's, a check's, a custom metric's)
    /// passes the filter: `{name:..}` on the name, any other key on the tags.
    fn matches_key(&self, key: &str) -> bool {
        let Some((k, v)) = &self.filter else {
            return true;
        };
        let (name, tags) = host_api::recorder::split_key(key);
        if k == "name" {
            name == v
        } else {
            tags.iter().any(|(tk, tv)| tk == k && tv == v)
        }
    }

    fn filter_is(&self, key: &str) -> Option<&str> {
        self.filter
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn observe(&self, m: &Metrics, seconds: f64) -> Option<f64> {
        let per_second = |n: u64| n as f64 / seconds.max(1e-9);
        let http = || {
            m.http
                .iter()
                .filter(move |(key, _)| self.matches_key(key))
                .map(|(_, r)| r)
        };
        match self.metric.as_str() {
            "http_req_duration" | "http_req_waiting" | "http_req_latency" => {
                let mut h = Hist::micros();
                for r in http() {
                    h.merge(match self.metric.as_str() {
                        "http_req_waiting" => &r.wait,
                        // From the intended start in the open model; the
                        // same as the duration in the closed model.
                        "http_req_latency" if r.corrected.count() > 0 => &r.corrected,
                        _ => &r.latency,
                    });
                }
                trend(&h, self.aggregate, 1000.0)
            }
            "iteration_latency" => {
                let it = &m.iterations;
                let h = if it.latency.count() > 0 {
                    &it.latency
                } else {
                    &it.duration
                };
                trend(h, self.aggregate, 1000.0)
            }
            "dropped_iterations" => counter(m.iterations.dropped, self.aggregate, per_second),
            "http_reqs" => {
                let n: u64 = http().map(|r| r.requests()).sum();
                counter(n, self.aggregate, per_second)
            }
            "http_req_failed" => {
                let (failed, total) =
                    http().fold((0, 0), |(f, t), r| (f + r.failed(), t + r.requests()));
                rate(failed, total, self.aggregate)
            }
            "iterations" => {
                let it = &m.iterations;
                counter(it.ok + it.failed, self.aggregate, per_second)
            }
            "iteration_duration" => trend(&m.iterations.duration, self.aggregate, 1000.0),
            "checks" => {
                let (pass, fail) = m
                    .checks
                    .iter()
                    .filter(|(key, _)| self.matches_key(key))
                    .fold((0, 0), |(p, f), (_, c)| (p + c.pass, f + c.fail));
                match self.aggregate {
                    Aggregate::Rate if pass + fail > 0 => Some(pass as f64 / (pass + fail) as f64),
                    Aggregate::Count => Some(fail as f64),
                    _ => None,
                }
            }
            "errors" => {
                let messaging: u64 = m
                    .mqtt
                    .values()
                    .chain(m.nats.values())
                    .map(|s| s.failed())
                    .sum();
                let n = m.http_failed() + m.iterations.failed + m.iterations.aborted + messaging;
                counter(n, self.aggregate, per_second)
            }
            name if messaging_metric(name).is_some() => {
                let (proto, what) = messaging_metric(name)?;
                let rows = match proto {
                    "mqtt" => &m.mqtt,
                    _ => &m.nats,
                };
                let rows = || {
                    rows.iter()
                        .filter(|(n, _)| self.filter_is("name").is_none_or(|f| f == n.as_str()))
                        .map(|(_, s)| s)
                };
                let merged = |pick: fn(&MessagingStats) -> &Hist| {
                    let mut h = Hist::micros();
                    rows().for_each(|s| h.merge(pick(s)));
                    h
                };
                match what {
                    "connect" => trend(&merged(|s| &s.connect_time), self.aggregate, 1000.0),
                    "publish" => trend(&merged(|s| &s.publish_time), self.aggregate, 1000.0),
                    "message_latency" => {
                        trend(&merged(|s| &s.message_latency), self.aggregate, 1000.0)
                    }
                    "request" => trend(&merged(|s| &s.request_time), self.aggregate, 1000.0),
                    "messages_sent" => counter(
                        rows().map(|s| s.published).sum(),
                        self.aggregate,
                        per_second,
                    ),
                    "messages_received" => {
                        counter(rows().map(|s| s.received).sum(), self.aggregate, per_second)
                    }
                    _ => {
                        let n = rows()
                            .flat_map(|s| s.errors.iter())
                            .filter(|(k, _)| self.filter_is("kind").is_none_or(|f| f == k.as_str()))
                            .map(|(_, n)| n)
                            .sum();
                        counter(n, self.aggregate, per_second)
                    }
                }
            }
            "traps" => {
                let n = m
                    .traps
                    .iter()
                    .filter(|(kind, _)| self.filter_is("kind").is_none_or(|f| f == kind.as_str()))
                    .map(|(_, n)| n)
                    .sum();
                counter(n, self.aggregate, per_second)
            }
            name => {
                // The scenario's own metrics, over every tag set that
                // passes the filter.
                let mine = |key: &&String| {
                    host_api::recorder::split_key(key).0 == name && self.matches_key(key)
                };
                let counters: Vec<u64> = m
                    .counters
                    .iter()
                    .filter(|(k, _)| mine(k))
                    .map(|(_, n)| *n)
                    .collect();
                if !counters.is_empty() {
                    return counter(counters.iter().sum(), self.aggregate, per_second);
                }
                let gauges: Vec<_> = m.gauges.iter().filter(|(k, _)| mine(k)).collect();
                if !gauges.is_empty() {
                    let latest = gauges.iter().max_by_key(|(_, g)| g.at).map(|(_, g)| g.last);
                    let min = gauges.iter().map(|(_, g)| g.min).reduce(f64::min);
                    let max = gauges.iter().map(|(_, g)| g.max).reduce(f64::max);
                    return match self.aggregate {
                        Aggregate::Value => latest,
                        Aggregate::Min => min,
                        Aggregate::Max => max,
                        _ => None,
                    };
                }
                let merged = |hists: &host_api::recorder::Map<String, Hist>, fresh: Hist| {
                    let mut h = fresh;
                    let mut any = false;
                    for (_, x) in hists.iter().filter(|(k, _)| mine(k)) {
                        h.merge(x);
                        any = true;
                    }
                    any.then_some(h)
                };
                if let Some(h) = merged(&m.timings, Hist::micros()) {
                    trend(&h, self.aggregate, 1000.0)
                } else {
                    merged(&m.histograms, Hist::values())
                        .and_then(|h| trend(&h, self.aggregate, 1.0))
                }
            }
        }
    }
}

pub(super) fn trend(h: &Hist, agg: Aggregate, per_unit: f64) -> Option<f64> {
    let i = h.inner();
    if i.is_empty() {
        return None;
    }
    let v = |x: u64| x as f64 / per_unit;
    match agg {
        Aggregate::Avg => Some(i.mean() / per_unit),
        Aggregate::Min => Some(v(i.min())),
        Aggregate::Max => Some(v(i.max())),
        Aggregate::Med => Some(v(h.quantile(0.5))),
        Aggregate::P(p) => Some(v(h.quantile(p / 100.0))),
        Aggregate::Count => Some(h.count() as f64),
        _ => None,
    }
}

fn counter(n: u64, agg: Aggregate, per_second: impl Fn(u64) -> f64) -> Option<f64> {
    match agg {
        Aggregate::Count => Some(n as f64),
        Aggregate::Rate => Some(per_second(n)),
        _ => None,
    }
}

fn rate(hits: u64, total: u64, agg: Aggregate) -> Option<f64> {
    match agg {
        Aggregate::Rate if total > 0 => Some(hits as f64 / total as f64),
        Aggregate::Count => Some(hits as f64),
        _ => None,
    }
}
