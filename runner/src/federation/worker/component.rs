//! Components by hash: a small cache, streams read off the control loop
//! and checked, and a run prepared once its component is here.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{SessionEnd, Slot, Stage, Worker};
use crate::federation::protocol::{ComponentHeader, Up, MAX_COMPONENT};
use crate::federation::wire;
use crate::run;

/// Components kept by hash.
const CACHE: usize = 8;

/// Longest a component may take to arrive.
const COMPONENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A component read from its stream (or why not).
pub(super) struct Fetched {
    pub(super) run: u64,
    pub(super) sha: String,
    pub(super) got: Result<Arc<[u8]>, String>,
}

impl Worker {
    pub(super) fn cached(&mut self, sha: &str) -> Option<Arc<[u8]>> {
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
    pub(super) fn fetch_component(&self, mut r: quinn::RecvStream, done: mpsc::Sender<Fetched>) {
        let wanted = self
            .slot
            .as_ref()
            .and_then(|s| match (&s.stage, &s.swap_to) {
                (Stage::Fetching, _) => Some((s.run, s.spec.scenario.sha256.clone())),
                (Stage::Running { .. }, Some((_, sha))) => Some((s.run, sha.clone())),
                _ => None,
            });
        let Some((run, want)) = wanted else {
            // Nobody asked for it.
            let _ = r.stop(0u32.into());
            return;
        };
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
    pub(super) async fn component_arrived(
        &mut self,
        f: Fetched,
        send: &mut quinn::SendStream,
    ) -> Result<(), SessionEnd> {
        let swap_to = self
            .slot
            .as_mut()
            .filter(|s| s.run == f.run && s.swap_to.as_ref().is_some_and(|(_, sha)| *sha == f.sha))
            .and_then(|s| s.swap_to.take());
        if let Some((name, sha256)) = swap_to {
            match f.got {
                Ok(bytes) => {
                    self.cache.push_front((f.sha, bytes.clone()));
                    self.cache.truncate(CACHE);
                    self.swap_with(f.run, name, sha256, bytes);
                }
                Err(error) => {
                    let error = format!("the component it received is unusable: {error}");
                    let _ = self.ups.send(Up::Swapped {
                        run: f.run,
                        sha256,
                        error: Some(error),
                    });
                }
            }
            return Ok(());
        }
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

    pub(super) fn prepare(&self, slot: &Slot, bytes: Arc<[u8]>) -> Stage {
        let (spec, share) = (slot.spec.clone(), slot.share.clone());
        Stage::Preparing(self.load.spawn(async move {
            run::prepare_as(spec, bytes, run::Role::Worker(share))
                .await
                .map_err(|e| e.to_string())
        }))
    }
}
