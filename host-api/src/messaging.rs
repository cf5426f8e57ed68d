//! What the MQTT and NATS host clients share: metric names, the send
//! timestamp the SDK's `stamp` helper puts in a payload, MQTT-style topic
//! filter matching, and handshakes off the VU's fiber. Their statistics
//! are the recorder's ([`MessagingStats`]).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use crate::recorder::{Event, MessagingStats, Protocol};

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
pub(crate) const MAX_NAME: usize = crate::limits::sizes::NAME;

/// A metric name, cut to [`MAX_NAME`] bytes.
pub(crate) fn metric_name(s: String) -> String {
    crate::limits::truncate(s, MAX_NAME)
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

/// Runs the future `make` makes as a task of its own and waits for it.
/// Connection handshakes go this way: polled on a VU's fiber, a client's
/// deep connect futures left ~20 KiB of that fiber stack resident for the
/// rest of the VU's life. The future is made and boxed inside the task, on
/// a worker thread's stack: tens of KiB, merely moving or boxing it on the
/// fiber makes a stack frame that large there, every page of it touched
/// by the stack probes. `Err` says why the task did not finish.
pub(crate) fn off_fiber<M, F>(
    make: M,
) -> impl std::future::Future<Output = Result<F::Output, String>>
where
    M: FnOnce() -> F + Send + 'static,
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(async move { Box::pin(make()).await });
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
