//! The coordinator of a distributed run (`runner run ... --workers K`): it
//! waits for its workers, splits the plan among them by capacity, ships the
//! component by hash to those that lack it, measures each worker's clock
//! against its own and starts them all at one instant, then drives the run
//! ([`driver`]) from their merged snapshots, exactly as a local run's
//! driver does from its own: same hub, same sinks, same summary.

mod driver;
pub mod merge;
pub mod session;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;

use self::session::{Event, Session};
use super::protocol::{Down, Up};
use super::tls::Identity;
use super::token::Token;
use super::worker::unix_ns;
use crate::plan::share::{split, Share};
use crate::run::{Prepared, RunHandle, Sink};

/// A run id no other coordinator is likely to use (a worker resumes only
/// its part of this coordinator's run).
fn new_run_id() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from(u32::from_be_bytes(b) | 1)
}

/// What to do when a worker is lost.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OnLoss {
    /// The survivors take over its share.
    Rebalance,
    /// The run goes on without its share.
    Continue,
    /// The run stops.
    Abort,
}

/// How the coordinator runs.
pub struct ClusterOptions {
    /// Where to listen (UDP).
    pub listen: SocketAddr,
    /// The address workers are told to join (default: `listen`).
    pub advertise: Option<String>,
    /// Workers to wait for.
    pub workers: usize,
    /// Fewer workers that may start the run once `join_timeout` passes.
    pub min_workers: usize,
    /// Live workers below which the run stops.
    pub quorum: usize,
    /// How long to wait for the workers.
    pub join_timeout: Duration,
    /// What a lost worker's share becomes.
    pub on_loss: OnLoss,
    /// The certificate workers pin.
    pub identity: Identity,
    /// The secret workers must know.
    pub secret: String,
    /// Whether the secret was made here (then the whole token is logged;
    /// a secret given by the operator is not repeated in the log).
    pub secret_generated: bool,
    /// How long a worker may go on without hearing from the coordinator.
    pub lease: Duration,
}

/// A worker taking part, with what the coordinator knows of it.
pub(crate) struct Member {
    pub session: Session,
    pub share: Share,
    /// Its clock minus the coordinator's, ns.
    pub offset_ns: i64,
    /// Lowest clock-probe round trip, ns.
    pub rtt_ns: u64,
}

/// Longest wait for the workers to prepare their shares.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(120);

/// Clock probes per worker.
pub(crate) const PINGS: u64 = 8;

/// Waits for the workers, starts the run across them, and returns its
/// handle. `bytes` is the component `prepared` was made from.
pub async fn coordinate(
    prepared: Prepared,
    bytes: Arc<[u8]>,
    opts: ClusterOptions,
    sinks: Vec<Box<dyn Sink>>,
) -> Result<RunHandle> {
    let endpoint = quinn::Endpoint::server(opts.identity.server_config()?, opts.listen)
        .with_context(|| {
            format!(
                "cannot listen on {} (UDP); pick another --listen",
                opts.listen
            )
        })?;
    let local = endpoint.local_addr().context("the endpoint's address")?;
    let token = Token {
        fingerprint: opts.identity.fingerprint,
        secret: opts.secret.clone(),
    };
    let shown = opts.advertise.clone().unwrap_or_else(|| local.to_string());
    let ca = opts.identity.client_ca.is_some();
    let credentials = if ca {
        "--ca CA.crt --cert WORKER.crt --key WORKER.key".to_owned()
    } else if opts.secret_generated {
        format!("--token {token}")
    } else {
        format!(
            "--token {}:YOUR-SECRET",
            super::token::hex(&token.fingerprint)
        )
    };
    tracing::info!(
        "waiting for {} worker(s) (up to {}); on each machine run: runner join --coordinator {shown} {credentials}",
        opts.workers,
        crate::units::format_duration(opts.join_timeout)
    );
    let (etx, mut events) = mpsc::channel(4096);
    let resumable: session::Resumable = Arc::default();
    let gate = session::Gate {
        secret: (!ca).then(|| Arc::from(opts.secret.as_str())),
        ids: Arc::new(AtomicU32::new(1)),
        resumable: resumable.clone(),
        pending: Arc::new(tokio::sync::Semaphore::new(session::MAX_PENDING)),
    };
    let accept = tokio::spawn(session::accept(endpoint.clone(), gate, etx));
    let run = new_run_id();
    let sessions = gather(&mut events, &opts).await;
    let sessions = match sessions {
        Ok(s) => s,
        Err(e) => {
            accept.abort();
            close(&endpoint, "the run did not start").await;
            return Err(e);
        }
    };
    let bytes_for_joiners = bytes.clone();
    let result = setup(prepared, bytes, &opts, run, sessions, &mut events).await;
    let (prepared, members, start_unix, start) = match result {
        Ok(r) => r,
        Err(e) => {
            accept.abort();
            close(&endpoint, "the run did not start").await;
            return Err(e);
        }
    };
    let handle = driver::start(driver::Setup {
        run,
        bytes: bytes_for_joiners,
        resumable,
        prepared,
        members,
        events,
        sinks,
        start,
        start_unix,
        lease: opts.lease,
        on_loss: opts.on_loss,
        min_workers: opts.quorum,
        endpoint,
        accept,
    });
    Ok(handle)
}

/// Closes every connection with `why` and waits (briefly) until the
/// close frames are out: the process exits next, and a close that never
/// left would make each worker wait for its idle timeout instead.
async fn close(endpoint: &quinn::Endpoint, why: &str) {
    endpoint.close(0u32.into(), why.as_bytes());
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

/// Waits until `workers` have joined, or `min_workers` when the join
/// timeout passes.
async fn gather(
    events: &mut mpsc::Receiver<Event>,
    opts: &ClusterOptions,
) -> Result<BTreeMap<u32, Session>> {
    let deadline = tokio::time::Instant::now() + opts.join_timeout;
    let mut joined: BTreeMap<u32, Session> = BTreeMap::new();
    while joined.len() < opts.workers {
        tokio::select! {
            e = events.recv() => match e {
                Some(Event::Joined { session, .. }) => {
                    tracing::info!(
                        "worker {} ({}, {}, capacity {}) joined: {} of {}",
                        session.id, session.name, session.addr, session.capacity,
                        joined.len() + 1, opts.workers
                    );
                    joined.insert(session.id, session);
                }
                Some(Event::Gone { worker, conn, why }) => {
                    if joined.get(&worker).is_some_and(|s| s.conn.stable_id() == conn) {
                        tracing::warn!("worker {worker} left before the start: {why}");
                        joined.remove(&worker);
                    }
                }
                Some(_) => {}
                None => bail!("the coordinator's endpoint closed"),
            },
            _ = tokio::time::sleep_until(deadline) => break,
            _ = super::signal() => bail!("stopped while waiting for workers"),
        }
    }
    if joined.len() < opts.min_workers.max(1) {
        bail!(
            "only {} of {} workers joined within {} (at least {} needed, --min-workers); start workers with `runner join`, or wait longer with --join-timeout",
            joined.len(),
            opts.workers,
            crate::units::format_duration(opts.join_timeout),
            opts.min_workers.max(1)
        );
    }
    Ok(joined)
}

type Started = (Prepared, BTreeMap<u32, Member>, u64, Instant);

/// Splits the plan, assigns the shares, ships the component, measures the
/// clocks and starts every worker at one instant.
async fn setup(
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
    let sha = spec.scenario.sha256.clone();
    let mut members: BTreeMap<u32, Member> = BTreeMap::new();
    for (session, share) in sessions.into_values().zip(shares) {
        session.send(Down::Assign {
            run,
            spec: Box::new(spec.clone()),
            share: share.clone(),
            lease_ms: opts.lease.as_millis() as u64,
        });
        members.insert(
            session.id,
            Member {
                session,
                share,
                offset_ns: 0,
                rtt_ns: u64::MAX,
            },
        );
    }
    // Clock probes go out while the workers prepare.
    let mut pings: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    let mut next_ping = 0u64;
    let mut probe = tokio::time::interval(Duration::from_millis(50));
    let mut ready = std::collections::BTreeSet::new();
    let mut pongs: BTreeMap<u32, u64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PREPARE_TIMEOUT;
    let cancel = |members: &BTreeMap<u32, Member>, why: &str| {
        for m in members.values() {
            m.session.send(Down::Cancel {
                run,
                reason: why.to_owned(),
            });
        }
    };
    loop {
        let probed = members
            .keys()
            .all(|w| pongs.get(w).copied().unwrap_or(0) >= PINGS);
        if ready.len() == members.len() && probed {
            break;
        }
        tokio::select! {
            _ = probe.tick() => {
                for m in members.values() {
                    if pongs.get(&m.session.id).copied().unwrap_or(0) < PINGS {
                        next_ping += 1;
                        pings.insert(next_ping, (m.session.id, unix_ns()));
                        m.session.send(Down::Ping { id: next_ping });
                    }
                }
            }
            e = events.recv() => match e {
                Some(Event::Up { worker, .. }) if !members.contains_key(&worker) => {}
                Some(Event::Up { worker, msg }) => match msg {
                    Up::Need { run: r, sha256 } if r == run && sha256 == sha => {
                        if let Some(m) = members.get(&worker) {
                            tracing::info!("sending the component ({} bytes) to worker {}", bytes.len(), m.session.name);
                            m.session.send_component(sha.clone(), bytes.clone());
                        }
                    }
                    Up::Ready { run: r } if r == run => {
                        ready.insert(worker);
                    }
                    Up::Failed { run: r, error } if r == run => {
                        let name = members.get(&worker).map(|m| m.session.name.clone()).unwrap_or_default();
                        cancel(&members, "another worker could not prepare the run");
                        bail!("worker {name} could not prepare the run: {error}");
                    }
                    Up::Pong { id, unix_ns: theirs } => {
                        if let Some((w, sent)) = pings.remove(&id).filter(|(w, _)| *w == worker) {
                            let now = unix_ns();
                            let rtt = now.saturating_sub(sent);
                            if let Some(m) = members.get_mut(&w) {
                                *pongs.entry(w).or_default() += 1;
                                if rtt < m.rtt_ns {
                                    m.rtt_ns = rtt;
                                    m.offset_ns = theirs as i64 - (sent + rtt / 2) as i64;
                                }
                            }
                        }
                    }
                    _ => {}
                },
                Some(Event::Gone { worker, conn, why }) => {
                    if members.get(&worker).is_some_and(|m| m.session.conn.stable_id() == conn) {
                        let name = members.get(&worker).map(|m| m.session.name.clone()).unwrap_or_default();
                        cancel(&members, "another worker left before the start");
                        bail!("worker {name} left before the start: {why}");
                    }
                }
                Some(_) => {}
                None => bail!("the coordinator's endpoint closed"),
            },
            _ = tokio::time::sleep_until(deadline) => {
                cancel(&members, "the workers took too long to prepare");
                bail!(
                    "{} of {} workers were ready within {}",
                    ready.len(),
                    members.len(),
                    crate::units::format_duration(PREPARE_TIMEOUT)
                );
            }
            _ = super::signal() => {
                cancel(&members, "the coordinator was stopped");
                bail!("stopped before the start");
            }
        }
    }
    let slowest = members.values().map(|m| m.rtt_ns).max().unwrap_or(0);
    let lead = Duration::from_secs(1).max(Duration::from_nanos(slowest.saturating_mul(4)));
    let start_unix = unix_ns() + lead.as_nanos() as u64;
    let start = Instant::now() + lead;
    for m in members.values() {
        let at = (start_unix as i64 + m.offset_ns).max(0) as u64;
        m.session.send(Down::Start {
            run,
            at_unix_ns: at,
        });
    }
    tracing::info!(
        "starting {} worker(s) in {} (clock offsets measured to ±{:.2} ms)",
        members.len(),
        crate::units::format_duration(lead),
        slowest as f64 / 2e6
    );
    Ok((prepared, members, start_unix, start))
}
