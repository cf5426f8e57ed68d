//! The coordinator's driver: the distributed counterpart of a local run's.
//! Each second it publishes the merge of the workers' snapshots to the hub
//! and the sinks; it renews the workers' leases, forwards control commands
//! to every worker (judged first against the whole plan), stops the run
//! when an `abort` threshold fails on the merged data, declares a silent
//! worker lost only after its lease has surely run out, and then follows
//! the `--on-worker-loss` policy and the quorum.

mod joining;
mod loss;
mod report;
mod swap;

use joining::{Handoff, Joiner};

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
use crate::exec::{lock, Class};
use crate::federation::local::LocalWorkers;
use crate::federation::protocol::{Down, Up, WireCommand};
use crate::federation::worker::unix_ns;
use crate::plan::Plan;
use crate::report::{Meta, Summary};
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
    /// The worker processes started on this machine, if any.
    pub local: Option<LocalWorkers>,
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
        .map(|(id, m)| (id, Worker::new(m, now.max(s.start), s.start + s.lease, 0.0)))
        .collect();
    let driver = Driver {
        scenario: spec.scenario.clone(),
        phases: vec![crate::events::Phase {
            name: spec.scenario.name.clone(),
            sha256: spec.scenario.sha256.clone(),
            from_s: 0.0,
            to_s: 0.0,
        }],
        swapping: None,
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
        local: s.local,
    };
    let swapper = match s.prepared.checker() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("this run cannot swap its scenario: {e}");
            None
        }
    };
    drop(s.prepared);
    let task = tokio::spawn(driver.run());
    RunHandle::from_parts(spec, controller, hub, swapper, task)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Live,
    Ended,
    Lost,
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
    /// Why it ended its part early (its memory ceiling), if it did.
    stopped: Option<String>,
    /// Of `--shared-iterations`, how many it was given (its share, and
    /// what it took over from lost workers).
    granted: u64,
}

impl Worker {
    /// A live worker taking part from `last_t` seconds into the run, last
    /// heard `heard`, its lease running until `leased_until`.
    fn new(m: Member, heard: Instant, leased_until: Instant, last_t: f64) -> Self {
        let granted = m.share.shared_iterations.unwrap_or(0);
        Self {
            m,
            status: Status::Live,
            last_heard: heard,
            gone_since: None,
            acked: 0,
            last_seq: None,
            requests: 0,
            failed: 0,
            iterations: 0,
            lost_at: None,
            latency: Hist::micros(),
            leased_until,
            back: false,
            bytes: 0,
            frames: 0,
            last_t,
            missed: 0.0,
            missed_vu_s: 0.0,
            stopped: None,
            granted,
        }
    }

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
    /// The component in force, for workers that join mid-run.
    bytes: Arc<[u8]>,
    /// Its name and hash.
    scenario: crate::spec::ScenarioRef,
    /// The scenarios the run has been on, for the summary.
    phases: Vec<crate::events::Phase>,
    /// A swap waiting for the workers' answers.
    swapping: Option<swap::Swapping>,
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
    local: Option<LocalWorkers>,
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
                    self.swap_due();
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
        super::close(&self.endpoint, "the run is over").await;
        if let Some(local) = self.local.take() {
            for e in local.finish().await {
                tracing::warn!("{} {}", e.name, e.why);
            }
        }
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
                // A worker that reached its memory ceiling stopped its part.
                let memory_stop = s.events.iter().find(|e| {
                    matches!(
                        e.kind,
                        EventKind::Stop {
                            by: StopBy::Memory,
                            ..
                        }
                    )
                });
                if let (Some(e), None) = (memory_stop, &w.stopped) {
                    let why = e.message.trim_start_matches("stopping: ").to_owned();
                    tracing::warn!(
                        "worker {worker} ({}) ended its part early: {why}",
                        w.m.session.name
                    );
                    w.stopped = Some(why);
                }
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
                    Up::Need { run: r, sha256 } if r == run && sha256 == self.scenario.sha256 => {
                        w.m.session.send_component(sha256, self.bytes.clone());
                    }
                    Up::Swapped {
                        run: r,
                        sha256,
                        error,
                    } if r == run => self.swapped(worker, &sha256, error),
                    _ => {}
                }
            }
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
            Command::Swap { swap, reply } => self.swap(*swap, reply),
            Command::Adopt { .. } | Command::Rescale { .. } | Command::Grant { .. } => {}
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
    /// snapshot every second and answers each lease from its control
    /// thread, so one saturated by its VUs is still heard; one silent for
    /// longer may be cut off, and is not given more time to generate load
    /// unseen).
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

    fn first_crossed(&self) -> Option<String> {
        let elapsed = self.start.elapsed().as_secs_f64();
        self.hub.with_totals(|totals| {
            self.thresholds.iter().filter(|t| t.abort).find_map(|t| {
                let o = t.evaluate(totals, elapsed);
                (o.value.is_some() && !o.pass).then(|| t.source.clone())
            })
        })
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
