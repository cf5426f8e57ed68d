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

/// Control events a hub keeps; later ones are applied and counted, not
/// kept (a client looping on PATCH must not grow memory without bound).
pub const MAX_EVENTS: usize = 1000;

/// The shared record of one run.
pub struct Hub {
    inner: Mutex<Inner>,
    /// Apart from the rest, so a reader of the totals (a scrape, the live
    /// summary) never holds up the points, the events or the state.
    totals: Mutex<Metrics>,
    version: watch::Sender<u64>,
    thresholds: Vec<Threshold>,
}

struct Inner {
    state: RunState,
    points: Vec<Arc<Point>>,
    events: Vec<ControlEvent>,
    events_omitted: u64,
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
                events_omitted: 0,
                meta,
                live: None,
                summary: None,
                error: None,
            }),
            totals: Mutex::new(Metrics::default()),
            version: watch::channel(0).0,
            thresholds,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn totals(&self) -> MutexGuard<'_, Metrics> {
        self.totals.lock().unwrap_or_else(|p| p.into_inner())
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
        self.totals().merge(&snapshot.metrics);
        {
            let mut i = self.lock();
            i.points.push(point);
            i.meta = meta;
        }
        self.bump();
    }

    /// Records a control event (it is also in the next snapshot); past
    /// [`MAX_EVENTS`] it is only counted.
    pub fn event(&self, e: ControlEvent) {
        {
            let mut i = self.lock();
            if i.events.len() < MAX_EVENTS {
                i.events.push(e);
            } else {
                i.events_omitted += 1;
            }
        }
        self.bump();
    }

    /// Control events made past [`MAX_EVENTS`], counted but not kept.
    pub fn events_omitted(&self) -> u64 {
        self.lock().events_omitted
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
            i.live = None;
            i.state = RunState::Finished;
        }
        *self.totals() = Metrics::default();
        self.bump();
    }

    /// Ends the run without a summary.
    pub fn fail(&self, error: String) {
        {
            let mut i = self.lock();
            i.error = Some(error);
            i.live = None;
            i.state = RunState::Failed;
        }
        *self.totals() = Metrics::default();
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
        f(&self.totals())
    }

    /// The summary so far (the final one once the run is over), thresholds
    /// evaluated on the data so far; computed at most once per snapshot,
    /// however many ask.
    pub fn live_summary(&self) -> Arc<Summary> {
        let (seq, meta) = {
            let i = self.lock();
            if let Some(s) = &i.summary {
                return s.clone();
            }
            let seq = i.points.len() as u64;
            if let Some((at, s)) = &i.live {
                if *at == seq {
                    return s.clone();
                }
            }
            (seq, i.meta.clone())
        };
        let s = {
            let totals = self.totals();
            let mut s = Summary::of(meta, &totals);
            s.thresholds = self
                .thresholds
                .iter()
                .map(|t| t.evaluate(&totals, s.meta.duration_s))
                .collect();
            Arc::new(s)
        };
        let mut i = self.lock();
        if i.summary.is_none() && i.points.len() as u64 == seq {
            i.live = Some((seq, s.clone()));
        }
        s
    }
}
