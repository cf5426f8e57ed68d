//! The messages of the federation protocol. Each connection carries:
//! - a control stream (bidirectional, opened by the worker): [`Up`] frames
//!   from the worker, [`Down`] frames from the coordinator;
//! - a snapshot stream (unidirectional, worker → coordinator): one
//!   [`SnapshotFrame`] per second of each run, acknowledged on the control
//!   stream, replayed after a reconnection until acknowledged;
//! - component streams (unidirectional, coordinator → worker): a
//!   [`ComponentHeader`] frame then the component's bytes, when a worker
//!   does not have the scenario's hash in its cache.

use serde::{Deserialize, Serialize};

use crate::plan::share::Share;
use crate::run::Snapshot;
use crate::spec::RunSpec;

/// The protocol's version; both sides refuse another.
pub const PROTOCOL: u32 = 3;

/// Largest component a coordinator ships.
pub const MAX_COMPONENT: u64 = 512 << 20;

/// Largest hello a coordinator reads before the secret is checked.
pub const MAX_HELLO: usize = 16 << 10;

/// Worker → coordinator, on the control stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Up {
    /// The first frame: who the worker is and that it may join.
    Hello {
        /// [`PROTOCOL`].
        protocol: u32,
        /// The worker's runner version.
        version: String,
        /// A name for logs and the per-worker table.
        name: String,
        /// Relative capacity: shares are proportional to it.
        capacity: f64,
        /// The token's secret.
        secret: String,
        /// Set when reconnecting to a run it is part of.
        resume: Option<Resume>,
    },
    /// Answer to a [`Down::Ping`]: the worker's clock when it got it.
    Pong {
        /// The ping's id.
        id: u64,
        /// Nanoseconds since the Unix epoch, on the worker's clock.
        unix_ns: u64,
    },
    /// The worker lacks the run's component.
    Need {
        /// The run.
        run: u64,
        /// The component's hash.
        sha256: String,
    },
    /// The worker has prepared its share and waits for the start.
    Ready {
        /// The run.
        run: u64,
    },
    /// The worker could not prepare its share.
    Failed {
        /// The run.
        run: u64,
        /// Why, in a sentence.
        error: String,
    },
    /// VUs handed to another worker have all left (answer to a
    /// [`Down::Release`]).
    Released {
        /// The run.
        run: u64,
        /// The class.
        class: String,
        /// Global VU indices.
        indices: Vec<u32>,
    },
    /// Answer to a [`Down::Swap`]: the worker's VUs continue on the new
    /// component, or why they cannot.
    Swapped {
        /// The run.
        run: u64,
        /// The new component's hash.
        sha256: String,
        /// Why the swap failed here (the run goes on unchanged here).
        error: Option<String>,
    },
    /// Answer to a [`Down::Lease`], from the worker's control thread: it
    /// is there and hears the coordinator, even while its VUs saturate
    /// it and its snapshots come late (thousands of VUs starting at once).
    Alive {
        /// The run.
        run: u64,
    },
    /// The worker's part of the run is over; `last_seq` was its last
    /// snapshot.
    Ended {
        /// The run.
        run: u64,
        /// The number of its last snapshot.
        last_seq: u64,
    },
}

/// What a reconnecting worker was doing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// The run.
    pub run: u64,
    /// The worker id the coordinator gave it.
    pub worker: u32,
}

/// Coordinator → worker, on the control stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Down {
    /// Admitted.
    Welcome {
        /// [`PROTOCOL`].
        protocol: u32,
        /// The coordinator's runner version.
        version: String,
        /// The worker's id in this coordinator.
        worker: u32,
        /// Whether the run the worker asked to resume is this
        /// coordinator's (if not, the worker forgets it).
        resumed: bool,
    },
    /// Not admitted (the connection closes after this).
    Refused {
        /// Why, and what to do.
        reason: String,
    },
    /// A clock probe.
    Ping {
        /// Echoed in the pong.
        id: u64,
    },
    /// A run to prepare: the spec (its scenario by hash) and this worker's
    /// share.
    Assign {
        /// The run.
        run: u64,
        /// What to run.
        spec: Box<RunSpec>,
        /// This worker's part.
        share: Share,
        /// How long a lease lasts, ms.
        lease_ms: u64,
    },
    /// Start the prepared run at this instant of the worker's clock.
    Start {
        /// The run.
        run: u64,
        /// Nanoseconds since the Unix epoch, worker's clock.
        at_unix_ns: u64,
    },
    /// Steer the run.
    Control {
        /// The run.
        run: u64,
        /// What to do.
        command: WireCommand,
    },
    /// The worker may keep generating load for `ms` more from receipt,
    /// and never past `until_unix_ns` on its own clock.
    Lease {
        /// The run.
        run: u64,
        /// From receipt, ms.
        ms: u64,
        /// The coordinator's send time plus the lease, on the worker's
        /// clock (so network delay cannot stretch the lease).
        until_unix_ns: u64,
    },
    /// Snapshots up to `seq` arrived and count.
    Ack {
        /// The run.
        run: u64,
        /// The highest snapshot number received.
        seq: u64,
    },
    /// Take over these VUs of a closed-model class (of a lost worker).
    Adopt {
        /// The run.
        run: u64,
        /// The class.
        class: String,
        /// Global VU indices.
        indices: Vec<u32>,
        /// When they start, Unix ns, worker's clock.
        at_unix_ns: u64,
    },
    /// Hand these VUs of a closed-model class to another worker (one that
    /// joined mid-run): they leave after their iteration, and the worker
    /// answers [`Up::Released`] once they all have.
    Release {
        /// The run.
        run: u64,
        /// The class.
        class: String,
        /// Global VU indices.
        indices: Vec<u32>,
    },
    /// Run this fraction of each open-model class's rate from now on.
    Rescale {
        /// The run.
        run: u64,
        /// (class, fraction of its rate).
        fractions: Vec<(String, f64)>,
    },
    /// Continue the run on another component (fetched by hash, with
    /// [`Up::Need`], when not cached); answered with [`Up::Swapped`].
    Swap {
        /// The run.
        run: u64,
        /// The component's name, for logs and the summary.
        name: String,
        /// Its hash.
        sha256: String,
    },
    /// Run this many more of the run's shared iterations (a lost
    /// worker's that it had not reported done).
    Grant {
        /// The run.
        run: u64,
        /// Iterations to add to this worker's pool.
        iterations: u64,
    },
    /// Forget the run (it was called off before or while starting).
    Cancel {
        /// The run.
        run: u64,
        /// Why.
        reason: String,
    },
}

/// A command for a running run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WireCommand {
    /// Stop (gracefully, or cancelling in-flight iterations).
    Stop {
        /// Cancel in-flight iterations.
        abort: bool,
    },
    /// Change a class's (or every class's) VU count or rate; values are the
    /// whole run's.
    Load {
        /// The class, or all of the model.
        class: Option<String>,
        /// Running VUs.
        vus: Option<u32>,
        /// Iterations per second.
        rate: Option<f64>,
        /// Over how long, ms.
        ramp_ms: u64,
    },
}

/// One second of one worker's run, on the snapshot stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFrame {
    /// The run.
    pub run: u64,
    /// The worker's snapshot.
    pub snapshot: Snapshot,
}

/// The head of a component stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentHeader {
    /// SHA-256 of the bytes that follow.
    pub sha256: String,
    /// How many bytes follow.
    pub len: u64,
}
