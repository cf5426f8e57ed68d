//! What happens to a run while it goes on, as its snapshots, its API and
//! its summary record it: load changes, stops, scenario swaps. A leaf of
//! the crate, so the run that makes these and the report that shows them
//! need not know each other.

use serde::{Deserialize, Serialize};

/// Who stopped a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StopBy {
    /// A signal (Ctrl-C, SIGTERM).
    Signal,
    /// The API (`POST .../stop`).
    Api,
    /// An `abort` threshold that failed.
    Threshold,
    /// The coordinator of a distributed run.
    Coordinator,
    /// The runner itself: its memory reached `--max-memory`.
    Memory,
}

/// Something that changed a run, as the snapshot stream records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ControlEvent {
    /// Seconds since the run started.
    pub t: f64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The same, in a sentence.
    pub message: String,
}

/// The kinds of [`ControlEvent`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EventKind {
    /// A closed-model class's VU count changed.
    Vus {
        /// The class.
        class: String,
        /// VUs asked for before.
        from: f64,
        /// VUs asked for now.
        to: f64,
        /// Seconds the change takes.
        ramp_s: f64,
    },
    /// An open-model class's arrival rate changed.
    Rate {
        /// The class.
        class: String,
        /// Arrivals per second before.
        from: f64,
        /// Arrivals per second now.
        to: f64,
        /// Seconds the change takes.
        ramp_s: f64,
    },
    /// The run is stopping.
    Stop {
        /// In-flight iterations are cancelled.
        abort: bool,
        /// Who stopped it.
        by: StopBy,
    },
    /// A worker of a distributed run was lost.
    Worker {
        /// Its name.
        worker: String,
        /// What became of its share: `rebalance`, `continue` or `abort`.
        then: String,
    },
    /// The VUs continue on another scenario component.
    Scenario {
        /// SHA-256 of the new component.
        sha256: String,
        /// 1 for the first swap, 2 for the next...
        generation: u64,
    },
}

/// One scenario's time in a run: the summary lists them when a run's
/// scenario was swapped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Phase {
    /// The scenario's name.
    pub name: String,
    /// SHA-256 of the component.
    pub sha256: String,
    /// Seconds since the run started when it came in force.
    pub from_s: f64,
    /// Seconds since the run started when it was replaced (or the run
    /// ended).
    pub to_s: f64,
}

/// The first 12 hex digits of a hash, as people quote it.
pub fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_kind() {
        let e = ControlEvent {
            t: 1.5,
            kind: EventKind::Vus {
                class: "api".into(),
                from: 2.0,
                to: 5.0,
                ramp_s: 0.0,
            },
            message: "class api: 2 → 5 VUs".into(),
        };
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(v["kind"], "vus");
        assert_eq!(v["to"], 5.0);
        let back: ControlEvent = serde_json::from_value(v).expect("back");
        assert_eq!(back, e);
    }
}
