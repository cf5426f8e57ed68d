//! Host side of the `metrics` interface: custom counters, gauges,
//! timings, histograms and checks, recorded into the run's recorder.

use crate::bindings::runner::scenario::metrics::Host;
use crate::vu::nanos;
use crate::VuState;

/// Longest metric name accepted; longer names are cut, so a guest cannot
/// grow the aggregates without bound through one name.
const MAX_NAME: usize = 256;

fn name(n: &str) -> &str {
    if n.len() <= MAX_NAME {
        return n;
    }
    let mut end = MAX_NAME;
    while !n.is_char_boundary(end) {
        end -= 1;
    }
    &n[..end]
}

impl Host for VuState {
    async fn counter(&mut self, n: String, delta: u64) -> wasmtime::Result<()> {
        self.run.recorder.counter(name(&n), delta);
        Ok(())
    }

    async fn gauge(&mut self, n: String, value: f64) -> wasmtime::Result<()> {
        let at = nanos(self.run.started.elapsed());
        self.run.recorder.gauge(name(&n), value, at);
        Ok(())
    }

    async fn timing(&mut self, n: String, time: u64) -> wasmtime::Result<()> {
        self.run.recorder.timing(name(&n), time / 1_000);
        Ok(())
    }

    async fn histogram(&mut self, n: String, value: u64) -> wasmtime::Result<()> {
        self.run.recorder.histogram(name(&n), value);
        Ok(())
    }

    async fn check(&mut self, n: String, pass: bool) -> wasmtime::Result<bool> {
        self.run.recorder.check(name(&n), pass);
        Ok(pass)
    }
}
