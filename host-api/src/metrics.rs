//! Host side of the `metrics` interface: custom counters, gauges,
//! timings, histograms and checks, recorded into the run's recorder under
//! their name and tags (see [`crate::recorder::tagged_key`]).

use crate::bindings::runner::scenario::metrics::{Host, Tags};
use crate::vu::nanos;
use crate::VuState;

/// Longest metric name accepted; longer names are cut, so a guest cannot
/// grow the aggregates without bound through one name.
const MAX_NAME: usize = crate::limits::sizes::NAME;

/// The metric key of `n` with `tags`: the name bounded, the tags cleaned.
fn key(mut n: String, tags: Vec<(String, String)>) -> String {
    n.retain(|c| c != crate::recorder::TAG_SEPARATOR);
    let name = crate::limits::truncate(n, MAX_NAME);
    if tags.is_empty() {
        return name;
    }
    crate::recorder::tagged_key(&name, &crate::recorder::clean_tags(tags))
}

impl Host for VuState {
    async fn counter(&mut self, n: String, delta: u64, tags: Tags) -> wasmtime::Result<()> {
        self.run.recorder.counter(&key(n, tags), delta);
        Ok(())
    }

    async fn gauge(&mut self, n: String, value: f64, tags: Tags) -> wasmtime::Result<()> {
        let at = nanos(self.run.started.elapsed());
        self.run.recorder.gauge(&key(n, tags), value, at);
        Ok(())
    }

    async fn timing(&mut self, n: String, time: u64, tags: Tags) -> wasmtime::Result<()> {
        self.run.recorder.timing(&key(n, tags), time / 1_000);
        Ok(())
    }

    async fn histogram(&mut self, n: String, value: u64, tags: Tags) -> wasmtime::Result<()> {
        self.run.recorder.histogram(&key(n, tags), value);
        Ok(())
    }

    async fn check(&mut self, n: String, pass: bool, tags: Tags) -> wasmtime::Result<bool> {
        self.run.recorder.check(&key(n, tags), pass);
        Ok(pass)
    }
}
