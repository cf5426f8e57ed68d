//! The epoch ticker: the clock that lets wasmtime interrupt a guest that
//! has used up its CPU budget.

use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::Engine;

/// How often the epoch ticker advances; the granularity of CPU limits.
pub const TICK: Duration = Duration::from_millis(1);

/// Advances the engine's epoch every [`TICK`] until dropped.
pub struct EpochTicker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the ticker thread. A plain thread, not a tokio task, so a
    /// busy runtime cannot delay the ticks that interrupt runaway guests.
    pub fn start(engine: Engine) -> Result<Self> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
