//! Per-VU limits: memory, tables and instances ([`Limiter`]), and the CPU
//! time an iteration may spend running guest code ([`CpuBudget`]).

use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;

/// The error a guest's memory growth past its cap traps with; the runner
/// reports such a trap as `memory-limit`.
#[derive(Debug)]
pub struct MemoryCapExceeded {
    /// The cap in bytes.
    pub cap: usize,
    /// The size the guest asked for.
    pub desired: usize,
}

impl std::fmt::Display for MemoryCapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory cap of {} KiB exceeded (the guest asked for {} KiB)",
            self.cap / 1024,
            self.desired / 1024
        )
    }
}

impl std::error::Error for MemoryCapExceeded {}

/// The error a VU traps with when it holds more resource handles than
/// [`sizes::HANDLES`] (or HTTP responses than it may keep); the runner
/// reports it as `resource-limit`.
#[derive(Debug)]
pub struct HandlesExceeded(pub String);

impl std::fmt::Display for HandlesExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandlesExceeded {}

/// A gap between iterations at least this long (a think time, pacing)
/// ends a VU's busy streak.
const TICK_GAP: Duration = Duration::from_millis(1);

/// A host call that returns sooner than this did not really park the VU
/// (a zero sleep, a call that never waited): it ends no busy streak, or a
/// loop of such calls would pass for a VU that lets the others run.
const PARK_MIN: Duration = Duration::from_micros(20);

/// Caps on what one VU's instance may allocate.
#[derive(Clone, Copy, Debug)]
pub struct Limiter {
    /// Bytes of linear memory, per memory.
    pub memory: usize,
    /// Elements per table.
    pub table_elements: usize,
    /// Instances, tables and memories per store.
    pub instances: usize,
    /// Tables per store.
    pub tables: usize,
    /// Memories per store.
    pub memories: usize,
    /// Linear memory the store holds now, bytes (memories only grow).
    pub held: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            // Trap rather than fail the grow: a Rust guest would abort on the
            // failed allocation anyway, and a trap with this error tells the
            // runner why.
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                cap: self.memory,
                desired,
            }));
        }
        self.held += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

/// The CPU time an iteration may spend, in guest code and in the host
/// calls it makes.
///
/// The epoch ticker calls [`CpuBudget::charge`] on each tick that finds the
/// guest running; the time since the last charge includes the host calls
/// made meanwhile, so a VU that loops on cheap host calls spends its budget
/// as a spinning one does. Time parked in a host call (a sleep, an HTTP
/// request) is not charged: host calls mark their return with
/// [`CpuBudget::resumed`], and one charge never exceeds one tick. The host
/// calls' own share, and the guest's, are measured at each crossing
/// ([`CpuBudget::cross`]), so a VU ended by its budget is reported by
/// where it spent it.
#[derive(Clone, Debug)]
pub struct CpuBudget {
    limit: Duration,
    used: Duration,
    last: Instant,
    /// Of `used`, the part spent in host calls (at most a tick per call).
    host: Duration,
    /// When the current host call began.
    entered: Option<Instant>,
    /// This iteration's time in guest code, measured at each crossing.
    guest: Duration,
    /// When the guest last began running.
    guest_since: Option<Instant>,
    /// Charges in a row that found the guest busy for the whole tick.
    streak: u32,
    /// What the last charge found: the guest ran less than half a tick
    /// since it resumed (it has been off the CPU, parked).
    fresh: bool,
    /// When the guest last returned to the runner (an iteration ended).
    returned: Option<Instant>,
    /// Since the VU began: guest and host time.
    total_guest: Duration,
    total_host: Duration,
}

impl CpuBudget {
    /// A budget of `limit` per iteration.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            used: Duration::ZERO,
            last: Instant::now(),
            host: Duration::ZERO,
            entered: None,
            guest: Duration::ZERO,
            guest_since: None,
            streak: 0,
            fresh: false,
            returned: None,
            total_guest: Duration::ZERO,
            total_host: Duration::ZERO,
        }
    }

    /// Starts a new iteration with the full budget.
    pub fn reset(&mut self) {
        let (guest, host) = self.this_iteration();
        self.total_host += host;
        self.total_guest += guest;
        self.used = Duration::ZERO;
        self.host = Duration::ZERO;
        self.guest = Duration::ZERO;
        // A VU that goes from one iteration straight into the next is still
        // busy: its streak goes on, or a loop of short iterations would
        // escape taking turns for the first ticks of each. A pause (think
        // time, pacing) ends it.
        let now = Instant::now();
        let gap = self
            .returned
            .map_or(TICK_GAP, |t| now.saturating_duration_since(t));
        if gap >= TICK_GAP {
            self.streak = 0;
        }
        self.last = now;
    }

    /// Forgets the host call under way (the epoch check's own yield, which
    /// is not the host's CPU time).
    pub fn not_host(&mut self) {
        self.entered = None;
    }

    /// Whether the last charge found the guest just back from a park:
    /// it needs no yield to let others run.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// How many ticks in a row the VU has been busy (in guest code or
    /// host calls, never parked): a VU that hogs the CPU.
    pub fn busy_streak(&self) -> u32 {
        self.streak
    }

    /// A crossing between guest and host code (from a store's call hook):
    /// the stretch that ends is measured, one clock read per crossing.
    pub fn cross(&mut self, into_guest: bool, from_host_call: bool, tick: Duration) {
        let now = Instant::now();
        if into_guest {
            if from_host_call {
                if let Some(entered) = self.entered.take() {
                    let from = entered.max(self.last);
                    self.host += now.saturating_duration_since(from).min(tick);
                }
            }
            self.guest_since = Some(now);
        } else {
            if let Some(since) = self.guest_since.take() {
                self.guest += now.saturating_duration_since(since).min(tick);
            }
            if from_host_call {
                self.entered = Some(now);
            } else {
                self.returned = Some(now);
            }
        }
    }

    /// Whether most of this iteration's budget went to host calls.
    pub fn mostly_host(&self) -> bool {
        self.host * 2 > self.used
    }

    /// This iteration's CPU time so far: (in guest code, in host calls).
    pub fn this_iteration(&self) -> (Duration, Duration) {
        (self.guest, self.host)
    }

    /// CPU time so far, finished iterations and this one: (in guest code,
    /// in host calls).
    pub fn totals(&self) -> (Duration, Duration) {
        (self.total_guest + self.guest, self.total_host + self.host)
    }

    /// Notes that the guest resumes running now, after a host call.
    pub fn resumed(&mut self) {
        self.resumed_at(Instant::now());
    }

    fn resumed_at(&mut self, now: Instant) {
        if self
            .entered
            .is_some_and(|e| now.saturating_duration_since(e) < PARK_MIN)
        {
            return;
        }
        self.last = now;
        // It was parked: whatever it does next, it has let the others run.
        self.streak = 0;
    }

    /// Charges the time since the guest last resumed or was last charged,
    /// at most `tick`; returns `false` once the budget is spent.
    pub fn charge(&mut self, tick: Duration) -> bool {
        let now = Instant::now();
        // A guest stretch is measured a tick at a time (it may have been
        // suspended at a yield in between).
        if let Some(since) = self.guest_since {
            self.guest += now.saturating_duration_since(since).min(tick);
            self.guest_since = Some(now);
        }
        let spent = now.duration_since(self.last);
        self.fresh = spent < tick / 2;
        // A busy tick lengthens the streak; a short one does not end it:
        // the ticker's own jitter makes some ticks short, and ending the
        // streak there let a busy VU run outside the turns for another
        // 50 ms. A park ends it (`resumed`), as does a pause between
        // iterations.
        if spent >= tick * 9 / 10 {
            self.streak = self.streak.saturating_add(1);
        }
        self.used += now.duration_since(self.last).min(tick);
        self.last = now;
        self.used <= self.limit
    }

    /// The per-iteration limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// The largest values the host takes from a guest. Longer names, tags,
/// log lines and messages are cut, ending in [`sizes::CUT`]; requests over
/// their limits are refused as invalid.
pub mod sizes {
    /// Request, check, metric and connection names, bytes.
    pub const NAME: usize = 256;
    /// Tag keys and values, bytes.
    pub const TAG: usize = 64;
    /// Tags on one measurement.
    pub const TAGS: usize = 8;
    /// One log line, bytes.
    pub const LOG_LINE: usize = 4096;
    /// Lines of one `log` call.
    pub const LOG_LINES: usize = 100;
    /// A panic or iteration error message, bytes.
    pub const MESSAGE: usize = 1024;
    /// Resource handles (responses, connections, subscriptions, WASI
    /// streams) one VU may hold at once; past it the VU ends as
    /// `resource-limit`.
    pub const HANDLES: usize = 10_000;
    /// NATS connections one VU may hold at once.
    pub const NATS_CONNECTIONS: usize = 256;
    /// NATS subscriptions one VU may hold at once.
    pub const SUBSCRIPTIONS: usize = 1_024;
    /// A request URL, bytes.
    pub const URL: usize = 8192;
    /// Headers of one request.
    pub const HEADERS: usize = 100;
    /// All of one request's header names and values, bytes.
    pub const HEADER_BYTES: usize = 64 << 10;
    /// What ends a value that was cut.
    pub const CUT: &str = "…";
}

/// `s` cut to at most `max` bytes, on a character boundary, ending in
/// [`sizes::CUT`] when cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub(sizes::CUT.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(sizes::CUT);
    }
    s
}

/// Public for the runner's own guest-made strings (iteration errors).
pub fn cut(s: String, max: usize) -> String {
    truncate(s, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_values_end_in_the_marker_and_stay_within_the_limit() {
        assert_eq!(truncate("short".into(), 10), "short");
        let t = truncate("x".repeat(300), sizes::NAME);
        assert_eq!(t.len(), sizes::NAME);
        assert!(t.ends_with(sizes::CUT));
        // A multi-byte character is never split.
        let t = truncate("é".repeat(200), 11);
        assert!(t.len() <= 11 && t.ends_with(sizes::CUT), "{t}");
    }

    /// A budget that has been busy for three whole ticks, and the tick.
    fn busy_for_three_ticks() -> (CpuBudget, Duration) {
        let tick = Duration::from_millis(2);
        let mut b = CpuBudget::new(Duration::from_secs(60));
        for _ in 0..3 {
            std::thread::sleep(tick);
            assert!(b.charge(tick));
        }
        assert_eq!(b.busy_streak(), 3);
        (b, tick)
    }

    #[test]
    fn a_busy_streak_survives_a_short_tick_and_ends_at_a_park() {
        let (mut b, tick) = busy_for_three_ticks();
        // A tick that came early (the ticker's jitter) neither adds to the
        // streak nor ends it.
        assert!(b.charge(tick));
        assert_eq!(b.busy_streak(), 3);
        // A park does end it.
        b.resumed();
        assert_eq!(b.busy_streak(), 0);
    }

    #[test]
    fn a_host_call_that_returns_at_once_is_no_park() {
        let (mut b, _) = busy_for_three_ticks();
        // A zero sleep: into the host and straight back.
        let t = Instant::now();
        b.entered = Some(t);
        b.resumed_at(t + Duration::from_micros(2));
        assert_eq!(b.busy_streak(), 3);
        // A call that waited ends it.
        b.entered = Some(t);
        b.resumed_at(t + Duration::from_millis(1));
        assert_eq!(b.busy_streak(), 0);
    }
}
