//! The live one-line progress display on a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use host_api::Metrics;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A live status line on stderr; silent when stderr is not a terminal or
/// with `--quiet`.
pub struct Progress {
    bar: Option<ProgressBar>,
    vus: u32,
    last: Duration,
}

impl Progress {
    /// A progress line for a run of `vus` VUs.
    pub fn new(quiet: bool, vus: u32) -> Self {
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
            vus,
            last: Duration::ZERO,
        }
    }

    /// Shows the state after the interval `interval` (just drained), with
    /// `totals` the sum of all earlier intervals.
    pub fn update(
        &mut self,
        elapsed: Duration,
        active: usize,
        interval: &Metrics,
        totals: &Metrics,
    ) {
        let dt = (elapsed - self.last).as_secs_f64().max(1e-3);
        self.last = elapsed;
        let Some(bar) = &self.bar else { return };
        let rate = interval.http_requests() as f64 / dt;
        let errors = totals.http_failed()
            + interval.http_failed()
            + totals.messaging_failed()
            + interval.messaging_failed();
        let messages = if totals.mqtt.is_empty()
            && totals.nats.is_empty()
            && interval.mqtt.is_empty()
            && interval.nats.is_empty()
        {
            String::new()
        } else {
            format!(
                "  {:>7.0} msg/s out {:>7.0} in",
                interval.messages_sent() as f64 / dt,
                interval.messages_received() as f64 / dt
            )
        };
        let iterations = totals.iterations.ok
            + totals.iterations.failed
            + interval.iterations.ok
            + interval.iterations.failed;
        let traps = totals.iterations.aborted + interval.iterations.aborted;
        bar.set_message(format!(
            "{:>6.1}s  VUs {active}/{}  {rate:>8.0} req/s{messages}  errors {errors}  iterations {iterations}  traps {traps}",
            elapsed.as_secs_f64(),
            self.vus
        ));
    }

    /// Prints a note above the progress line.
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => tracing::info!("{text}"),
        }
    }

    /// Removes the progress line.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
