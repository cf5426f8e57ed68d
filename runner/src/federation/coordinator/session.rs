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

use crate::federation::protocol::{ComponentHeader, Down, Resume, SnapshotFrame, Up, PROTOCOL};
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

/// Accepts connections until the endpoint closes.
pub async fn accept(
    endpoint: quinn::Endpoint,
    secret: Arc<str>,
    ids: Arc<AtomicU32>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let (secret, ids, events) = (secret.clone(), ids.clone(), events.clone());
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("a connection from {addr} failed before its hello: {e}");
                    return;
                }
            };
            if let Err(why) = handshake(conn.clone(), &secret, &ids, &events).await {
                tracing::warn!("refused a connection from {addr}: {why}");
                conn.close(1u32.into(), why.as_bytes());
            }
        });
    }
}

async fn handshake(
    conn: quinn::Connection,
    secret: &str,
    ids: &AtomicU32,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| "no control stream within 10 s".to_owned())?
        .map_err(|e| format!("no control stream: {e}"))?;
    let hello = tokio::time::timeout(HELLO_TIMEOUT, wire::read::<Up>(&mut recv))
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
    } else if !secret_matches(&given, secret) {
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
    let id = match resume {
        Some(r) => r.worker,
        None => ids.fetch_add(1, Ordering::Relaxed),
    };
    wire::write(
        &mut send,
        &Down::Welcome {
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            worker: id,
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
                        if events.send(Event::Up { worker: id, msg }).is_err() {
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
            let _ = events.send(Event::Gone {
                worker: id,
                conn: stable,
                why,
            });
        });
    }
    // Snapshot streams.
    {
        let (events, conn) = (events.clone(), conn.clone());
        tokio::spawn(async move {
            while let Ok(mut r) = conn.accept_uni().await {
                let (events, conn) = (events.clone(), conn.clone());
                tokio::spawn(async move {
                    loop {
                        match wire::read_sized::<SnapshotFrame>(&mut r).await {
                            Ok(Some((frame, bytes))) => {
                                let e = Event::Snapshot {
                                    worker: id,
                                    frame: Box::new(frame),
                                    bytes,
                                };
                                if events.send(e).is_err() {
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
        });
    }
    let _ = events.send(Event::Joined { session, resume });
    Ok(())
}
