//! The runner: loads a scenario component, plans the load, runs one
//! sandboxed wasmtime store per virtual user, and reports.
//!
//! Data flows one way through the modules:
//! [`cli`] (flags) → [`spec`] (a validated [`spec::RunSpec`]) → [`plan`]
//! (the load plan) → [`engine`] (wasmtime, components) → [`exec`] (the VUs)
//! → [`run`] (a run as an object: control, snapshots, summary) → [`sinks`],
//! [`report`], [`thresholds`] (output) and [`agent`] + [`web`] (runs served
//! over HTTP). [`units`], [`events`], [`ui`] (the dashboard and report
//! page) and [`oslimits`] are leaves; [`target`] is the built-in HTTP
//! target and [`inspect`] shows a component.

#![warn(missing_docs)]

pub mod agent;
pub mod cli;
pub mod engine;
pub mod events;
pub mod exec;
pub mod federation;
pub mod inspect;
pub mod oslimits;
pub mod plan;
pub mod report;
pub mod run;
pub mod scaffold;
pub mod sinks;
pub mod spec;
pub mod target;
pub mod thresholds;
pub mod ui;
pub mod units;
pub mod web;

/// Exit code of a run that could not start or failed.
pub const EXIT_ERROR: i32 = 1;
/// Exit code of bad command-line usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a run that completed with a failed threshold (as k6).
pub const EXIT_THRESHOLDS: i32 = 99;
