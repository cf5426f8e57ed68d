//! This virtual user: identity, environment, clock and sleep.

use std::time::Duration;

use crate::__bindings::runner::scenario::vu as wit;

/// This VU's number, unique within the run (0-based).
pub fn id() -> u32 {
    wit::id()
}

/// The name of this VU's class.
pub fn class() -> String {
    wit::class_name()
}

/// The number of the current iteration of this VU (0-based).
pub fn iteration() -> u64 {
    wit::iteration()
}

/// A value passed with `runner run -e KEY=VALUE`.
pub fn env(key: &str) -> Option<String> {
    wit::env(key)
}

/// Like [`env`], with a default.
pub fn env_or(key: &str, default: &str) -> String {
    wit::env(key).unwrap_or_else(|| default.to_owned())
}

/// Time since the run started (monotonic).
pub fn now() -> Duration {
    Duration::from_nanos(wit::now())
}

/// Suspends this VU only; other VUs keep running. Prefer this to
/// `std::thread::sleep`, whose time counts against the CPU limit.
pub fn sleep(time: Duration) {
    wit::sleep(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
}

/// Wall-clock time since the Unix epoch, from the runner's clock; compare
/// it across processes (message timestamps), not for measuring intervals.
pub fn unix_time() -> Duration {
    Duration::from_nanos(wit::unix_time())
}
