//! Steering a run while it goes on: [`Command`]s sent through a
//! [`Controller`], each answered on its own reply channel (as Goose's
//! controller does), and the [`ControlEvent`]s they leave in the snapshot
//! stream.

use std::sync::Arc;
use std::time::Duration;

use host_api::{LoadTestPre, VuState};
use tokio::sync::{mpsc, oneshot};

pub use crate::events::{ControlEvent, EventKind, StopBy};
use crate::units;

/// What can be asked of a running run.
pub enum Command {
    /// Stop starting iterations; in-flight ones get the grace period (or,
    /// with `abort`, are cancelled now). A second stop aborts.
    Stop {
        /// Cancel in-flight iterations now.
        abort: bool,
        /// Who asked.
        by: StopBy,
        /// Answered once the stop is under way.
        reply: Option<oneshot::Sender<ControlEvent>>,
    },
    /// Change a class's VU count or arrival rate.
    Load {
        /// What to change.
        change: LoadChange,
        /// The events the change made (one per class), or why it cannot
        /// be made.
        reply: oneshot::Sender<Result<Vec<ControlEvent>, ControlError>>,
    },
    /// Take over VUs of a closed-model class from a lost worker (a worker
    /// of a distributed run).
    Adopt {
        /// The class.
        class: String,
        /// Global VU indices.
        indices: Vec<u32>,
        /// When they start.
        at: std::time::Instant,
    },
    /// Run these fractions of open-model classes' rates from now on (a
    /// worker whose share changed).
    Rescale {
        /// (class, fraction).
        fractions: Vec<(String, f64)>,
    },
    /// Run this many more shared iterations (a worker given part of a
    /// lost one's).
    Grant {
        /// Iterations to add to the pool.
        iterations: u64,
    },
    /// Hand VUs of a closed-model class to another worker; the reply comes
    /// once none of them is iterating here any more.
    Release {
        /// The class.
        class: String,
        /// Global VU indices (sorted).
        indices: Vec<u32>,
        /// Answered when they have all left.
        reply: oneshot::Sender<()>,
    },
    /// Continue on another scenario component.
    Swap {
        /// The new component, compiled and checked.
        swap: Box<Swap>,
        /// The event the swap made, or why it was refused.
        reply: oneshot::Sender<Result<ControlEvent, ControlError>>,
    },
}

/// A change of load: a class's VU count (closed model) or arrival rate
/// (open model), reached linearly over `ramp`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadChange {
    /// The class; `None` for all classes of the model the change fits,
    /// shared in proportion to their current load.
    pub class: Option<String>,
    /// The new value.
    pub target: LoadTarget,
    /// How long the change takes (zero: at once).
    pub ramp: Duration,
}

/// The value a [`LoadChange`] sets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoadTarget {
    /// Running VUs of a closed-model class.
    Vus(u32),
    /// Iterations started per second of an open-model class.
    Rate(f64),
}

/// A checked component, ready to be put in force.
pub struct Swap {
    /// The linked component.
    pub pre: LoadTestPre<VuState>,
    /// Its bytes (a coordinator ships them to its workers).
    pub bytes: Arc<[u8]>,
    /// Its name (the uploaded file's) and hash.
    pub scenario: crate::spec::ScenarioRef,
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No class of that name.
    #[error("the run has no VU class {0:?} (its classes: {1})")]
    NoSuchClass(String, String),
    /// The change does not fit the class's load model.
    #[error("{0}")]
    WrongModel(String),
    /// More than the class (or run) was sized for.
    #[error("{0}")]
    TooMuch(String),
    /// The run is over (or stopping).
    #[error("the run is no longer running")]
    Finished,
    /// The new scenario cannot be used.
    #[error("{0}")]
    Scenario(String),
}

/// The sending side of a run's control channel; cheap to clone.
#[derive(Clone)]
pub struct Controller {
    tx: mpsc::Sender<Command>,
}

impl Controller {
    /// A controller and the receiving end for the run's driver.
    pub fn channel() -> (Controller, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(64);
        (Controller { tx }, rx)
    }

    /// Asks the run to stop; returns the stop event once it is under way.
    pub async fn stop(&self, abort: bool, by: StopBy) -> Result<ControlEvent, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stop {
            abort,
            by,
            reply: Some(reply),
        })
        .await?;
        rx.await.map_err(|_| ControlError::Finished)
    }

    /// Asks the run to stop without waiting for an answer (from a signal
    /// handler).
    pub fn stop_now(&self, abort: bool, by: StopBy) {
        let _ = self.tx.try_send(Command::Stop {
            abort,
            by,
            reply: None,
        });
    }

    /// Changes a class's VU count or rate; one event per class changed.
    pub async fn change(&self, change: LoadChange) -> Result<Vec<ControlEvent>, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Load { change, reply }).await?;
        rx.await.map_err(|_| ControlError::Finished)?
    }

    /// Sends a command without waiting (adoption and rescaling on a
    /// worker, which have no reply).
    pub fn send_now(&self, c: Command) {
        let _ = self.tx.try_send(c);
    }

    /// Swaps the scenario.
    pub async fn swap(&self, swap: Swap) -> Result<ControlEvent, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Swap {
            swap: Box::new(swap),
            reply,
        })
        .await?;
        rx.await.map_err(|_| ControlError::Finished)?
    }

    async fn send(&self, c: Command) -> Result<(), ControlError> {
        self.tx.send(c).await.map_err(|_| ControlError::Finished)
    }
}

/// Applies `change` at `t` seconds to `classes`, in a run that lasts
/// `end` seconds; returns one event per class changed.
pub(crate) fn apply(
    classes: &[Arc<crate::exec::Class>],
    change: &LoadChange,
    t: f64,
    end: f64,
) -> Result<Vec<ControlEvent>, ControlError> {
    use crate::exec::{lock, Load};
    let names = || {
        classes
            .iter()
            .map(|c| c.name.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let open = matches!(change.target, LoadTarget::Rate(_));
    let chosen: Vec<&Arc<crate::exec::Class>> = match &change.class {
        Some(name) => {
            let c = classes
                .iter()
                .find(|c| *c.name == **name)
                .ok_or_else(|| ControlError::NoSuchClass(name.clone(), names()))?;
            if c.is_open() != open {
                return Err(ControlError::WrongModel(wrong_model(&c.name, open)));
            }
            vec![c]
        }
        None => {
            let fit: Vec<_> = classes.iter().filter(|c| c.is_open() == open).collect();
            if fit.is_empty() {
                return Err(ControlError::WrongModel(if open {
                    "no class of this run is in the open model: set \"vus\" instead of \"rate\""
                        .into()
                } else {
                    "no class of this run is in the closed model: set \"rate\" instead of \"vus\""
                        .into()
                }));
            }
            fit
        }
    };
    // Shares of the new total, in proportion to what each class runs now.
    let now: Vec<f64> = chosen.iter().map(|c| c.load.value_at(t)).collect();
    let sum: f64 = now.iter().sum();
    let shares: Vec<f64> = now
        .iter()
        .map(|v| {
            if sum > 0.0 {
                v / sum
            } else {
                1.0 / chosen.len() as f64
            }
        })
        .collect();
    let total = match change.target {
        LoadTarget::Vus(n) => f64::from(n),
        LoadTarget::Rate(r) => r,
    };
    let values: Vec<f64> = match change.target {
        LoadTarget::Vus(n) => split_whole(n, &shares).into_iter().map(f64::from).collect(),
        LoadTarget::Rate(_) => shares.iter().map(|s| s * total).collect(),
    };
    // Check everything before changing anything.
    for (c, v) in chosen.iter().zip(&values) {
        if let Load::Closed {
            max, changeable, ..
        } = &c.load
        {
            if !changeable {
                return Err(ControlError::WrongModel(format!(
                    "class {:?} runs a set number of iterations; its VU count cannot change",
                    c.name
                )));
            }
            if *v > f64::from(*max) {
                return Err(ControlError::TooMuch(format!(
                    "class {:?} can run at most {max} VUs (start the run with a larger --max-vus to raise it further)",
                    c.name
                )));
            }
        }
        if let LoadTarget::Rate(r) = change.target {
            if !(0.0..=crate::spec::MAX_RATE).contains(&r) {
                return Err(ControlError::TooMuch(format!(
                    "a rate must be 0 to {} per second",
                    crate::spec::MAX_RATE
                )));
            }
        }
    }
    let ramp_s = change.ramp.as_secs_f64();
    let mut events = Vec::new();
    for ((c, v), from) in chosen.iter().zip(values).zip(now) {
        let class = c.name.to_string();
        let over = if change.ramp.is_zero() {
            String::new()
        } else {
            format!(" over {}", units::format_duration(change.ramp))
        };
        let (kind, message) = match &c.load {
            Load::Closed { vus, .. } => {
                let mut p = lock(vus);
                *p = p.retarget(t, v, change.ramp, end);
                (
                    EventKind::Vus {
                        class: class.clone(),
                        from,
                        to: v,
                        ramp_s,
                    },
                    format!("class {class}: {from:.0} → {v:.0} VUs{over}"),
                )
            }
            Load::Open {
                rate,
                global,
                version,
                ..
            } => {
                // A worker of a distributed run runs its fraction of it.
                let local = v * *lock(&c.fraction);
                {
                    let mut g = lock(global);
                    *g = g.retarget(t, v, change.ramp, end);
                }
                let mut p = lock(rate);
                *p = p.retarget(t, local, change.ramp, end);
                version.fetch_add(1, std::sync::atomic::Ordering::Release);
                (
                    EventKind::Rate {
                        class: class.clone(),
                        from,
                        to: v,
                        ramp_s,
                    },
                    format!("class {class}: {from:.1} → {v:.1} iterations/s{over}"),
                )
            }
        };
        events.push(ControlEvent { t, kind, message });
    }
    Ok(events)
}

fn wrong_model(class: &str, open: bool) -> String {
    if open {
        format!("class {class:?} runs in the closed model (VUs looping): set \"vus\", not \"rate\"")
    } else {
        format!(
            "class {class:?} runs in the open model (arrivals at a rate): set \"rate\", not \"vus\""
        )
    }
}

/// Splits `total` into whole parts in proportion to `shares` (summing to
/// one), by largest remainder, so the parts add up exactly.
pub(crate) fn split_whole(total: u32, shares: &[f64]) -> Vec<u32> {
    let exact: Vec<f64> = shares.iter().map(|s| s * f64::from(total)).collect();
    let mut parts: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let given: u32 = parts.iter().sum();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().take(total.saturating_sub(given) as usize) {
        parts[i] += 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_parts_add_up() {
        assert_eq!(split_whole(10, &[0.3, 0.7]), vec![3, 7]);
        assert_eq!(split_whole(10, &[1.0 / 3.0; 3]).iter().sum::<u32>(), 10);
        assert_eq!(split_whole(1, &[0.5, 0.5]), vec![1, 0]);
    }
}
