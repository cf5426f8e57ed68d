//! What the worker does with each frame from the coordinator, and the
//! start of a prepared run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lease::watch_lease;
use super::outbox::{Link, Outbox};
use super::{describe, instant_of, lock, unix_ns, SessionEnd, Slot, Stage, Worker};
use crate::federation::protocol::{Down, Up, WireCommand};
use crate::federation::wire;
use crate::run::control::Command;
use crate::run::{Controller, LoadChange, LoadTarget, Sink, StopBy};

impl Worker {
    pub(super) async fn handle(
        &mut self,
        down: Down,
        send: &mut quinn::SendStream,
    ) -> Result<(), SessionEnd> {
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
                let mut spec = *spec;
                spec.enforced = self.opts.enforced.clone();
                let mut slot = Slot {
                    run,
                    spec,
                    share,
                    lease,
                    stage: Stage::Fetching,
                    outbox: Arc::new(Outbox::default()),
                    lease_until: Arc::new(Mutex::new(Instant::now() + lease)),
                    ended_sent: false,
                    swap_to: None,
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
                    wire::write(send, &Up::Alive { run }).await.map_err(retry)?;
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
            Down::Swap { run, name, sha256 } => self.swap(run, name, sha256, send).await?,
            Down::Grant { run, iterations } => {
                if let Some(c) = self.controller(run) {
                    c.send_now(Command::Grant { iterations });
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

    pub(super) fn controller(&self, run: u64) -> Option<&Controller> {
        match &self.slot {
            Some(Slot {
                run: r,
                stage: Stage::Running { controller, .. },
                ..
            }) if *r == run => Some(controller),
            _ => None,
        }
    }

    pub(super) fn start(&mut self, run: u64, at_unix_ns: u64) {
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
                let swapper = handle.swapper();
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
                    swapper,
                    done,
                    watchdog,
                };
            }
        }
    }
}
