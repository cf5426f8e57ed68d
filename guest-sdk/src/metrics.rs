//! Checks and custom metrics; each shows in the summary and the JSON.

use std::time::Duration;

use crate::__bindings::runner::scenario::metrics as wit;

/// Records the outcome of the check `name` and returns `pass`, so it can be
/// used in conditions: `if !check("status is 200", r.status() == 200) { ... }`.
pub fn check(name: &str, pass: bool) -> bool {
    wit::check(name, pass)
}

/// Adds `delta` to the counter `name`.
pub fn counter(name: &str, delta: u64) {
    wit::counter(name, delta);
}

/// Sets the gauge `name`.
pub fn gauge(name: &str, value: f64) {
    wit::gauge(name, value);
}

/// Records `time` in the timing histogram `name`.
pub fn timing(name: &str, time: Duration) {
    wit::timing(name, u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
}

/// Records `value` in the histogram `name`.
pub fn histogram(name: &str, value: u64) {
    wit::histogram(name, value);
}
