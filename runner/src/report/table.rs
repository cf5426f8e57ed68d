//! The summary as the table printed at the end of a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{clip, messaging, ms, Summary};

/// Rows the table shows per section; a run with more (ids in names) shows
/// its busiest ones and says how many more the JSON and CSV outputs hold.
const ROWS: usize = 50;

/// The `ROWS` heaviest of `items` by `weight`, in their order, and how
/// many were left out.
fn busiest<T>(items: Vec<T>, weight: impl Fn(&T) -> u64) -> (Vec<T>, usize) {
    if items.len() <= ROWS {
        return (items, 0);
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weight(&items[i])));
    let mut keep = vec![false; items.len()];
    for &i in &order[..ROWS] {
        keep[i] = true;
    }
    let left = items.len() - ROWS;
    let kept = items
        .into_iter()
        .zip(keep)
        .filter_map(|(t, k)| k.then_some(t))
        .collect();
    (kept, left)
}

/// The line that says what [`busiest`] left out.
fn more(s: &mut String, left: usize, what: &str) {
    if left > 0 {
        let _ = writeln!(
            s,
            "  … and {left} more {what} (every row is in the JSON and CSV outputs)"
        );
    }
}

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
                "  open model: {:.1} arrivals/s target ({}), {:.1}/s scheduled, {} dropped (no VU free, or to be started, among {} max)",
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
            let (rows, left) = busiest(self.http.iter().collect(), |r| r.requests);
            for r in rows {
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
            more(&mut s, left, "HTTP rows");
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
            let (rows, left) = busiest(self.http_by_tag.iter().collect(), |(_, r)| r.requests);
            for (tag, row) in rows {
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
            more(&mut s, left, "tags");
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
            let (rows, left) = busiest(self.checks.iter().collect(), |c| c.pass + c.fail);
            for c in rows {
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
            more(&mut s, left, "checks");
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
        let (rows, left) = busiest(self.counters.iter().collect(), |(_, v)| **v);
        for (k, v) in rows {
            let _ = writeln!(s, "  counter {k}: {v}");
        }
        more(&mut s, left, "counters");
        let (rows, left) = busiest(self.gauges.iter().collect(), |_| 0);
        for (k, (last, min, max)) in rows {
            let _ = writeln!(s, "  gauge {k}: {last} (min {min}, max {max})");
        }
        more(&mut s, left, "gauges");
        let (rows, left) = busiest(self.timings.iter().collect(), |_| 0);
        for (k, p) in rows {
            let _ = writeln!(
                s,
                "  timing {k}: p50 {} p95 {} p99 {} max {}",
                ms(p.p50),
                ms(p.p95),
                ms(p.p99),
                ms(p.max)
            );
        }
        more(&mut s, left, "timings");
        let (rows, left) = busiest(self.histograms.iter().collect(), |_| 0);
        for (k, p) in rows {
            let _ = writeln!(
                s,
                "  histogram {k}: p50 {} p95 {} p99 {} max {}",
                p.p50, p.p95, p.p99, p.max
            );
        }
        more(&mut s, left, "histograms");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_section_keeps_its_busiest_rows_in_order() {
        let few: Vec<u64> = (0..10).collect();
        assert_eq!(busiest(few.clone(), |v| *v), (few, 0));
        let many: Vec<u64> = (0..(ROWS as u64 + 7)).rev().collect();
        let (kept, left) = busiest(many, |v| *v);
        assert_eq!(left, 7);
        let want: Vec<u64> = (7..(ROWS as u64 + 7)).rev().collect();
        assert_eq!(kept, want);
        let mut s = String::new();
        more(&mut s, left, "HTTP rows");
        assert_eq!(
            s,
            "  … and 7 more HTTP rows (every row is in the JSON and CSV outputs)\n"
        );
    }
}
