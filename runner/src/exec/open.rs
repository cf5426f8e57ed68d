//! The open model: iterations start at a set rate, whether or not earlier
//! ones have finished, so a slow target cannot slow the load down (and so
//! hide its own slowness: no coordinated omission).
//!
//! A scheduler per VU class hands each arrival, with its intended start
//! time, to an idle VU. If none is idle, the arrival waits for the first
//! VU to come free, and a new VU is started for it, up to the class's cap;
//! past the cap the arrival is counted as dropped rather than delayed.
//! Arrivals are evenly spaced or a Poisson process.
//!
//! Starting a VU (instantiation, then its first connection) costs a
//! worker thread tens of µs; during a burst, starting one VU per waiting
//! arrival slowed the running VUs, so more arrivals found none free, and
//! at 20,000/s the class grew to 2,000 VUs where 200 suffice. So at most
//! [`MAX_STARTING`] VUs start at once, and a waiting arrival goes to
//! whichever VU is free first: a running one, or one just started.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::vu::{Step, Vu};
use super::{lock, ActiveGuard, Class, Load, Shared};
use crate::plan::arrivals::Counts;
use crate::plan::profile::Profile;
use crate::spec::Arrival;

/// The most VUs of a class being started at once.
const MAX_STARTING: u32 = 16;

/// An arrival: an iteration to start, and when it should have started.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    /// The scheduled start.
    pub intended: Instant,
}

/// The VUs of one class waiting for work, and the work waiting for VUs.
#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    /// Idle VUs, each waiting for a ticket; the last to come free first.
    idle: Vec<oneshot::Sender<Ticket>>,
    /// Arrivals that found no VU idle, oldest first.
    waiting: VecDeque<Ticket>,
    /// VUs started and not yet ready.
    starting: u32,
    /// The arrivals are over.
    closed: bool,
}

/// What a VU ready for work gets.
enum Next {
    Ticket(Ticket),
    Wait(oneshot::Receiver<Ticket>),
    Closed,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `t` to an idle VU; gives it back if none is idle.
    fn offer(st: &mut PoolState, mut t: Ticket) -> Result<(), Ticket> {
        while let Some(tx) = st.idle.pop() {
            match tx.send(t) {
                Ok(()) => return Ok(()),
                Err(back) => t = back, // that VU has left
            }
        }
        Err(t)
    }

    /// Work for a VU: the oldest waiting arrival, or a receiver for the
    /// next one.
    fn next(&self) -> Next {
        let mut st = self.lock();
        if st.closed {
            return Next::Closed;
        }
        if let Some(t) = st.waiting.pop_front() {
            return Next::Ticket(t);
        }
        let (tx, rx) = oneshot::channel();
        st.idle.push(tx);
        Next::Wait(rx)
    }

    /// A started VU is ready (or failed to be).
    fn ready(&self) {
        let mut st = self.lock();
        st.starting = st.starting.saturating_sub(1);
    }

    /// Ends the arrivals: releases every idle VU; returns how many
    /// arrivals were still waiting (they never started).
    fn close(&self) -> usize {
        let mut st = self.lock();
        st.closed = true;
        st.idle.clear();
        let never = st.waiting.len();
        st.waiting.clear();
        never
    }
}

/// Marks a started VU ready when dropped, however its preparation ends.
struct Starting<'a>(&'a Pool);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.ready();
    }
}

/// One open-model VU: prepares its instance, then runs the tickets it is
/// handed until the run stops. `initial` VUs are the ones allocated up
/// front (the run's start-up time counts them).
async fn run_vu(shared: Arc<Shared>, pool: Arc<Pool>, id: u32, class: Arc<Class>, initial: bool) {
    let mut vu = Vu::new(shared.clone(), id, class.clone(), initial);
    let busy = vu.busy();
    let life = {
        let shared = shared.clone();
        async move {
            run_tickets(&mut vu, shared, pool, class).await;
            vu
        }
    };
    let vu = super::busy::contain(busy, life).await;
    shared.retire(vu);
}

/// The life of an open-model VU: see [`run_vu`].
async fn run_tickets(vu: &mut Vu, shared: Arc<Shared>, pool: Arc<Pool>, class: Arc<Class>) {
    let _active = ActiveGuard::new(&shared, &class);
    let starting = Starting(&pool);
    let step = vu.prepare().await;
    drop(starting);
    if step == Step::Stop {
        return;
    }
    loop {
        if shared.stop.is_cancelled() {
            return;
        }
        let ticket = match pool.next() {
            Next::Ticket(t) => t,
            Next::Closed => return,
            Next::Wait(mut rx) => tokio::select! {
                biased;
                _ = shared.stop.cancelled() => {
                    // A ticket sent as the run stopped never starts; once
                    // closed, none can be sent (the scheduler keeps it).
                    rx.close();
                    if rx.try_recv().is_ok() {
                        shared.ctx.recorder.dropped();
                    }
                    return;
                }
                t = &mut rx => match t {
                    Ok(t) => t,
                    Err(_) => return, // the scheduler closed the pool
                },
            },
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
        move |id: u32, initial: bool| {
            handle.spawn(run_vu(
                shared.clone(),
                pool.clone(),
                id,
                class.clone(),
                initial,
            ))
        }
    };
    pool.lock().starting = allocated;
    let mut vus = AbortOnDrop((0..allocated).map(|i| spawn(first_id + i, true)).collect());
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
    for _ in 0..pool.close() {
        shared.ctx.recorder.dropped();
    }
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
        spawn: impl Fn(u32, bool) -> tokio::task::JoinHandle<()>,
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
            let waiting = self.grow(&spawn, &mut started);
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
                    if !self.arrive(Ticket { intended: due }) {
                        recorder.dropped();
                    }
                    count = self.counts.next(count);
                }
                // Short sleeps, so a stop or a new rate is noticed within
                // 50 ms; with no arrival left at the current rate, wait
                // for a change or the end.
                Some(due) => std::thread::sleep((due - now).min(nap(waiting))),
                None => std::thread::sleep(nap(waiting)),
            }
        }
        // Arrivals still waiting now never start: no VU may take one
        // after the end.
        for _ in 0..self.pool.close() {
            recorder.dropped();
        }
        started
    }

    /// Gives `t` to an idle VU, or has it wait for the first VU to come
    /// free if one is coming (started, or still allowed by the cap);
    /// `false` when none is: the arrival is dropped.
    fn arrive(&self, t: Ticket) -> bool {
        let mut st = self.pool.lock();
        let Err(t) = Pool::offer(&mut st, t) else {
            return true;
        };
        let coming = st.starting + self.room();
        if (st.waiting.len() as u32) < coming {
            st.waiting.push_back(t);
            true
        } else {
            false
        }
    }

    /// VUs the cap still allows to start.
    fn room(&self) -> u32 {
        let cap = self.class.cap.load(Ordering::Relaxed);
        (self.first_id + cap).saturating_sub(self.next_id)
    }

    /// Starts VUs while arrivals wait for more VUs than are starting (see
    /// [`to_start`]); returns whether any arrival waits.
    fn grow(
        &mut self,
        spawn: &impl Fn(u32, bool) -> tokio::task::JoinHandle<()>,
        started: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> bool {
        let mut st = self.pool.lock();
        let n = to_start(st.waiting.len(), st.starting, self.room());
        st.starting += n;
        let waiting = !st.waiting.is_empty();
        drop(st);
        for _ in 0..n {
            started.push(spawn(self.next_id, false));
            self.next_id += 1;
        }
        waiting
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

/// VUs to start now: one per waiting arrival no starting VU will take,
/// at most [`MAX_STARTING`] starting at once, within the cap's `room`.
fn to_start(waiting: usize, starting: u32, room: u32) -> u32 {
    let unserved = u32::try_from(waiting)
        .unwrap_or(u32::MAX)
        .saturating_sub(starting);
    unserved
        .min(MAX_STARTING.saturating_sub(starting))
        .min(room)
}

/// How long the scheduler may sleep between arrivals: briefly while
/// arrivals wait, so VUs are started as soon as others are ready.
fn nap(waiting: bool) -> Duration {
    if waiting {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(50)
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

    /// A burst of waiting arrivals starts at most MAX_STARTING VUs at
    /// once, none beyond the cap, and none for arrivals that VUs already
    /// starting will take.
    #[test]
    fn a_burst_starts_a_bounded_number_of_vus() {
        assert_eq!(to_start(100, 0, 1_000), MAX_STARTING);
        assert_eq!(to_start(100, MAX_STARTING, 1_000), 0);
        assert_eq!(to_start(100, 10, 1_000), MAX_STARTING - 10);
        assert_eq!(to_start(3, 1, 1_000), 2);
        assert_eq!(to_start(3, 5, 1_000), 0);
        assert_eq!(to_start(100, 0, 1), 1);
        assert_eq!(to_start(0, 0, 1_000), 0);
    }

    /// Waiting arrivals go to the next VU that asks, oldest first; the
    /// ones still waiting at the end are reported, never run.
    #[test]
    fn waiting_arrivals_go_to_the_first_vu_free_oldest_first() {
        let pool = Pool::default();
        let t0 = Instant::now();
        let (a, b) = (t0, t0 + Duration::from_millis(1));
        {
            let mut st = pool.lock();
            assert!(
                Pool::offer(&mut st, Ticket { intended: a }).is_err(),
                "no VU idle"
            );
            st.waiting.push_back(Ticket { intended: a });
            st.waiting.push_back(Ticket { intended: b });
        }
        match pool.next() {
            Next::Ticket(t) => assert_eq!(t.intended, a),
            _ => panic!("the oldest waiting arrival"),
        }
        assert_eq!(pool.close(), 1, "one arrival never started");
        assert!(matches!(pool.next(), Next::Closed));
    }

    /// An idle VU takes an arrival directly.
    #[test]
    fn an_idle_vu_takes_an_arrival() {
        let pool = Pool::default();
        let Next::Wait(mut rx) = pool.next() else {
            panic!("nothing waits: the VU goes idle");
        };
        let t = Ticket {
            intended: Instant::now(),
        };
        assert!(Pool::offer(&mut pool.lock(), t).is_ok());
        assert!(rx.try_recv().is_ok());
    }
}
