//! Where a run's observers look: the [`Hub`] keeps the run's history (one
//! [`Point`] per snapshot, every control event), its running totals, its
//! state and, at the end, its summary; a version number that changes with
//! each of them wakes whoever waits. Observers in other tasks (the REST
//! API, its event stream, Prometheus) read it at their own pace and never
//! slow the run down, nor miss anything: a page that reconnects gets the
//! whole history again.

use std::sync::{Arc, Mutex, MutexGuard};

use host_api::Metrics;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::control::ControlEvent;
use super::snapshot::{Point, Snapshot};
use crate::report::{Meta, Summary};
use crate::thresholds::Threshold;

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// VUs are starting and running.
    Running,
    /// No new iterations start; in-flight ones are finishing.
    Stopping,
    /// Over, with a summary.
    Finished,
    /// Over without a summary (it could not start, or crashed).
    Failed,
}

/// The shared record of one run.
pub struct Hub {
    inner: Mutex<Inner>,
    version: watch::Sender<u64>,
    thresholds: Vec<Threshold>,
}

struct Inner {
    state: RunState,
    points: Vec<Arc<Point>>,
    events: Vec<ControlEvent>,
    totals: Metrics,
    meta: Meta,
    /// The live summary, and the snapshot it was computed after.
    live: Option<(u64, Arc<Summary>)>,
    summary: Option<Arc<Summary>>,
    error: Option<String>,
}

impl Hub {
    /// The hub of a run described by `meta`, judged by `thresholds`.
    pub fn new(meta: Meta, thresholds: Vec<Threshold>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: RunState::Running,
                points: Vec::new(),
                events: Vec::new(),
                totals: Metrics::default(),
                meta,
                live: None,
                summary: None,
                error: None,
            }),
            version: watch::channel(0).0,
            thresholds,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// A receiver that changes whenever anything here does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Adds a snapshot: its point to the history, its metrics to the
    /// totals.
    pub fn publish(&self, snapshot: &Snapshot, meta: Meta) {
        let point = Arc::new(snapshot.point());
        {
            let mut i = self.lock();
            i.totals.merge(&snapshot.metrics);
            i.points.push(point);
            i.meta = meta;
        }
        self.bump();
    }

    /// Records a control event (it is also in the next snapshot).
    pub fn event(&self, e: ControlEvent) {
        self.lock().events.push(e);
        self.bump();
    }

    /// Sets the run's state.
    pub fn set_state(&self, state: RunState) {
        self.lock().state = state;
        self.bump();
    }

    /// Ends the run with `summary`; the totals it was made from are freed.
    pub fn finish(&self, summary: Arc<Summary>) {
        {
            let mut i = self.lock();
            i.summary = Some(summary);
            i.totals = Metrics::default();
            i.live = None;
            i.state = RunState::Finished;
        }
        self.bump();
    }

    /// Ends the run without a summary.
    pub fn fail(&self, error: String) {
        {
            let mut i = self.lock();
            i.error = Some(error);
            i.totals = Metrics::default();
            i.live = None;
            i.state = RunState::Failed;
        }
        self.bump();
    }

    /// The run's state.
    pub fn state(&self) -> RunState {
        self.lock().state
    }

    /// Why the run failed, if it did.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// The points of the snapshots after the first `from`.
    pub fn points(&self, from: usize) -> Vec<Arc<Point>> {
        let i = self.lock();
        i.points.get(from..).unwrap_or_default().to_vec()
    }

    /// The last point, if any.
    pub fn last_point(&self) -> Option<Arc<Point>> {
        self.lock().points.last().cloned()
    }

    /// The control events after the first `from`.
    pub fn events(&self, from: usize) -> Vec<ControlEvent> {
        let i = self.lock();
        i.events.get(from..).unwrap_or_default().to_vec()
    }

    /// The final summary, once the run is over.
    pub fn summary(&self) -> Option<Arc<Summary>> {
        self.lock().summary.clone()
    }

    /// The run's facts as of the last snapshot.
    pub fn meta(&self) -> Meta {
        self.lock().meta.clone()
    }

    /// Runs `f` on the totals so far (empty once the run is over: use the
    /// summary then).
    pub fn with_totals<R>(&self, f: impl FnOnce(&Metrics) -> R) -> R {
        f(&self.lock().totals)
    }

    /// Takes the totals (for the final summary).
    pub fn take_totals(&self) -> Metrics {
        std::mem::take(&mut self.lock().totals)
    }

    /// The summary so far (the final one once the run is over), thresholds
    /// evaluated on the data so far; computed at most once per snapshot,
    /// however many ask.
    pub fn live_summary(&self) -> Arc<Summary> {
        let mut i = self.lock();
        if let Some(s) = &i.summary {
            return s.clone();
        }
        let seq = i.points.len() as u64;
        if let Some((at, s)) = &i.live {
            if *at == seq {
                return s.clone();
            }
        }
        let mut s = Summary::of(i.meta.clone(), &i.totals);
        s.thresholds = self
            .thresholds
            .iter()
            .map(|t| t.evaluate(&i.totals, i.meta.duration_s))
            .collect();
        let s = Arc::new(s);
        i.live = Some((seq, s.clone()));
        s
    }
}
