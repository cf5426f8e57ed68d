//! The summary as CSV: one row per metric name (HTTP requests, MQTT and
//! NATS measures, checks, iterations), for spreadsheets.

use std::fmt::Write as _;

use super::{Percentiles, Summary};

/// The CSV columns.
pub const HEADER: &str = "section,name,tags,count,failed,rate,p50_ms,p90_ms,p95_ms,p99_ms,max_ms";

impl Summary {
    /// The summary as CSV, a header line first.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{HEADER}");
        let secs = self.meta.duration_s.max(1e-9);
        let mut row = |section: &str,
                       name: &str,
                       tags: &str,
                       count: u64,
                       failed: u64,
                       p: Option<&Percentiles>| {
            let q = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "{section},{},{},{count},{failed},{:.3},{},{},{},{},{}",
                field(name),
                field(tags),
                count as f64 / secs,
                q(p.map(|p| p.p50)),
                q(p.map(|p| p.p90)),
                q(p.map(|p| p.p95)),
                q(p.map(|p| p.p99)),
                q(p.map(|p| p.max)),
            );
        };
        let it = &self.iterations;
        row(
            "iterations",
            "",
            "",
            it.ok + it.failed + it.aborted,
            it.failed + it.aborted,
            Some(&it.duration_ms),
        );
        for r in &self.http {
            let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            row(
                "http",
                &r.name,
                &tags.join(" "),
                r.requests,
                r.failed,
                Some(&r.latency_ms),
            );
        }
        for (proto, rows) in [("mqtt", &self.mqtt), ("nats", &self.nats)] {
            for r in rows {
                let measures = [
                    ("connect", r.connects, r.connect_ms.as_ref()),
                    ("publish", r.published, r.publish_ms.as_ref()),
                    ("receive", r.received, r.message_latency_ms.as_ref()),
                    ("request", r.requests, r.request_ms.as_ref()),
                ];
                for (what, n, p) in measures.into_iter().filter(|m| m.1 > 0) {
                    row(&format!("{proto}_{what}"), &r.name, "", n, 0, p);
                }
                if r.failed > 0 {
                    row(
                        &format!("{proto}_errors"),
                        &r.name,
                        "",
                        r.failed,
                        r.failed,
                        None,
                    );
                }
            }
        }
        for c in &self.checks {
            let tags: Vec<String> = c.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            row(
                "checks",
                &c.name,
                &tags.join(" "),
                c.pass + c.fail,
                c.fail,
                None,
            );
        }
        out
    }
}

/// Quotes a CSV field when it needs it.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
