//! Where a run's snapshots go besides the hub: the live progress line
//! ([`progress`]), the NDJSON and CSV time series ([`timeseries`]), and
//! the Prometheus exposition ([`prometheus`]), which reads a run's totals
//! when scraped.

pub mod progress;
pub mod prometheus;
pub mod timeseries;
