//! Busy VUs run on threads of their own.
//!
//! A VU that keeps the CPU busy (a guest spin, a loop of cheap host calls)
//! used to take turns on the same worker threads as the steady VUs, and a
//! steady VU woken by its response waited in the run queue behind each
//! busy one's 1 ms slice. Now a VU whose busy streak reaches
//! [`HOG_STREAK`](super::vu::HOG_STREAK) is polled on the busy pool (one
//! thread fewer than the machine has cores, so a core is always left for
//! the others) until it parks (a sleep, a request). The steady VUs' threads
//! then only share cores with it, and the kernel preempts a busy thread
//! when a steady one wakes.
//!
//! The pool keeps the default priority on purpose: at `SCHED_IDLE` or nice
//! 19 the steady VUs' latency was no better (measured, BENCHMARKS.md), and
//! busy VUs starved whenever other programs kept the machine busy, so a
//! spinning VU was no longer ended by `--cpu-limit` in any useful time.
//!
//! Only the polling moves. The VU's sockets, timers and spawned tasks stay
//! with the main runtime (its handle is entered around each poll), so a
//! busy VU's I/O is driven as promptly as anyone's.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Runtime};

/// Set by a VU's epoch callback when it yields because it is busy; read
/// (and cleared) by [`contain`] after each poll.
pub type BusyFlag = Arc<AtomicBool>;

/// How many threads the busy VUs share: all the machine's cores but one,
/// so one is always left for the others.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

/// The busy pool, made on first use and kept for the process.
fn pool() -> Option<&'static Runtime> {
    static POOL: OnceLock<Option<Runtime>> = OnceLock::new();
    POOL.get_or_init(|| {
        let built = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads())
            .thread_name("runner-busy-vu")
            .build();
        match built {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(
                    "cannot start the busy VUs' threads ({e}); busy VUs stay on the main ones"
                );
                None
            }
        }
    })
    .as_ref()
}

/// What one leg of polling ended with.
enum Leg<T> {
    Done(T),
    /// The future should move: to the busy pool, or back home.
    Move,
}

/// Polls `fut` (a whole VU) on the current runtime, moving it to the busy
/// pool while it yields busy ([`BusyFlag`]) and back at its first park.
///
/// `fut` is boxed here, before the returned future exists: taken by an
/// `async fn`, its bytes would stay reserved in the caller's task (its
/// argument slot) for the VU's whole life, beside the box.
pub fn contain<F>(busy: BusyFlag, fut: F) -> impl Future<Output = F::Output> + Send
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    contain_boxed(busy, Box::pin(fut))
}

async fn contain_boxed<F>(busy: BusyFlag, mut fut: Pin<Box<F>>) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(pool) = pool() else {
        return fut.await;
    };
    let home = Handle::current();
    loop {
        // At home: until it finishes or yields busy.
        let leg = std::future::poll_fn(|cx| poll_leg(&mut fut, &busy, false, cx)).await;
        if let Leg::Done(v) = leg {
            return v;
        }
        // Away: until it finishes or parks. Its first poll there registers
        // the pool's waker in place of this task's.
        let b = busy.clone();
        let mut vu = Away {
            fut: Some(fut),
            home: home.clone(),
        };
        let away = pool.spawn(async move {
            let leg = std::future::poll_fn(|cx| {
                let _home = vu.home.enter();
                match vu.fut.as_mut() {
                    Some(f) => poll_leg(f, &b, true, cx),
                    None => Poll::Ready(Leg::Move),
                }
            })
            .await;
            (vu, leg)
        });
        let mut away = AbortOnDrop(away);
        let (mut back, leg) = match away.await_join().await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only this task aborts it, and the pool is never shut down.
            Err(_) => std::future::pending().await,
        };
        if let Leg::Done(v) = leg {
            return v;
        }
        match back.fut.take() {
            Some(f) => fut = f,
            None => return std::future::pending().await,
        }
    }
}

/// A VU while it is on the busy pool. If it is dropped there (its home
/// task aborted at a run's end, or a panic), the home runtime is entered
/// for the drop: drop code that asks for the current runtime (an MQTT
/// session spawns its close) must find the main one, which has timers.
struct Away<F> {
    fut: Option<Pin<Box<F>>>,
    home: Handle,
}

impl<F> Drop for Away<F> {
    fn drop(&mut self) {
        let _home = self.home.enter();
        drop(self.fut.take());
    }
}

fn poll_leg<F: Future>(
    fut: &mut Pin<Box<F>>,
    busy: &AtomicBool,
    away: bool,
    cx: &mut Context<'_>,
) -> Poll<Leg<F::Output>> {
    busy.store(false, Ordering::Relaxed);
    match fut.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Leg::Done(v)),
        // Busy at home, or parked (or a plain yield) away: move.
        Poll::Pending if busy.swap(false, Ordering::Relaxed) != away => Poll::Ready(Leg::Move),
        Poll::Pending => Poll::Pending,
    }
}

/// The away leg's task, aborted if the VU's own task is dropped (a run's
/// end aborts VU tasks; the VU must not go on elsewhere).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn await_join(&mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that says it is busy for `n` polls, then finishes, and
    /// records the thread each poll ran on.
    struct Spin {
        left: u32,
        busy: BusyFlag,
        threads: Vec<String>,
    }

    impl Future for Spin {
        type Output = Vec<String>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<String>> {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.threads.push(name);
            if self.left == 0 {
                return Poll::Ready(std::mem::take(&mut self.threads));
            }
            self.left -= 1;
            self.busy.store(true, Ordering::Relaxed);
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_busy_future_moves_to_the_busy_pool_and_a_parked_one_comes_home() {
        let busy = BusyFlag::default();
        let spin = Spin {
            left: 3,
            busy: busy.clone(),
            threads: Vec::new(),
        };
        let threads = contain(busy.clone(), spin).await;
        assert_ne!(threads[0], "runner-busy-vu");
        assert!(
            threads[1..].iter().all(|t| t == "runner-busy-vu"),
            "{threads:?}"
        );
        // A sleep (a park) on the pool brings the future home, and its
        // timer belongs to the home runtime.
        let b = busy.clone();
        let threads = contain(busy, async move {
            let mut seen = Vec::new();
            b.store(true, Ordering::Relaxed);
            tokio::task::yield_now().await;
            seen.push(std::thread::current().name().unwrap_or("").to_owned());
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            seen.push(std::thread::current().name().unwrap_or("").to_owned());
            seen
        })
        .await;
        assert_eq!(threads[0], "runner-busy-vu");
        assert_ne!(threads[1], "runner-busy-vu");
    }

    /// Spawns a timer task on the current runtime when dropped, as an MQTT
    /// session does; the pool has no timers, so this fails there.
    struct SpawnsOnDrop(Arc<AtomicBool>);

    impl Drop for SpawnsOnDrop {
        fn drop(&mut self) {
            let done = self.0.clone();
            if let Ok(h) = Handle::try_current() {
                h.spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    done.store(true, Ordering::Relaxed);
                });
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_vu_aborted_while_away_is_dropped_with_its_home_runtime_entered() {
        let busy = BusyFlag::default();
        let (b, done) = (busy.clone(), Arc::new(AtomicBool::new(false)));
        let guard = SpawnsOnDrop(done.clone());
        let task = tokio::spawn(contain(busy, async move {
            let _guard = guard;
            loop {
                b.store(true, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        task.abort();
        for _ in 0..200 {
            if done.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the dropped VU's close task never ran on the home runtime");
    }
}
