//! Target 1: the threshold parser.

#![allow(unused_imports)]

use super::*;

#[rustfmt::skip]
pub(crate) const METRICS: &[&str] = &[
    "http_req_duration", "http_req_waiting", "http_req_latency", "iteration_duration",
    "iteration_latency", "dropped_iterations", "http_reqs", "http_req_failed", "iterations",
    "checks", "errors", "traps", "mqtt_publish", "nats_request", "mqtt_errors",
    "nats_messages_received", "orders", "queue",
];

/// The parts of a threshold, mostly valid, rendered to text.
#[derive(Arbitrary, Debug)]
pub(crate) struct ThresholdParts {
    metric: Text,
    filter: Option<(Text, Text)>,
    aggregate: AggPart,
    op: u8,
    number: NumPart,
    unit: u8,
    abort: bool,
    space: u8,
}

#[derive(Arbitrary, Debug)]
pub(crate) enum AggPart {
    Known(u8),
    P(f64),
    PInt(u8),
    Any(String),
}

#[derive(Arbitrary, Debug)]
pub(crate) enum NumPart {
    Int(i16),
    Big(u64),
    Float(f64),
    Exp(i8, i16),
    Any(String),
}

impl ThresholdParts {
    pub(crate) fn render(&self) -> String {
        const AGGS: &[&str] = &[
            "avg", "min", "max", "med", "count", "rate", "value", "p(95)",
        ];
        const OPS: &[&str] = &["<", "<=", ">", ">=", "==", "!=", "=", "<>", "!", "=<", ""];
        const UNITS: &[&str] = &["", "", "ms", "s", "us", "µs", "m", "h", "parsecs", " "];
        const SPACES: &[&str] = &[" ", "  ", "\t", " \n ", "\u{a0}", "\u{2003}"];
        let mut s = self.metric.render(METRICS);
        if let Some((k, v)) = &self.filter {
            s += &format!(
                "{{{}:{}}}",
                k.render(&["name", "kind"]),
                v.render(&["login", "fuel"])
            );
        }
        s += SPACES[usize::from(self.space) % SPACES.len()];
        s += &match &self.aggregate {
            AggPart::Known(i) => AGGS[usize::from(*i) % AGGS.len()].to_owned(),
            AggPart::P(p) => format!("p({p})"),
            AggPart::PInt(p) => format!("p({p})"),
            AggPart::Any(a) => a.clone(),
        };
        s += OPS[usize::from(self.op) % OPS.len()];
        s += &match &self.number {
            NumPart::Int(n) => n.to_string(),
            NumPart::Big(n) => n.to_string(),
            NumPart::Float(f) => f.to_string(),
            NumPart::Exp(m, e) => format!("{m}e{e}"),
            NumPart::Any(a) => a.clone(),
        };
        s += UNITS[usize::from(self.unit) % UNITS.len()];
        if self.abort {
            s += " abort";
        }
        s
    }
}

pub(crate) fn op_text(op: Op) -> &'static str {
    match op {
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Eq => "==",
        Op::Ne => "!=",
    }
}

/// A parsed threshold written back as text (its canonical form: the
/// bound in the metric's unit, no unit suffix).
pub(crate) fn display(t: &Threshold) -> String {
    let filter = t
        .filter
        .as_ref()
        .map(|(k, v)| format!("{{{k}:{v}}}"))
        .unwrap_or_default();
    format!(
        "{}{filter} {}{}{}{}",
        t.metric,
        t.aggregate,
        op_text(t.op),
        t.bound,
        if t.abort { " abort" } else { "" }
    )
}

/// Metrics with some of everything, for evaluating thresholds.
pub(crate) fn sample_metrics() -> Metrics {
    let r = Recorder::new(1);
    for i in 1..=50u64 {
        let outcome = HttpOutcome::Response {
            status: if i % 10 == 0 { 500 } else { 200 },
            total_us: i * 1000,
            wait_us: i * 400,
            corrected_us: Some(i * 1100),
            received: 512,
        };
        r.http("login", 64, i == 1, outcome);
    }
    r.http("search", 0, false, HttpOutcome::Error("timeout"));
    r.check("ok", true);
    r.check("ok", false);
    r.counter("orders", 7);
    r.gauge("queue", 3.5, 1);
    r.timing("step", 1234);
    r.histogram("sizes", 1 << 40);
    r.iteration(true, 5000, Some(6000));
    r.iteration(false, 10, None);
    r.dropped();
    r.scheduler_lag(20);
    r.trap("fuel");
    let cost = IterationCost {
        guest_us: 5,
        host_us: 7,
        memory: 1 << 20,
        fuel: 3,
    };
    r.usage("default", 0, &cost, cost.guest_us + cost.host_us, None);
    r.denied("10.0.0.1:80");
    r.messaging(Protocol::Mqtt, "t/1", Event::Connected { us: 900 });
    r.messaging(
        Protocol::Mqtt,
        "t/1",
        Event::Published { us: 100, bytes: 10 },
    );
    r.messaging(
        Protocol::Nats,
        "rpc",
        Event::Replied {
            us: 300,
            sent: 5,
            received: 9,
        },
    );
    let mut m = Metrics::default();
    r.drain_into(&mut m);
    m
}

/// Valid thresholds, one of each form the grammar documents.
pub fn threshold_seeds() -> Vec<&'static str> {
    vec![
        "http_req_duration{name:login} p(99)<300ms",
        "http_req_duration p(99)<300",
        "http_req_failed rate<0.01",
        "http_reqs count>=10",
        "http_req_duration avg<200ms",
        "checks rate>0.99",
        "errors count<10 abort",
        "http_req_duration avg<=1.5s",
        "http_reqs rate>=10",
        "orders count==7",
        "my_counter count>1",
        "iteration_duration med!=5us",
        "mqtt_publish p(99.9)<2m",
        "traps{kind:fuel} count==0",
        "queue value>=-3.5e2",
        "nats_request max<1e3µs",
        "  http_req_waiting min>0  ",
    ]
}

#[test]
pub(crate) fn thresholds() {
    let seeds = threshold_seeds();
    // The grammar still accepts what it documents, as the documentation
    // says.
    for s in &seeds {
        let t = Threshold::parse(s).unwrap_or_else(|e| panic!("{s:?} no longer parses: {e}"));
        assert_eq!(t.source, s.trim());
    }
    let t = Threshold::parse("http_req_duration{name:login} p(99)<300ms").expect("parses");
    assert_eq!(
        (&*t.metric, t.aggregate, t.op, t.bound),
        ("http_req_duration", Aggregate::P(99.0), Op::Lt, 300.0)
    );
    assert_eq!(Threshold::parse("x avg<=1.5s").map(|t| t.bound), Ok(1500.0));
    assert!(Threshold::parse("http_reqs p(95)<1")
        .expect("parses")
        .validate()
        .is_err());
    assert_eq!(Aggregate::parse("p(99.9)"), Some(Aggregate::P(99.9)));
    for bad in [
        "",
        "checks",
        "checks rate<x",
        "checks p(101)<1",
        "m{a} avg<1",
        "a b c d",
    ] {
        assert!(Threshold::parse(bad).is_err(), "{bad:?} parses");
    }

    let corpus = Corpus {
        seeds: seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        trees: Vec::new(),
        keys: Vec::new(),
    };
    let metrics = sample_metrics();
    let empty = Metrics::default();
    let mut ok = 0u64;
    let cases = fuzz("thresholds", 50_000, |rng| {
        let text = if rng.one_in(3) {
            arb::<ThresholdParts>(rng, 96)
                .map(|p| p.render())
                .unwrap_or_default()
        } else {
            String::from_utf8_lossy(&corpus.input(rng)).into_owned()
        };
        note(text.as_bytes());
        ok += u64::from(check_threshold(&text, &metrics, &empty));
    });
    eprintln!("thresholds: {ok} of {cases} inputs parsed");
    assert!(
        ok > cases / 20,
        "too few inputs parse ({ok} of {cases}): the generator drifted"
    );
}

/// One input of the threshold target: `text` as an aggregate and as a
/// threshold. Whatever parses reads back the same, in its own text and
/// in canonical form, and evaluates against `metrics` and `empty`;
/// whatever does not is refused with one line. Returns whether `text`
/// parsed as a threshold.
pub fn check_threshold(text: &str, metrics: &Metrics, empty: &Metrics) -> bool {
    if let Some(a) = Aggregate::parse(text) {
        if let Aggregate::P(p) = a {
            assert!((0.0..=100.0).contains(&p), "p({p}) accepted");
        }
        assert_eq!(
            Aggregate::parse(&a.to_string()),
            Some(a),
            "{a} does not read back"
        );
    }
    let t = match Threshold::parse(text) {
        Err(e) => {
            assert!(one_line(&e), "not a one-line error: {e:?}");
            return false;
        }
        Ok(t) => t,
    };
    assert!(!t.metric.is_empty() && !t.metric.contains(char::is_whitespace));
    assert!(
        t.bound.is_finite(),
        "an infinite or NaN bound from {text:?}"
    );
    assert_eq!(t.source, text.trim());
    // The same text reads the same; the canonical form too.
    assert_eq!(Threshold::parse(&t.source).as_ref(), Ok(&t));
    let canonical = display(&t);
    let back = Threshold::parse(&canonical)
        .unwrap_or_else(|e| panic!("{canonical:?} (from {text:?}) does not parse: {e}"));
    assert_eq!(
        (
            &back.metric,
            &back.filter,
            back.aggregate,
            back.op,
            back.abort
        ),
        (&t.metric, &t.filter, t.aggregate, t.op, t.abort),
        "{canonical:?} from {text:?}"
    );
    assert!(
        back.bound == t.bound,
        "{canonical:?}: {} != {}",
        back.bound,
        t.bound
    );
    if let Err(e) = t.validate() {
        assert!(one_line(&e), "not a one-line error: {e:?}");
    }
    let _ = t.evaluate(metrics, 10.0).to_string();
    let _ = t.evaluate(empty, 0.0).to_string();
    true
}
