//! The task that drives a started run: every second it drains the
//! recorder into a [`Snapshot`] and hands it to the hub and the sinks; it
//! carries out control commands, stops the run at its end (or when asked,
//! or when an `abort` threshold fails), gives in-flight iterations their
//! grace period, and writes the summary.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use host_api::{Metrics, Recorder};
use tokio::sync::mpsc;

use super::control::{self, Command, ControlError, ControlEvent, EventKind, StopBy};
use super::hub::{Hub, RunState};
use super::sink::Sink;
use super::snapshot::{ClassState, Model, Snapshot};
use crate::engine::EpochTicker;
use crate::events::{short, Phase};
use crate::exec::{lock, Execution, Load, Shared};
use crate::plan::Plan;
use crate::report::{Meta, OpenMeta, Summary};
use crate::spec::RunSpec;
use crate::thresholds::Threshold;
use crate::units;

/// How often the recorder is drained into a snapshot.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Time VUs get to exit after a hard stop before their tasks are aborted.
const ABORT_AFTER: Duration = Duration::from_secs(5);

/// Everything the driver owns.
pub(crate) struct Driver {
    pub spec: RunSpec,
    pub plan: Plan,
    pub thresholds: Vec<Threshold>,
    pub shared: Arc<Shared>,
    pub exec: Execution,
    pub recorder: Arc<Recorder>,
    pub hub: Arc<Hub>,
    pub sinks: Vec<Box<dyn Sink>>,
    pub commands: mpsc::Receiver<Command>,
    pub started_wall: SystemTime,
    /// Kept alive for the run: it interrupts runaway guests.
    pub _ticker: EpochTicker,
    /// Stops every VU if the driver ends early (it panicked, or its task
    /// was aborted): no VU outlives its run.
    pub _stop_on_drop: StopOnDrop,
}

/// Cancels a run's stop signals when dropped.
pub(crate) struct StopOnDrop(pub Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.cancel();
        self.0.hard_stop.cancel();
    }
}

/// Where the run is in stopping.
#[derive(Default)]
struct Stopping {
    /// When in-flight iterations are cancelled.
    grace_end: Option<tokio::time::Instant>,
    /// When VU tasks that ignored the cancel are aborted.
    abort_at: Option<tokio::time::Instant>,
    /// Who stopped the run, if not its own end.
    by: Option<StopBy>,
    /// The `abort` threshold that failed, if one did.
    threshold: Option<String>,
    /// Why the runner stopped the run for its own memory, if it did.
    memory: Option<String>,
    /// When it did.
    memory_at: Option<tokio::time::Instant>,
    /// Stops asked for (by a signal, the API, a threshold): the first is
    /// graceful unless it says otherwise, the next ones abort.
    asked: u32,
}

impl Driver {
    /// Runs to the end and returns the summary.
    pub async fn run(mut self) -> Arc<Summary> {
        let started = self.shared.started;
        // A worker that joins a distributed run mid-way starts at the
        // run's time zero, in the past: its seconds are numbered as the
        // others'.
        let mut seq = started.elapsed().as_secs();
        let mut tick = tokio::time::interval_at(started + INTERVAL * (seq as u32 + 1), INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = self.plan.duration.map(|d| started + d);
        let far = started + Duration::from_secs(100 * 365 * 24 * 3600);
        let mut stopping = Stopping::default();
        let mut last_tick = INTERVAL * seq as u32;
        let mut pending: Vec<ControlEvent> = Vec::new();
        let mut phases = vec![Phase {
            name: self.spec.scenario.name.clone(),
            sha256: self.spec.scenario.sha256.clone(),
            from_s: 0.0,
            to_s: 0.0,
        }];
        let mut listening = true;
        let ceiling = super::memory::ceiling(self.spec.options.max_memory);
        let mut memory_check = tokio::time::interval(super::memory::EVERY);
        memory_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = started.elapsed();
                    seq += 1;
                    let snapshot = self.collect(seq, now, now.saturating_sub(last_tick), std::mem::take(&mut pending), false);
                    last_tick = now;
                    self.publish(&snapshot, &stopping, &phases);
                    if stopping.grace_end.is_none() {
                        if let Some(t) = self.first_crossed() {
                            let e = self.begin_stop(&mut stopping, StopBy::Threshold, false, Some(t));
                            pending.extend(e);
                        }
                    }
                }
                // A worker of a distributed run may have no VU of its own
                // yet (it joined mid-run): it waits for some until the
                // run stops, rather than ending at once.
                done = self.exec.tasks.join_next(), if !self.exec.tasks.is_empty() || !self.adoptable() || self.shared.stop.is_cancelled() => {
                    match done {
                        None => break,
                        Some(Err(e)) if e.is_panic() => {
                            // A host-side bug in one VU; the rest go on.
                            tracing::error!("a VU task failed: {e}");
                        }
                        Some(_) => {}
                    }
                }
                _ = tokio::time::sleep_until(end.unwrap_or(far)), if end.is_some() && stopping.grace_end.is_none() => {
                    self.shared.stop.cancel();
                    stopping.grace_end = Some(tokio::time::Instant::now() + self.plan.grace);
                    self.hub.set_state(RunState::Stopping);
                }
                _ = memory_check.tick(), if ceiling.is_some() => {
                    if let Some(e) = self.check_memory(ceiling.unwrap_or(u64::MAX), &mut stopping) {
                        pending.push(e);
                    }
                }
                cmd = self.commands.recv(), if listening => match cmd {
                    None => listening = false,
                    Some(cmd) => pending.extend(self.command(cmd, &mut stopping, &mut phases)),
                },
                _ = tokio::time::sleep_until(stopping.grace_end.unwrap_or(far)), if stopping.grace_end.is_some() && !self.shared.hard_stop.is_cancelled() => {
                    self.shared.hard_stop.cancel();
                    stopping.abort_at = Some(tokio::time::Instant::now() + ABORT_AFTER);
                }
                _ = tokio::time::sleep_until(stopping.abort_at.unwrap_or(far)), if stopping.abort_at.is_some() => {
                    tracing::error!("{} VUs did not stop in time; aborting them", self.exec.tasks.len());
                    self.exec.tasks.abort_all();
                    stopping.abort_at = None;
                }
            }
        }
        // Every VU is done; the ones that ended during the stop are torn
        // down now. Their connections say goodbye from tasks of their
        // own, which must not be cut off by the process's exit.
        self.shared.bury().await;
        let open = self.shared.ctx.connections_closed().await;
        if open > 0 {
            tracing::warn!(
                "{open} connections were still closing {:?} after the last VU ended",
                host_api::CLOSE_WAIT
            );
        }
        let elapsed = started.elapsed();
        seq += 1;
        let last = self.collect(
            seq,
            elapsed,
            elapsed.saturating_sub(last_tick),
            pending,
            true,
        );
        self.publish(&last, &stopping, &phases);
        self.summarize(&stopping, &mut phases)
    }

    /// Whether VUs may still be handed to this run (a worker's share of a
    /// run of a set length; one of a set number of iterations ends when
    /// its VUs are done).
    fn adoptable(&self) -> bool {
        self.plan.duration.is_some() && self.plan.classes.iter().any(|c| c.owned.is_some())
    }

    /// Carries out one command; returns the events it made.
    fn command(
        &mut self,
        cmd: Command,
        stopping: &mut Stopping,
        phases: &mut Vec<Phase>,
    ) -> Vec<ControlEvent> {
        let t = self.shared.started.elapsed().as_secs_f64();
        let running = stopping.grace_end.is_none();
        match cmd {
            Command::Stop { abort, by, reply } => {
                let events = self.begin_stop(stopping, by, abort, None);
                if let (Some(reply), Some(e)) = (reply, events.last()) {
                    let _ = reply.send(e.clone());
                }
                events
            }
            Command::Load { reply, .. } if !running => {
                let _ = reply.send(Err(ControlError::Finished));
                Vec::new()
            }
            Command::Load { change, reply } => {
                let end = self.plan.duration.unwrap_or(Duration::ZERO).as_secs_f64();
                match control::apply(&self.exec.classes, &change, t, end) {
                    Ok(events) => {
                        for e in &events {
                            self.announce(e);
                        }
                        let _ = reply.send(Ok(events.clone()));
                        events
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        Vec::new()
                    }
                }
            }
            Command::Adopt { class, indices, at } => {
                let n = self.exec.adopt(
                    &self.shared,
                    &class,
                    &indices,
                    tokio::time::Instant::from_std(at),
                    self.plan.grace,
                );
                tracing::info!(
                    "took over {n} of {} VUs of class {class} from a lost worker",
                    indices.len()
                );
                Vec::new()
            }
            Command::Rescale { fractions } => {
                for (name, f) in fractions {
                    if let Some(c) = self.exec.classes.iter().find(|c| *c.name == *name) {
                        let mut old = lock(&c.fraction);
                        if let Load::Open {
                            rate,
                            global,
                            version,
                            ..
                        } = &c.load
                        {
                            let share = lock(global).scaled(f);
                            let mut p = lock(rate);
                            *p = p.then_from(t, &share);
                            version.fetch_add(1, Ordering::Release);
                            c.grow(f);
                        }
                        *old = f;
                    }
                }
                Vec::new()
            }
            Command::Grant { iterations } => {
                let pool = self.exec.classes.iter().find_map(|c| c.shared.as_ref());
                if let Some(pool) = pool {
                    pool.fetch_add(iterations, Ordering::AcqRel);
                    tracing::info!("took over {iterations} shared iterations from a lost worker");
                }
                Vec::new()
            }
            Command::Release {
                class,
                mut indices,
                reply,
            } => {
                indices.sort_unstable();
                let Some(c) = self
                    .exec
                    .classes
                    .iter()
                    .find(|c| *c.name == *class)
                    .cloned()
                else {
                    let _ = reply.send(());
                    return Vec::new();
                };
                c.release(&indices);
                let limit = self.plan.grace + Duration::from_secs(5);
                tokio::spawn(async move {
                    let t0 = tokio::time::Instant::now();
                    while c.any_running(&indices) && t0.elapsed() < limit {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let _ = reply.send(());
                });
                Vec::new()
            }
            Command::Swap { reply, .. } if !running => {
                let _ = reply.send(Err(ControlError::Finished));
                Vec::new()
            }
            Command::Swap { swap, reply } => {
                let generation = self.shared.swap_code(swap.pre);
                if let Some(p) = phases.last_mut() {
                    p.to_s = t;
                }
                phases.push(Phase {
                    name: swap.scenario.name.clone(),
                    sha256: swap.scenario.sha256.clone(),
                    from_s: t,
                    to_s: t,
                });
                let e = ControlEvent {
                    t,
                    message: format!(
                        "scenario swapped to {} ({}); each VU continues on it from its next iteration",
                        swap.scenario.name,
                        short(&swap.scenario.sha256)
                    ),
                    kind: EventKind::Scenario {
                        sha256: swap.scenario.sha256,
                        generation,
                    },
                };
                self.announce(&e);
                let _ = reply.send(Ok(e.clone()));
                vec![e]
            }
        }
    }

    /// Stops the run if the runner's memory has reached `ceiling`: new
    /// iterations first; if it is still there at a later look once they
    /// have had time to end, in-flight ones too.
    fn check_memory(&mut self, ceiling: u64, stopping: &mut Stopping) -> Option<ControlEvent> {
        let rss = super::memory::rss()?;
        if rss < ceiling {
            return None;
        }
        if let Some(at) = stopping.memory_at {
            // Still over a second later: cancel what is in flight (it
            // holds the memory).
            if at.elapsed() >= Duration::from_secs(1) && !self.shared.hard_stop.is_cancelled() {
                return self.begin_stop(stopping, StopBy::Memory, true, None).pop();
            }
            return None;
        }
        let why = format!(
            "the runner's memory ({}) reached --max-memory ({}): no new iterations were started from {:.1}s; raise --max-memory or run fewer VUs per runner",
            units::format_size(rss),
            units::format_size(ceiling),
            self.shared.started.elapsed().as_secs_f64()
        );
        tracing::warn!("{why}");
        stopping.memory = Some(why);
        stopping.memory_at = Some(tokio::time::Instant::now());
        self.begin_stop(stopping, StopBy::Memory, false, None).pop()
    }

    /// Stops the run: the first stop asked for lets in-flight iterations
    /// finish within the grace period (also when the run's own end came
    /// first), `abort` or a later stop cancels them. Always one event.
    fn begin_stop(
        &mut self,
        stopping: &mut Stopping,
        by: StopBy,
        abort: bool,
        threshold: Option<String>,
    ) -> Vec<ControlEvent> {
        let t = self.shared.started.elapsed().as_secs_f64();
        stopping.asked += 1;
        let first = stopping.asked == 1;
        if !self.shared.stop.is_cancelled() {
            self.shared.stop.cancel();
            stopping.grace_end = Some(tokio::time::Instant::now() + self.plan.grace);
            self.hub.set_state(RunState::Stopping);
        }
        if first {
            stopping.by = Some(by.clone());
            stopping.threshold = threshold.clone();
        }
        let hard = abort || !first;
        if hard && !self.shared.hard_stop.is_cancelled() {
            self.shared.hard_stop.cancel();
            stopping
                .abort_at
                .get_or_insert(tokio::time::Instant::now() + ABORT_AFTER);
        }
        let message = match (&threshold, hard, &by) {
            (Some(th), _, _) => format!("threshold crossed: {th}; stopping the run"),
            (None, false, StopBy::Memory) => format!(
                "stopping: {}; in-flight iterations have {} to finish",
                stopping
                    .memory
                    .as_deref()
                    .unwrap_or("the runner's memory reached --max-memory"),
                units::format_duration(self.plan.grace)
            ),
            (None, true, _) => "stopping: cancelling in-flight iterations".to_owned(),
            (None, false, StopBy::Signal) => format!(
                "stopping: in-flight iterations have {} to finish (Ctrl-C again to cancel them)",
                units::format_duration(self.plan.grace)
            ),
            (None, false, _) => format!(
                "stopping: in-flight iterations have {} to finish",
                units::format_duration(self.plan.grace)
            ),
        };
        let e = ControlEvent {
            t,
            kind: EventKind::Stop { abort: hard, by },
            message,
        };
        self.announce(&e);
        vec![e]
    }

    /// Tells the hub and the sinks about an event at once.
    fn announce(&mut self, e: &ControlEvent) {
        self.hub.event(e.clone());
        for s in &mut self.sinks {
            s.event(e);
        }
    }

    /// Drains the recorder into the snapshot of the interval `dt` ending
    /// at `t`.
    fn collect(
        &self,
        seq: u64,
        t: Duration,
        dt: Duration,
        events: Vec<ControlEvent>,
        last: bool,
    ) -> Snapshot {
        let mut metrics = Metrics::default();
        self.recorder.drain_into(&mut metrics);
        let secs = t.as_secs_f64();
        let classes = self
            .exec
            .classes
            .iter()
            .map(|c| {
                let active = c.active.load(Ordering::Relaxed) as u64;
                match &c.load {
                    Load::Closed { max, .. } => ClassState {
                        name: c.name.to_string(),
                        model: Model::Closed,
                        active,
                        target_vus: Some(f64::from(c.target.load(Ordering::Relaxed))),
                        rate: None,
                        max_vus: u64::from(*max),
                    },
                    Load::Open { rate, max_vus, .. } => ClassState {
                        name: c.name.to_string(),
                        model: Model::Open,
                        active,
                        target_vus: None,
                        rate: Some(if last { 0.0 } else { lock(rate).value_at(secs) }),
                        max_vus: u64::from(*max_vus),
                    },
                }
            })
            .collect();
        Snapshot {
            seq,
            t: round3(secs),
            interval: round3(dt.as_secs_f64()),
            classes,
            metrics,
            events,
            last,
        }
    }

    fn publish(&mut self, snapshot: &Snapshot, stopping: &Stopping, phases: &[Phase]) {
        let meta = self.meta(snapshot.t, stopping, phases);
        self.hub.publish(snapshot, meta);
        for s in &mut self.sinks {
            s.snapshot(snapshot);
        }
    }

    /// The first `abort` threshold that fails on the data so far
    /// (thresholds with no data yet do not abort).
    fn first_crossed(&self) -> Option<String> {
        let elapsed = self.shared.started.elapsed().as_secs_f64();
        self.hub.with_totals(|totals| {
            self.thresholds.iter().filter(|t| t.abort).find_map(|t| {
                let o = t.evaluate(totals, elapsed);
                (o.value.is_some() && !o.pass).then(|| t.source.clone())
            })
        })
    }

    /// The run's facts at `t` seconds.
    fn meta(&self, t: f64, stopping: &Stopping, phases: &[Phase]) -> Meta {
        let plan = &self.plan;
        let window = plan
            .duration
            .map_or(t, |d| d.as_secs_f64().min(t))
            .max(1e-9);
        let open: Vec<f64> = self
            .exec
            .classes
            .iter()
            .filter_map(|c| match &c.load {
                Load::Open { rate, .. } => Some(lock(rate).area()),
                Load::Closed { .. } => None,
            })
            .collect();
        let mut phases = phases.to_vec();
        if let Some(p) = phases.last_mut() {
            p.to_s = t;
        }
        Meta {
            scenario: self.spec.scenario.name.clone(),
            scenario_bytes: self.spec.scenario.bytes,
            sha256: self.spec.scenario.sha256.clone(),
            started_unix_ms: self
                .started_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            duration_s: t,
            vus: plan.total_vus(),
            max_vus: plan.max_vus(),
            peak_vus: self.shared.peak.load(Ordering::Relaxed) as u32,
            open_model: plan.is_open().then(|| OpenMeta {
                rate: open.iter().sum::<f64>()
                    / plan.duration.map_or(t, |d| d.as_secs_f64()).max(1e-9),
                arrival: plan.arrival,
                window_s: window,
            }),
            classes: plan
                .classes
                .iter()
                .map(|c| (c.name.to_string(), c.vus))
                .collect(),
            interrupted: matches!(
                stopping.by,
                Some(StopBy::Signal | StopBy::Api | StopBy::Coordinator)
            ),
            stopped_by: stopping.by.clone(),
            aborted_by_threshold: stopping.threshold.clone(),
            memory_stop: stopping.memory.clone(),
            runner_peak_rss: super::memory::peak_rss(),
            startup_s: self.shared.all_ready.get().map(Duration::as_secs_f64),
            log_lines_suppressed: self.shared.ctx.log_limit.suppressed(),
            events: self.hub.events(0),
            scenarios: if phases.len() > 1 { phases } else { Vec::new() },
            options: self.spec.options.clone(),
            output_errors: Vec::new(),
            series_overflow: self
                .recorder
                .folded()
                .into_iter()
                .map(|(f, n)| (f.to_owned(), n))
                .collect(),
            workers: Vec::new(),
            start_skew_ms: None,
        }
    }

    /// The final summary: thresholds judged, outputs written, the hub and
    /// sinks told.
    fn summarize(mut self, stopping: &Stopping, phases: &mut [Phase]) -> Arc<Summary> {
        let t = self.shared.started.elapsed().as_secs_f64();
        let meta = self.meta(t, stopping, phases);
        super::finish::finish(
            &self.spec,
            meta,
            &self.thresholds,
            &mut self.sinks,
            &self.hub,
        )
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
