//! The end of a run, local or distributed: the summary made from the
//! totals, thresholds judged, sinks finished, output files written, and
//! the hub told.

use std::sync::Arc;

use host_api::Metrics;

use super::hub::Hub;
use super::sink::Sink;
use crate::report::{Meta, Summary};
use crate::spec::{Output, RunSpec};
use crate::thresholds::Threshold;

/// Summarizes the run whose totals are in `hub`, described by `meta`.
pub(crate) fn finish(
    spec: &RunSpec,
    meta: Meta,
    thresholds: &[Threshold],
    sinks: &mut [Box<dyn Sink>],
    hub: &Hub,
) -> Arc<Summary> {
    // A copy: observers keep seeing the totals until the summary is in
    // the hub.
    let mut summary = Summary::new(meta, hub.with_totals(Metrics::clone));
    summary.thresholds = thresholds
        .iter()
        .map(|th| th.evaluate(&summary.raw, summary.meta.duration_s))
        .collect();
    let mut errors = Vec::new();
    for s in sinks.iter_mut() {
        if let Err(e) = s.finish(&summary) {
            errors.push(crate::engine::root_message(&e));
        }
    }
    for out in &spec.outputs {
        let written = match out {
            Output::Json(path) => summary.write_json(path),
            Output::Html(path) => {
                let page = crate::report::html::render(&summary, &hub.points(0));
                crate::report::write_atomic(path, page.as_bytes())
            }
            _ => Ok(()),
        };
        if let Err(e) = written {
            errors.push(crate::engine::root_message(&e));
        }
    }
    for e in &errors {
        tracing::error!("{e}");
    }
    summary.meta.output_errors = errors;
    let summary = Arc::new(summary);
    hub.finish(summary.clone());
    summary
}
