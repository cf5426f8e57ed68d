//! The run's metadata as the coordinator sees it: the per-worker table,
//! the skew, the open model's figures.

use super::{Driver, Status};
use crate::events::StopBy;
use crate::exec::{lock, Load};
use crate::report::{Meta, OpenMeta, WorkerRow};
use crate::run::snapshot::Model;
use crate::run::ClassState;

impl Driver {
    /// The classes with nothing running (a second no worker reported).
    pub(super) fn class_states(&self) -> Vec<ClassState> {
        self.classes
            .iter()
            .map(|c| ClassState {
                name: c.name.to_string(),
                model: if c.is_open() {
                    Model::Open
                } else {
                    Model::Closed
                },
                ..Default::default()
            })
            .collect()
    }

    pub(super) fn meta(&self, t: f64) -> Meta {
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
        if self.phases.len() > 1 {
            meta.scenarios = self.phases.clone();
            if let Some(p) = meta.scenarios.last_mut() {
                p.to_s = t;
            }
        }
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
                stopped: w.stopped.clone(),
            })
            .collect();
        // A worker that stopped at its memory ceiling ran less than its
        // share: the run says so, and fails, as a single runner would.
        meta.memory_stop = self.workers.iter().find_map(|(id, w)| {
            let why = w.stopped.as_ref()?;
            Some(format!("worker {id} ({}): {why}", w.m.session.name))
        });
        meta.start_skew_ms = self
            .workers
            .values()
            .map(|w| w.m.rtt_ns as f64 / 2e6)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        meta
    }
}
