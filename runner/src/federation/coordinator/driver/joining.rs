//! Workers that join during a run: prepared, clock-measured, started at
//! the run's time zero, then given their share (open rates re-shared by
//! capacity; closed VUs handed over once they left their old worker).

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Driver, Status, Worker};
use crate::events::{ControlEvent, EventKind};
use crate::federation::coordinator::session::Session;
use crate::federation::coordinator::{Member, PINGS};
use crate::federation::protocol::{Down, Up, WireCommand};
use crate::federation::worker::unix_ns;
use crate::plan::share::{ClassShare, Share};

/// A worker that joined during the run, on its way in.
pub(super) struct Joiner {
    pub(super) session: Session,
    pub(super) share: crate::plan::share::Share,
    pub(super) ready: bool,
    pub(super) pings: BTreeMap<u64, u64>,
    pub(super) pongs: u32,
    pub(super) rtt_ns: u64,
    pub(super) offset_ns: i64,
}

/// VUs a worker hands to one that joined, once they have left it.
pub(super) struct Handoff {
    pub(super) from: u32,
    pub(super) class: usize,
    pub(super) indices: Vec<u32>,
    pub(super) to: u32,
}

impl Driver {
    /// A worker joined during the run: unless the run is stopping (or runs
    /// a set number of iterations), it is given the run to prepare, with
    /// no part yet; once it is ready and its clock measured, it starts at
    /// the run's time zero and takes its share from the others.
    pub(super) fn join(&mut self, session: Session) {
        let id = session.id;
        if self.stopping.is_some() || self.plan.duration.is_none() {
            tracing::info!(
                "worker {id} ({}) joined; it takes part in the next run",
                session.name
            );
            return;
        }
        let total: f64 = self
            .workers
            .values()
            .filter(|w| w.status == Status::Live)
            .map(|w| w.m.session.capacity)
            .sum::<f64>()
            + session.capacity;
        let fair = session.capacity / total.max(f64::MIN_POSITIVE);
        let mut share = Share::default();
        for (ci, class) in self.plan.classes.iter().enumerate() {
            let mut part = ClassShare {
                name: class.name.to_string(),
                ..Default::default()
            };
            let count = (f64::from(class.max_vus()) * fair).ceil() as u32;
            match &class.open {
                None => part.spare = count.saturating_mul(2),
                Some(_) => {
                    let span = self
                        .workers
                        .values()
                        .next()
                        .and_then(|w| w.m.share.classes.get(ci))
                        .map_or(0, |c| c.id_span);
                    let next = self.open_next.get(ci).copied().unwrap_or(span);
                    let room = count.min(span.saturating_sub(next));
                    part.id_offset = next;
                    part.id_span = span;
                    part.spare = room;
                    if let Some(n) = self.open_next.get_mut(ci) {
                        *n += room;
                    }
                }
            }
            share.classes.push(part);
        }
        let mut spec = self.spec.clone();
        spec.outputs.clear();
        spec.scenario = self.scenario.clone();
        tracing::info!(
            "worker {id} ({}) joined during the run: it gets its share once ready",
            session.name
        );
        session.send(Down::Assign {
            run: self.run,
            spec: Box::new(spec),
            share: share.clone(),
            lease_ms: self.lease.as_millis() as u64,
        });
        self.joiners.insert(
            id,
            Joiner {
                session,
                share,
                ready: false,
                pings: BTreeMap::new(),
                pongs: 0,
                rtt_ns: u64::MAX,
                offset_ns: 0,
            },
        );
    }

    pub(super) fn joiner_says(&mut self, id: u32, msg: Up) {
        let run = self.run;
        let sha = self.scenario.sha256.clone();
        let Some(j) = self.joiners.get_mut(&id) else {
            return;
        };
        match msg {
            Up::Need { run: r, sha256 } if r == run && sha256 == sha => {
                j.session.send_component(sha, self.bytes.clone());
            }
            Up::Failed { run: r, error } if r == run => {
                tracing::warn!("worker {id} ({}) could not join: {error}", j.session.name);
                self.joiners.remove(&id);
            }
            Up::Ready { run: r } if r == run => {
                j.ready = true;
                for _ in 0..PINGS {
                    self.next_ping += 1;
                    j.pings.insert(self.next_ping, unix_ns());
                    j.session.send(Down::Ping { id: self.next_ping });
                }
            }
            Up::Pong {
                id: ping,
                unix_ns: theirs,
            } => {
                if let Some(sent) = j.pings.remove(&ping) {
                    let rtt = unix_ns().saturating_sub(sent);
                    j.pongs += 1;
                    if rtt < j.rtt_ns {
                        j.rtt_ns = rtt;
                        j.offset_ns = theirs as i64 - (sent + rtt / 2) as i64;
                    }
                }
                if j.ready && j.pongs >= PINGS as u32 {
                    self.admit(id);
                }
            }
            _ => {}
        }
    }

    /// Starts a joiner at the run's time zero and gives it its share.
    pub(super) fn admit(&mut self, id: u32) {
        let run = self.run;
        let Some(j) = self.joiners.remove(&id) else {
            return;
        };
        if self.stopping.is_some() {
            j.session.send(Down::Cancel {
                run,
                reason: "the run is stopping".into(),
            });
            return;
        }
        let at = (self.start_unix as i64 + j.offset_ns).max(0) as u64;
        j.session.send(Down::Start {
            run,
            at_unix_ns: at,
        });
        let name = j.session.name.clone();
        let now = Instant::now();
        self.workers.insert(
            id,
            Worker::new(
                Member {
                    session: j.session,
                    share: j.share,
                    offset_ns: j.offset_ns,
                    rtt_ns: j.rtt_ns,
                },
                now,
                now + self.lease,
                self.start.elapsed().as_secs_f64(),
            ),
        );
        self.renew_leases();
        let live: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.status == Status::Live && w.gone_since.is_none())
            .map(|(id, _)| *id)
            .collect();
        let caps: Vec<f64> = live
            .iter()
            .map(|i| self.workers[i].m.session.capacity)
            .collect();
        let sum: f64 = caps.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let mut fractions: BTreeMap<u32, Vec<(String, f64)>> = BTreeMap::new();
        for (ci, class) in self.plan.classes.iter().enumerate() {
            if class.open.is_some() {
                // Every live worker's fraction by capacity, the joiner's too.
                for (wid, cap) in live.iter().zip(&caps) {
                    let f = cap / sum;
                    if let Some(c) = self
                        .workers
                        .get_mut(wid)
                        .and_then(|w| w.m.share.classes.get_mut(ci))
                    {
                        c.fraction = f;
                    }
                    fractions
                        .entry(*wid)
                        .or_default()
                        .push((class.name.to_string(), f));
                }
                continue;
            }
            // VUs come to the joiner from the workers above their fair part.
            let total = f64::from(class.max_vus());
            let cap_j = self.workers[&id].m.session.capacity;
            let mut want = (total * cap_j / sum).round() as usize;
            for wid in live.iter().filter(|w| **w != id) {
                if want == 0 {
                    break;
                }
                let Some(w) = self.workers.get(wid) else {
                    continue;
                };
                let owned = w.m.share.classes.get(ci).map_or(&[][..], |c| &c.owned[..]);
                let fair = (total * w.m.session.capacity / sum).round() as usize;
                let give = owned.len().saturating_sub(fair).min(want);
                if give == 0 {
                    continue;
                }
                let indices = owned[owned.len() - give..].to_vec();
                want -= give;
                w.m.session.send(Down::Release {
                    run,
                    class: class.name.to_string(),
                    indices: indices.clone(),
                });
                self.handoffs.push(Handoff {
                    from: *wid,
                    class: ci,
                    indices,
                    to: id,
                });
            }
        }
        for (wid, f) in fractions {
            if let Some(w) = self.workers.get(&wid) {
                w.m.session.send(Down::Rescale { run, fractions: f });
            }
        }
        let t = self.start.elapsed().as_secs_f64();
        tracing::info!("worker {id} ({name}) takes part from {t:.1}s");
        self.announce(ControlEvent {
            t,
            kind: EventKind::Worker {
                worker: name.clone(),
                then: "joined".into(),
            },
            message: format!("worker {name} joined"),
        });
    }

    /// VUs a worker handed over have left it: the joiner takes them.
    pub(super) fn released(&mut self, from: u32, class: &str, indices: Vec<u32>) {
        let Some(i) = self.handoffs.iter().position(|h| {
            h.from == from
                && h.indices == indices
                && self
                    .plan
                    .classes
                    .get(h.class)
                    .is_some_and(|c| *c.name == *class)
        }) else {
            return;
        };
        let h = self.handoffs.remove(i);
        if let Some(c) = self
            .workers
            .get_mut(&from)
            .and_then(|w| w.m.share.classes.get_mut(h.class))
        {
            c.owned.retain(|x| h.indices.binary_search(x).is_err());
            c.spare += h.indices.len() as u32;
        }
        let Some(w) = self
            .workers
            .get_mut(&h.to)
            .filter(|w| w.status == Status::Live)
        else {
            // The joiner is gone: the VUs go back.
            if let Some(w) = self.workers.get(&from) {
                let at = (unix_ns() as i64 + w.m.offset_ns).max(0) as u64;
                w.m.session.send(Down::Adopt {
                    run: self.run,
                    class: class.to_owned(),
                    indices: h.indices,
                    at_unix_ns: at,
                });
            }
            return;
        };
        let at = (unix_ns() as i64 + w.m.offset_ns).max(0) as u64 + 100_000_000;
        w.m.session.send(Down::Adopt {
            run: self.run,
            class: class.to_owned(),
            indices: h.indices.clone(),
            at_unix_ns: at,
        });
        if let Some(c) = w.m.share.classes.get_mut(h.class) {
            c.owned.extend_from_slice(&h.indices);
            c.owned.sort_unstable();
            c.spare = c.spare.saturating_sub(h.indices.len() as u32);
        }
    }

    /// Sends a worker that reconnected what it may have missed: a stop,
    /// the load in force, its whole share (adoptions are idempotent).
    pub(super) fn resend(&mut self, id: u32) {
        let run = self.run;
        let t = self.start.elapsed().as_secs_f64();
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        if w.status != Status::Live {
            return;
        }
        let session = &w.m.session;
        if let Some((_, asked)) = &self.stopping {
            session.send(Down::Control {
                run,
                command: WireCommand::Stop { abort: *asked > 1 },
            });
            return;
        }
        let now = (unix_ns() as i64 + w.m.offset_ns).max(0) as u64;
        let mut fractions = Vec::new();
        for (c, part) in self.classes.iter().zip(&w.m.share.classes) {
            let value = c.load.value_at(t);
            let (vus, rate) = if c.is_open() {
                (None, Some(value))
            } else {
                (Some(value.round() as u32), None)
            };
            session.send(Down::Control {
                run,
                command: WireCommand::Load {
                    class: Some(c.name.to_string()),
                    vus,
                    rate,
                    ramp_ms: 0,
                },
            });
            if !part.owned.is_empty() {
                session.send(Down::Adopt {
                    run,
                    class: part.name.clone(),
                    indices: part.owned.clone(),
                    at_unix_ns: now,
                });
            }
            if c.is_open() {
                fractions.push((part.name.clone(), part.fraction));
            }
        }
        if !fractions.is_empty() {
            session.send(Down::Rescale { run, fractions });
        }
        if self.phases.len() > 1 {
            session.send(Down::Swap {
                run,
                name: self.scenario.name.clone(),
                sha256: self.scenario.sha256.clone(),
            });
        }
    }
}
