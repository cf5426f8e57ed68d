//! Lost workers: declared lost only once their lease has surely run out,
//! what their share could not do counted, and the `--on-worker-loss`
//! policy and the quorum applied.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Driver, Status};
use crate::events::{ControlEvent, EventKind, StopBy};
use crate::exec::{lock, Load};
use crate::federation::coordinator::OnLoss;
use crate::federation::protocol::Down;
use crate::federation::worker::unix_ns;
use crate::plan::share::parts;

impl Driver {
    /// Declares lost the workers silent for longer than a lease whose last
    /// lease has surely run out (so their load has stopped before their
    /// share goes elsewhere: load is never doubled), and acts on it.
    pub(super) fn find_lost(&mut self) {
        let silent = self.lease + Duration::from_secs(1);
        let margin = Duration::from_secs(1);
        let t = self.start.elapsed().as_secs_f64();
        let lost: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.status == Status::Live)
            .filter(|(_, w)| {
                let quiet = w.gone_since.is_some_and(|g| g.elapsed() > silent)
                    || w.last_heard.elapsed() > silent;
                quiet && Instant::now() > w.leased_until + margin
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let Some(w) = self.workers.get_mut(&id) else {
                continue;
            };
            w.status = Status::Lost;
            w.lost_at = Some(t);
            let name = w.m.session.name.clone();
            let live = self
                .workers
                .values()
                .filter(|w| w.status == Status::Live)
                .count();
            let quorum = live < self.min_workers;
            let then = if quorum { OnLoss::Abort } else { self.on_loss };
            self.count_missed(id, t, then);
            tracing::warn!(
                "worker {id} ({name}) is lost (silent, and its lease ran out); {}",
                match (quorum, then) {
                    (true, _) => format!(
                        "{live} workers left, below the quorum of {}: stopping the run",
                        self.min_workers
                    ),
                    (false, OnLoss::Rebalance) => "the others take over its share".to_owned(),
                    (false, OnLoss::Continue) => "the run goes on without its share".to_owned(),
                    (false, OnLoss::Abort) =>
                        "stopping the run (--on-worker-loss abort)".to_owned(),
                }
            );
            self.announce(ControlEvent {
                t,
                kind: EventKind::Worker {
                    worker: name.clone(),
                    then: format!("{then:?}").to_lowercase(),
                },
                message: format!("worker {name} lost"),
            });
            match then {
                OnLoss::Abort => {
                    self.stop(true, StopBy::Coordinator, None);
                }
                OnLoss::Continue => {}
                OnLoss::Rebalance => self.rebalance(id),
            }
        }
    }

    /// Counts what lost worker `id`'s share could not do: from the last
    /// second it reported until the others take over (a second from now)
    /// or, without a rebalance, until the run's end. Its open-model
    /// arrivals count as dropped; its closed-model VU-seconds are noted.
    pub(super) fn count_missed(&mut self, id: u32, t: f64, then: OnLoss) {
        let end = self.plan.duration.map_or(t, |d| d.as_secs_f64());
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let from = w.last_t;
        let until = match then {
            OnLoss::Rebalance => (t + 1.0).min(end),
            OnLoss::Continue => end,
            OnLoss::Abort => t,
        };
        let mut arrivals = 0.0;
        for (c, part) in self.classes.iter().zip(&w.m.share.classes) {
            match &c.load {
                Load::Open { rate, .. } => {
                    arrivals += part.fraction * lock(rate).area_between(from, until);
                }
                Load::Closed { vus, .. } => {
                    let target = lock(vus).value_at(t).round() as u32;
                    let running = part.owned.iter().filter(|&&i| i < target).count();
                    w.missed_vu_s += running as f64 * (until - from).max(0.0);
                }
            }
        }
        w.missed += arrivals;
        self.missed_pending += arrivals.round() as u64;
        // Shared iterations it was given and did not report done: taken
        // over below with a rebalance, missed otherwise.
        if self.plan.classes.iter().any(|c| c.shared.is_some()) && then != OnLoss::Rebalance {
            w.missed += w.granted.saturating_sub(w.iterations) as f64;
        }
    }

    /// Hands the shared iterations lost worker `id` was given and did not
    /// report done to the `live` workers, in proportion to `weights`.
    fn grant_left(&mut self, id: u32, live: &[u32], weights: &[f64]) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let left = w.granted.saturating_sub(w.iterations);
        if left == 0 || !self.plan.classes.iter().any(|c| c.shared.is_some()) {
            return;
        }
        if live.is_empty() {
            w.missed += left as f64;
            return;
        }
        w.granted -= left;
        let run = self.run;
        for (wid, n) in live.iter().zip(parts(left, weights)) {
            if let Some(w) = self.workers.get_mut(wid).filter(|_| n > 0) {
                w.granted += n;
                w.m.session.send(Down::Grant { run, iterations: n });
            }
        }
        tracing::info!(
            "{left} shared iterations of the lost worker go to the {} others",
            live.len()
        );
    }

    /// Hands lost worker `id`'s share to the live, connected workers, by
    /// capacity within the room each has left, from a second ahead.
    pub(super) fn rebalance(&mut self, id: u32) {
        let run = self.run;
        let Some(lost) = self.workers.get(&id).map(|w| w.m.share.clone()) else {
            return;
        };
        let live: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.status == Status::Live && w.gone_since.is_none())
            .map(|(id, _)| *id)
            .collect();
        let weights: Vec<f64> = live
            .iter()
            .map(|i| self.workers[i].m.session.capacity)
            .collect();
        self.grant_left(id, &live, &weights);
        if live.is_empty() {
            tracing::warn!("no connected worker is left to take over the lost share");
            return;
        }
        let ahead = Duration::from_secs(1);
        let mut fractions: BTreeMap<u32, Vec<(String, f64)>> = BTreeMap::new();
        for (ci, class) in lost.classes.iter().enumerate() {
            let open = self.plan.classes.get(ci).is_some_and(|c| c.open.is_some());
            if !open {
                let rooms: Vec<u64> = live
                    .iter()
                    .map(|w| {
                        self.workers[w]
                            .m
                            .share
                            .classes
                            .get(ci)
                            .map_or(0, |c| u64::from(c.spare))
                    })
                    .collect();
                let counts = within(class.owned.len() as u64, &weights, &rooms);
                let mut rest = class.owned.as_slice();
                for (&wid, n) in live.iter().zip(counts) {
                    let (mine, more) = rest.split_at((n as usize).min(rest.len()));
                    rest = more;
                    if mine.is_empty() {
                        continue;
                    }
                    if let Some(w) = self.workers.get_mut(&wid) {
                        let at = (unix_ns() as i64 + w.m.offset_ns).max(0) as u64
                            + ahead.as_nanos() as u64;
                        w.m.session.send(Down::Adopt {
                            run,
                            class: class.name.clone(),
                            indices: mine.to_vec(),
                            at_unix_ns: at,
                        });
                        if let Some(c) = w.m.share.classes.get_mut(ci) {
                            c.owned.extend_from_slice(mine);
                            c.owned.sort_unstable();
                            c.spare -= mine.len() as u32;
                        }
                    }
                }
                if !rest.is_empty() {
                    tracing::warn!(
                        "{} VUs of class {} could not be taken over: the other workers have no room left",
                        rest.len(),
                        class.name
                    );
                }
            } else if class.fraction > 0.0 {
                // The lost fraction goes to the others by capacity.
                let sum: f64 = weights.iter().sum();
                for (&wid, weight) in live.iter().zip(&weights) {
                    if let Some(c) = self
                        .workers
                        .get_mut(&wid)
                        .and_then(|w| w.m.share.classes.get_mut(ci))
                    {
                        c.fraction += class.fraction * weight / sum;
                        fractions
                            .entry(wid)
                            .or_default()
                            .push((class.name.clone(), c.fraction));
                    }
                }
            }
        }
        for (wid, f) in fractions {
            if let Some(w) = self.workers.get(&wid) {
                w.m.session.send(Down::Rescale { run, fractions: f });
            }
        }
    }
}

/// `total` split in proportion to `weights`, none over its `room`; what
/// does not fit anywhere is left out (the counts may sum to less).
fn within(total: u64, weights: &[f64], room: &[u64]) -> Vec<u64> {
    let mut out = parts(total, weights);
    let mut extra = 0u64;
    for (o, r) in out.iter_mut().zip(room) {
        if *o > *r {
            extra += *o - *r;
            *o = *r;
        }
    }
    for (o, r) in out.iter_mut().zip(room) {
        let take = extra.min(r - *o);
        *o += take;
        extra -= take;
    }
    out
}
