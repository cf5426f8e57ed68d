//! The summary as the table printed at the end of a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{clip, messaging, ms, Summary};

impl Summary {
    /// The summary as a human-readable table, showing `stats` for each
    /// latency distribution.
    pub fn table(&self, stats: &[crate::thresholds::Aggregate]) -> String {
        let mut s = String::new();
        let m = &self.meta;
        let load = match &m.open_model {
            Some(open) => format!(
                "open model, {:.1} arrivals/s  ·  {} VUs used at most (of {})",
                open.rate, m.peak_vus, m.max_vus
            ),
            None if m.peak_vus > m.vus => {
                format!("{} VUs (up to {} when raised)", m.vus, m.peak_vus)
            }
            None => format!("{} VUs", m.vus),
        };
        let stopped = match (&m.stopped_by, &m.aborted_by_threshold) {
            (_, Some(t)) => format!("  ·  stopped by threshold {t}"),
            (Some(crate::events::StopBy::Signal), _) => "  ·  stopped by a signal (Ctrl-C)".into(),
            (Some(crate::events::StopBy::Api), _) => "  ·  stopped through the API".into(),
            (Some(crate::events::StopBy::Coordinator), _) => {
                "  ·  stopped by the coordinator".into()
            }
            (Some(crate::events::StopBy::Memory), _) => {
                "  ·  stopped at the runner's memory ceiling".into()
            }
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "\n  scenario {}  ·  {load}  ·  {:.1}s{stopped}",
            m.scenario, m.duration_s,
        );
        if let Some(seed) = m.options.seed {
            let _ = writeln!(s, "  seed {seed} (replay with --seed {seed})");
        }
        if let Some(skew) = m.start_skew_ms {
            let _ = writeln!(
                s,
                "  {} workers, started within ±{skew:.2}ms of each other",
                m.workers.len()
            );
        }
        for (family, n) in &m.series_overflow {
            let _ = writeln!(
                s,
                "  {n} {family} measurements counted in an overflow row: the scenario made more than --max-series distinct series"
            );
        }
        for e in &m.events {
            let _ = writeln!(s, "  at {:.1}s: {}", e.t, e.message);
        }
        for p in &m.scenarios {
            let _ = writeln!(
                s,
                "  scenario {} ({}) ran from {:.1}s to {:.1}s",
                p.name,
                crate::events::short(&p.sha256),
                p.from_s,
                p.to_s
            );
        }
        let it = &self.iterations;
        let _ = writeln!(
            s,
            "  iterations {} ok, {} failed, {} aborted  ({:.1}/s, p50 {}, p95 {})",
            it.ok,
            it.failed,
            it.aborted,
            it.rate,
            ms(it.duration_ms.p50),
            ms(it.duration_ms.p95)
        );
        if let Some(open) = &m.open_model {
            let _ = writeln!(
                s,
                "  open model: {:.1} arrivals/s target ({}), {:.1}/s scheduled, {} dropped (no free VU among {} max)",
                open.rate,
                open.arrival,
                it.arrival_rate.unwrap_or(0.0),
                it.dropped,
                m.max_vus
            );
            if let Some(l) = &it.latency_ms {
                let _ = writeln!(
                    s,
                    "  iteration latency from scheduled start: p50 {}, p95 {}, p99 {}, max {}",
                    ms(l.p50),
                    ms(l.p95),
                    ms(l.p99),
                    ms(l.max)
                );
            }
            if let Some(l) = &it.scheduler_lag_ms {
                let _ = writeln!(s, "  scheduler lag: p99 {}, max {}", ms(l.p99), ms(l.max));
            }
        }
        if !self.http.is_empty() {
            let w = self
                .http
                .iter()
                .map(|r| r.label().chars().count())
                .max()
                .unwrap_or(4)
                .clamp(4, 60);
            let mut head = format!(
                "\n  {:<w$}  {:>9} {:>9} {:>7} ",
                "HTTP", "requests", "req/s", "failed"
            );
            for st in stats {
                let _ = write!(head, " {:>9}", st.to_string());
            }
            let _ = writeln!(s, "{head}");
            for r in &self.http {
                let mut line = format!(
                    "  {:<w$}  {:>9} {:>9.1} {:>7} ",
                    clip(&r.label(), w),
                    r.requests,
                    r.rate,
                    r.failed
                );
                let hist = self.raw.http.get(&r.key).map(|h| &h.latency);
                for st in stats {
                    let v = hist.and_then(|h| st.of(h, 1000.0));
                    let _ = write!(line, " {:>9}", v.map(ms).unwrap_or_else(|| "-".into()));
                }
                let _ = writeln!(s, "{line}");
                if let Some(c) = self
                    .raw
                    .http
                    .get(&r.key)
                    .map(|h| &h.corrected)
                    .filter(|c| c.count() > 0)
                {
                    let mut line = format!("  {:<w$}  {:>27} ", "", "from intended start:");
                    for st in stats {
                        let v = st.of(c, 1000.0);
                        let _ = write!(line, " {:>9}", v.map(ms).unwrap_or_else(|| "-".into()));
                    }
                    let _ = writeln!(s, "{line}");
                }
                let mut why: Vec<String> =
                    r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
                why.extend(
                    r.statuses
                        .iter()
                        .filter(|(k, _)| **k >= 400)
                        .map(|(k, v)| format!("status {k} {v}")),
                );
                if !why.is_empty() {
                    let _ = writeln!(s, "  {:<w$}  failures: {}", "", why.join(", "));
                }
            }
        }
        if !self.http_by_tag.is_empty() {
            let w = self
                .http_by_tag
                .keys()
                .map(|k| k.chars().count())
                .max()
                .unwrap_or(4)
                .clamp(6, 60);
            let mut head = format!(
                "\n  {:<w$}  {:>9} {:>9} {:>7} ",
                "HTTP by tag", "requests", "req/s", "failed"
            );
            for st in stats {
                let _ = write!(head, " {:>9}", st.to_string());
            }
            let _ = writeln!(s, "{head}");
            let mut merged: BTreeMap<&str, host_api::recorder::RequestStats> = BTreeMap::new();
            for (key, r) in &self.raw.http {
                for (k, v) in host_api::recorder::split_key(key).1 {
                    if let Some((tag, _)) = self.http_by_tag.get_key_value(&format!("{k}={v}")) {
                        merged.entry(tag.as_str()).or_default().merge(r);
                    }
                }
            }
            for (tag, row) in &self.http_by_tag {
                let rate = row.requests as f64 / m.duration_s.max(1e-9);
                let mut line = format!(
                    "  {:<w$}  {:>9} {:>9.1} {:>7} ",
                    clip(tag, w),
                    row.requests,
                    rate,
                    row.failed
                );
                let hist = merged.get(tag.as_str()).map(|r| &r.latency);
                for st in stats {
                    let v = hist.and_then(|h| st.of(h, 1000.0));
                    let _ = write!(line, " {:>9}", v.map(ms).unwrap_or_else(|| "-".into()));
                }
                let _ = writeln!(s, "{line}");
            }
        }
        let secs = m.duration_s.max(1e-9);
        messaging::table(&mut s, "MQTT", &self.mqtt, &self.raw.mqtt, secs, stats);
        messaging::table(&mut s, "NATS", &self.nats, &self.raw.nats, secs, stats);
        if !m.workers.is_empty() {
            let _ = writeln!(
                s,
                "\n  {:<24} {:>9} {:>9} {:>8} {:>10} {:>8} {:>9}  status",
                "workers", "VUs", "requests", "failed", "iterations", "rtt", "offset"
            );
            for w in &m.workers {
                let vus = if w.vus > 0 {
                    w.vus.to_string()
                } else {
                    format!("{:.0}%", w.fraction * 100.0)
                };
                let lost = w
                    .lost_at_s
                    .map(|t| {
                        format!(
                            " at {t:.1}s ({} arrivals, {:.1} VU-seconds not run)",
                            w.missed_iterations, w.missed_vu_seconds
                        )
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  {:<24} {:>9} {:>9} {:>8} {:>10} {:>8} {:>9}  {}{lost}",
                    clip(&format!("{} {}", w.id, w.name), 24),
                    vus,
                    w.requests,
                    w.failed,
                    w.iterations,
                    ms(w.rtt_ms),
                    ms(w.clock_offset_ms.abs()),
                    w.status
                );
            }
        }
        if !self.checks.is_empty() {
            let _ = writeln!(s, "\n  checks");
            for c in &self.checks {
                let mark = if c.fail == 0 { "✓" } else { "✗" };
                let shown = if c.tags.is_empty() {
                    c.name.clone()
                } else {
                    let tags: Vec<String> =
                        c.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{} {{{}}}", c.name, tags.join(", "))
                };
                let _ = writeln!(
                    s,
                    "  {mark} {:<40} {:>7.2}%  {} pass, {} fail",
                    shown,
                    c.rate * 100.0,
                    c.pass,
                    c.fail
                );
            }
        }
        if !self.traps.is_empty() {
            let _ = writeln!(s, "\n  iterations ended early");
            for (k, v) in &self.traps {
                let _ = writeln!(s, "    {k:<20} {v}");
            }
        }
        s.push_str(&super::usage::section(&self.classes));
        if !self.denied.is_empty() {
            let _ = writeln!(
                s,
                "\n  connections denied by the egress rules (--allow-host, --block-host)"
            );
            for (k, v) in &self.denied {
                let _ = writeln!(s, "    {k:<40} {v}");
            }
        }
        for (k, v) in &self.counters {
            let _ = writeln!(s, "  counter {k}: {v}");
        }
        for (k, (last, min, max)) in &self.gauges {
            let _ = writeln!(s, "  gauge {k}: {last} (min {min}, max {max})");
        }
        for (k, p) in &self.timings {
            let _ = writeln!(
                s,
                "  timing {k}: p50 {} p95 {} p99 {} max {}",
                ms(p.p50),
                ms(p.p95),
                ms(p.p99),
                ms(p.max)
            );
        }
        for (k, p) in &self.histograms {
            let _ = writeln!(
                s,
                "  histogram {k}: p50 {} p95 {} p99 {} max {}",
                p.p50, p.p95, p.p99, p.max
            );
        }
        if !self.thresholds.is_empty() {
            let _ = writeln!(s, "\n  thresholds");
            for t in &self.thresholds {
                let _ = writeln!(s, "  {t}");
            }
        }
        if let Some(t) = &m.aborted_by_threshold {
            let _ = writeln!(s, "\n  stopped early: threshold {t} was crossed");
        }
        if let Some(why) = &m.memory_stop {
            let _ = writeln!(s, "\n  stopped early: {why}");
        }
        if m.log_lines_suppressed > 0 {
            let _ = writeln!(
                s,
                "\n  {} guest log lines suppressed (--log-rate)",
                m.log_lines_suppressed
            );
        }
        s
    }
}
