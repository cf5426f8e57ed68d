//! The MQTT and NATS sections of the summary: one row per metric name
//! (connection, topic or subject, subscription), and the table lines that
//! show them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use host_api::recorder::Hist;
use host_api::recorder::MessagingStats;
use serde::{Deserialize, Serialize};

use super::{clip, ms, Percentiles};
use crate::thresholds::Aggregate;

/// One metric name of a messaging protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessagingRow {
    /// The connection's, topic's, subject's or subscription's metric name.
    pub name: String,
    /// Connections opened.
    pub connects: u64,
    /// Connect latency, ms.
    pub connect_ms: Option<Percentiles>,
    /// Messages published and confirmed.
    pub published: u64,
    /// Published per second.
    pub publish_rate: f64,
    /// Publish latency (to the acknowledgement or flush), ms.
    pub publish_ms: Option<Percentiles>,
    /// Messages received on subscriptions.
    pub received: u64,
    /// Received per second.
    pub receive_rate: f64,
    /// Publish-to-receipt latency of stamped messages, ms.
    pub message_latency_ms: Option<Percentiles>,
    /// Requests answered (NATS request/reply).
    pub requests: u64,
    /// Request round trip, ms.
    pub request_ms: Option<Percentiles>,
    /// Payload bytes published (and sent in requests).
    pub bytes_sent: u64,
    /// Payload bytes received (and in replies).
    pub bytes_received: u64,
    /// Payload bytes sent per second.
    pub bytes_sent_rate: f64,
    /// Payload bytes received per second.
    pub bytes_received_rate: f64,
    /// Received messages the VU did not read in time.
    pub unread: u64,
    /// Failures, all kinds.
    pub failed: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
}

fn pct(h: &Hist) -> Option<Percentiles> {
    (h.count() > 0).then(|| Percentiles::of(h, 1000.0))
}

/// The rows of one protocol, sorted by name, empty names left out.
pub fn rows(m: &host_api::recorder::Map<String, MessagingStats>, secs: f64) -> Vec<MessagingRow> {
    let mut rows: Vec<MessagingRow> = m
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(name, s)| MessagingRow {
            name: name.clone(),
            connects: s.connects,
            connect_ms: pct(&s.connect_time),
            published: s.published,
            publish_rate: s.published as f64 / secs,
            publish_ms: pct(&s.publish_time),
            received: s.received,
            receive_rate: s.received as f64 / secs,
            message_latency_ms: pct(&s.message_latency),
            requests: s.requests,
            request_ms: pct(&s.request_time),
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            bytes_sent_rate: s.bytes_sent as f64 / secs,
            bytes_received_rate: s.bytes_received as f64 / secs,
            unread: s.unread,
            failed: s.failed(),
            errors: s.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// Appends a protocol's section to the table: per name, one line per
/// measure that has data (connect, publish, receive, request), with its
/// count, rate and the chosen latency statistics.
pub fn table(
    s: &mut String,
    title: &str,
    rows: &[MessagingRow],
    raw: &host_api::recorder::Map<String, MessagingStats>,
    secs: f64,
    stats: &[Aggregate],
) {
    if rows.is_empty() {
        return;
    }
    let w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let mut head = format!("\n  {title:<w$}  {:<10} {:>9} {:>9} ", "", "count", "per s");
    for st in stats {
        let _ = write!(head, " {:>9}", st.to_string());
    }
    let _ = writeln!(s, "{head}");
    for r in rows {
        let Some(st) = raw.get(&r.name) else { continue };
        let measures: [(&str, u64, Option<&Hist>); 4] = [
            ("connect", r.connects, Some(&st.connect_time)),
            ("publish", r.published, Some(&st.publish_time)),
            ("receive", r.received, Some(&st.message_latency)),
            ("request", r.requests, Some(&st.request_time)),
        ];
        let mut first = true;
        for (what, count, hist) in measures {
            if count == 0 {
                continue;
            }
            let label = if first {
                clip(&r.name, w)
            } else {
                String::new()
            };
            first = false;
            let rate = if what == "connect" {
                String::new()
            } else {
                format!("{:.1}", count as f64 / secs)
            };
            let mut line = format!("  {label:<w$}  {what:<10} {count:>9} {rate:>9} ");
            let hist = hist.filter(|h| h.count() > 0);
            for a in stats {
                let v = hist.and_then(|h| a.of(h, 1000.0));
                let _ = write!(line, " {:>9}", v.map(ms).unwrap_or_else(|| "-".into()));
            }
            let _ = writeln!(s, "{line}");
        }
        let label = if first {
            clip(&r.name, w)
        } else {
            String::new()
        };
        let mut why: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if r.unread > 0 {
            why.push(format!("unread (VU did not keep up) {}", r.unread));
        }
        if !why.is_empty() {
            let _ = writeln!(s, "  {label:<w$}  failures: {}", why.join(", "));
        }
    }
    let _ = writeln!(
        s,
        "  {:<w$}  (receive latency: publish to receipt, for stamped payloads)",
        ""
    );
}
