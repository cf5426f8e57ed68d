//! The live one-line progress display on a terminal, fed by the run's
//! snapshots; control events (a stop, a load change) print above it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::run::{ControlEvent, Sink, Snapshot};

/// A live status line on stderr; silent when stderr is not a terminal or
/// with `--quiet` (events then go to the log).
pub struct Progress {
    bar: Option<ProgressBar>,
    errors: u64,
    iterations: u64,
    traps: u64,
    messaging: bool,
}

impl Progress {
    /// A progress line, unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Self {
            bar,
            errors: 0,
            iterations: 0,
            traps: 0,
            messaging: false,
        }
    }
}

impl Sink for Progress {
    fn snapshot(&mut self, s: &Snapshot) {
        let m = &s.metrics;
        self.errors += m.http_failed() + m.messaging_failed();
        self.iterations += m.iterations.ok + m.iterations.failed;
        self.traps += m.iterations.aborted;
        self.messaging |= !m.mqtt.is_empty() || !m.nats.is_empty();
        if s.last {
            if let Some(bar) = self.bar.take() {
                bar.finish_and_clear();
            }
            return;
        }
        let Some(bar) = &self.bar else { return };
        let dt = s.interval.max(1e-3);
        let rate = m.http_requests() as f64 / dt;
        let messages = if self.messaging {
            format!(
                "  {:>7.0} msg/s out {:>7.0} in",
                m.messages_sent() as f64 / dt,
                m.messages_received() as f64 / dt
            )
        } else {
            String::new()
        };
        let target: f64 = s.classes.iter().filter_map(|c| c.target_vus).sum();
        let rate_target: f64 = s.classes.iter().filter_map(|c| c.rate).sum();
        let load = match (target > 0.0, rate_target > 0.0) {
            (true, true) => format!("VUs {}/{target:.0}  {rate_target:.0} it/s", s.active_vus()),
            (false, true) => format!("{rate_target:.0} it/s  VUs {}", s.active_vus()),
            _ => format!("VUs {}/{target:.0}", s.active_vus()),
        };
        bar.set_message(format!(
            "{:>6.1}s  {load}  {rate:>8.0} req/s{messages}  errors {}  iterations {}  traps {}",
            s.t, self.errors, self.iterations, self.traps
        ));
    }

    fn event(&mut self, e: &ControlEvent) {
        match &self.bar {
            Some(bar) => bar.println(&e.message),
            None => tracing::info!("{}", e.message),
        }
    }
}
