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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::protocol::{
    ComponentHeader, Down, Resume, SnapshotFrame, Up, WireCommand, MAX_COMPONENT, PROTOCOL,
};
use super::token::Token;
use super::{tls, wire};
use crate::plan::share::Share;
use crate::run::control::Command;
use crate::run::{self, Controller, LoadChange, LoadTarget, Prepared, Sink, Snapshot, StopBy};
use crate::spec::RunSpec;

/// How a worker joins.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// `HOST:PORT` of the coordinator.
    pub coordinator: String,
    /// The token it printed.
    pub token: Token,
    /// Relative capacity (shares are proportional to it).
    pub capacity: f64,
    /// A name for the coordinator's logs and table.
    pub name: String,
}

/// Components kept by hash.
const CACHE: usize = 8;

/// Longest wait for a coordinator's answer to the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a component may take to arrive.
const COMPONENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A component read from its stream (or why not).
struct Fetched {
    run: u64,
    sha: String,
    got: Result<Arc<[u8]>, String>,
}

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
        endpoint.set_default_client_config(tls::client_config(opts.token.fingerprint)?);
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
                    tracing::info!(
                        "the coordinator closed the connection ({why}); waiting for the next one at {}",
                        self.opts.coordinator
                    );
                    self.quiet = true;
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
        let connecting = self
            .endpoint
            .connect(addr, tls::SERVER_NAME)
            .map_err(|e| SessionEnd::Retry(format!("cannot connect: {e}")))?;
        connecting.await.map_err(|e| {
            let text = e.to_string();
            if text.contains("fingerprint") {
                SessionEnd::Fatal(format!(
                    "refusing the coordinator at {}: {text}",
                    self.opts.coordinator
                ))
            } else {
                SessionEnd::Retry(format!("cannot connect: {text}"))
            }
        })
    }

    /// One connection: hello, then serve frames until it ends.
    async fn session(&mut self) -> SessionEnd {
        let conn = match self.connect().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return SessionEnd::Retry(format!("cannot open the control stream: {e}")),
        };
        let resume = match (&self.slot, self.worker_id) {
            (Some(s), Some(worker)) => Some(Resume { run: s.run, worker }),
            _ => None,
        };
        let hello = Up::Hello {
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            name: self.opts.name.clone(),
            capacity: self.opts.capacity,
            secret: self.opts.token.secret.clone(),
            resume,
        };
        if let Err(e) = wire::write(&mut send, &hello).await {
            return SessionEnd::Retry(e.to_string());
        }
        match tokio::time::timeout(HELLO_TIMEOUT, wire::read::<Down>(&mut recv)).await {
            Err(_) => return SessionEnd::Retry("no answer to the hello".into()),
            Ok(Err(e)) => return SessionEnd::Retry(e.to_string()),
            Ok(Ok(None)) => {
                return SessionEnd::Retry("the coordinator closed the connection".into())
            }
            Ok(Ok(Some(Down::Refused { reason }))) => {
                return SessionEnd::Fatal(format!("the coordinator refused this worker: {reason}"))
            }
            Ok(Ok(Some(Down::Welcome {
                protocol,
                version,
                worker,
                resumed,
            }))) => {
                if protocol != PROTOCOL {
                    return SessionEnd::Fatal(format!(
                        "the coordinator speaks protocol {protocol} (runner {version}), this worker {PROTOCOL} (runner {}): run the same runner version on both",
                        env!("CARGO_PKG_VERSION")
                    ));
                }
                tracing::info!(
                    "joined coordinator {} as worker {worker}",
                    self.opts.coordinator
                );
                self.worker_id = Some(worker);
                self.backoff = Duration::from_millis(250);
                self.quiet = false;
                if !resumed && self.slot.is_some() {
                    // Not this coordinator's run: nobody will take its
                    // snapshots or renew its lease.
                    self.abandon("the coordinator does not know the current run")
                        .await;
                }
                if let Some(slot) = self.slot.as_mut() {
                    slot.ended_sent = false;
                }
            }
            Ok(Ok(Some(other))) => {
                return SessionEnd::Retry(format!("expected a welcome, got {other:?}"))
            }
        }
        let mut snaps = match conn.open_uni().await {
            Ok(s) => s,
            Err(e) => return SessionEnd::Retry(format!("cannot open the snapshot stream: {e}")),
        };
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let (fetched_tx, mut fetched_rx) = mpsc::channel::<Fetched>(4);
        loop {
            let outbox = self.slot.as_ref().map(|s| s.outbox.clone());
            tokio::select! {
                frame = wire::read::<Down>(&mut recv) => match frame {
                    Ok(Some(down)) => {
                        if let Err(e) = self.handle(down, &mut send).await {
                            return e;
                        }
                    }
                    Ok(None) => return SessionEnd::Retry("the coordinator closed the connection".into()),
                    Err(wire::WireError::Io(_)) => {
                        return match conn.close_reason() {
                            Some(e) => ended(&e),
                            None => SessionEnd::Retry("the control stream failed".into()),
                        }
                    }
                    Err(e) => {
                        tracing::error!("the coordinator sent {e}; closing the connection");
                        conn.close(2u32.into(), e.to_string().as_bytes());
                        return SessionEnd::Retry(e.to_string());
                    }
                },
                uni = conn.accept_uni() => match uni {
                    Ok(r) => self.fetch_component(r, fetched_tx.clone()),
                    Err(e) => return ended(&e),
                },
                up = self.ups_rx.recv() => {
                    if let Some(up) = up {
                        if let Err(e) = wire::write(&mut send, &up).await {
                            // Kept for the next connection.
                            let _ = self.ups.send(up);
                            return SessionEnd::Retry(e.to_string());
                        }
                    }
                }
                f = fetched_rx.recv() => {
                    if let Some(f) = f {
                        if let Err(e) = self.component_arrived(f, &mut send).await {
                            return e;
                        }
                    }
                }
                _ = async { match &outbox { Some(o) => o.notify.notified().await, None => std::future::pending().await } } => {}
                _ = tick.tick() => {}
            }
            if let Err(e) = self.progress(&mut send, &mut snaps, &mut sent).await {
                return e;
            }
        }
    }

    /// Moves the current run along: a finished preparation is reported, new
    /// snapshots go out, a finished run is reported and then forgotten once
    /// all its snapshots are acknowledged.
    async fn progress(
        &mut self,
        send: &mut quinn::SendStream,
        snaps: &mut quinn::SendStream,
        sent: &mut u64,
    ) -> Result<(), SessionEnd> {
        let Some(slot) = self.slot.as_mut() else {
            return Ok(());
        };
        let retry = |e: wire::WireError| SessionEnd::Retry(e.to_string());
        if let Stage::Preparing(task) = &slot.stage {
            if task.is_finished() {
                let Stage::Preparing(task) = std::mem::replace(&mut slot.stage, Stage::Over) else {
                    unreachable!("just matched")
                };
                match task.await {
                    Ok(Ok(prepared)) => {
                        slot.stage = Stage::Ready(Box::new(prepared));
                        wire::write(send, &Up::Ready { run: slot.run })
                            .await
                            .map_err(retry)?;
                    }
                    Ok(Err(error)) => {
                        tracing::error!("run {}: {error}", slot.run);
                        wire::write(
                            send,
                            &Up::Failed {
                                run: slot.run,
                                error,
                            },
                        )
                        .await
                        .map_err(retry)?;
                        self.slot = None;
                        return Ok(());
                    }
                    Err(e) => {
                        let error = format!("preparing the run failed: {e}");
                        wire::write(
                            send,
                            &Up::Failed {
                                run: slot.run,
                                error,
                            },
                        )
                        .await
                        .map_err(retry)?;
                        self.slot = None;
                        return Ok(());
                    }
                }
            }
        }
        for (seq, frame) in slot.outbox.after(*sent) {
            wire::write_raw(snaps, &frame).await.map_err(retry)?;
            *sent = seq;
        }
        if let Stage::Running { done, watchdog, .. } = &slot.stage {
            if done.is_finished() {
                watchdog.abort();
                slot.stage = Stage::Over;
            }
        }
        if matches!(slot.stage, Stage::Over) {
            if !slot.ended_sent && slot.outbox.is_finished() {
                let last_seq = slot.outbox.last_seq();
                wire::write(
                    send,
                    &Up::Ended {
                        run: slot.run,
                        last_seq,
                    },
                )
                .await
                .map_err(retry)?;
                slot.ended_sent = true;
            }
            if slot.ended_sent && slot.outbox.all_acked() {
                tracing::info!("run {} is over; waiting for the next", slot.run);
                self.slot = None;
            }
        }
        Ok(())
    }

    async fn handle(&mut self, down: Down, send: &mut quinn::SendStream) -> Result<(), SessionEnd> {
        let retry = |e: wire::WireError| SessionEnd::Retry(e.to_string());
        match down {
            Down::Ping { id } => {
                wire::write(
                    send,
                    &Up::Pong {
                        id,
                        unix_ns: unix_ns(),
                    },
                )
                .await
                .map_err(retry)?;
            }
            Down::Assign {
                run,
                spec,
                share,
                lease_ms,
            } => {
                if self
                    .slot
                    .as_ref()
                    .is_some_and(|s| s.run != run && !matches!(s.stage, Stage::Over))
                {
                    let error = "this worker is still busy with another run".to_owned();
                    wire::write(send, &Up::Failed { run, error })
                        .await
                        .map_err(retry)?;
                    return Ok(());
                }
                tracing::info!("run {run}: assigned {}", describe(&share));
                let lease = Duration::from_millis(lease_ms.clamp(1_000, 600_000));
                let mut slot = Slot {
                    run,
                    spec: *spec,
                    share,
                    lease,
                    stage: Stage::Fetching,
                    outbox: Arc::new(Outbox::default()),
                    lease_until: Arc::new(Mutex::new(Instant::now() + lease)),
                    ended_sent: false,
                };
                let sha = slot.spec.scenario.sha256.clone();
                match self.cached(&sha) {
                    Some(bytes) => slot.stage = self.prepare(&slot, bytes),
                    None => wire::write(send, &Up::Need { run, sha256: sha })
                        .await
                        .map_err(retry)?,
                }
                self.slot = Some(slot);
            }
            Down::Start { run, at_unix_ns } => self.start(run, at_unix_ns),
            Down::Lease {
                run,
                ms,
                until_unix_ns,
            } => {
                if let Some(s) = self.slot.as_ref().filter(|s| s.run == run) {
                    let by_receipt = Instant::now() + Duration::from_millis(ms.min(600_000));
                    *lock(&s.lease_until) = by_receipt.min(instant_of(until_unix_ns));
                }
            }
            Down::Ack { run, seq } => {
                if let Some(s) = self.slot.as_ref().filter(|s| s.run == run) {
                    s.outbox.ack(seq);
                }
            }
            Down::Control { run, command } => {
                if let Some(c) = self.controller(run) {
                    match command {
                        WireCommand::Stop { abort } => c.stop_now(abort, StopBy::Coordinator),
                        WireCommand::Load {
                            class,
                            vus,
                            rate,
                            ramp_ms,
                        } => {
                            let target = match (vus, rate) {
                                (Some(v), _) => LoadTarget::Vus(v),
                                (None, Some(r)) => LoadTarget::Rate(r),
                                (None, None) => return Ok(()),
                            };
                            let change = LoadChange {
                                class,
                                target,
                                ramp: Duration::from_millis(ramp_ms),
                            };
                            let c = c.clone();
                            self.load.spawn(async move {
                                if let Err(e) = c.change(change).await {
                                    tracing::warn!(
                                        "a load change from the coordinator failed: {e}"
                                    );
                                }
                            });
                        }
                    }
                }
            }
            Down::Adopt {
                run,
                class,
                indices,
                at_unix_ns,
            } => {
                if let Some(c) = self.controller(run) {
                    c.send_now(Command::Adopt {
                        class,
                        indices,
                        at: instant_of(at_unix_ns),
                    });
                }
            }
            Down::Release {
                run,
                class,
                indices,
            } => {
                if let Some(c) = self.controller(run) {
                    let (reply, done) = tokio::sync::oneshot::channel();
                    c.send_now(Command::Release {
                        class: class.clone(),
                        indices: indices.clone(),
                        reply,
                    });
                    let ups = self.ups.clone();
                    tokio::spawn(async move {
                        if done.await.is_ok() {
                            let _ = ups.send(Up::Released {
                                run,
                                class,
                                indices,
                            });
                        }
                    });
                }
            }
            Down::Rescale { run, fractions } => {
                if let Some(c) = self.controller(run) {
                    c.send_now(Command::Rescale { fractions });
                }
            }
            Down::Cancel { run, reason } => {
                if self.slot.as_ref().is_some_and(|s| s.run == run) {
                    tracing::warn!("run {run} called off by the coordinator: {reason}");
                    self.abandon("the coordinator called the run off").await;
                }
            }
            Down::Welcome { .. } | Down::Refused { .. } => {
                return Err(SessionEnd::Retry("an unexpected second welcome".into()));
            }
        }
        Ok(())
    }

    fn controller(&self, run: u64) -> Option<&Controller> {
        match &self.slot {
            Some(Slot {
                run: r,
                stage: Stage::Running { controller, .. },
                ..
            }) if *r == run => Some(controller),
            _ => None,
        }
    }

    fn cached(&mut self, sha: &str) -> Option<Arc<[u8]>> {
        let i = self.cache.iter().position(|(s, _)| s == sha)?;
        let hit = self.cache.remove(i)?;
        let bytes = hit.1.clone();
        self.cache.push_front(hit);
        Some(bytes)
    }

    /// Starts reading a component stream, if a run waits for a component:
    /// on a task of its own (the control loop goes on), within
    /// [`COMPONENT_TIMEOUT`], checking the hash it was asked for and the
    /// size limit before reading, and the bytes' hash after.
    fn fetch_component(&self, mut r: quinn::RecvStream, done: mpsc::Sender<Fetched>) {
        let Some(slot) = self
            .slot
            .as_ref()
            .filter(|s| matches!(s.stage, Stage::Fetching))
        else {
            // Nobody asked for it.
            let _ = r.stop(0u32.into());
            return;
        };
        let (run, want) = (slot.run, slot.spec.scenario.sha256.clone());
        tokio::spawn(async move {
            let got = tokio::time::timeout(COMPONENT_TIMEOUT, async {
                let head: ComponentHeader = wire::read_limited(&mut r, 4096)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("an empty component stream")?;
                if head.sha256 != want {
                    return Err(format!(
                        "a component {} that was not asked for",
                        head.sha256
                    ));
                }
                if head.len > MAX_COMPONENT {
                    return Err(format!(
                        "a component of {} bytes is over the limit",
                        head.len
                    ));
                }
                let mut bytes = vec![0u8; head.len as usize];
                r.read_exact(&mut bytes)
                    .await
                    .map_err(|e| format!("the component was cut short: {e}"))?;
                let sha = crate::engine::sha256_hex(&bytes);
                if sha != want {
                    return Err(format!(
                        "the component received hashes to {sha}, not {want}"
                    ));
                }
                Ok::<_, String>(Arc::<[u8]>::from(bytes))
            })
            .await
            .unwrap_or_else(|_| Err("the component did not arrive in time".into()));
            let _ = done
                .send(Fetched {
                    run,
                    sha: want,
                    got,
                })
                .await;
        });
    }

    /// A component arrived (or failed to): cache it and prepare the run
    /// waiting for it, or tell the coordinator it cannot be prepared.
    async fn component_arrived(
        &mut self,
        f: Fetched,
        send: &mut quinn::SendStream,
    ) -> Result<(), SessionEnd> {
        let waiting = self
            .slot
            .as_ref()
            .is_some_and(|s| s.run == f.run && matches!(s.stage, Stage::Fetching));
        match f.got {
            Err(error) => {
                tracing::error!("the component from the coordinator is unusable: {error}");
                if waiting {
                    self.slot = None;
                    let error = format!("the component it received is unusable: {error}");
                    wire::write(send, &Up::Failed { run: f.run, error })
                        .await
                        .map_err(|e| SessionEnd::Retry(e.to_string()))?;
                }
            }
            Ok(bytes) => {
                self.cache.push_front((f.sha, bytes.clone()));
                self.cache.truncate(CACHE);
                if waiting {
                    if let Some(slot) = self.slot.take() {
                        let stage = self.prepare(&slot, bytes);
                        self.slot = Some(Slot { stage, ..slot });
                    }
                }
            }
        }
        Ok(())
    }

    fn prepare(&self, slot: &Slot, bytes: Arc<[u8]>) -> Stage {
        let (spec, share) = (slot.spec.clone(), slot.share.clone());
        Stage::Preparing(self.load.spawn(async move {
            run::prepare_as(spec, bytes, run::Role::Worker(share))
                .await
                .map_err(|e| e.to_string())
        }))
    }

    fn start(&mut self, run: u64, at_unix_ns: u64) {
        let Some(slot) = self.slot.as_mut().filter(|s| s.run == run) else {
            return;
        };
        let Stage::Ready(_) = &slot.stage else {
            tracing::warn!("run {run}: told to start before it was ready");
            return;
        };
        let Stage::Ready(prepared) = std::mem::replace(&mut slot.stage, Stage::Over) else {
            unreachable!("just matched")
        };
        let at = instant_of(at_unix_ns);
        let sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(Link {
                run,
                outbox: slot.outbox.clone(),
            }),
            Box::new(crate::sinks::progress::Progress::new(true)),
        ];
        let _guard = self.load.enter();
        match prepared.start_at(sinks, Some(at)) {
            Err(e) => {
                tracing::error!(
                    "run {run} could not start: {}",
                    crate::engine::root_message(&e)
                );
                slot.outbox.finish(0);
            }
            Ok(handle) => {
                *lock(&slot.lease_until) = Instant::now() + slot.lease;
                let controller = handle.controller();
                let stops = handle.stop_tokens();
                let outbox = slot.outbox.clone();
                let done = self.load.spawn(async move {
                    let _ = handle.wait().await;
                    outbox.finished();
                });
                let watchdog = tokio::spawn(watch_lease(
                    run,
                    controller.clone(),
                    stops,
                    slot.lease_until.clone(),
                    slot.lease,
                ));
                slot.stage = Stage::Running {
                    controller,
                    done,
                    watchdog,
                };
            }
        }
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

/// Stops the run when the lease runs out: gracefully once half a lease
/// passes without a renewal, for good (cancelling in-flight iterations,
/// without waiting for the run's driver) when the lease ends.
async fn watch_lease(
    run: u64,
    controller: Controller,
    stops: Option<(CancellationToken, CancellationToken)>,
    until: Arc<Mutex<Instant>>,
    lease: Duration,
) {
    let mut graceful = false;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left = lock(&until).saturating_duration_since(Instant::now());
        if !graceful && left < lease / 2 {
            tracing::warn!(
                "run {run}: no word from the coordinator for {}; stopping the load",
                crate::units::format_duration(lease / 2)
            );
            controller.stop_now(false, StopBy::Coordinator);
            if let Some((stop, _)) = &stops {
                stop.cancel();
            }
            graceful = true;
        }
        if left.is_zero() {
            tracing::warn!("run {run}: the lease ran out; cancelling in-flight iterations");
            controller.stop_now(true, StopBy::Coordinator);
            if let Some((stop, hard)) = &stops {
                stop.cancel();
                hard.cancel();
            }
            return;
        }
    }
}

/// A worker run's snapshots on their way to the coordinator.
#[derive(Default)]
struct Outbox {
    inner: Mutex<OutboxInner>,
    notify: Notify,
}

#[derive(Default)]
struct OutboxInner {
    /// Unacknowledged frames, by snapshot number.
    frames: VecDeque<(u64, Arc<Vec<u8>>)>,
    last_seq: u64,
    /// The run's last snapshot has been taken.
    finished: bool,
}

impl Outbox {
    fn push(&self, seq: u64, frame: Vec<u8>) {
        {
            let mut i = lock(&self.inner);
            i.frames.push_back((seq, Arc::new(frame)));
            i.last_seq = seq;
        }
        self.notify.notify_one();
    }

    fn after(&self, sent: u64) -> Vec<(u64, Arc<Vec<u8>>)> {
        lock(&self.inner)
            .frames
            .iter()
            .filter(|(s, _)| *s > sent)
            .cloned()
            .collect()
    }

    fn ack(&self, seq: u64) {
        let mut i = lock(&self.inner);
        while i.frames.front().is_some_and(|(s, _)| *s <= seq) {
            i.frames.pop_front();
        }
    }

    fn finish(&self, last: u64) {
        let mut i = lock(&self.inner);
        i.finished = true;
        i.last_seq = i.last_seq.max(last);
    }

    fn finished(&self) {
        lock(&self.inner).finished = true;
        self.notify.notify_one();
    }

    fn is_finished(&self) -> bool {
        lock(&self.inner).finished
    }

    fn all_acked(&self) -> bool {
        lock(&self.inner).frames.is_empty()
    }

    fn last_seq(&self) -> u64 {
        lock(&self.inner).last_seq
    }
}

/// The sink that queues each snapshot for the coordinator.
struct Link {
    run: u64,
    outbox: Arc<Outbox>,
}

impl Sink for Link {
    fn snapshot(&mut self, s: &Snapshot) {
        let frame = SnapshotFrame {
            run: self.run,
            snapshot: Snapshot {
                // The coordinator keeps its own record of load changes.
                events: Vec::new(),
                ..s.clone()
            },
        };
        let encoded = serde_json::to_vec(&frame)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                if b.len() > wire::MAX_FRAME {
                    Err(format!(
                        "{} MiB, over the {} MiB a frame may carry",
                        b.len() >> 20,
                        wire::MAX_FRAME >> 20
                    ))
                } else {
                    Ok(b)
                }
            });
        match encoded {
            Ok(bytes) => self.outbox.push(s.seq, bytes),
            Err(e) => {
                // The second's data is lost, not the ones after it: an
                // empty snapshot keeps its place.
                tracing::error!("snapshot {} cannot be sent ({e}); its data is lost", s.seq);
                let empty = SnapshotFrame {
                    run: self.run,
                    snapshot: Snapshot {
                        seq: s.seq,
                        t: s.t,
                        interval: s.interval,
                        classes: s.classes.clone(),
                        last: s.last,
                        ..Snapshot::default()
                    },
                };
                if let Ok(bytes) = serde_json::to_vec(&empty) {
                    self.outbox.push(s.seq, bytes);
                }
            }
        }
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
