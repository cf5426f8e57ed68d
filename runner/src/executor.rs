//! The open model: iterations start at a set rate, whether or not earlier
//! ones have finished, so a slow target cannot slow the load down (and so
//! hide its own slowness: no coordinated omission).
//!
//! A scheduler per VU class hands each arrival, with its intended start
//! time, to an idle VU; if none is idle it starts a new VU, up to the
//! class's cap; past the cap the arrival is counted as dropped rather than
//! delayed. Arrivals are evenly spaced or a Poisson process.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::plan::{Arrival, ClassPlan};
use crate::vu::{self, Shared, Step, Vu};

/// An arrival: an iteration to start, and when it should have started.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    /// The scheduled start.
    pub intended: Instant,
}

/// Idle VUs of one class, each waiting for a ticket.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<oneshot::Sender<Ticket>>>,
}

impl Pool {
    /// Hands `t` to an idle VU; gives it back if none is idle.
    fn offer(&self, mut t: Ticket) -> Result<(), Ticket> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(tx) = idle.pop() {
            match tx.send(t) {
                Ok(()) => return Ok(()),
                Err(back) => t = back, // that VU has left
            }
        }
        Err(t)
    }

    /// Registers an idle VU; the receiver yields its next ticket.
    fn wait(&self) -> oneshot::Receiver<Ticket> {
        let (tx, rx) = oneshot::channel();
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Releases every idle VU.
    fn close(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The arrival sequence in "count space": arrival k is due when the
/// integral of the rate reaches its count, so a changing rate needs no
/// special case (time-rescaling of a unit-rate process).
pub(crate) struct Counts {
    arrival: Arrival,
    state: u64,
}

impl Counts {
    pub(crate) fn new(arrival: Arrival, seed: u64) -> Self {
        Self {
            arrival,
            // xorshift needs a non-zero state.
            state: seed | 1,
        }
    }

    /// The count of the arrival after one at `count`: one more (even), or
    /// an exponential step of mean one (Poisson).
    pub(crate) fn next(&mut self, count: f64) -> f64 {
        match self.arrival {
            Arrival::Even => count + 1.0,
            Arrival::Poisson => count + self.exponential(),
        }
    }

    /// An exponential sample of mean one.
    fn exponential(&mut self) -> f64 {
        // xorshift64*: statistical quality is ample for spacing.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        -u.ln()
    }
}

/// One open-model VU: prepares its instance, then runs the tickets it is
/// handed until the run stops.
async fn run_vu(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    id: u32,
    class: Arc<vu::Class>,
    first: Option<Ticket>,
) {
    let _active = vu::activate(&shared);
    let mut vu = Vu::new(shared.clone(), id, class);
    let mut next = first;
    if next.is_none() && vu.prepare().await == Step::Stop {
        return;
    }
    loop {
        let ticket = match next.take() {
            Some(t) => t,
            None => {
                let rx = pool.wait();
                tokio::select! {
                    t = rx => match t {
                        Ok(t) => t,
                        Err(_) => return, // the scheduler closed the pool
                    },
                    _ = shared.stop.cancelled() => return,
                }
            }
        };
        if vu.iterate(Some(ticket.intended)).await == Step::Stop {
            return;
        }
    }
}

/// Runs the arrivals of one open-model class from `start` for `duration`,
/// then waits for its VUs to finish (they obey the run's stop signals).
/// VU ids are `first_id..first_id + class.max_vus()`.
pub async fn run_class(
    shared: Arc<Shared>,
    class: ClassPlan,
    runtime: Arc<vu::Class>,
    first_id: u32,
    arrival: Arrival,
    start: tokio::time::Instant,
    duration: Duration,
) {
    let Some(open) = class.open.clone() else {
        return;
    };
    let pool = Arc::new(Pool::default());
    let handle = tokio::runtime::Handle::current();
    let spawn = {
        let (shared, pool, name, handle) = (
            shared.clone(),
            pool.clone(),
            runtime.clone(),
            handle.clone(),
        );
        move |id: u32, first: Option<Ticket>| {
            handle.spawn(run_vu(
                shared.clone(),
                pool.clone(),
                id,
                name.clone(),
                first,
            ))
        }
    };
    let mut vus: Vec<tokio::task::JoinHandle<()>> =
        (0..class.vus).map(|i| spawn(first_id + i, None)).collect();
    let scheduler = Scheduler {
        shared: shared.clone(),
        pool: pool.clone(),
        counts: Counts::new(arrival, seed(first_id)),
        rate: open.rate,
        start: start.into_std(),
        end: (start + duration).into_std(),
        next_id: first_id + class.vus,
        last_id: first_id + class.max_vus(),
    };
    // A thread of its own: tokio's timer has millisecond granularity, too
    // coarse for exact arrival times at thousands per second.
    match tokio::task::spawn_blocking(move || scheduler.run(spawn)).await {
        Ok(more) => vus.extend(more),
        Err(e) => tracing::error!("the arrival scheduler of class {} failed: {e}", class.name),
    }
    pool.close();
    for vu in vus {
        let _ = vu.await;
    }
}

fn seed(salt: u32) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ u64::from(salt).rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15
}

/// The arrival loop of one class, on a dedicated thread.
struct Scheduler {
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    counts: Counts,
    rate: crate::profile::Profile,
    start: Instant,
    end: Instant,
    next_id: u32,
    last_id: u32,
}

impl Scheduler {
    /// Hands out arrivals until the end or a stop; returns the VUs it
    /// started.
    fn run(
        mut self,
        spawn: impl Fn(u32, Option<Ticket>) -> tokio::task::JoinHandle<()>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        set_fine_timer_slack();
        let recorder = self.shared.ctx.recorder.clone();
        let mut started = Vec::new();
        let mut count = 0.0f64;
        while let Some(at) = self.rate.time_of(count) {
            let due = self.start + Duration::from_secs_f64(at);
            if due >= self.end || self.shared.stop.is_cancelled() {
                break;
            }
            let now = Instant::now();
            if due > now {
                // Short sleeps, so a stop is noticed within 50 ms.
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                continue;
            }
            let lag = now.saturating_duration_since(due);
            recorder.scheduler_lag(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
            if let Err(ticket) = self.pool.offer(Ticket { intended: due }) {
                if self.next_id < self.last_id {
                    started.push(spawn(self.next_id, Some(ticket)));
                    self.next_id += 1;
                } else {
                    recorder.dropped();
                }
            }
            count = self.counts.next(count);
        }
        started
    }
}

/// Asks the kernel to wake this thread within a microsecond of the time
/// asked, not the default 50 µs, for exact arrival times.
fn set_fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_counts_step_by_one_on_average() {
        let mut c = Counts::new(Arrival::Poisson, 42);
        let n = 100_000;
        let mut count = 0.0;
        for _ in 0..n {
            count = c.next(count);
        }
        let mean = count / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "mean step {mean}");
        let mut e = Counts::new(Arrival::Even, 1);
        assert_eq!(e.next(299.0), 300.0);
    }
}
