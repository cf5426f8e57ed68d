//! A running run continued on another component: fetched by hash when
//! not cached, checked and put in force by the local run, answered with
//! [`Up::Swapped`] either way.

use std::sync::Arc;

use super::{Slot, Stage, Worker};
use crate::federation::protocol::Up;
use crate::federation::wire;
use crate::federation::worker::SessionEnd;

impl Worker {
    /// The coordinator asks the run to continue on component `sha256`.
    pub(super) async fn swap(
        &mut self,
        run: u64,
        name: String,
        sha256: String,
        send: &mut quinn::SendStream,
    ) -> Result<(), SessionEnd> {
        let running = matches!(
            &self.slot,
            Some(Slot { run: r, stage: Stage::Running { .. }, .. }) if *r == run
        );
        if !running {
            let error = Some("the run is no longer running on this worker".to_owned());
            let _ = self.ups.send(Up::Swapped { run, sha256, error });
            return Ok(());
        }
        if let Some(bytes) = self.cached(&sha256) {
            self.swap_with(run, name, sha256, bytes);
            return Ok(());
        }
        if let Some(slot) = self.slot.as_mut() {
            slot.swap_to = Some((name, sha256.clone()));
        }
        wire::write(send, &Up::Need { run, sha256 })
            .await
            .map_err(|e| SessionEnd::Retry(e.to_string()))
    }

    /// Checks `bytes` and puts them in force, off the control loop; the
    /// answer goes out when done.
    pub(super) fn swap_with(&self, run: u64, name: String, sha256: String, bytes: Arc<[u8]>) {
        let Some(Slot {
            stage:
                Stage::Running {
                    controller,
                    swapper,
                    ..
                },
            ..
        }) = &self.slot
        else {
            return;
        };
        let (controller, swapper, ups) = (controller.clone(), swapper.clone(), self.ups.clone());
        self.load.spawn(async move {
            let result = match swapper {
                None => Err("this run cannot swap its scenario".to_owned()),
                Some(s) => match s.prepare(&name, bytes).await {
                    Err(e) => Err(e.to_string()),
                    Ok(swap) => controller.swap(swap).await.map_err(|e| e.to_string()),
                },
            };
            match &result {
                Ok(_) => tracing::info!("run {run}: continuing on {name}"),
                Err(e) => tracing::warn!("run {run}: cannot swap to {name}: {e}"),
            }
            let _ = ups.send(Up::Swapped {
                run,
                sha256,
                error: result.err(),
            });
        });
    }
}
