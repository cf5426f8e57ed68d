//! Fuzzing of everything that decodes untrusted input: the threshold
//! parser, run options and specs (REST bodies, federation assignments,
//! the scenario's own declared options), federation frames (every message
//! either side sends, and the histograms inside snapshots), the REST
//! API's request bodies through the real router, join tokens, egress
//! patterns and stages. The MQTT decoder's checks live in host-api
//! (`host_api::fuzzing`), which keeps that decoder private.
//!
//! Each target is one check per input (`check_*`, [`targets`]), fed by
//! two engines:
//!
//! - **libFuzzer**, through `cargo fuzz`: this folder is also the fuzz
//!   crate (`Cargo.toml`, `fuzz_targets/`), coverage-guided, seeded from
//!   the seeds below. `scripts/fuzz.sh` builds every target and runs each
//!   for a bounded time (CI: 20 s each); `scripts/fuzz.sh thresholds
//!   600` runs one longer. A crash leaves its input in
//!   `target/fuzz/artifacts/<target>/`; `scripts/fuzz.sh thresholds 0
//!   FILE` replays it.
//! - **a bounded deterministic engine** ([`engine`]: xorshift, a fixed
//!   seed), run by `cargo test --test fuzz`, with no nightly toolchain or
//!   instrumented build. It makes inputs three ways: from valid seeds
//!   mutated byte by byte (bit flips, insertions, deletions, splices of
//!   tokens such as `p(99)`, `<`, `rate`, `{`, `"`, huge numbers, NaN,
//!   unicode, long strings), from the seeds' JSON mutated as a tree (a
//!   field dropped, added, retyped, set to an extreme value), and from
//!   scratch with the `arbitrary` crate. It also checks that valid seeds
//!   still decode, so a decoder that refuses everything fails too.
//!
//! Every check asserts that nothing panics, that errors are sentences,
//! and that what decodes reads back the same.
//!
//! The bounded engine runs a fixed number of cases per target, a few
//! seconds in all in release mode:
//!
//! ```text
//! FUZZ_CASES=1000000 cargo test --release --test fuzz           # more cases per target
//! FUZZ_SEED=0x1234 cargo test --release --test fuzz              # another sequence
//! FUZZ_SEED=0x1234 FUZZ_ONLY=4711 cargo test --release --test fuzz thresholds  # one case
//! ```
//!
//! A failure prints the target, the seed, the case number and the input.

// Built as the fuzz crate's library (not a test), the bounded engine's
// tests and what only they use drop out.
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

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

pub mod engine;
pub mod frames;
pub mod options;
pub mod rest_api;
pub mod targets;
pub mod text;
pub mod thresholds;

use engine::*;
use options::*;
use thresholds::*;
