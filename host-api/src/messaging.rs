//! What the MQTT and NATS clients share: per-name statistics, the send
//! timestamp the SDK's `stamp` helper puts in a payload, and MQTT-style
//! topic filter matching.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::recorder::Hist;

/// First bytes of a stamped payload; the next 8 are the send time in
/// nanoseconds since the Unix epoch, big-endian. The SDK writes the same.
pub const STAMP_MAGIC: [u8; 4] = *b"LTs\x01";

/// Length of the stamp header.
pub const STAMP_LEN: usize = 12;

/// Time from a stamped payload's send time to now, in nanoseconds; `None`
/// when the payload carries no stamp. A stamp from the future (clock skew
/// between machines) reads as zero.
pub fn stamp_latency(payload: &[u8]) -> Option<u64> {
    let (head, rest) = payload.split_first_chunk::<4>()?;
    if *head != STAMP_MAGIC {
        return None;
    }
    let (sent, _) = rest.split_first_chunk::<8>()?;
    let sent = u64::from_be_bytes(*sent);
    Some(unix_nanos().saturating_sub(sent))
}

/// Longest metric name kept; longer names are cut.
pub(crate) const MAX_NAME: usize = 256;

/// A metric name, cut to [`MAX_NAME`] bytes.
pub(crate) fn metric_name(s: String) -> String {
    crate::client::truncate(s, MAX_NAME)
}

/// A duration in microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The event of a publish that started at `started`: confirmed, or failed
/// with the error kind `kind` gives.
pub(crate) fn published<T, E>(
    result: &Result<T, E>,
    started: Instant,
    bytes: u64,
    kind: fn(&E) -> &'static str,
) -> Event<'static> {
    match result {
        Ok(_) => Event::Published {
            us: micros(started.elapsed()),
            bytes,
        },
        Err(e) => Event::Error(kind(e)),
    }
}

/// Runs `fut` as a task of its own and waits for it. Connection
/// handshakes go this way: polled on a VU's fiber, a client's deep connect
/// futures left ~20 KiB of that fiber stack resident for the rest of the
/// VU's life (4 → 24 KiB; 12 this way). The caller boxes the future where
/// it makes it: moved unboxed, a large future costs more stack than it
/// saves. `Err` says why the task did not finish.
pub(crate) fn off_fiber<F>(
    fut: std::pin::Pin<Box<F>>,
) -> impl std::future::Future<Output = Result<F::Output, String>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(fut);
    async move {
        task.await
            .map_err(|e| format!("the connect task failed: {e}"))
    }
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whether an MQTT topic matches a subscription filter with `+` (one
/// level) and `#` (all remaining levels) wildcards. Topics starting with
/// `$` match only filters that name that first level literally.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The two messaging protocols, which share a statistics shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 or 5.
    Mqtt,
    /// NATS core and JetStream.
    Nats,
}

/// Statistics of one metric name of a messaging protocol: a connection's,
/// a topic's or subject's, or a subscription's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessagingStats {
    /// Connections opened.
    pub connects: u64,
    /// Time to open a connection (TCP, TLS and protocol handshake), µs.
    pub connect_time: Hist,
    /// Messages published and confirmed (written, acknowledged or flushed,
    /// as the protocol and QoS promise).
    pub published: u64,
    /// Time from publish to that confirmation, µs.
    pub publish_time: Hist,
    /// Payload bytes published.
    pub bytes_sent: u64,
    /// Messages received on subscriptions.
    pub received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Publish-to-receipt time of stamped messages, µs.
    pub message_latency: Hist,
    /// Requests that got a reply (NATS request/reply).
    pub requests: u64,
    /// Request/reply round trip, µs.
    pub request_time: Hist,
    /// Received messages the VU did not read in time (its inbox was full),
    /// dropped after counting.
    #[serde(default)]
    pub unread: u64,
    /// Failures by kind (`connection-refused`, `timeout`, `disconnected`, ...).
    pub errors: HashMap<String, u64>,
}

impl Default for MessagingStats {
    fn default() -> Self {
        Self {
            connects: 0,
            connect_time: Hist::micros(),
            published: 0,
            publish_time: Hist::micros(),
            bytes_sent: 0,
            received: 0,
            bytes_received: 0,
            message_latency: Hist::micros(),
            requests: 0,
            request_time: Hist::micros(),
            unread: 0,
            errors: HashMap::new(),
        }
    }
}

impl MessagingStats {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &MessagingStats) {
        self.connects += o.connects;
        self.connect_time.merge(&o.connect_time);
        self.published += o.published;
        self.publish_time.merge(&o.publish_time);
        self.bytes_sent += o.bytes_sent;
        self.received += o.received;
        self.bytes_received += o.bytes_received;
        self.message_latency.merge(&o.message_latency);
        self.requests += o.requests;
        self.request_time.merge(&o.request_time);
        self.unread += o.unread;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }

    /// All failures, every kind.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Whether nothing at all was recorded (rows like this are not shown).
    pub fn is_empty(&self) -> bool {
        self.connects == 0
            && self.published == 0
            && self.received == 0
            && self.requests == 0
            && self.errors.is_empty()
    }
}

/// One thing that happened on a messaging connection.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A connection opened after `us` microseconds.
    Connected {
        /// Connect latency, µs.
        us: u64,
    },
    /// A message of `bytes` was published and confirmed after `us`.
    Published {
        /// Publish latency, µs.
        us: u64,
        /// Payload size.
        bytes: u64,
    },
    /// A message of `bytes` arrived; `latency_us` when it was stamped.
    Received {
        /// Payload size.
        bytes: u64,
        /// Publish-to-receipt time, µs.
        latency_us: Option<u64>,
    },
    /// A request got its reply after `us`.
    Replied {
        /// Round trip, µs.
        us: u64,
        /// Request payload size.
        sent: u64,
        /// Reply payload size.
        received: u64,
    },
    /// A received message was dropped because the VU did not read it.
    Unread,
    /// An operation failed with an error of this kind.
    Error(&'a str),
}

impl MessagingStats {
    /// Records one event.
    pub fn record(&mut self, event: Event<'_>) {
        match event {
            Event::Connected { us } => {
                self.connects += 1;
                self.connect_time.record(us);
            }
            Event::Published { us, bytes } => {
                self.published += 1;
                self.publish_time.record(us);
                self.bytes_sent += bytes;
            }
            Event::Received { bytes, latency_us } => {
                self.received += 1;
                self.bytes_received += bytes;
                if let Some(l) = latency_us {
                    self.message_latency.record(l);
                }
            }
            Event::Replied { us, sent, received } => {
                self.requests += 1;
                self.request_time.record(us);
                self.bytes_sent += sent;
                self.bytes_received += received;
            }
            Event::Unread => self.unread += 1,
            Event::Error(kind) => {
                if let Some(n) = self.errors.get_mut(kind) {
                    *n += 1;
                } else {
                    self.errors.insert(kind.to_owned(), 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_a_broker() {
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/c"));
        assert!(topic_matches("a/+", "a/c"));
        assert!(!topic_matches("a/+", "a/c/d"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/c/d"));
        assert!(topic_matches("#", "x/y"));
        assert!(topic_matches("+/+/t", "d/7/t"));
        assert!(!topic_matches("#", "$SYS/broker/uptime"));
        assert!(topic_matches("$SYS/#", "$SYS/broker/uptime"));
    }

    #[test]
    fn stamps_read_back_as_latency() {
        let mut payload = STAMP_MAGIC.to_vec();
        payload.extend_from_slice(&(unix_nanos() - 5_000_000).to_be_bytes());
        payload.extend_from_slice(b"rest");
        let l = stamp_latency(&payload).expect("stamped");
        assert!((5_000_000..1_000_000_000).contains(&l), "{l}");
        assert_eq!(stamp_latency(b"LTs\x01short"), None);
        assert_eq!(stamp_latency(b"plain payload here"), None);
    }
}
