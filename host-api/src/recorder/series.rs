//! A bound on the distinct series (name and tags) each metric family may
//! have in a run. A scenario that puts a user id or a timestamp in a name
//! or a tag would otherwise grow the runner's memory, its snapshots and
//! its summary without end; past the bound, measurements are folded into
//! one clearly labelled row per family, counted, and the first one is
//! named in a warning.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Distinct series per family unless the run says otherwise.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// The row that series past the bound are counted in.
pub const OVERFLOW: &str = "(overflow: more series than --max-series)";

/// The metric families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// HTTP requests by name and tags.
    Http,
    /// MQTT names.
    Mqtt,
    /// NATS names.
    Nats,
    /// Checks.
    Checks,
    /// Custom counters.
    Counters,
    /// Custom gauges.
    Gauges,
    /// Custom timings.
    Timings,
    /// Custom histograms.
    Histograms,
}

const FAMILIES: [Family; 8] = [
    Family::Http,
    Family::Mqtt,
    Family::Nats,
    Family::Checks,
    Family::Counters,
    Family::Gauges,
    Family::Timings,
    Family::Histograms,
];

impl Family {
    /// Its name in the summary and the warning.
    pub fn name(self) -> &'static str {
        match self {
            Family::Http => "http",
            Family::Mqtt => "mqtt",
            Family::Nats => "nats",
            Family::Checks => "checks",
            Family::Counters => "counters",
            Family::Gauges => "gauges",
            Family::Timings => "timings",
            Family::Histograms => "histograms",
        }
    }
}

/// Timings and histograms keep a tenth as many series: each holds a
/// histogram that grows to up to 425 KiB with the values recorded, where a
/// counter holds one number.
const HISTOGRAM_SHARE: usize = 10;

/// The series seen so far, per family.
pub struct Series {
    max: usize,
    known: [Mutex<HashSet<String>>; 8],
    folded: [AtomicU64; 8],
}

impl Series {
    /// At most `max` series per family.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            known: Default::default(),
            folded: Default::default(),
        }
    }

    /// The most series `family` may have.
    pub fn bound(&self, family: Family) -> usize {
        match family {
            Family::Timings | Family::Histograms => (self.max / HISTOGRAM_SHARE).max(1),
            _ => self.max,
        }
    }

    /// `key`, if it is (or may become) one of `family`'s series; else the
    /// overflow row's key.
    pub fn admit<'a>(&self, family: Family, key: &'a str) -> &'a str {
        let f = family as usize;
        let bound = self.bound(family);
        let mut known = self.known[f].lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(key) {
            return key;
        }
        if known.len() < bound {
            known.insert(key.to_owned());
            return key;
        }
        drop(known);
        if self.folded[f].fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "the scenario made more than {} distinct {} series (names and tags), e.g. {:?}; further ones are counted under {OVERFLOW:?} (a name or tag that holds ids or times is the usual cause; --max-series raises the bound)",
                bound,
                family.name(),
                super::key_label(key)
            );
        }
        OVERFLOW
    }

    /// Measurements folded into the overflow row, per family that had any.
    pub fn folded(&self) -> Vec<(&'static str, u64)> {
        FAMILIES
            .iter()
            .map(|f| (f.name(), self.folded[*f as usize].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_past_the_bound_fold_into_one_row() {
        let s = Series::new(3);
        for i in 0..3 {
            let k = format!("user-{i}");
            assert_eq!(s.admit(Family::Counters, &k), k);
        }
        assert_eq!(s.admit(Family::Counters, "user-1"), "user-1");
        assert_eq!(s.admit(Family::Counters, "user-9"), OVERFLOW);
        assert_eq!(s.admit(Family::Counters, "user-10"), OVERFLOW);
        // Each family has its own bound.
        assert_eq!(s.admit(Family::Checks, "user-9"), "user-9");
        assert_eq!(s.folded(), vec![("counters", 2)]);
        // Histogram families keep a tenth as many.
        let s = Series::new(20);
        assert_eq!(s.admit(Family::Timings, "a"), "a");
        assert_eq!(s.admit(Family::Timings, "b"), "b");
        assert_eq!(s.admit(Family::Timings, "c"), OVERFLOW);
        assert_eq!(s.admit(Family::Histograms, "c"), "c");
    }
}
