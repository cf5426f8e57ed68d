//! Checks and custom metrics; each shows in the summary and the JSON.
//!
//! Inside [`crate::group`], each is tagged `group=NAME` (as k6 does), so
//! the summary shows the group's checks apart and thresholds can filter on
//! it (`checks{group:login} rate==1`). The `_tagged` variants add tags of
//! their own.

use std::time::Duration;

use crate::__bindings::runner::scenario::metrics as wit;

/// `tags` plus the current group, unless a `group` tag is given.
fn with_group(tags: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = tags
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if let Some(g) = crate::current_group() {
        if !all.iter().any(|(k, _)| k == "group") {
            all.push(("group".into(), g));
        }
    }
    all
}

/// Records the outcome of the check `name` and returns `pass`, so it can be
/// used in conditions: `if !check("status is 200", r.status() == 200) { ... }`.
pub fn check(name: &str, pass: bool) -> bool {
    check_tagged(name, pass, &[])
}

/// Like [`check`], with tags.
pub fn check_tagged(name: &str, pass: bool, tags: &[(&str, &str)]) -> bool {
    wit::check(name, pass, &with_group(tags))
}

/// Adds `delta` to the counter `name`.
pub fn counter(name: &str, delta: u64) {
    counter_tagged(name, delta, &[]);
}

/// Like [`counter`], with tags.
pub fn counter_tagged(name: &str, delta: u64, tags: &[(&str, &str)]) {
    wit::counter(name, delta, &with_group(tags));
}

/// Sets the gauge `name`.
pub fn gauge(name: &str, value: f64) {
    wit::gauge(name, value, &with_group(&[]));
}

/// Records `time` in the timing histogram `name`.
pub fn timing(name: &str, time: Duration) {
    timing_tagged(name, time, &[]);
}

/// Like [`timing`], with tags.
pub fn timing_tagged(name: &str, time: Duration, tags: &[(&str, &str)]) {
    let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
    wit::timing(name, nanos, &with_group(tags));
}

/// Records `value` in the histogram `name`.
pub fn histogram(name: &str, value: u64) {
    wit::histogram(name, value, &with_group(&[]));
}
