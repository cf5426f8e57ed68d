//! A run's figures in the Prometheus text exposition format (`GET
//! /metrics`): the `runner_` prefix, base units (`_seconds`, `_bytes`,
//! `_total`), and labels bounded by what the scenario declares (request,
//! check and metric names, classes, status classes, error kinds). Tags are
//! left out and a request without a name of its own (named after its URL)
//! counts as `(unnamed)`, so a scenario cannot explode the series count;
//! past [`MAX_NAMES`] names per family the rest are `(other)`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use host_api::recorder::{split_key, Hist};
use host_api::Metrics;

use crate::report::Meta;
use crate::run::{ClassState, Hub, RunState};
use crate::thresholds::Outcome;

/// Most distinct names per metric family; the rest are `(other)`.
pub const MAX_NAMES: usize = 1000;

/// The exposition of run `id`, live or finished.
pub fn render_run(id: &str, hub: &Hub) -> String {
    let state = hub.state();
    let classes = hub
        .last_point()
        .map(|p| p.classes.clone())
        .unwrap_or_default();
    let thresholds = hub.live_summary().thresholds.clone();
    match hub.summary() {
        Some(s) => render(id, state, &s.meta, &classes, &s.raw, &thresholds),
        None => {
            let meta = hub.meta();
            hub.with_totals(|m| render(id, state, &meta, &classes, m, &thresholds))
        }
    }
}

/// The exposition of an agent that has run nothing yet.
pub fn render_idle() -> String {
    let mut out = String::new();
    family(&mut out, "runner_up", "gauge", "The agent is up.");
    let _ = writeln!(out, "runner_up 1");
    out
}

/// The exposition of metrics `m` of run `id`.
pub fn render(
    id: &str,
    state: RunState,
    meta: &Meta,
    classes: &[ClassState],
    m: &Metrics,
    thresholds: &[Outcome],
) -> String {
    let mut out = render_idle();
    let run = format!("run=\"{}\"", esc(id));
    let state_name = serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    family(
        &mut out,
        "runner_info",
        "gauge",
        "The run reported, its scenario and state.",
    );
    let _ = writeln!(
        out,
        "runner_info{{{run},scenario=\"{}\",sha256=\"{}\",state=\"{state_name}\"}} 1",
        esc(&meta.scenario),
        esc(&meta.sha256)
    );
    family(
        &mut out,
        "runner_elapsed_seconds",
        "gauge",
        "Seconds since the run started.",
    );
    let _ = writeln!(out, "runner_elapsed_seconds{{{run}}} {}", meta.duration_s);
    family(&mut out, "runner_vus", "gauge", "VUs running, by class.");
    for c in classes {
        let _ = writeln!(
            out,
            "runner_vus{{{run},class=\"{}\"}} {}",
            esc(&c.name),
            c.active
        );
    }
    family(
        &mut out,
        "runner_vus_target",
        "gauge",
        "VUs asked for, closed-model classes.",
    );
    for c in classes {
        if let Some(t) = c.target_vus {
            let _ = writeln!(
                out,
                "runner_vus_target{{{run},class=\"{}\"}} {t}",
                esc(&c.name)
            );
        }
    }
    family(
        &mut out,
        "runner_arrival_rate_target",
        "gauge",
        "Iterations per second asked for, open-model classes.",
    );
    for c in classes {
        if let Some(r) = c.rate {
            let _ = writeln!(
                out,
                "runner_arrival_rate_target{{{run},class=\"{}\"}} {r}",
                esc(&c.name)
            );
        }
    }
    http(&mut out, &run, m);
    iterations(&mut out, &run, m);
    messaging(&mut out, &run, m);
    custom(&mut out, &run, m);
    family(
        &mut out,
        "runner_threshold_passed",
        "gauge",
        "1 if the threshold holds on the data so far.",
    );
    for t in thresholds {
        let _ = writeln!(
            out,
            "runner_threshold_passed{{{run},threshold=\"{}\"}} {}",
            esc(&t.threshold),
            u8::from(t.pass)
        );
    }
    out
}

/// HTTP requests by name, folded as the module says.
#[derive(Default)]
struct HttpAgg {
    statuses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    latency: Option<Hist>,
    sent: u64,
    received: u64,
}

fn http(out: &mut String, run: &str, m: &Metrics) {
    let mut by: BTreeMap<String, HttpAgg> = BTreeMap::new();
    let mut keys: Vec<&String> = m.http.keys().collect();
    keys.sort();
    for key in keys {
        let r = &m.http[key];
        let name = bounded(request_name(split_key(key).0), by.len(), |n| {
            by.contains_key(n)
        });
        let a = by.entry(name).or_default();
        for (status, n) in &r.statuses {
            *a.statuses.entry(format!("{}xx", status / 100)).or_default() += n;
        }
        for (kind, n) in &r.errors {
            *a.errors.entry(kind.clone()).or_default() += n;
        }
        match &mut a.latency {
            Some(h) => h.merge(&r.latency),
            None => a.latency = Some(r.latency.clone()),
        }
        a.sent += r.bytes_sent;
        a.received += r.bytes_received;
    }
    family(
        out,
        "runner_http_requests_total",
        "counter",
        "HTTP requests, by name and status class (error: no response).",
    );
    for (name, a) in &by {
        for (class, n) in &a.statuses {
            let _ = writeln!(
                out,
                "runner_http_requests_total{{{run},name=\"{}\",status=\"{class}\"}} {n}",
                esc(name)
            );
        }
        let errors: u64 = a.errors.values().sum();
        if errors > 0 {
            let _ = writeln!(
                out,
                "runner_http_requests_total{{{run},name=\"{}\",status=\"error\"}} {errors}",
                esc(name)
            );
        }
    }
    family(
        out,
        "runner_http_request_errors_total",
        "counter",
        "HTTP requests without a response, by error kind.",
    );
    for (name, a) in &by {
        for (kind, n) in &a.errors {
            let _ = writeln!(
                out,
                "runner_http_request_errors_total{{{run},name=\"{}\",kind=\"{}\"}} {n}",
                esc(name),
                esc(kind)
            );
        }
    }
    family(
        out,
        "runner_http_request_duration_seconds",
        "summary",
        "HTTP request latency (start to last body byte) of requests with a response.",
    );
    for (name, a) in &by {
        if let Some(h) = &a.latency {
            summary(
                out,
                "runner_http_request_duration_seconds",
                &format!("{run},name=\"{}\"", esc(name)),
                h,
            );
        }
    }
    family(
        out,
        "runner_http_sent_bytes_total",
        "counter",
        "HTTP request body bytes sent.",
    );
    for (name, a) in &by {
        let _ = writeln!(
            out,
            "runner_http_sent_bytes_total{{{run},name=\"{}\"}} {}",
            esc(name),
            a.sent
        );
    }
    family(
        out,
        "runner_http_received_bytes_total",
        "counter",
        "HTTP response body bytes received.",
    );
    for (name, a) in &by {
        let _ = writeln!(
            out,
            "runner_http_received_bytes_total{{{run},name=\"{}\"}} {}",
            esc(name),
            a.received
        );
    }
}

fn iterations(out: &mut String, run: &str, m: &Metrics) {
    let it = &m.iterations;
    family(
        out,
        "runner_iterations_total",
        "counter",
        "Iterations, by result (aborted: ended by a trap or limit).",
    );
    for (result, n) in [
        ("ok", it.ok),
        ("failed", it.failed),
        ("aborted", it.aborted),
    ] {
        let _ = writeln!(
            out,
            "runner_iterations_total{{{run},result=\"{result}\"}} {n}"
        );
    }
    family(
        out,
        "runner_iteration_duration_seconds",
        "summary",
        "Duration of completed iterations.",
    );
    summary(out, "runner_iteration_duration_seconds", run, &it.duration);
    family(
        out,
        "runner_dropped_iterations_total",
        "counter",
        "Open model: arrivals that found no free VU.",
    );
    let _ = writeln!(
        out,
        "runner_dropped_iterations_total{{{run}}} {}",
        it.dropped
    );
    family(
        out,
        "runner_traps_total",
        "counter",
        "Iterations ended by a trap or limit, by kind.",
    );
    for (kind, n) in sorted(&m.traps) {
        let _ = writeln!(
            out,
            "runner_traps_total{{{run},kind=\"{}\"}} {n}",
            esc(kind)
        );
    }
    let mut checks: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (key, c) in &m.checks {
        let name = bounded(split_key(key).0.to_owned(), checks.len(), |n| {
            checks.contains_key(n)
        });
        let e = checks.entry(name).or_default();
        e.0 += c.pass;
        e.1 += c.fail;
    }
    family(
        out,
        "runner_checks_total",
        "counter",
        "Checks, by name and result.",
    );
    for (name, (pass, fail)) in &checks {
        let _ = writeln!(
            out,
            "runner_checks_total{{{run},check=\"{}\",result=\"pass\"}} {pass}",
            esc(name)
        );
        let _ = writeln!(
            out,
            "runner_checks_total{{{run},check=\"{}\",result=\"fail\"}} {fail}",
            esc(name)
        );
    }
}

fn messaging(out: &mut String, run: &str, m: &Metrics) {
    family(
        out,
        "runner_messages_sent_total",
        "counter",
        "MQTT and NATS messages published and requests made, by protocol and name.",
    );
    family_lines(out, run, m, "runner_messages_sent_total", |s| {
        s.published + s.requests
    });
    family(
        out,
        "runner_messages_received_total",
        "counter",
        "MQTT and NATS messages received on subscriptions.",
    );
    family_lines(out, run, m, "runner_messages_received_total", |s| {
        s.received
    });
    family(
        out,
        "runner_messaging_errors_total",
        "counter",
        "Failed MQTT and NATS operations.",
    );
    family_lines(out, run, m, "runner_messaging_errors_total", |s| s.failed());
}

fn family_lines(
    out: &mut String,
    run: &str,
    m: &Metrics,
    metric: &str,
    value: impl Fn(&host_api::recorder::MessagingStats) -> u64,
) {
    for (proto, map) in [("mqtt", &m.mqtt), ("nats", &m.nats)] {
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for key in keys {
            let name = bounded(key.clone(), by.len(), |n| by.contains_key(n));
            *by.entry(name).or_default() += value(&map[key]);
        }
        for (name, n) in by {
            let _ = writeln!(
                out,
                "{metric}{{{run},protocol=\"{proto}\",name=\"{}\"}} {n}",
                esc(&name)
            );
        }
    }
}

fn custom(out: &mut String, run: &str, m: &Metrics) {
    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    for (key, n) in sorted(&m.counters) {
        let name = bounded(split_key(key).0.to_owned(), counters.len(), |k| {
            counters.contains_key(k)
        });
        *counters.entry(name).or_default() += n;
    }
    family(
        out,
        "runner_counter_total",
        "counter",
        "The scenario's own counters.",
    );
    for (name, n) in &counters {
        let _ = writeln!(
            out,
            "runner_counter_total{{{run},name=\"{}\"}} {n}",
            esc(name)
        );
    }
    let mut gauges: BTreeMap<String, f64> = BTreeMap::new();
    for (key, g) in &m.gauges {
        let name = bounded(split_key(key).0.to_owned(), gauges.len(), |k| {
            gauges.contains_key(k)
        });
        gauges.insert(name, g.last);
    }
    family(
        out,
        "runner_gauge",
        "gauge",
        "The scenario's own gauges (last value).",
    );
    for (name, v) in &gauges {
        let _ = writeln!(out, "runner_gauge{{{run},name=\"{}\"}} {v}", esc(name));
    }
}

/// Writes a summary (quantiles, sum, count) of a histogram in µs.
fn summary(out: &mut String, metric: &str, labels: &str, h: &Hist) {
    for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
        let _ = writeln!(
            out,
            "{metric}{{{labels},quantile=\"{q}\"}} {}",
            h.quantile(q) as f64 / 1e6
        );
    }
    let count = h.count();
    let sum = if count == 0 {
        0.0
    } else {
        h.inner().mean() * count as f64 / 1e6
    };
    let _ = writeln!(out, "{metric}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{metric}_count{{{labels}}} {count}");
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A request's name as a label: its own, or `(unnamed)` when it is named
/// after its URL (`GET http://...`), which would be unbounded.
fn request_name(name: &str) -> String {
    match name.split_once(' ') {
        Some((method, rest))
            if method.chars().all(|c| c.is_ascii_uppercase())
                && (rest.starts_with("http://") || rest.starts_with("https://")) =>
        {
            "(unnamed)".to_owned()
        }
        _ => name.to_owned(),
    }
}

/// `name`, unless [`MAX_NAMES`] names are already in use and it is not
/// one of them: then `(other)`.
fn bounded(name: String, used: usize, known: impl Fn(&str) -> bool) -> String {
    if used < MAX_NAMES || known(&name) {
        name
    } else {
        "(other)".to_owned()
    }
}

fn sorted<V>(m: &host_api::recorder::Map<String, V>) -> Vec<(&String, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Escapes a label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
