//! The lease: no word from the coordinator, no load.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::lock;
use crate::run::{Controller, StopBy};

/// Stops the run when the lease runs out: gracefully once half a lease
/// passes without a renewal, for good (cancelling in-flight iterations,
/// without waiting for the run's driver) when the lease ends.
pub(super) async fn watch_lease(
    run: u64,
    controller: Controller,
    stops: Option<(CancellationToken, CancellationToken)>,
    until: Arc<Mutex<Instant>>,
    lease: Duration,
) {
    let mut graceful = false;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left = lock(&until).saturating_duration_since(Instant::now());
        if !graceful && left < lease / 2 {
            tracing::warn!(
                "run {run}: no word from the coordinator for {}; stopping the load",
                crate::units::format_duration(lease / 2)
            );
            controller.stop_now(false, StopBy::Coordinator);
            if let Some((stop, _)) = &stops {
                stop.cancel();
            }
            graceful = true;
        }
        if left.is_zero() {
            tracing::warn!("run {run}: the lease ran out; cancelling in-flight iterations");
            controller.stop_now(true, StopBy::Coordinator);
            if let Some((stop, hard)) = &stops {
                stop.cancel();
                hard.cancel();
            }
            return;
        }
    }
}
