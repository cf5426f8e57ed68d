//! One connection to a coordinator: the hello, then frames served until
//! it ends; the current run moved along (readiness, snapshots, its end).

use std::time::Duration;

use tokio::sync::mpsc;

use super::component::Fetched;
use super::{ended, SessionEnd, Stage, Worker, HELLO_TIMEOUT};
use crate::federation::protocol::{Down, Resume, Up, PROTOCOL};
use crate::federation::wire;

impl Worker {
    /// With a CA, a connection the coordinator closed for a TLS reason:
    /// it refused this worker's certificate (TLS 1.3 checks a client's
    /// certificate after the client considers the handshake done).
    fn refused(&self, conn: &quinn::Connection) -> Option<SessionEnd> {
        let ca = matches!(self.opts.trust, crate::federation::tls::Trust::Ca { .. });
        let why = conn.close_reason()?.to_string();
        (ca && why.contains("cryptographic handshake failed")).then(|| {
            SessionEnd::Fatal(format!(
                "the coordinator at {} refused this worker's certificate ({why}): use one signed by the coordinator's CA",
                self.opts.coordinator
            ))
        })
    }

    /// One connection: hello, then serve frames until it ends.
    pub(super) async fn session(&mut self) -> SessionEnd {
        let conn = match self.connect().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => {
                return self.refused(&conn).unwrap_or_else(|| {
                    SessionEnd::Retry(format!("cannot open the control stream: {e}"))
                })
            }
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
            secret: self.opts.secret.clone(),
            resume,
        };
        if let Err(e) = wire::write(&mut send, &hello).await {
            return self
                .refused(&conn)
                .unwrap_or_else(|| SessionEnd::Retry(e.to_string()));
        }
        match tokio::time::timeout(HELLO_TIMEOUT, wire::read::<Down>(&mut recv)).await {
            Err(_) => return SessionEnd::Retry("no answer to the hello".into()),
            Ok(Err(e)) => {
                return self
                    .refused(&conn)
                    .unwrap_or_else(|| SessionEnd::Retry(e.to_string()))
            }
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
        let mut downs = wire::Frames::<Down>::spawn(recv);
        loop {
            let outbox = self.slot.as_ref().map(|s| s.outbox.clone());
            tokio::select! {
                frame = downs.next() => match frame {
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
    pub(super) async fn progress(
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
}
