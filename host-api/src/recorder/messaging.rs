//! [`MessagingStats`]: what the recorder keeps per MQTT or NATS metric name,
//! and the [`Event`]s that feed it.

use serde::{Deserialize, Serialize};

use super::hist::Hist;
use super::Map;

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
    pub errors: Map<String, u64>,
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
            errors: Map::default(),
        }
    }
}

impl MessagingStats {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &MessagingStats) {
        self.connects = self.connects.saturating_add(o.connects);
        self.connect_time.merge(&o.connect_time);
        self.published = self.published.saturating_add(o.published);
        self.publish_time.merge(&o.publish_time);
        self.bytes_sent = self.bytes_sent.saturating_add(o.bytes_sent);
        self.received = self.received.saturating_add(o.received);
        self.bytes_received = self.bytes_received.saturating_add(o.bytes_received);
        self.message_latency.merge(&o.message_latency);
        self.requests = self.requests.saturating_add(o.requests);
        self.request_time.merge(&o.request_time);
        self.unread = self.unread.saturating_add(o.unread);
        for (k, v) in &o.errors {
            let n = self.errors.entry(k.clone()).or_default();
            *n = n.saturating_add(*v);
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
