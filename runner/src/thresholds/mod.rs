//! Thresholds: pass/fail criteria on any metric, k6-style, from the command
//! line (`--threshold`) and from the scenario's options.
//!
//! ```text
//! METRIC[{KEY:VALUE}] AGGREGATE OP NUMBER[UNIT] [abort]
//! http_req_duration{name:login} p(99)<300ms
//! checks rate>0.99
//! errors count<10 abort
//! ```
//!
//! Metrics: `http_req_duration`, `http_req_waiting`, `http_req_latency`
//! (from the intended start in the open model; trends, ms; filter
//! `{name:..}`), `iteration_latency`, `dropped_iterations`, `http_reqs` (count, rate per second), `http_req_failed`
//! (rate = failed share, count), `iterations` (count, rate),
//! `iteration_duration` (trend), `checks` (rate = pass share, count of
//! failures; filter `{name:..}`), `errors` (failed requests plus failed and
//! aborted iterations: count, rate), `traps` (count; filter `{kind:..}`),
//! per messaging protocol (`mqtt_`, `nats_` prefixes; filter `{name:..}`):
//! `_connect`, `_publish`, `_message_latency`, `_request` (trends, ms),
//! `_messages_sent`, `_messages_received`, `_errors` (count, rate; `_errors`
//! also filters on `{kind:..}`),
//! and the scenario's own counters (count, rate), gauges (value, min, max),
//! timings (trend, ms) and histograms (trend, raw values). Trend aggregates:
//! `avg`, `min`, `max`, `med`, `p(N)`.

mod evaluate;

use std::fmt;

use host_api::recorder::Hist;
use serde::{Deserialize, Serialize};

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// What is computed from a metric.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Aggregate {
    /// Mean of a trend.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Median.
    Med,
    /// Percentile 0–100.
    P(f64),
    /// A count.
    Count,
    /// Per second for counters; a share (0–1) for rate metrics.
    Rate,
    /// A gauge's last value.
    Value,
}

/// One parsed threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The text as given.
    pub source: String,
    /// The metric name.
    pub metric: String,
    /// An optional `{key:value}` filter.
    pub filter: Option<(String, String)>,
    /// The aggregate compared.
    pub aggregate: Aggregate,
    /// The comparison.
    pub op: Op,
    /// The bound, in the metric's unit (ms for durations).
    pub bound: f64,
    /// Stop the run as soon as the threshold fails.
    pub abort: bool,
}

/// The outcome of one threshold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// The threshold as given.
    pub threshold: String,
    /// Whether it held.
    pub pass: bool,
    /// The observed value (absent when the metric had no data).
    pub value: Option<f64>,
    /// The value's unit: `ms` for durations, empty for counts and rates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.pass { "✓" } else { "✗" };
        match self.value {
            Some(v) => {
                let shown = if self.unit == "ms" {
                    crate::units::ms(v)
                } else {
                    round(v)
                };
                write!(f, "{mark} {}  (observed {shown})", self.threshold)
            }
            None => write!(f, "{mark} {}  (no data)", self.threshold),
        }
    }
}

fn round(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.4}")
    }
}

impl Aggregate {
    /// Parses `avg`, `min`, `max`, `med`, `p(N)`, `count`, `rate`, `value`.
    pub fn parse(text: &str) -> Option<Aggregate> {
        Some(match text {
            "avg" => Aggregate::Avg,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "med" => Aggregate::Med,
            "count" => Aggregate::Count,
            "rate" => Aggregate::Rate,
            "value" => Aggregate::Value,
            p => {
                let n = p
                    .strip_prefix("p(")?
                    .strip_suffix(')')?
                    .parse::<f64>()
                    .ok()?;
                if !(0.0..=100.0).contains(&n) {
                    return None;
                }
                Aggregate::P(n)
            }
        })
    }

    /// Whether this aggregate applies to a trend (latency distribution).
    pub fn is_trend(self) -> bool {
        matches!(
            self,
            Aggregate::Avg | Aggregate::Min | Aggregate::Max | Aggregate::Med | Aggregate::P(_)
        )
    }

    /// This aggregate of a trend histogram, in the histogram's units
    /// divided by `per_unit`; `None` when empty.
    pub fn of(self, h: &Hist, per_unit: f64) -> Option<f64> {
        evaluate::trend(h, self, per_unit)
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregate::Avg => f.write_str("avg"),
            Aggregate::Min => f.write_str("min"),
            Aggregate::Max => f.write_str("max"),
            Aggregate::Med => f.write_str("med"),
            Aggregate::P(p) => write!(f, "p({p})"),
            Aggregate::Count => f.write_str("count"),
            Aggregate::Rate => f.write_str("rate"),
            Aggregate::Value => f.write_str("value"),
        }
    }
}

impl Threshold {
    /// Parses one threshold expression.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let err = |why: &str| {
            format!("threshold {text:?}: {why} (example: 'http_req_duration p(95)<200ms')")
        };
        let mut words: Vec<&str> = text.split_whitespace().collect();
        let abort = words.last() == Some(&"abort");
        if abort {
            words.pop();
        }
        let (target, condition) = match words.as_slice() {
            [t, c] => (*t, *c),
            [_] => {
                return Err(err(
                    "expected a metric, then a condition such as p(95)<200ms",
                ))
            }
            _ => return Err(err("expected METRIC CONDITION [abort]")),
        };
        let (metric, filter) = match target.split_once('{') {
            None => (target.to_owned(), None),
            Some((m, rest)) => {
                let inner = rest.strip_suffix('}').ok_or_else(|| err("unclosed '{'"))?;
                let (k, v) = inner
                    .split_once(':')
                    .ok_or_else(|| err("a filter is {key:value}"))?;
                (
                    m.to_owned(),
                    Some((k.trim().to_owned(), v.trim().to_owned())),
                )
            }
        };
        if metric.is_empty() {
            return Err(err("no metric name"));
        }
        let op_at = condition
            .find(['<', '>', '=', '!'])
            .ok_or_else(|| err("no comparison (<, <=, >, >=, ==, !=)"))?;
        let (agg_text, rest) = condition.split_at(op_at);
        let (op, number) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(s, op)| rest.strip_prefix(s).map(|n| (*op, n)))
        .ok_or_else(|| err("bad comparison"))?;
        let aggregate = Aggregate::parse(agg_text)
            .ok_or_else(|| err("aggregate is avg, min, max, med, p(N), count, rate or value"))?;
        let split = number
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
            .unwrap_or(number.len());
        let (num, unit) = number.split_at(split);
        let value: f64 = num.parse().map_err(|_| err("the bound is not a number"))?;
        let scale = match unit {
            "" | "ms" => 1.0,
            "s" => 1000.0,
            "us" | "µs" => 0.001,
            "m" => 60_000.0,
            other => return Err(err(&format!("unknown unit {other:?} (ms, s, us, m)"))),
        };
        if !(value * scale).is_finite() {
            return Err(err("the bound must be a finite number"));
        }
        Ok(Threshold {
            source: text.trim().to_owned(),
            metric,
            filter,
            aggregate,
            op,
            bound: value * scale,
            abort,
        })
    }

    /// Checks that the aggregate makes sense for the metric, so a typo
    /// fails at start-up rather than silently at the end. Unknown names are
    /// allowed: they may be the scenario's own metrics.
    pub fn validate(&self) -> Result<(), String> {
        use Aggregate::*;
        let ok = match self.metric.as_str() {
            name if is_latency(name) => self.aggregate.is_trend(),
            "http_reqs" | "iterations" | "errors" | "traps" | "dropped_iterations" => {
                matches!(self.aggregate, Count | Rate)
            }
            "http_req_failed" | "checks" => matches!(self.aggregate, Rate | Count),
            name => match messaging_metric(name) {
                Some(_) => matches!(self.aggregate, Count | Rate),
                None => true,
            },
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "threshold {:?}: {:?} does not apply to {}",
                self.source, self.aggregate, self.metric
            ))
        }
    }
}

/// Whether `name` is one of the built-in latencies (trends, in ms).
fn is_latency(name: &str) -> bool {
    match name {
        "http_req_duration" | "http_req_waiting" | "http_req_latency" | "iteration_duration"
        | "iteration_latency" => true,
        name => matches!(
            messaging_metric(name),
            Some((_, "connect" | "publish" | "message_latency" | "request"))
        ),
    }
}

/// Splits `mqtt_publish` into (`mqtt`, `publish`) when it names one of the
/// messaging metrics.
fn messaging_metric(name: &str) -> Option<(&str, &str)> {
    let (proto, what) = name.split_once('_')?;
    let known = matches!(proto, "mqtt" | "nats")
        && matches!(
            what,
            "connect"
                | "publish"
                | "message_latency"
                | "request"
                | "messages_sent"
                | "messages_received"
                | "errors"
        );
    known.then_some((proto, what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_api::recorder::{HttpOutcome, Recorder};
    use host_api::Metrics;

    #[test]
    fn parses_the_documented_forms() {
        let t = Threshold::parse("http_req_duration{name:login} p(99)<300ms").expect("parses");
        assert_eq!(t.metric, "http_req_duration");
        assert_eq!(t.filter, Some(("name".into(), "login".into())));
        assert_eq!(t.aggregate, Aggregate::P(99.0));
        assert_eq!((t.op, t.bound, t.abort), (Op::Lt, 300.0, false));
        let t = Threshold::parse("checks rate>0.99").expect("parses");
        assert_eq!(
            (t.aggregate, t.op, t.bound),
            (Aggregate::Rate, Op::Gt, 0.99)
        );
        let t = Threshold::parse("errors count<10 abort").expect("parses");
        assert!(t.abort);
        assert_eq!(
            Threshold::parse("http_req_duration avg<=1.5s")
                .expect("parses")
                .bound,
            1500.0
        );
        for bad in [
            "",
            "checks",
            "checks rate",
            "checks rate<x",
            "checks p(101)<1",
            "m{a} avg<1",
            "m avg<1 parsecs",
            "a b c d",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(Threshold::parse("http_reqs p(95)<1")
            .expect("parses")
            .validate()
            .is_err());
        assert!(Threshold::parse("my_counter count>1")
            .expect("parses")
            .validate()
            .is_ok());
    }

    #[test]
    fn evaluates_against_metrics() {
        let r = Recorder::new(1);
        for i in 1..=100u64 {
            let outcome = HttpOutcome::Response {
                status: if i <= 5 { 500 } else { 200 },
                total_us: i * 1000,
                wait_us: 10,
                corrected_us: None,
                received: 0,
            };
            r.http("login", 0, false, outcome);
            r.check("ok", i > 1);
        }
        r.counter("orders", 7);
        let mut m = Metrics::default();
        r.drain_into(&mut m);
        let eval = |t: &str| Threshold::parse(t).expect("parses").evaluate(&m, 10.0);
        assert!(eval("http_req_duration p(99)<100ms").pass);
        assert!(!eval("http_req_duration p(99)<90ms").pass);
        assert!(
            eval("http_req_duration{name:login} max<=100.1").pass,
            "HdrHistogram keeps 3 significant digits"
        );
        assert!(
            !eval("http_req_duration{name:other} max<100").pass,
            "no data fails"
        );
        assert_eq!(eval("http_req_failed rate<0.1").value, Some(0.05));
        assert_eq!(eval("http_reqs rate>=10").value, Some(10.0));
        assert_eq!(eval("checks rate>0.99").value, Some(0.99));
        assert!(!eval("checks rate>0.99").pass);
        assert_eq!(eval("errors count<10").value, Some(5.0));
        assert!(eval("orders count==7").pass);
        // Durations are shown with their unit; counts and rates without.
        let shown = eval("http_req_duration p(50)<100ms").to_string();
        assert!(shown.ends_with("(observed 50.02ms)"), "{shown}");
        assert_eq!(eval("checks rate>0.99").unit, "");
        assert_eq!(
            eval("orders count==7").to_string(),
            "✓ orders count==7  (observed 7)"
        );
    }
}
