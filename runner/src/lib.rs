//! The runner: loads a scenario component, plans the load, runs one
//! sandboxed wasmtime store per virtual user, and reports.
//!
//! The binary (`main.rs`) is a thin shell over these modules:
//! [`cli`] (flags), [`plan`] (load plan), [`engine`] and [`vu`] (the VU
//! engine), [`oslimits`] (OS checks), [`run`] (one run, start to finish),
//! [`progress`] and [`report`] (output), [`target`] (the built-in target).

#![warn(missing_docs)]

pub mod cli;
pub mod engine;
pub mod executor;
pub mod inspect;
pub mod oslimits;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod report;
pub mod run;
pub mod target;
pub mod thresholds;
pub mod timeseries;
pub mod vu;

/// Exit code of a run that could not start or failed.
pub const EXIT_ERROR: i32 = 1;
/// Exit code of bad command-line usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a run that completed with a failed threshold (as k6).
pub const EXIT_THRESHOLDS: i32 = 99;
