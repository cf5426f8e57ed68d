//! Host side of the `types` interface: type definitions only.

use crate::bindings::runner::scenario::types::Host;
use crate::VuState;

impl Host for VuState {}
