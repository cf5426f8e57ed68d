//! `runner join`: a long-running worker. It connects to a coordinator,
//! proves it knows the token's secret (and checks the coordinator's
//! certificate against the token's fingerprint), and serves one run after
//! another: it prepares its share (fetching the component when its hash is
//! not cached), starts at the common instant, streams its snapshots
//! (replayed after a reconnection until acknowledged), and follows the
//! coordinator's commands. Its control plane runs on a thread of its own,
//! so a worker saturated by its VUs still answers.
//!
//! Leases: the coordinator renews the worker's lease every second; a worker
//! whose lease runs out (cut off, or the coordinator died) stops starting
//! iterations, cancels in-flight ones a lease later, and goes back to
//! waiting for a coordinator. A cut-off worker never keeps hammering the
//! target.

mod component;
mod frames;
mod lease;
mod outbox;
mod session;
mod swap;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::protocol::Up;
use super::tls;
use crate::plan::share::Share;
use crate::run::{Controller, Prepared, StopBy};
use crate::spec::RunSpec;
use outbox::Outbox;

/// How a worker joins.
pub struct JoinOptions {
    /// `HOST:PORT` of the coordinator.
    pub coordinator: String,
    /// How it trusts the coordinator (the token's fingerprint, or a CA).
    pub trust: tls::Trust,
    /// The token's secret (empty with a CA: the certificate tells).
    pub secret: String,
    /// The operator's egress rules, held for every run (None for a
    /// process of `runner run --processes`: the run is this machine's
    /// own, and its rules are the operator's).
    pub enforced: Option<crate::spec::Enforced>,
    /// Leave once a run is over (or the coordinator closes).
    pub once: bool,
    /// Relative capacity (shares are proportional to it).
    pub capacity: f64,
    /// A name for the coordinator's logs and table.
    pub name: String,
}

/// Longest wait for a coordinator's answer to the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs the worker until SIGTERM or Ctrl-C (or a refusal that retrying
/// cannot fix), on a thread of its own; runs start on `load`, the runtime
/// whose threads the VUs use.
pub fn join(opts: JoinOptions, load: tokio::runtime::Handle) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the worker's control runtime")?;
    rt.block_on(async move {
        let mut w = Worker::new(opts, load)?;
        w.serve().await
    })
}

/// Why a session with a coordinator ended.
enum SessionEnd {
    /// The coordinator closed the connection (its run is over): wait for
    /// the next one.
    Closed(String),
    /// Try again after a pause.
    Retry(String),
    /// Retrying cannot help (refused, wrong certificate): stop.
    Fatal(String),
    /// Asked to stop (a signal).
    Shutdown,
}

struct Worker {
    opts: JoinOptions,
    load: tokio::runtime::Handle,
    endpoint: quinn::Endpoint,
    cache: VecDeque<(String, Arc<[u8]>)>,
    slot: Option<Slot>,
    worker_id: Option<u32>,
    stopping: bool,
    /// Pause before the next connection attempt.
    backoff: Duration,
    /// After the first notice, retries while idle are not logged.
    quiet: bool,
    /// Frames made by tasks of their own (answers to releases), sent by
    /// the session (after a reconnection, if need be).
    ups: mpsc::UnboundedSender<Up>,
    ups_rx: mpsc::UnboundedReceiver<Up>,
}

/// The run this worker is part of.
struct Slot {
    run: u64,
    spec: RunSpec,
    share: Share,
    lease: Duration,
    stage: Stage,
    outbox: Arc<Outbox>,
    lease_until: Arc<Mutex<Instant>>,
    ended_sent: bool,
    /// A component the running run is to continue on, being fetched:
    /// (name, hash).
    swap_to: Option<(String, String)>,
}

enum Stage {
    /// Waiting for the component.
    Fetching,
    /// Compiling and planning.
    Preparing(JoinHandle<Result<Prepared, String>>),
    /// Ready; waiting for the start.
    Ready(Box<Prepared>),
    /// Running.
    Running {
        controller: Controller,
        swapper: Option<Arc<crate::run::swap::Swapper>>,
        done: JoinHandle<()>,
        watchdog: JoinHandle<()>,
    },
    /// Over; the last snapshots may still be unacknowledged.
    Over,
}

impl Worker {
    fn new(opts: JoinOptions, load: tokio::runtime::Handle) -> Result<Self> {
        let bind: SocketAddr = "0.0.0.0:0".parse().context("bind address")?;
        let mut endpoint = quinn::Endpoint::client(bind).context("cannot open a UDP socket")?;
        endpoint.set_default_client_config(tls::client_config(&opts.trust)?);
        let (ups, ups_rx) = mpsc::unbounded_channel();
        Ok(Self {
            opts,
            load,
            endpoint,
            cache: VecDeque::new(),
            slot: None,
            worker_id: None,
            stopping: false,
            backoff: Duration::from_millis(250),
            quiet: false,
            ups,
            ups_rx,
        })
    }

    async fn serve(&mut self) -> Result<()> {
        loop {
            let end = tokio::select! {
                end = self.session() => end,
                _ = super::signal() => SessionEnd::Shutdown,
            };
            match end {
                SessionEnd::Shutdown => return self.shutdown().await,
                SessionEnd::Fatal(why) => {
                    self.abandon("the worker stops").await;
                    return Err(anyhow!(why));
                }
                SessionEnd::Closed(why) => {
                    // Its coordinator is gone: nothing of that run can be
                    // delivered any more (a running one stops by its lease).
                    if !matches!(
                        self.slot.as_ref().map(|s| &s.stage),
                        Some(Stage::Running { .. })
                    ) {
                        self.slot = None;
                    }
                    if self.opts.once {
                        tracing::info!(
                            "the coordinator closed the connection ({why}); leaving (--once)"
                        );
                        return self.shutdown().await;
                    }
                    tracing::info!(
                        "the coordinator closed the connection ({why}); waiting for the next one at {}",
                        self.opts.coordinator
                    );
                    self.quiet = true;
                }
                // A one-run worker whose run is over and whose coordinator
                // is gone has nothing left to wait for.
                SessionEnd::Retry(why)
                    if self.opts.once && self.worker_id.is_some() && self.run_over() =>
                {
                    tracing::info!(
                        "coordinator {}: {why}; leaving (--once)",
                        self.opts.coordinator
                    );
                    return self.shutdown().await;
                }
                SessionEnd::Retry(why) if !self.quiet || self.slot.is_some() => {
                    tracing::warn!(
                        "coordinator {}: {why}; retrying in {}",
                        self.opts.coordinator,
                        crate::units::format_duration(self.backoff)
                    );
                    self.quiet = true;
                }
                SessionEnd::Retry(why) => {
                    tracing::debug!("coordinator {}: {why}", self.opts.coordinator)
                }
            }
            if self.stopping {
                return self.shutdown().await;
            }
            // A run that never started is forgotten: the coordinator will
            // have given up on it.
            if matches!(
                self.slot.as_ref().map(|s| &s.stage),
                Some(Stage::Fetching | Stage::Preparing(_) | Stage::Ready(_))
            ) {
                self.slot = None;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.backoff) => {}
                _ = super::signal() => return self.shutdown().await,
            }
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            if self.slot.is_none() {
                self.backoff = self.backoff.min(Duration::from_secs(2));
            }
        }
    }

    /// Whether no run is under way here (none, or its part is over).
    fn run_over(&self) -> bool {
        self.slot
            .as_ref()
            .is_none_or(|s| matches!(s.stage, Stage::Over))
    }

    /// Stops the current run (if any) gracefully and waits for it.
    async fn shutdown(&mut self) -> Result<()> {
        self.stopping = true;
        if let Some(Slot {
            stage: Stage::Running { controller, .. },
            ..
        }) = &self.slot
        {
            tracing::info!("stopping: the current run's in-flight iterations finish first (signal again to cancel them)");
            controller.stop_now(false, StopBy::Signal);
            self.wait_running().await;
        }
        self.endpoint.close(0u32.into(), b"worker shutting down");
        // The process exits next: let the close frame leave first, so the
        // coordinator learns now rather than at its idle timeout.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        Ok(())
    }

    /// Abandons the current run without a coordinator.
    async fn abandon(&mut self, why: &str) {
        if let Some(Slot {
            stage: Stage::Running { controller, .. },
            ..
        }) = &self.slot
        {
            tracing::warn!("{why}: stopping the current run");
            controller.stop_now(true, StopBy::Coordinator);
            self.wait_running().await;
        }
        self.slot = None;
    }

    async fn wait_running(&mut self) {
        loop {
            let done = match &self.slot {
                Some(Slot {
                    stage: Stage::Running { done, .. },
                    ..
                }) => done.is_finished(),
                _ => true,
            };
            if done {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = super::signal() => {
                    if let Some(Slot { stage: Stage::Running { controller, .. }, .. }) = &self.slot {
                        controller.stop_now(true, StopBy::Signal);
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<quinn::Connection, SessionEnd> {
        let addr = tokio::net::lookup_host(&self.opts.coordinator)
            .await
            .map_err(|e| SessionEnd::Retry(format!("cannot resolve the address: {e}")))?
            .next()
            .ok_or_else(|| SessionEnd::Retry("the address resolves to nothing".into()))?;
        let name = self.opts.trust.server_name(&self.opts.coordinator);
        let connecting = self
            .endpoint
            .connect(addr, &name)
            .map_err(|e| SessionEnd::Retry(format!("cannot connect: {e}")))?;
        connecting.await.map_err(|e| {
            let text = e.to_string();
            let ca = matches!(self.opts.trust, tls::Trust::Ca { .. });
            if text.contains("fingerprint") || (ca && text.contains("invalid peer certificate")) {
                SessionEnd::Fatal(format!(
                    "refusing the coordinator at {}: {text}{}",
                    self.opts.coordinator,
                    if ca { " (is its certificate signed by --ca, for this host name?)" } else { "" }
                ))
            } else if ca && text.contains("certificate") {
                SessionEnd::Fatal(format!(
                    "the coordinator at {} refused this worker's certificate ({text}): use one signed by the coordinator's CA",
                    self.opts.coordinator
                ))
            } else {
                SessionEnd::Retry(format!("cannot connect: {text}"))
            }
        })
    }
}

/// How a connection's end reads: a coordinator that finished its run is
/// not an error.
fn ended(e: &quinn::ConnectionError) -> SessionEnd {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            SessionEnd::Closed(String::from_utf8_lossy(&c.reason).into_owned())
        }
        other => SessionEnd::Retry(format!("the connection failed: {other}")),
    }
}

fn describe(share: &Share) -> String {
    let parts: Vec<String> = share
        .classes
        .iter()
        .map(|c| {
            if c.owned.is_empty() && c.max_vus > 0 {
                format!(
                    "{}: {:.1}% of the rate, up to {} VUs",
                    c.name,
                    c.fraction * 100.0,
                    c.max_vus
                )
            } else {
                format!("{}: {} VUs", c.name, c.owned.len())
            }
        })
        .collect();
    parts.join(", ")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Nanoseconds since the Unix epoch, now.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The instant at `unix_ns` on this machine's clock (within an hour
/// either way; a worker joining a run mid-way starts at its time zero, in
/// the past).
fn instant_of(unix_ns_at: u64) -> Instant {
    const HOUR: u64 = 3_600_000_000_000;
    let now = unix_ns();
    let here = Instant::now();
    if unix_ns_at >= now {
        here + Duration::from_nanos((unix_ns_at - now).min(HOUR))
    } else {
        here.checked_sub(Duration::from_nanos((now - unix_ns_at).min(HOUR)))
            .unwrap_or(here)
    }
}
