//! Snapshots on their way to the coordinator, kept until acknowledged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::lock;
use crate::events::{EventKind, StopBy};
use crate::federation::protocol::SnapshotFrame;
use crate::federation::wire;
use crate::run::{Sink, Snapshot};

/// A worker run's snapshots on their way to the coordinator.
#[derive(Default)]
pub(super) struct Outbox {
    inner: Mutex<OutboxInner>,
    pub(super) notify: Notify,
}

#[derive(Default)]
struct OutboxInner {
    /// Unacknowledged frames, by snapshot number.
    pub(super) frames: VecDeque<(u64, Arc<Vec<u8>>)>,
    pub(super) last_seq: u64,
    /// The run's last snapshot has been taken.
    pub(super) finished: bool,
}

impl Outbox {
    pub(super) fn push(&self, seq: u64, frame: Vec<u8>) {
        {
            let mut i = lock(&self.inner);
            i.frames.push_back((seq, Arc::new(frame)));
            i.last_seq = seq;
        }
        self.notify.notify_one();
    }

    pub(super) fn after(&self, sent: u64) -> Vec<(u64, Arc<Vec<u8>>)> {
        lock(&self.inner)
            .frames
            .iter()
            .filter(|(s, _)| *s > sent)
            .cloned()
            .collect()
    }

    pub(super) fn ack(&self, seq: u64) {
        let mut i = lock(&self.inner);
        while i.frames.front().is_some_and(|(s, _)| *s <= seq) {
            i.frames.pop_front();
        }
    }

    pub(super) fn finish(&self, last: u64) {
        let mut i = lock(&self.inner);
        i.finished = true;
        i.last_seq = i.last_seq.max(last);
    }

    pub(super) fn finished(&self) {
        lock(&self.inner).finished = true;
        self.notify.notify_one();
    }

    pub(super) fn is_finished(&self) -> bool {
        lock(&self.inner).finished
    }

    pub(super) fn all_acked(&self) -> bool {
        lock(&self.inner).frames.is_empty()
    }

    pub(super) fn last_seq(&self) -> u64 {
        lock(&self.inner).last_seq
    }
}

/// The sink that queues each snapshot for the coordinator.
pub(super) struct Link {
    pub(super) run: u64,
    pub(super) outbox: Arc<Outbox>,
}

impl Sink for Link {
    fn snapshot(&mut self, s: &Snapshot) {
        let frame = SnapshotFrame {
            run: self.run,
            snapshot: Snapshot {
                // The coordinator keeps its own record of load changes; a
                // stop at this worker's memory ceiling is the worker's own.
                events: s
                    .events
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.kind,
                            EventKind::Stop {
                                by: StopBy::Memory,
                                ..
                            }
                        )
                    })
                    .cloned()
                    .collect(),
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
