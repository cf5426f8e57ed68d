//! The coordinator of a distributed run (`runner run ... --workers K`): it
//! waits for its workers, splits the plan among them by capacity, ships the
//! component by hash to those that lack it, measures each worker's clock
//! against its own and starts them all at one instant, then drives the run
//! ([`driver`]) from their merged snapshots, exactly as a local run's
//! driver does from its own: same hub, same sinks, same summary.

mod driver;
pub mod merge;
pub mod session;
mod start;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;

use self::session::{Event, Session};
use super::tls::Identity;
use super::token::Token;
use crate::plan::share::Share;
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
    /// Worker processes to start on this machine once listening (all of
    /// `workers`), or 0 to wait for workers started elsewhere.
    pub local: usize,
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
    let local_addr = endpoint.local_addr().context("the endpoint's address")?;
    let token = Token {
        fingerprint: opts.identity.fingerprint,
        secret: opts.secret.clone(),
    };
    let shown = opts
        .advertise
        .clone()
        .unwrap_or_else(|| local_addr.to_string());
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
    let mut local = None;
    if opts.local > 0 {
        tracing::info!("starting {} worker processes", opts.local);
        let launch = super::local::Launch {
            count: opts.local,
            coordinator: local_addr,
            token: token.clone(),
        };
        local = Some(super::local::LocalWorkers::spawn(&launch)?);
    } else {
        tracing::info!(
            "waiting for {} worker(s) (up to {}); on each machine run: runner join --coordinator {shown} {credentials}",
            opts.workers,
            crate::units::format_duration(opts.join_timeout)
        );
    }
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
    let sessions = gather(&mut events, &opts, local.as_mut()).await;
    let sessions = match sessions {
        Ok(s) => s,
        Err(e) => {
            accept.abort();
            close(&endpoint, "the run did not start").await;
            return Err(e);
        }
    };
    let bytes_for_joiners = bytes.clone();
    let result = start::start(prepared, bytes, &opts, run, sessions, &mut events).await;
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
        local,
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
    mut local: Option<&mut super::local::LocalWorkers>,
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
                        tracing::warn!("worker {worker} left while the run waited for the others: {why}");
                        joined.remove(&worker);
                    }
                }
                Some(_) => {}
                None => bail!("the coordinator's endpoint closed"),
            },
            exit = async {
                match local.as_deref_mut() {
                    Some(l) => l.next_exit().await,
                    None => std::future::pending().await,
                }
            } => bail!("{} {} before it joined", exit.name, exit.why),
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
