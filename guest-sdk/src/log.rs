//! Log lines in the runner's output, tagged with the VU id. `println!`
//! works too (as info); these choose the level.

use crate::__bindings::runner::scenario::types::Level;
use crate::__bindings::runner::scenario::vu as wit;

/// Logs at debug level (shown with `RUNNER_LOG=debug`).
pub fn debug(message: &str) {
    wit::log(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    wit::log(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    wit::log(Level::Warn, message);
}

/// Logs at error level.
pub fn error(message: &str) {
    wit::log(Level::Error, message);
}
