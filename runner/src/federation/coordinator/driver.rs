//! The coordinator's driver: the distributed counterpart of a local run's.
//! Each second it publishes the merge of the workers' snapshots to the hub
//! and the sinks; it renews the workers' leases, forwards control commands
//! to every worker (judged first against the whole plan), stops the run
//! when an `abort` threshold fails on the merged data, declares a silent
//! worker lost only after its lease has surely run out, and then follows
//! the `--on-worker-loss` policy and the quorum.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use host_api::recorder::Hist;
use tokio::sync::mpsc;

use super::merge::Buckets;
use super::session::Event;
use super::session::Resumable;
use super::{Member, OnLoss};
use crate::events::{ControlEvent, EventKind, StopBy};
use crate::exec::{lock, Class, Load};
use crate::federation::protocol::{Down, Up, WireCommand};
use crate::federation::worker::unix_ns;
use crate::plan::share::parts;
use crate::plan::Plan;
use crate::report::{Meta, OpenMeta, Summary, WorkerRow};
use crate::run::control::{self, Command, ControlError, LoadTarget};
use crate::run::{Controller, Hub, Prepared, RunHandle, RunState, Sink, Snapshot};
use crate::spec::RunSpec;
use crate::thresholds::Threshold;
use crate::units;

/// A worker silent for this long gets no more leases until heard again.
const SILENT: Duration = Duration::from_millis(2500);

/// How long past its second a merged second waits for late workers.
const WAIT_LATE: Duration = Duration::from_millis(1500);

/// What the driver starts from.
pub(crate) struct Setup {
    pub run: u64,
    /// The component (for workers that join mid-run).
    pub bytes: Arc<[u8]>,
    pub resumable: Resumable,
    pub prepared: Prepared,
    pub members: BTreeMap<u32, Member>,
    pub events: mpsc::Receiver<Event>,
    pub sinks: Vec<Box<dyn Sink>>,
    pub start: Instant,
    pub start_unix: u64,
    pub lease: Duration,
    pub on_loss: OnLoss,
    pub min_workers: usize,
    pub endpoint: quinn::Endpoint,
    pub accept: tokio::task::JoinHandle<()>,
}

/// Starts driving the run; the handle is the same as a local run's.
pub(crate) fn start(s: Setup) -> RunHandle {
    let spec = s.prepared.spec().clone();
    let plan = s.prepared.plan().clone();
    let thresholds = s.prepared.thresholds().to_vec();
    let env: std::collections::HashMap<String, String> = spec
        .options
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let classes = plan
        .classes
        .iter()
        .map(|c| Arc::new(Class::new(c, &env, &plan)))
        .collect();
    let hub = Arc::new(Hub::new(Meta::initial(&spec, &plan), thresholds.clone()));
    let (controller, commands) = Controller::channel();
    let now = Instant::now();
    let open_next = s
        .members
        .values()
        .next()
        .map(|m| m.share.classes.iter().map(|c| c.id_span / 2).collect())
        .unwrap_or_default();
    let workers = s
        .members
        .into_iter()
        .map(|(id, m)| {
            (
                id,
                Worker {
                    m,
                    status: Status::Live,
                    last_heard: now.max(s.start),
                    gone_since: None,
                    acked: 0,
                    last_seq: None,
                    requests: 0,
                    failed: 0,
                    iterations: 0,
                    lost_at: None,
                    latency: Hist::micros(),
                    leased_until: s.start + s.lease,
                    back: false,
                    bytes: 0,
                    frames: 0,
                    last_t: 0.0,
                    missed: 0.0,
                    missed_vu_s: 0.0,
                },
            )
        })
        .collect();
    let driver = Driver {
        bytes: s.bytes,
        joiners: BTreeMap::new(),
        handoffs: Vec::new(),
        next_ping: 0,
        open_next,
        run: s.run,
        resumable: s.resumable,
        spec: spec.clone(),
        plan,
        thresholds,
        classes,
        hub: hub.clone(),
        sinks: s.sinks,
        commands,
        events: s.events,
        workers,
        start: s.start,
        start_unix: s.start_unix,
        lease: s.lease,
        on_loss: s.on_loss,
        min_workers: s.min_workers,
        stopping: None,
        threshold: None,
        peak: 0,
        pending: Vec::new(),
        missed_pending: 0,
        endpoint: s.endpoint,
        accept: s.accept,
    };
    drop(s.prepared);
    let task = tokio::spawn(driver.run());
    RunHandle::from_parts(spec, controller, hub, task)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Live,
    Ended,
    Lost,
}

/// A worker that joined during the run, on its way in.
struct Joiner {
    session: crate::federation::coordinator::session::Session,
    share: crate::plan::share::Share,
    ready: bool,
    pings: BTreeMap<u64, u64>,
    pongs: u32,
    rtt_ns: u64,
    offset_ns: i64,
}

/// VUs a worker hands to one that joined, once they have left it.
struct Handoff {
    from: u32,
    class: usize,
    indices: Vec<u32>,
    to: u32,
}

struct Worker {
    m: Member,
    status: Status,
    last_heard: Instant,
    gone_since: Option<Instant>,
    acked: u64,
    last_seq: Option<u64>,
    requests: u64,
    failed: u64,
    iterations: u64,
    lost_at: Option<f64>,
    latency: Hist,
    /// Until when its last lease lets it generate load.
    leased_until: Instant,
    /// A lost worker heard from again (logged once).
    back: bool,
    /// Snapshot bytes received from it.
    bytes: u64,
    /// Snapshots received from it.
    frames: u64,
    /// The end of the last second it reported, seconds into the run.
    last_t: f64,
    /// Open model: arrivals of its share due while nobody ran them (it was
    /// lost, until the others took over, or the end).
    missed: f64,
    /// Closed model: VU-seconds of its share nobody ran.
    missed_vu_s: f64,
}

impl Worker {
    /// Notes that the worker was heard from; a lost one is back.
    fn heard(&mut self, id: u32) {
        self.last_heard = Instant::now();
        if self.status == Status::Lost && !self.back {
            self.back = true;
            tracing::info!(
                "worker {id} ({}) is back in contact; its share stays where it went, and it takes part in the next run",
                self.m.session.name
            );
        }
    }
}

struct Driver {
    spec: RunSpec,
    plan: Plan,
    thresholds: Vec<Threshold>,
    /// The plan's classes, to judge load changes against the whole run.
    classes: Vec<Arc<Class>>,
    hub: Arc<Hub>,
    sinks: Vec<Box<dyn Sink>>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Receiver<Event>,
    workers: BTreeMap<u32, Worker>,
    /// The run's id on the wire.
    run: u64,
    /// The component, for workers that join mid-run.
    bytes: Arc<[u8]>,
    /// Workers that joined mid-run and are getting ready.
    joiners: BTreeMap<u32, Joiner>,
    /// VUs on their way from one worker to one that joined.
    handoffs: Vec<Handoff>,
    next_ping: u64,
    /// Per open class, the next free VU id offset for a joiner.
    open_next: Vec<u32>,
    /// Workers whose connection is gone and who may come back.
    resumable: Resumable,
    start: Instant,
    start_unix: u64,
    lease: Duration,
    on_loss: OnLoss,
    min_workers: usize,
    /// Who stopped the run, and how many stops were asked for.
    stopping: Option<(StopBy, u32)>,
    threshold: Option<String>,
    peak: u64,
    /// Events made since the last published second.
    pending: Vec<ControlEvent>,
    /// Arrivals a lost worker's share could not run, to count as dropped
    /// in the next published second.
    missed_pending: u64,
    endpoint: quinn::Endpoint,
    accept: tokio::task::JoinHandle<()>,
}

impl Driver {
    async fn run(mut self) -> Arc<Summary> {
        let mut buckets = Buckets::new();
        let first = tokio::time::Instant::from_std(self.start + Duration::from_secs(1));
        let mut tick = tokio::time::interval_at(first, Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end_by = self
            .plan
            .duration
            .map(|d| self.start + d + self.plan.grace + self.lease + Duration::from_secs(10));
        let mut listening = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.renew_leases();
                    self.find_lost();
                    if end_by.is_some_and(|e| Instant::now() > e) {
                        for (id, w) in self.workers.iter_mut().filter(|(_, w)| w.status == Status::Live) {
                            tracing::warn!("worker {id} ({}) did not finish in time", w.m.session.name);
                            w.status = Status::Lost;
                            w.lost_at = Some(self.start.elapsed().as_secs_f64());
                        }
                    }
                }
                e = self.events.recv() => match e {
                    Some(e) => self.event(e, &mut buckets),
                    None => break,
                },
                cmd = self.commands.recv(), if listening => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => listening = false,
                },
            }
            self.publish_due(&mut buckets);
            if self.workers.values().all(|w| w.status != Status::Live) {
                break;
            }
        }
        let mut last = buckets.drain().unwrap_or_default();
        last.seq = buckets.next();
        last.t = round3(self.start.elapsed().as_secs_f64());
        last.interval = round3((last.t - (last.seq as f64 - 1.0)).max(0.0));
        last.last = true;
        self.publish(last);
        let t = self.start.elapsed().as_secs_f64();
        let meta = self.meta(t);
        let summary = crate::run::finish::finish(
            &self.spec,
            meta,
            &self.thresholds,
            &mut self.sinks,
            &self.hub,
        );
        self.accept.abort();
        self.endpoint.close(0u32.into(), b"the run is over");
        summary
    }

    fn event(&mut self, e: Event, buckets: &mut Buckets) {
        let run = self.run;
        match e {
            Event::Joined { session, resume } => {
                let id = session.id;
                match (resume, self.workers.get_mut(&id)) {
                    (Some(r), Some(w)) if r.run == run => {
                        tracing::info!("worker {id} ({}) reconnected", session.name);
                        w.m.session = session;
                        w.gone_since = None;
                        w.heard(id);
                        // What it may have missed meanwhile.
                        self.resend(id);
                    }
                    _ => self.join(session),
                }
            }
            Event::Up { worker, msg } if self.joiners.contains_key(&worker) => {
                self.joiner_says(worker, msg);
            }
            Event::Gone { worker, .. } if self.joiners.contains_key(&worker) => {
                if let Some(j) = self.joiners.remove(&worker) {
                    tracing::warn!(
                        "worker {worker} ({}) left before it took part",
                        j.session.name
                    );
                }
            }
            Event::Gone { worker, conn, why } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    if w.m.session.conn.stable_id() == conn && w.status != Status::Ended {
                        tracing::warn!(
                            "lost the connection to worker {worker} ({}): {why}",
                            w.m.session.name
                        );
                        w.gone_since = Some(Instant::now());
                        lock(&self.resumable).insert(worker, run);
                    }
                }
            }
            Event::Snapshot {
                worker,
                frame,
                bytes,
            } => {
                let Some(w) = self.workers.get_mut(&worker) else {
                    return;
                };
                if frame.run != run {
                    return;
                }
                let s = frame.snapshot;
                w.heard(worker);
                w.bytes += bytes as u64;
                w.frames += 1;
                w.last_t = w.last_t.max(s.t);
                let last = s.last;
                if s.seq > w.acked {
                    w.acked = s.seq;
                    let m = &s.metrics;
                    w.requests += m.http_requests();
                    w.failed += m.http_failed();
                    w.iterations += m.iterations.ok + m.iterations.failed;
                    for r in m.http.values() {
                        w.latency.merge(&r.latency);
                    }
                    buckets.add(worker, s);
                }
                w.m.session.send(Down::Ack { run, seq: w.acked });
                if last {
                    w.last_seq = Some(w.last_seq.unwrap_or(w.acked).max(w.acked));
                }
                if w.last_seq.is_some_and(|l| w.acked >= l) && w.status == Status::Live {
                    w.status = Status::Ended;
                }
            }
            Event::Up { worker, msg } => {
                let Some(w) = self.workers.get_mut(&worker) else {
                    return;
                };
                w.heard(worker);
                match msg {
                    Up::Ended { run: r, last_seq } if r == run => {
                        w.last_seq = Some(last_seq);
                        if w.acked >= last_seq && w.status == Status::Live {
                            w.status = Status::Ended;
                        }
                    }
                    Up::Released {
                        run: r,
                        class,
                        indices,
                    } if r == run => self.released(worker, &class, indices),
                    _ => {}
                }
            }
        }
    }

    /// A worker joined during the run: unless the run is stopping (or runs
    /// a set number of iterations), it is given the run to prepare, with
    /// no part yet; once it is ready and its clock measured, it starts at
    /// the run's time zero and takes its share from the others.
    fn join(&mut self, session: crate::federation::coordinator::session::Session) {
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
        let mut share = crate::plan::share::Share::default();
        for (ci, class) in self.plan.classes.iter().enumerate() {
            let mut part = crate::plan::share::ClassShare {
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

    fn joiner_says(&mut self, id: u32, msg: Up) {
        let run = self.run;
        let sha = self.spec.scenario.sha256.clone();
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
                for _ in 0..super::PINGS {
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
                if j.ready && j.pongs >= super::PINGS as u32 {
                    self.admit(id);
                }
            }
            _ => {}
        }
    }

    /// Starts a joiner at the run's time zero and gives it its share.
    fn admit(&mut self, id: u32) {
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
            Worker {
                m: Member {
                    session: j.session,
                    share: j.share,
                    offset_ns: j.offset_ns,
                    rtt_ns: j.rtt_ns,
                },
                status: Status::Live,
                last_heard: now,
                gone_since: None,
                acked: 0,
                last_seq: None,
                requests: 0,
                failed: 0,
                iterations: 0,
                lost_at: None,
                latency: Hist::micros(),
                leased_until: now + self.lease,
                back: false,
                bytes: 0,
                frames: 0,
                last_t: self.start.elapsed().as_secs_f64(),
                missed: 0.0,
                missed_vu_s: 0.0,
            },
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
    fn released(&mut self, from: u32, class: &str, indices: Vec<u32>) {
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
    fn resend(&mut self, id: u32) {
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
    }

    fn command(&mut self, cmd: Command) {
        let t = self.start.elapsed().as_secs_f64();
        match cmd {
            Command::Stop { abort, by, reply } => {
                let e = self.stop(abort, by, None);
                if let Some(reply) = reply {
                    let _ = reply.send(e);
                }
            }
            Command::Load { reply, .. } if self.stopping.is_some() => {
                let _ = reply.send(Err(ControlError::Finished));
            }
            Command::Load { change, reply } => {
                let end = self.plan.duration.unwrap_or_default().as_secs_f64();
                match control::apply(&self.classes, &change, t, end) {
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                    Ok(events) => {
                        let (vus, rate) = match change.target {
                            LoadTarget::Vus(v) => (Some(v), None),
                            LoadTarget::Rate(r) => (None, Some(r)),
                        };
                        let command = WireCommand::Load {
                            class: change.class.clone(),
                            vus,
                            rate,
                            ramp_ms: change.ramp.as_millis() as u64,
                        };
                        self.broadcast(|| Down::Control {
                            run: self.run,
                            command: command.clone(),
                        });
                        for e in &events {
                            self.announce(e.clone());
                        }
                        let _ = reply.send(Ok(events));
                    }
                }
            }
            Command::Swap { reply, .. } => {
                let _ = reply.send(Err(ControlError::Scenario(
                    "a distributed run cannot swap its scenario (yet): stop it and start another"
                        .into(),
                )));
            }
            Command::Adopt { .. } | Command::Rescale { .. } => {}
            Command::Release { reply, .. } => {
                let _ = reply.send(());
            }
        }
    }

    /// Stops every worker: the first stop gracefully (unless `abort`), the
    /// next ones cancelling in-flight iterations.
    fn stop(&mut self, abort: bool, by: StopBy, threshold: Option<String>) -> ControlEvent {
        let asked = self.stopping.as_ref().map_or(0, |s| s.1) + 1;
        let hard = abort || asked > 1;
        if self.stopping.is_none() {
            self.threshold = threshold.clone();
            self.hub.set_state(RunState::Stopping);
        }
        let first_by = self.stopping.as_ref().map_or(by.clone(), |s| s.0.clone());
        self.stopping = Some((first_by, asked));
        self.broadcast(|| Down::Control {
            run: self.run,
            command: WireCommand::Stop { abort: hard },
        });
        let message = match (&threshold, hard) {
            (Some(t), _) => format!("threshold crossed: {t}; stopping every worker"),
            (None, true) => "stopping every worker: cancelling in-flight iterations".to_owned(),
            (None, false) => format!(
                "stopping every worker: in-flight iterations have {} to finish",
                units::format_duration(self.plan.grace)
            ),
        };
        let e = ControlEvent {
            t: self.start.elapsed().as_secs_f64(),
            kind: EventKind::Stop { abort: hard, by },
            message,
        };
        self.announce(e.clone());
        e
    }

    fn announce(&mut self, e: ControlEvent) {
        self.hub.event(e.clone());
        for s in &mut self.sinks {
            s.event(&e);
        }
        self.pending.push(e);
    }

    /// Sends a frame to every worker still running.
    fn broadcast(&self, make: impl Fn() -> Down) {
        for w in self.workers.values().filter(|w| w.status == Status::Live) {
            w.m.session.send(make());
        }
    }

    /// Renews the leases of the workers heard from lately (a worker sends a
    /// snapshot every second; one silent for longer may be cut off, and is
    /// not given more time to generate load unseen).
    fn renew_leases(&mut self) {
        let (run, lease) = (self.run, self.lease);
        let ms = lease.as_millis() as u64;
        for w in self.workers.values_mut() {
            if w.status == Status::Live && w.gone_since.is_none() && w.last_heard.elapsed() < SILENT
            {
                // The deadline on the worker's clock, from now: however
                // late the frame arrives, the lease ends by then.
                let until =
                    (unix_ns() as i64 + w.m.offset_ns).max(0) as u64 + lease.as_nanos() as u64;
                w.m.session.send(Down::Lease {
                    run,
                    ms,
                    until_unix_ns: until,
                });
                w.leased_until = Instant::now() + lease;
            }
        }
    }

    /// Declares lost the workers silent for longer than a lease whose last
    /// lease has surely run out (so their load has stopped before their
    /// share goes elsewhere: load is never doubled), and acts on it.
    fn find_lost(&mut self) {
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
    fn count_missed(&mut self, id: u32, t: f64, then: OnLoss) {
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
    }

    /// Hands lost worker `id`'s share to the live, connected workers, by
    /// capacity within the room each has left, from a second ahead.
    fn rebalance(&mut self, id: u32) {
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
        if live.is_empty() {
            tracing::warn!("no connected worker is left to take over the lost share");
            return;
        }
        let weights: Vec<f64> = live
            .iter()
            .map(|i| self.workers[i].m.session.capacity)
            .collect();
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

    /// Publishes every second that is complete, or too late to wait for.
    fn publish_due(&mut self, buckets: &mut Buckets) {
        loop {
            let expected: BTreeSet<u32> = self
                .workers
                .iter()
                .filter(|(_, w)| w.status == Status::Live)
                .map(|(id, _)| *id)
                .collect();
            let second = Duration::from_secs(buckets.next());
            let late = Instant::now() > self.start + second + WAIT_LATE;
            let complete = !expected.is_empty() && buckets.complete(&expected);
            if !(complete || late) {
                return;
            }
            let mut s = buckets.take();
            s.t = second.as_secs_f64();
            s.interval = 1.0;
            self.publish(s);
            if self.stopping.is_none() {
                if let Some(t) = self.first_crossed() {
                    self.stop(false, StopBy::Threshold, Some(t));
                }
            }
        }
    }

    fn publish(&mut self, mut s: Snapshot) {
        s.events.append(&mut self.pending);
        s.metrics.iterations.dropped += std::mem::take(&mut self.missed_pending);
        if s.classes.is_empty() {
            s.classes = self.class_states();
        }
        self.peak = self.peak.max(s.active_vus());
        let meta = self.meta(s.t);
        self.hub.publish(&s, meta);
        for sink in &mut self.sinks {
            sink.snapshot(&s);
        }
    }

    /// The classes with nothing running (a second no worker reported).
    fn class_states(&self) -> Vec<crate::run::ClassState> {
        self.classes
            .iter()
            .map(|c| crate::run::ClassState {
                name: c.name.to_string(),
                model: if c.is_open() {
                    crate::run::snapshot::Model::Open
                } else {
                    crate::run::snapshot::Model::Closed
                },
                ..Default::default()
            })
            .collect()
    }

    fn first_crossed(&self) -> Option<String> {
        let elapsed = self.start.elapsed().as_secs_f64();
        self.hub.with_totals(|totals| {
            self.thresholds.iter().filter(|t| t.abort).find_map(|t| {
                let o = t.evaluate(totals, elapsed);
                (o.value.is_some() && !o.pass).then(|| t.source.clone())
            })
        })
    }

    fn meta(&self, t: f64) -> Meta {
        let plan = &self.plan;
        let open: f64 = self
            .classes
            .iter()
            .filter_map(|c| match &c.load {
                Load::Open { rate, .. } => Some(lock(rate).area()),
                Load::Closed { .. } => None,
            })
            .sum();
        let mut meta = Meta::initial(&self.spec, plan);
        meta.started_unix_ms = self.start_unix / 1_000_000;
        meta.duration_s = t;
        meta.peak_vus = u32::try_from(self.peak).unwrap_or(u32::MAX);
        meta.open_model = plan.is_open().then(|| OpenMeta {
            rate: open / plan.duration.map_or(t, |d| d.as_secs_f64()).max(1e-9),
            arrival: plan.arrival,
            window_s: plan
                .duration
                .map_or(t, |d| d.as_secs_f64().min(t))
                .max(1e-9),
        });
        meta.interrupted = matches!(
            self.stopping,
            Some((StopBy::Signal | StopBy::Api | StopBy::Coordinator, _))
        );
        meta.stopped_by = self.stopping.as_ref().map(|s| s.0.clone());
        meta.aborted_by_threshold = self.threshold.clone();
        meta.events = self.hub.events(0);
        meta.workers = self
            .workers
            .iter()
            .map(|(id, w)| WorkerRow {
                id: *id,
                name: w.m.session.name.clone(),
                address: w.m.session.addr.to_string(),
                capacity: w.m.session.capacity,
                vus: w
                    .m
                    .share
                    .classes
                    .iter()
                    .zip(&plan.classes)
                    .map(|(c, p)| c.owned.iter().filter(|&&i| i < p.vus).count() as u32 + c.vus)
                    .sum(),
                fraction: w.m.share.classes.first().map_or(0.0, |c| c.fraction),
                requests: w.requests,
                failed: w.failed,
                iterations: w.iterations,
                clock_offset_ms: w.m.offset_ns as f64 / 1e6,
                rtt_ms: w.m.rtt_ns as f64 / 1e6,
                status: match w.status {
                    Status::Live => "running",
                    Status::Ended => "ended",
                    Status::Lost => "lost",
                }
                .to_owned(),
                lost_at_s: w.lost_at,
                latency: (w.latency.count() > 0).then(|| w.latency.clone()),
                snapshot_bytes: w.bytes / w.frames.max(1),
                missed_iterations: w.missed.round() as u64,
                missed_vu_seconds: (w.missed_vu_s * 10.0).round() / 10.0,
            })
            .collect();
        meta.start_skew_ms = self
            .workers
            .values()
            .map(|w| w.m.rtt_ns as f64 / 2e6)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        meta
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

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
