//! The coordinator's side of each worker connection: the handshake (the
//! hello checked for protocol version and secret, a clear refusal
//! otherwise), then a reader of the control stream, a reader of the
//! snapshot streams, and a writer, all reporting to the coordinator's one
//! event channel. A connection that sends anything malformed is closed
//! with the reason; the coordinator goes on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::federation::protocol::{
    ComponentHeader, Down, Resume, SnapshotFrame, Up, MAX_HELLO, PROTOCOL,
};
use crate::federation::token::secret_matches;
use crate::federation::wire;

/// Longest a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker connection that passed the hello.
#[derive(Clone)]
pub struct Session {
    /// The worker's id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its relative capacity.
    pub capacity: f64,
    /// Where it connects from.
    pub addr: SocketAddr,
    /// Frames to send it.
    pub tx: mpsc::UnboundedSender<Down>,
    /// The connection.
    pub conn: quinn::Connection,
}

impl Session {
    /// Queues a frame for the worker (dropped if it is gone).
    pub fn send(&self, down: Down) {
        let _ = self.tx.send(down);
    }

    /// Sends a component on a stream of its own.
    pub fn send_component(&self, sha256: String, bytes: Arc<[u8]>) {
        let conn = self.conn.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let sent = async {
                let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
                let head = ComponentHeader {
                    sha256,
                    len: bytes.len() as u64,
                };
                wire::write(&mut s, &head)
                    .await
                    .map_err(|e| e.to_string())?;
                s.write_all(&bytes).await.map_err(|e| e.to_string())?;
                s.finish().map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = sent {
                tracing::warn!("could not send the component to worker {name}: {e}");
            }
        });
    }
}

/// What connections tell the coordinator.
pub enum Event {
    /// A worker joined (or came back, when `resume` is set).
    Joined {
        /// The session.
        session: Session,
        /// What it was doing before it lost its connection.
        resume: Option<Resume>,
    },
    /// A control frame from worker `worker`.
    Up {
        /// The worker.
        worker: u32,
        /// The frame.
        msg: Up,
    },
    /// A snapshot from worker `worker`.
    Snapshot {
        /// The worker.
        worker: u32,
        /// The frame.
        frame: Box<SnapshotFrame>,
        /// Its size on the wire, bytes.
        bytes: usize,
    },
    /// Worker `worker`'s connection `conn` ended.
    Gone {
        /// The worker.
        worker: u32,
        /// The connection's stable id, so a late notice of an old
        /// connection does not mark a reconnected worker gone.
        conn: usize,
        /// Why.
        why: String,
    },
}

/// Workers whose connection is gone and who may resume their part of run
/// (worker id → run id); the driver keeps it, the handshake consults it.
pub type Resumable = Arc<std::sync::Mutex<std::collections::HashMap<u32, u64>>>;

/// What the accepting side shares.
#[derive(Clone)]
pub struct Gate {
    /// The secret workers must know (none with a CA: the TLS handshake
    /// already checked the worker's certificate).
    pub secret: Option<Arc<str>>,
    /// Fresh worker ids.
    pub ids: Arc<AtomicU32>,
    /// Who may resume.
    pub resumable: Resumable,
    /// Handshakes in progress (a peer that never says hello holds one).
    pub pending: Arc<tokio::sync::Semaphore>,
}

/// Handshakes in progress at once.
pub const MAX_PENDING: usize = 64;

/// Accepts connections until the endpoint closes.
pub async fn accept(endpoint: quinn::Endpoint, gate: Gate, events: mpsc::Sender<Event>) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = gate.pending.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let (gate, events) = (gate.clone(), events.clone());
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("a connection from {addr} failed before its hello: {e}");
                    return;
                }
            };
            let shook = handshake(conn.clone(), &gate, &events).await;
            drop(permit);
            if let Err(why) = shook {
                tracing::warn!("refused a connection from {addr}: {why}");
                conn.close(1u32.into(), why.as_bytes());
            }
        });
    }
}

async fn handshake(
    conn: quinn::Connection,
    gate: &Gate,
    events: &mpsc::Sender<Event>,
) -> Result<(), String> {
    let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| "no control stream within 10 s".to_owned())?
        .map_err(|e| format!("no control stream: {e}"))?;
    let hello = tokio::time::timeout(
        HELLO_TIMEOUT,
        wire::read_limited::<Up>(&mut recv, MAX_HELLO),
    )
    .await
    .map_err(|_| "no hello within 10 s".to_owned())?
    .map_err(|e| e.to_string())?
    .ok_or("the connection closed before its hello")?;
    let Up::Hello {
        protocol,
        version,
        name,
        capacity,
        secret: given,
        resume,
    } = hello
    else {
        return Err("the first frame was not a hello".into());
    };
    let refusal = if protocol != PROTOCOL {
        Some(format!(
            "the worker speaks protocol {protocol} (runner {version}), this coordinator {PROTOCOL} (runner {}): run the same runner version on both",
            env!("CARGO_PKG_VERSION")
        ))
    } else if gate
        .secret
        .as_ref()
        .is_some_and(|secret| !secret_matches(&given, secret))
    {
        Some(
            "wrong token: the secret does not match; use the token this coordinator printed".into(),
        )
    } else if !(capacity.is_finite() && capacity > 0.0 && capacity <= 1e9) {
        Some(format!("a capacity of {capacity} is not a positive number"))
    } else {
        None
    };
    if let Some(reason) = refusal {
        let _ = wire::write(
            &mut send,
            &Down::Refused {
                reason: reason.clone(),
            },
        )
        .await;
        let _ = send.finish();
        // Give the refusal time to arrive before the connection closes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        return Err(reason);
    }
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    // A worker resumes its part only of this coordinator's run, and only
    // if its connection is gone: nobody takes over another's place.
    let resumed = resume.is_some_and(|r| {
        let mut open = gate.resumable.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&r.worker) == Some(&r.run) && open.remove(&r.worker).is_some()
    });
    let id = match resume {
        Some(r) if resumed => r.worker,
        _ => gate.ids.fetch_add(1, Ordering::Relaxed),
    };
    let resume = resume.filter(|_| resumed);
    wire::write(
        &mut send,
        &Down::Welcome {
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            worker: id,
            resumed,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Down>();
    let session = Session {
        id,
        name: if name.is_empty() {
            format!("worker-{id}")
        } else {
            name
        },
        capacity,
        addr: conn.remote_address(),
        tx,
        conn: conn.clone(),
    };
    let stable = conn.stable_id();
    // Writer.
    tokio::spawn(async move {
        while let Some(down) = rx.recv().await {
            if wire::write(&mut send, &down).await.is_err() {
                return;
            }
        }
    });
    // Control-stream reader.
    {
        let (events, conn) = (events.clone(), conn.clone());
        tokio::spawn(async move {
            let why = loop {
                match wire::read::<Up>(&mut recv).await {
                    Ok(Some(msg)) => {
                        if events.send(Event::Up { worker: id, msg }).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "the worker closed its control stream".to_owned(),
                    Err(e) => {
                        let why = e.to_string();
                        if matches!(
                            e,
                            wire::WireError::Malformed(_) | wire::WireError::TooLarge(_)
                        ) {
                            tracing::warn!("worker {id} sent {why}; closing its connection");
                            conn.close(2u32.into(), why.as_bytes());
                        }
                        break why;
                    }
                }
            };
            let _ = events
                .send(Event::Gone {
                    worker: id,
                    conn: stable,
                    why,
                })
                .await;
        });
    }
    // The snapshot stream: one per connection (a second closes it).
    {
        let (events, conn) = (events.clone(), conn.clone());
        tokio::spawn(async move {
            let Ok(mut r) = conn.accept_uni().await else {
                return;
            };
            {
                let conn = conn.clone();
                tokio::spawn(async move {
                    if conn.accept_uni().await.is_ok() {
                        tracing::warn!(
                            "worker {id} opened a second snapshot stream; closing its connection"
                        );
                        conn.close(2u32.into(), b"one snapshot stream per connection");
                    }
                });
            }
            loop {
                match wire::read_sized::<SnapshotFrame>(&mut r).await {
                    Ok(Some((frame, bytes))) => {
                        let e = Event::Snapshot {
                            worker: id,
                            frame: Box::new(frame),
                            bytes,
                        };
                        if events.send(e).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        if matches!(
                            e,
                            wire::WireError::Malformed(_) | wire::WireError::TooLarge(_)
                        ) {
                            tracing::warn!("worker {id} sent {e}; closing its connection");
                            conn.close(2u32.into(), e.to_string().as_bytes());
                        }
                        return;
                    }
                }
            }
        });
    }
    let _ = events.send(Event::Joined { session, resume }).await;
    Ok(())
}
