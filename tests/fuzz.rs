//! Bounded fuzzing of everything that decodes untrusted input: the
//! threshold parser, run options and specs (REST bodies, federation
//! assignments, the scenario's own declared options), federation frames
//! (every message either side sends, and the histograms inside snapshots)
//! the REST API's request bodies, through the real router, and join
//! tokens and egress patterns.
//!
//! This is the stand-in for `cargo fuzz`, which needs a nightly toolchain
//! with sanitizers: a small deterministic engine (xorshift, a fixed seed)
//! makes inputs three ways, from valid seeds mutated byte by byte (bit
//! flips, insertions, deletions, splices of tokens such as `p(99)`, `<`,
//! `rate`, `{`, `"`, huge numbers, NaN, unicode, long strings), from the
//! seeds' JSON mutated as a tree (a field dropped, added, retyped, set to
//! an extreme value), and from scratch with the `arbitrary` crate. Every
//! target checks that nothing panics, that errors are sentences, and that
//! valid seeds still decode, so a broken decoder fails here too.
//!
//! Each target runs a bounded number of cases, a few seconds in all in
//! release mode. To fuzz longer or elsewhere:
//!
//! ```text
//! FUZZ_CASES=1000000 cargo test --release --test fuzz           # more cases per target
//! FUZZ_SEED=0x1234 cargo test --release --test fuzz              # another sequence
//! FUZZ_SEED=0x1234 FUZZ_ONLY=4711 cargo test --release --test fuzz thresholds  # one case
//! ```
//!
//! A failure prints the target, the seed, the case number and the input.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use host_api::recorder::{Event, Hist, HttpOutcome, IterationCost, Protocol, Recorder};
use host_api::{Metrics, ScenarioOptions, VuClass};
use runner::federation::coordinator::merge::Buckets;
use runner::federation::protocol::{
    ComponentHeader, Down, Resume, SnapshotFrame, Up, WireCommand, MAX_HELLO,
};
use runner::federation::wire::{self, WireError, MAX_FRAME};
use runner::plan::share::{ClassShare, Share};
use runner::plan::Plan;
use runner::run::{ClassState, Snapshot};
use runner::spec::{RunOptions, RunSpec, ScenarioRef, Stage, MAX_RATE};
use runner::thresholds::{Aggregate, Op, Threshold};
use serde_json::{json, Value};

#[path = "fuzz/engine.rs"]
mod engine;
#[path = "fuzz/frames.rs"]
mod frames;
#[path = "fuzz/options.rs"]
mod options;
#[path = "fuzz/rest_api.rs"]
mod rest_api;
#[path = "fuzz/text.rs"]
mod text;
#[path = "fuzz/thresholds.rs"]
mod thresholds;

use engine::*;
use options::*;
use thresholds::*;
