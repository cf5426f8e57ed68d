//! Merging the workers' snapshots second by second: a second is published
//! once every worker still running has sent it, or when it is too late to
//! wait longer; what arrives after its second was published joins the
//! next one, so nothing is lost or counted twice.

use std::collections::{BTreeMap, BTreeSet};

use crate::run::Snapshot;

/// The seconds not yet published.
#[derive(Default)]
pub struct Buckets {
    /// The next second to publish.
    next: u64,
    pending: BTreeMap<u64, Bucket>,
}

#[derive(Default)]
struct Bucket {
    merged: Option<Snapshot>,
    from: BTreeSet<u32>,
}

impl Buckets {
    /// Buckets starting at second 1.
    pub fn new() -> Self {
        Self {
            next: 1,
            pending: BTreeMap::new(),
        }
    }

    /// The next second to publish.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Adds worker `from`'s snapshot.
    pub fn add(&mut self, from: u32, mut s: Snapshot) {
        s.events.clear();
        let late = s.seq < self.next;
        if late {
            // Its counts join the next second to publish; its VUs and
            // rates were of an older second (adding them would count a
            // worker twice), and it does not stand for the worker's
            // report of that next second.
            s.classes.clear();
        }
        let seq = s.seq.max(self.next);
        let b = self.pending.entry(seq).or_default();
        if !late {
            b.from.insert(from);
        }
        match &mut b.merged {
            Some(m) => m.merge(&s),
            None => b.merged = Some(s),
        }
    }

    /// Whether every worker in `expected` has sent the next second.
    pub fn complete(&self, expected: &BTreeSet<u32>) -> bool {
        self.pending
            .get(&self.next)
            .is_some_and(|b| expected.is_subset(&b.from))
    }

    /// Takes the next second (empty if nobody sent it) and moves on.
    pub fn take(&mut self) -> Snapshot {
        let seq = self.next;
        self.next += 1;
        let mut s = self
            .pending
            .remove(&seq)
            .and_then(|b| b.merged)
            .unwrap_or_default();
        s.seq = seq;
        s.last = false;
        s
    }

    /// Takes everything still pending, merged (the run's end).
    pub fn drain(&mut self) -> Option<Snapshot> {
        let mut out: Option<Snapshot> = None;
        for (_, b) in std::mem::take(&mut self.pending) {
            if let Some(s) = b.merged {
                match &mut out {
                    Some(o) => {
                        o.merge(&s);
                        o.classes = s.classes;
                    }
                    None => out = Some(s),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_api::recorder::{HttpOutcome, Recorder};

    fn snap(seq: u64, requests: u32) -> Snapshot {
        let r = Recorder::new(1);
        for _ in 0..requests {
            r.http(
                "GET /",
                0,
                false,
                HttpOutcome::Response {
                    status: 200,
                    total_us: 100,
                    wait_us: 50,
                    corrected_us: None,
                    received: 0,
                },
            );
        }
        let mut s = Snapshot {
            seq,
            t: seq as f64,
            interval: 1.0,
            ..Snapshot::default()
        };
        r.drain_into(&mut s.metrics);
        s
    }

    #[test]
    fn seconds_merge_and_late_ones_join_the_next() {
        let mut b = Buckets::new();
        let all: BTreeSet<u32> = [1, 2].into();
        b.add(1, snap(1, 3));
        assert!(!b.complete(&all));
        b.add(2, snap(1, 4));
        assert!(b.complete(&all));
        assert_eq!(b.take().metrics.http_requests(), 7);
        // Worker 2's second 2 is late: second 2 goes out without it...
        b.add(1, snap(2, 5));
        assert_eq!(b.take().metrics.http_requests(), 5);
        // ...and it lands in second 3, without counting as worker 2's
        // report of second 3.
        b.add(2, snap(2, 6));
        b.add(1, snap(3, 1));
        assert!(!b.complete(&all));
        b.add(2, snap(3, 2));
        assert!(b.complete(&all));
        let s = b.take();
        assert_eq!((s.seq, s.metrics.http_requests()), (3, 9));
        assert!(b.drain().is_none());
    }
}
