//! What a run's driver feeds, in order and without loss: each snapshot as
//! it is taken, each control event as it happens, and the summary at the
//! end. The progress line and the time-series files are sinks; so is a
//! worker's link to its coordinator.

use super::control::ControlEvent;
use super::snapshot::Snapshot;
use crate::report::Summary;

/// A subscriber that runs inside the run's driver: it must be quick (a
/// line on a terminal, a buffered write, a push into a queue).
pub trait Sink: Send {
    /// A new snapshot (the last one has `last` set).
    fn snapshot(&mut self, snapshot: &Snapshot);

    /// A control event, as soon as it happens (it is also in the next
    /// snapshot's `events`).
    fn event(&mut self, _event: &ControlEvent) {}

    /// The run is over: finish writing. An error is reported in the
    /// summary's `output_errors` and does not stop the others.
    fn finish(&mut self, _summary: &Summary) -> anyhow::Result<()> {
        Ok(())
    }
}
