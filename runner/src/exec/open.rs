//! The open model: iterations start at a set rate, whether or not earlier
//! ones have finished, so a slow target cannot slow the load down (and so
//! hide its own slowness: no coordinated omission).
//!
//! A scheduler per VU class hands each arrival, with its intended start
//! time, to an idle VU; if none is idle it starts a new VU, up to the
//! class's cap; past the cap the arrival is counted as dropped rather than
//! delayed. Arrivals are evenly spaced or a Poisson process.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::vu::{Step, Vu};
use super::{lock, ActiveGuard, Class, Load, Shared};
use crate::plan::arrivals::Counts;
use crate::plan::profile::Profile;
use crate::spec::Arrival;

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

/// One open-model VU: prepares its instance, then runs the tickets it is
/// handed until the run stops.
async fn run_vu(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    id: u32,
    class: Arc<Class>,
    first: Option<Ticket>,
) {
    let vu = Vu::new(shared.clone(), id, class.clone(), first.is_none());
    let busy = vu.busy();
    super::busy::contain(busy, run_tickets(vu, shared, pool, class, first)).await;
}

/// The life of an open-model VU: see [`run_vu`].
async fn run_tickets(
    mut vu: Vu,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    class: Arc<Class>,
    first: Option<Ticket>,
) {
    let _active = ActiveGuard::new(&shared, &class);
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
/// `allocated` VUs are started up front; VU ids are `first_id..first_id +
/// max_vus`.
pub async fn run_class(
    shared: Arc<Shared>,
    class: Arc<Class>,
    allocated: u32,
    first_id: u32,
    arrival: Arrival,
    start: tokio::time::Instant,
    duration: Duration,
) {
    let Load::Open { max_vus, .. } = &class.load else {
        return;
    };
    let pool = Arc::new(Pool::default());
    let handle = tokio::runtime::Handle::current();
    let spawn = {
        let (shared, pool, class, handle) =
            (shared.clone(), pool.clone(), class.clone(), handle.clone());
        move |id: u32, first: Option<Ticket>| {
            handle.spawn(run_vu(
                shared.clone(),
                pool.clone(),
                id,
                class.clone(),
                first,
            ))
        }
    };
    let mut vus = AbortOnDrop((0..allocated).map(|i| spawn(first_id + i, None)).collect());
    let scheduler = Scheduler {
        shared: shared.clone(),
        pool: pool.clone(),
        counts: Counts::new(
            arrival,
            host_api::seeds::derive(shared.ctx.seed, first_id, host_api::seeds::Stream::Arrivals),
        ),
        class: class.clone(),
        start: start.into_std(),
        end: (start + duration).into_std(),
        next_id: first_id + allocated,
        first_id,
    };
    let _ = max_vus;
    // A thread of its own: tokio's timer has millisecond granularity, too
    // coarse for exact arrival times at thousands per second.
    match tokio::task::spawn_blocking(move || scheduler.run(spawn)).await {
        Ok(more) => vus.0.extend(more),
        Err(e) => tracing::error!("the arrival scheduler of class {} failed: {e}", class.name),
    }
    pool.close();
    for vu in &mut vus.0 {
        let _ = vu.await;
    }
}

/// The VU tasks of an open class: aborted if the class's task is (at the
/// end of the grace period), so none outlives its run.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The arrival loop of one class, on a dedicated thread.
struct Scheduler {
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    counts: Counts,
    class: Arc<Class>,
    start: Instant,
    end: Instant,
    next_id: u32,
    first_id: u32,
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
        let (mut rate, mut version) = self.rate();
        loop {
            if self.shared.stop.is_cancelled() || Instant::now() >= self.end {
                break;
            }
            if let Some((newer, v)) = self.changed(version) {
                (rate, version) = (newer, v);
            }
            let due = rate
                .time_of(count)
                .map(|at| self.start + Duration::from_secs_f64(at));
            let now = Instant::now();
            match due {
                // Past the end at the current rate: a later change may
                // bring arrivals back; the check above ends the loop.
                Some(due) if due >= self.end => std::thread::sleep(Duration::from_millis(50)),
                Some(due) if due <= now => {
                    let lag = now.saturating_duration_since(due);
                    recorder.scheduler_lag(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
                    if let Err(ticket) = self.pool.offer(Ticket { intended: due }) {
                        let last = self.first_id + self.class.cap.load(Ordering::Relaxed);
                        if self.next_id < last {
                            started.push(spawn(self.next_id, Some(ticket)));
                            self.next_id += 1;
                        } else {
                            recorder.dropped();
                        }
                    }
                    count = self.counts.next(count);
                }
                // Short sleeps, so a stop or a new rate is noticed within
                // 50 ms; with no arrival left at the current rate, wait
                // for a change or the end.
                Some(due) => std::thread::sleep((due - now).min(Duration::from_millis(50))),
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        started
    }

    /// The class's rate profile and its version.
    fn rate(&self) -> (Profile, u64) {
        match &self.class.load {
            Load::Open { rate, version, .. } => {
                (lock(rate).clone(), version.load(Ordering::Acquire))
            }
            Load::Closed { .. } => (Profile::constant(0.0, Duration::ZERO), 0),
        }
    }

    /// The rate profile if it changed since `version`.
    fn changed(&self, version: u64) -> Option<(Profile, u64)> {
        match &self.class.load {
            Load::Open { version: v, .. } if v.load(Ordering::Acquire) != version => {
                Some(self.rate())
            }
            _ => None,
        }
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
