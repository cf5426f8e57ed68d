//! The closed model: VUs that loop over iterations. Each class's VU count
//! follows its [`Load`] (constant, staged, or changed live): VU number
//! `index` iterates while the count is above it; when the count drops
//! below, it finishes its iteration (cancelled after the grace period) and
//! waits to be wanted again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::vu::{Step, Vu};
use super::{lock, ActiveGuard, Class, Load, Shared};

/// How often a class's VU count is re-read from its profile.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);

/// Publishes the number of VUs `class` wants running, every 50 ms, until
/// the run stops.
pub async fn follow(
    class: Arc<Class>,
    tx: watch::Sender<u32>,
    started: tokio::time::Instant,
    stop: CancellationToken,
) {
    let Load::Closed { vus, max, .. } = &class.load else {
        return;
    };
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    loop {
        let t = started.elapsed().as_secs_f64();
        let want = (lock(vus).value_at(t).round() as u32).min(*max);
        class
            .target
            .store(class.local_count(want), Ordering::Relaxed);
        tx.send_if_modified(|v| std::mem::replace(v, want) != want);
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Runs VU number `index` of a closed-model class from `start_at`: it
/// iterates while the class's VU count is above `index`, until its
/// iterations are done or the run stops. `initial`: one of the VUs the
/// class starts with.
#[allow(clippy::too_many_arguments)] // one VU's whole description
pub async fn run_vu(
    shared: Arc<Shared>,
    id: u32,
    class: Arc<Class>,
    index: u32,
    initial: bool,
    start_at: tokio::time::Instant,
    target: watch::Receiver<u32>,
    grace: Duration,
) {
    tokio::select! {
        _ = tokio::time::sleep_until(start_at) => {}
        _ = shared.stop.cancelled() => return,
    }
    let mut vu = Vu::new(shared.clone(), id, class.clone(), initial);
    let busy = vu.busy();
    let life = {
        let shared = shared.clone();
        async move {
            iterate_while_wanted(&mut vu, shared, class, index, target, grace).await;
            vu
        }
    };
    let vu = super::busy::contain(busy, life).await;
    shared.retire(vu);
}

/// The life of a closed-model VU once started: see [`run_vu`].
async fn iterate_while_wanted(
    vu: &mut Vu,
    shared: Arc<Shared>,
    class: Arc<Class>,
    index: u32,
    mut target: watch::Receiver<u32>,
    grace: Duration,
) {
    loop {
        tokio::select! {
            r = target.wait_for(|t| *t > index) => if r.is_err() { return },
            _ = shared.stop.cancelled() => return,
        }
        if !class.owns(index) {
            return;
        }
        let _active = ActiveGuard::new(&shared, &class);
        let _running = Running::new(&class, index);
        // One watch for the whole stretch of iterations, not one per
        // iteration: registering and dropping its waiter each time was a
        // few percent of the CPU per request.
        let unwanted = ramped_down(target.clone(), index, grace);
        tokio::pin!(unwanted);
        while *target.borrow() > index {
            // Handed to another worker: leave between iterations.
            if !class.owns(index) {
                return;
            }
            if shared.stop.is_cancelled()
                || class.iterations.is_some_and(|n| vu.iterations() >= n)
                || !class.take_shared()
            {
                return;
            }
            let started = tokio::time::Instant::now();
            tokio::select! {
                step = vu.iterate(None) => if step == Step::Stop { return },
                _ = &mut unwanted => {
                    vu.abandon("ramp-down", "cancelled after the ramp-down grace period");
                    // That watch is over: wait to be wanted again.
                    break;
                }
            }
            if pause(&shared, &class, started).await == Step::Stop {
                return;
            }
        }
    }
}

/// Fires once the VU count has stayed at or below `index` for a whole
/// `grace`; raised meanwhile, the grace starts over at the next drop.
async fn ramped_down(mut target: watch::Receiver<u32>, index: u32, grace: Duration) {
    loop {
        if target.wait_for(|t| *t <= index).await.is_err() {
            std::future::pending::<()>().await;
        }
        let sleep = tokio::time::sleep(grace);
        tokio::pin!(sleep);
        tokio::select! {
            _ = &mut sleep => return,
            raised = async { target.wait_for(|t| *t > index).await.is_ok() } => {
                // No more changes can come: the count stays down.
                if !raised {
                    sleep.await;
                    return;
                }
            }
        }
    }
}

/// Marks a VU's index as iterating for as long as it lives.
struct Running<'a> {
    class: &'a Class,
    index: u32,
}

impl<'a> Running<'a> {
    fn new(class: &'a Class, index: u32) -> Self {
        lock(&class.running).insert(index);
        Self { class, index }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(&self.class.running).remove(&self.index);
    }
}

/// The closed model's pause after an iteration that started at `started`:
/// until the pacing period is over, then the think time. A stop ends it.
async fn pause(shared: &Shared, class: &Class, started: tokio::time::Instant) -> Step {
    let mut until = started;
    if let Some(p) = class.pacing {
        until = until.max(started + p);
    }
    if let Some(t) = class.think {
        until = until.max(tokio::time::Instant::now()) + t;
    }
    if until <= tokio::time::Instant::now() {
        return Step::Continue;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(until) => Step::Continue,
        _ = shared.stop.cancelled() => Step::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ramp_down_grace_starts_over_when_the_count_drops_again() {
        let (tx, rx) = watch::channel(5u32);
        let grace = Duration::from_millis(300);
        let started = tokio::time::Instant::now();
        let unwanted = tokio::spawn(ramped_down(rx, 2, grace));
        // Down, up again before the grace is over, then down for good.
        tx.send_replace(2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send_replace(5);
        tokio::time::sleep(Duration::from_millis(150)).await;
        tx.send_replace(1);
        let dropped_again = started.elapsed();
        tokio::time::timeout(Duration::from_secs(10), unwanted)
            .await
            .expect("the watch fires once the count stays down")
            .expect("the watch task ends");
        // A grace timer kept from the first drop would have fired at 300 ms.
        assert!(
            started.elapsed() >= dropped_again + grace,
            "fired {:?} after the last drop",
            started.elapsed() - dropped_again
        );
    }
}
