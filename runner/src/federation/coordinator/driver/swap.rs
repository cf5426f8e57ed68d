//! A distributed run continued on another component: the coordinator has
//! checked it; every connected worker fetches it by hash, checks it and
//! puts it in force, and the swap is answered once they all have (or a
//! deadline passed). Workers that join or reconnect later get the new one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Driver, Status};
use crate::events::{short, ControlEvent, EventKind, Phase};
use crate::federation::protocol::Down;
use crate::run::control::{ControlError, Swap};

/// Longest the workers may take to fetch, check and switch.
const SWAP_TIMEOUT: Duration = Duration::from_secs(60);

/// A swap under way.
pub(super) struct Swapping {
    /// Workers yet to answer, by id: their names.
    waiting: BTreeMap<u32, String>,
    /// Workers that could not swap: (name, why).
    failed: Vec<(String, String)>,
    /// How many did.
    done: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<ControlEvent, ControlError>>,
}

impl Driver {
    /// Starts swapping every worker to the (checked) component `swap`.
    pub(super) fn swap(
        &mut self,
        swap: Swap,
        reply: oneshot::Sender<Result<ControlEvent, ControlError>>,
    ) {
        if self.stopping.is_some() {
            let _ = reply.send(Err(ControlError::Finished));
            return;
        }
        if self.swapping.is_some() {
            let _ = reply.send(Err(ControlError::Scenario(
                "another scenario swap is under way; try again when it is done".into(),
            )));
            return;
        }
        let (run, scenario) = (self.run, swap.scenario);
        self.bytes = swap.bytes;
        self.scenario = scenario.clone();
        let mut waiting = BTreeMap::new();
        for (id, w) in &self.workers {
            if w.status == Status::Live && w.gone_since.is_none() {
                w.m.session.send(Down::Swap {
                    run,
                    name: scenario.name.clone(),
                    sha256: scenario.sha256.clone(),
                });
                waiting.insert(*id, w.m.session.name.clone());
            }
        }
        tracing::info!(
            "swapping the scenario to {} ({}) on {} worker(s)",
            scenario.name,
            short(&scenario.sha256),
            waiting.len()
        );
        self.swapping = Some(Swapping {
            waiting,
            failed: Vec::new(),
            done: 0,
            deadline: Instant::now() + SWAP_TIMEOUT,
            reply,
        });
        self.swap_due();
    }

    /// Worker `id` answered the swap to `sha256`.
    pub(super) fn swapped(&mut self, id: u32, sha256: &str, error: Option<String>) {
        if sha256 != self.scenario.sha256 {
            return;
        }
        let Some(s) = self.swapping.as_mut() else {
            return;
        };
        let Some(name) = s.waiting.remove(&id) else {
            return;
        };
        match error {
            None => s.done += 1,
            Some(e) => s.failed.push((name, e)),
        }
        self.swap_due();
    }

    /// Answers the swap under way once no live worker is left to answer
    /// (or the deadline passed).
    pub(super) fn swap_due(&mut self) {
        let Some(s) = self.swapping.as_mut() else {
            return;
        };
        let workers = &self.workers;
        s.waiting
            .retain(|id, _| workers.get(id).is_some_and(|w| w.status == Status::Live));
        if !s.waiting.is_empty() && Instant::now() < s.deadline {
            return;
        }
        let Some(s) = self.swapping.take() else {
            return;
        };
        let mut failed = s.failed;
        failed.extend(
            s.waiting
                .into_values()
                .map(|n| (n, "no answer in time".to_owned())),
        );
        let t = self.start.elapsed().as_secs_f64();
        let sc = self.scenario.clone();
        if s.done == 0 && !failed.is_empty() {
            let _ = s.reply.send(Err(ControlError::Scenario(format!(
                "no worker could swap to {}: {}; the run goes on unchanged",
                sc.name,
                list(&failed)
            ))));
            return;
        }
        if let Some(p) = self.phases.last_mut() {
            p.to_s = t;
        }
        self.phases.push(Phase {
            name: sc.name.clone(),
            sha256: sc.sha256.clone(),
            from_s: t,
            to_s: t,
        });
        let generation = self.phases.len() as u64 - 1;
        let mut message = format!(
            "scenario swapped to {} ({}) on {} worker(s); each VU continues on it from its next iteration",
            sc.name,
            short(&sc.sha256),
            s.done
        );
        if !failed.is_empty() {
            message.push_str(&format!("; not on {}", list(&failed)));
        }
        let e = ControlEvent {
            t,
            kind: EventKind::Scenario {
                sha256: sc.sha256,
                generation,
            },
            message,
        };
        self.announce(e.clone());
        let _ = s.reply.send(if failed.is_empty() {
            Ok(e)
        } else {
            Err(ControlError::Scenario(e.message))
        });
    }
}

fn list(failed: &[(String, String)]) -> String {
    failed
        .iter()
        .map(|(n, why)| format!("worker {n} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}
