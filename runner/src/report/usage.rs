//! What each VU class cost, as the summary shows it: CPU in guest code
//! and in host calls, memory, fuel, traps, and the costliest VUs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use host_api::recorder::ClassUsage;
use serde::{Deserialize, Serialize};

/// One class's costs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UsageRow {
    /// Iterations run, any outcome.
    pub iterations: u64,
    /// CPU time in guest code, ms.
    pub guest_cpu_ms: f64,
    /// CPU time in host calls, ms.
    pub host_cpu_ms: f64,
    /// CPU per iteration, ms (guest and host).
    pub cpu_per_iteration_ms: f64,
    /// The most linear memory one VU held, bytes.
    pub peak_memory: u64,
    /// Fuel consumed (when metered).
    pub fuel: Option<u64>,
    /// Iterations ended early, by kind.
    pub traps: BTreeMap<String, u64>,
    /// The VUs with the most CPU over the run, most first.
    pub top_cpu: Vec<VuCost>,
    /// The VUs holding the most linear memory, most first.
    pub top_memory: Vec<VuCost>,
}

/// One VU and what it cost (ms of CPU, or bytes of memory).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VuCost {
    /// The VU's id.
    pub vu: u32,
    /// CPU ms, or memory bytes.
    pub value: f64,
}

impl UsageRow {
    /// The row of `u`.
    pub fn of(u: &ClassUsage) -> Self {
        let ms = |us: u64| (us as f64 / 100.0).round() / 10.0;
        Self {
            iterations: u.iterations,
            guest_cpu_ms: ms(u.guest_cpu_us),
            host_cpu_ms: ms(u.host_cpu_us),
            cpu_per_iteration_ms: ((u.guest_cpu_us + u.host_cpu_us) as f64
                / u.iterations.max(1) as f64
                / 10.0)
                .round()
                / 100.0,
            peak_memory: u.peak_memory,
            fuel: (u.fuel > 0).then_some(u.fuel),
            traps: u.traps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            top_cpu: u
                .top_cpu
                .iter()
                .map(|&(vu, us)| VuCost { vu, value: ms(us) })
                .collect(),
            top_memory: u
                .top_memory
                .iter()
                .map(|&(vu, b)| VuCost {
                    vu,
                    value: b as f64,
                })
                .collect(),
        }
    }
}

/// The table's section for `classes`.
pub fn section(classes: &BTreeMap<String, UsageRow>) -> String {
    let mut s = String::new();
    if classes.is_empty() {
        return s;
    }
    let w = classes
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    let _ = writeln!(
        s,
        "\n  {:<w$}  {:>10} {:>11} {:>11} {:>10} {:>11}  costliest VU",
        "VU class", "iterations", "guest CPU", "host CPU", "CPU/iter", "peak memory"
    );
    for (name, r) in classes {
        let top = r
            .top_cpu
            .first()
            .map(|t| format!("vu {} ({:.1}ms)", t.vu, t.value))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<w$}  {:>10} {:>9.1}ms {:>9.1}ms {:>8.2}ms {:>11}  {top}",
            name,
            r.iterations,
            r.guest_cpu_ms,
            r.host_cpu_ms,
            r.cpu_per_iteration_ms,
            crate::units::format_size(r.peak_memory),
        );
    }
    s
}
