//! The start of a distributed run: the plan split among the workers, the
//! component shipped to those that lack it, each worker's clock measured,
//! then one start instant for all. A worker whose connection drops before
//! the start does not sink the run: the next worker to join (the same one
//! back, or another) takes its place and its share, within
//! [`REJOIN_GRACE`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::sync::mpsc;

use super::session::{Event, Session};
use super::{ClusterOptions, Member, OnLoss, PINGS, PREPARE_TIMEOUT};
use crate::federation::protocol::{Down, Up};
use crate::federation::worker::unix_ns;
use crate::plan::share::{split, Share};
use crate::run::Prepared;

/// How long a share whose worker left before the start waits for another
/// worker (or the same one, reconnected) to take it.
pub(super) const REJOIN_GRACE: Duration = Duration::from_secs(10);

/// What the start hands the run's driver: the prepared run, the members,
/// the start instant on the Unix clock and on this machine's.
pub(super) type Started = (Prepared, BTreeMap<u32, Member>, u64, Instant);

/// A share whose worker left before the start.
struct Vacancy {
    share: Share,
    name: String,
    why: String,
    since: Instant,
}

/// The state of the start.
struct Starting<'a> {
    opts: &'a ClusterOptions,
    run: u64,
    spec: crate::spec::RunSpec,
    sha: String,
    bytes: Arc<[u8]>,
    members: BTreeMap<u32, Member>,
    vacancies: BTreeMap<u32, Vacancy>,
    ready: BTreeSet<u32>,
    pongs: BTreeMap<u32, u64>,
    pings: BTreeMap<u64, (u32, u64)>,
    next_ping: u64,
}

/// Splits the plan, assigns the shares, ships the component, measures the
/// clocks and starts every worker at one instant.
pub(super) async fn start(
    prepared: Prepared,
    bytes: Arc<[u8]>,
    opts: &ClusterOptions,
    run: u64,
    sessions: BTreeMap<u32, Session>,
    events: &mut mpsc::Receiver<Event>,
) -> Result<Started> {
    let weights: Vec<f64> = sessions.values().map(|s| s.capacity).collect();
    let k = weights.len();
    let spare = if opts.on_loss == OnLoss::Rebalance && k > 1 {
        1.0 / (k - 1) as f64
    } else {
        0.0
    };
    let shares = split(prepared.plan(), &weights, spare);
    let mut spec = prepared.spec().clone();
    spec.outputs.clear();
    let mut s = Starting {
        opts,
        run,
        sha: spec.scenario.sha256.clone(),
        spec,
        bytes,
        members: BTreeMap::new(),
        vacancies: BTreeMap::new(),
        ready: BTreeSet::new(),
        pongs: BTreeMap::new(),
        pings: BTreeMap::new(),
        next_ping: 0,
    };
    for (session, share) in sessions.into_values().zip(shares) {
        s.assign(session, share);
    }
    // Clock probes go out while the workers prepare.
    let mut probe = tokio::time::interval(Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + PREPARE_TIMEOUT;
    while !s.all_set() {
        tokio::select! {
            _ = probe.tick() => {
                s.probe();
                s.check_vacancies()?;
            }
            e = events.recv() => match e {
                Some(e) => s.event(e)?,
                None => bail!("the coordinator's endpoint closed"),
            },
            _ = tokio::time::sleep_until(deadline) => {
                s.cancel("the workers took too long to prepare");
                bail!(
                    "{} of {} workers were ready within {}",
                    s.ready.len(),
                    s.members.len() + s.vacancies.len(),
                    crate::units::format_duration(PREPARE_TIMEOUT)
                );
            }
            _ = crate::federation::signal() => {
                s.cancel("the coordinator was stopped");
                bail!("stopped before the start");
            }
        }
    }
    let slowest = s.members.values().map(|m| m.rtt_ns).max().unwrap_or(0);
    let lead = Duration::from_secs(1).max(Duration::from_nanos(slowest.saturating_mul(4)));
    let start_unix = unix_ns() + lead.as_nanos() as u64;
    let start = Instant::now() + lead;
    for m in s.members.values() {
        let at = (start_unix as i64 + m.offset_ns).max(0) as u64;
        m.session.send(Down::Start {
            run,
            at_unix_ns: at,
        });
    }
    tracing::info!(
        "starting {} worker(s) in {} (clock offsets measured to ±{:.2} ms)",
        s.members.len(),
        crate::units::format_duration(lead),
        slowest as f64 / 2e6
    );
    Ok((prepared, s.members, start_unix, start))
}

impl Starting<'_> {
    /// Every share has a worker that is ready and whose clock is measured.
    fn all_set(&self) -> bool {
        self.vacancies.is_empty()
            && self.ready.len() == self.members.len()
            && self
                .members
                .keys()
                .all(|w| self.pongs.get(w).copied().unwrap_or(0) >= PINGS)
    }

    /// Gives `share` to `session`'s worker.
    fn assign(&mut self, session: Session, share: Share) {
        session.send(Down::Assign {
            run: self.run,
            spec: Box::new(self.spec.clone()),
            share: share.clone(),
            lease_ms: self.opts.lease.as_millis() as u64,
        });
        self.members.insert(
            session.id,
            Member {
                session,
                share,
                offset_ns: 0,
                rtt_ns: u64::MAX,
            },
        );
    }

    /// Sends the next clock probe to every worker still being measured.
    fn probe(&mut self) {
        for m in self.members.values() {
            if self.pongs.get(&m.session.id).copied().unwrap_or(0) < PINGS {
                self.next_ping += 1;
                self.pings.insert(self.next_ping, (m.session.id, unix_ns()));
                m.session.send(Down::Ping { id: self.next_ping });
            }
        }
    }

    /// Tells every worker the run will not start.
    fn cancel(&self, why: &str) {
        for m in self.members.values() {
            m.session.send(Down::Cancel {
                run: self.run,
                reason: why.to_owned(),
            });
        }
    }

    /// Gives up when a vacancy has waited past [`REJOIN_GRACE`].
    fn check_vacancies(&self) -> Result<()> {
        if let Some(v) = self
            .vacancies
            .values()
            .find(|v| v.since.elapsed() > REJOIN_GRACE)
        {
            self.cancel("another worker left before the start");
            bail!(
                "worker {} left before the start ({}) and no worker took its place within {}; start another with `runner join`",
                v.name,
                v.why,
                crate::units::format_duration(REJOIN_GRACE)
            );
        }
        Ok(())
    }

    fn event(&mut self, e: Event) -> Result<()> {
        match e {
            Event::Up { worker, msg } if self.members.contains_key(&worker) => self.up(worker, msg),
            Event::Gone { worker, conn, why } => {
                if self
                    .members
                    .get(&worker)
                    .is_some_and(|m| m.session.conn.stable_id() == conn)
                {
                    self.left(worker, why);
                }
                Ok(())
            }
            Event::Joined { session, .. } => {
                self.joined(session);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A control frame from a member.
    fn up(&mut self, worker: u32, msg: Up) -> Result<()> {
        let run = self.run;
        match msg {
            Up::Need { run: r, sha256 } if r == run && sha256 == self.sha => {
                if let Some(m) = self.members.get(&worker) {
                    tracing::info!(
                        "sending the component ({} bytes) to worker {}",
                        self.bytes.len(),
                        m.session.name
                    );
                    m.session
                        .send_component(self.sha.clone(), self.bytes.clone());
                }
            }
            Up::Ready { run: r } if r == run => {
                self.ready.insert(worker);
            }
            Up::Failed { run: r, error } if r == run => {
                let name = self
                    .members
                    .get(&worker)
                    .map(|m| m.session.name.clone())
                    .unwrap_or_default();
                self.cancel("another worker could not prepare the run");
                bail!("worker {name} could not prepare the run: {error}");
            }
            Up::Pong {
                id,
                unix_ns: theirs,
            } => {
                let Some((w, sent)) = self.pings.remove(&id).filter(|(w, _)| *w == worker) else {
                    return Ok(());
                };
                let rtt = unix_ns().saturating_sub(sent);
                if let Some(m) = self.members.get_mut(&w) {
                    *self.pongs.entry(w).or_default() += 1;
                    if rtt < m.rtt_ns {
                        m.rtt_ns = rtt;
                        m.offset_ns = theirs as i64 - (sent + rtt / 2) as i64;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A member's connection is gone: its share waits for a taker.
    fn left(&mut self, worker: u32, why: String) {
        let Some(m) = self.members.remove(&worker) else {
            return;
        };
        self.ready.remove(&worker);
        self.pongs.remove(&worker);
        tracing::warn!(
            "worker {worker} ({}) left before the start: {why}; its share waits up to {} for a worker to join (it may come back)",
            m.session.name,
            crate::units::format_duration(REJOIN_GRACE)
        );
        self.vacancies.insert(
            worker,
            Vacancy {
                share: m.share,
                name: m.session.name,
                why,
                since: Instant::now(),
            },
        );
    }

    /// A worker joined during the start: it takes a vacant share, if any
    /// (a worker that joins with nothing to take is left waiting for the
    /// next run).
    fn joined(&mut self, session: Session) {
        let Some(old) = self.vacancies.keys().next().copied() else {
            tracing::info!(
                "worker {} ({}) joined while the run starts; it takes part in the next run",
                session.id,
                session.name
            );
            return;
        };
        let Some(vacancy) = self.vacancies.remove(&old) else {
            return;
        };
        tracing::info!(
            "worker {} ({}, {}) takes the share of worker {old} ({})",
            session.id,
            session.name,
            session.addr,
            vacancy.name
        );
        self.assign(session, vacancy.share);
    }
}
