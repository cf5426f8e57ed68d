//! The HTML report: one offline file with the run's charts over its whole
//! length (from its snapshots' points), its tables, its latency
//! distribution, its options and its thresholds; the same page as the
//! dashboard, with the data embedded.

use host_api::recorder::Hist;
use serde::Serialize;

use super::Summary;

/// Percentiles the latency distribution is drawn at.
const PERCENTILES: [f64; 17] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 99.995,
    99.999, 100.0,
];

/// The report of a run that ended with `summary`, whose snapshots' points
/// are `points` (any serializable list of them).
pub fn render<P: Serialize>(summary: &Summary, points: &P) -> String {
    let mut s = serde_json::to_value(summary).unwrap_or_default();
    if let Some(o) = s.as_object_mut() {
        o.remove("raw");
    }
    let mut all = Hist::micros();
    for r in summary.raw.http.values() {
        all.merge(&r.latency);
    }
    let (percentiles, ms): (Vec<f64>, Vec<f64>) = if all.count() == 0 {
        (Vec::new(), Vec::new())
    } else {
        PERCENTILES
            .iter()
            .map(|p| (*p, all.quantile(p / 100.0) as f64 / 1000.0))
            .unzip()
    };
    let data = serde_json::json!({
        "summary": s,
        "points": points,
        "distribution": {"percentiles": percentiles, "ms": ms},
    });
    let title = format!(
        "Load test report: {} ({:.0} s)",
        summary.meta.scenario, summary.meta.duration_s
    );
    crate::ui::report(&title, &data.to_string())
}
