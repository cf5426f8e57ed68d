//! The agent behind `runner serve` (and `runner run --web`): it accepts
//! runs, runs one at a time, keeps the last finished ones' results, and
//! goes on serving whatever a run does. A run that fails to start is
//! refused with the reason; a run whose driver crashes ends as `failed`,
//! and its VUs, stores and sockets are dropped with it (Flood's grid: a
//! crashed run returns its resources, the agent keeps serving).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::run::swap::Swapper;
use crate::run::{self, Controller, Hub, PrepareError, RunHandle, RunState};
use crate::spec::RunSpec;

/// Why a run was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Another run is active.
    #[error("run {0} is still running; stop it first (POST /api/v1/runs/{0}/stop) or wait for it to end")]
    Busy(String),
    /// Preparing the run failed.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
}

/// One run the agent knows of.
pub struct RunRecord {
    /// Its id in the API.
    pub id: String,
    /// When it was accepted, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// What it was asked to do (with the scenario's hash).
    pub spec: RunSpec,
    /// Its history, state and summary.
    pub hub: Arc<Hub>,
    controller: Controller,
    swapper: Option<Arc<Swapper>>,
}

impl RunRecord {
    /// Its control channel (commands to a run that is over are refused).
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// What checking a replacement scenario needs (none for a
    /// distributed run).
    pub fn swapper(&self) -> Option<&Arc<Swapper>> {
        self.swapper.as_ref()
    }

    /// Whether the run is over.
    pub fn is_over(&self) -> bool {
        matches!(self.hub.state(), RunState::Finished | RunState::Failed)
    }
}

/// The runs of one agent.
pub struct Agent {
    inner: Mutex<Inner>,
    keep: usize,
    next: AtomicU64,
    prefix: String,
    /// Egress rules every run taken here follows.
    enforced: Option<crate::spec::Enforced>,
}

#[derive(Default)]
struct Inner {
    /// Oldest first.
    runs: VecDeque<Arc<RunRecord>>,
    /// A run is being prepared (the one-at-a-time slot is taken).
    preparing: bool,
}

impl Agent {
    /// An agent that keeps the last `keep` finished runs; runs submitted
    /// to it follow `enforced` egress rules as well as their own.
    pub fn new(keep: usize, enforced: Option<crate::spec::Enforced>) -> Arc<Self> {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            keep: keep.max(1),
            next: AtomicU64::new(1),
            prefix: format!("{:x}", secs & 0xff_ffff),
            enforced,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Prepares and starts a run of `bytes` as `spec` says, unless one is
    /// active. It runs on in the background; the record follows it.
    pub async fn submit(
        self: &Arc<Self>,
        mut spec: RunSpec,
        bytes: Arc<[u8]>,
    ) -> Result<Arc<RunRecord>, SubmitError> {
        spec.enforced = self.enforced.clone();
        {
            let mut i = self.lock();
            if let Some(active) = i.runs.iter().find(|r| !r.is_over()) {
                return Err(SubmitError::Busy(active.id.clone()));
            }
            if i.preparing {
                return Err(SubmitError::Busy("being prepared".into()));
            }
            i.preparing = true;
        }
        // Prepared in a task of its own: if the client goes away (its
        // request future is dropped) or preparing panics, the slot is still
        // given back.
        let agent = self.clone();
        let task = tokio::spawn(async move {
            let started = async {
                let prepared = run::prepare(spec, bytes).await?;
                let sinks: Vec<Box<dyn run::Sink>> =
                    vec![Box::new(crate::sinks::progress::Progress::new(true))];
                prepared
                    .start(sinks)
                    .map_err(|e| PrepareError::System(crate::engine::root_message(&e)))
            }
            .await;
            // Given back and (on success) taken by the new run under one
            // lock, so no other submit slips in between.
            let record = {
                let mut i = agent.lock();
                i.preparing = false;
                let handle = started?;
                let record = agent.record(&handle);
                i.runs.push_back(record.clone());
                (record, handle)
            };
            Ok::<_, SubmitError>(record)
        });
        let (record, handle) = match task.await {
            Ok(r) => r?,
            Err(e) => {
                self.lock().preparing = false;
                return Err(PrepareError::System(format!("preparing the run failed: {e}")).into());
            }
        };
        tracing::info!(
            "run {} started: {} ({})",
            record.id,
            record.spec.scenario.name,
            run::short(&record.spec.scenario.sha256)
        );
        let (agent, r) = (self.clone(), record.clone());
        tokio::spawn(async move {
            match handle.wait().await {
                Ok(s) => tracing::info!(
                    "run {} finished after {:.1}s: {} requests, thresholds {}",
                    r.id,
                    s.meta.duration_s,
                    s.raw.http_requests(),
                    if s.thresholds_passed() {
                        "passed"
                    } else {
                        "failed"
                    }
                ),
                Err(e) => tracing::error!("run {} failed: {e}", r.id),
            }
            agent.ended(&r);
        });
        Ok(record)
    }

    /// Registers a run started elsewhere (the command line's, with
    /// `--web`); the caller waits for it and then calls [`Agent::ended`].
    pub fn adopt(&self, handle: &RunHandle) -> Arc<RunRecord> {
        let record = self.record(handle);
        self.lock().runs.push_back(record.clone());
        record
    }

    /// A record of `handle`'s run with a fresh id.
    fn record(&self, handle: &RunHandle) -> Arc<RunRecord> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Arc::new(RunRecord {
            id: format!("{}-{n}", self.prefix),
            created_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            spec: handle.spec().clone(),
            hub: handle.hub(),
            controller: handle.controller(),
            swapper: handle.swapper(),
        })
    }

    /// Forgets the oldest finished runs beyond what the agent keeps (call
    /// when a run is over).
    pub fn ended(&self, _record: &RunRecord) {
        let mut i = self.lock();
        while i.runs.iter().filter(|r| r.is_over()).count() > self.keep {
            match i.runs.iter().position(|r| r.is_over()) {
                Some(oldest) => {
                    i.runs.remove(oldest);
                }
                None => break,
            }
        }
    }

    /// Every run known, oldest first.
    pub fn list(&self) -> Vec<Arc<RunRecord>> {
        self.lock().runs.iter().cloned().collect()
    }

    /// The run `id`.
    pub fn get(&self, id: &str) -> Option<Arc<RunRecord>> {
        self.lock().runs.iter().find(|r| r.id == id).cloned()
    }

    /// The active run, or else the last one.
    pub fn current(&self) -> Option<Arc<RunRecord>> {
        let i = self.lock();
        i.runs
            .iter()
            .find(|r| !r.is_over())
            .or_else(|| i.runs.back())
            .cloned()
    }
}
