//! [`CpuBudget`]: the CPU time an iteration may spend, and where it went.

use std::time::Duration;

use super::clock::{now, Nanos};
use crate::vu::nanos;

/// A gap between iterations at least this long (a think time, pacing)
/// ends a VU's busy streak.
const TICK_GAP: Nanos = 1_000_000;

/// A host call that returns sooner than this did not really park the VU
/// (a zero sleep, a call that never waited): it ends no busy streak, or a
/// loop of such calls would pass for a VU that lets the others run.
const PARK_MIN: Nanos = 20_000;

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
///
/// Times are monotonic nanoseconds: the crossings happen several times per
/// request, and plain integers keep their cost to one clock read.
#[derive(Clone, Debug)]
pub struct CpuBudget {
    limit: Nanos,
    used: Nanos,
    last: Nanos,
    /// Of `used`, the part spent in host calls (at most a tick per call).
    host: Nanos,
    /// When the current host call began.
    entered: Option<Nanos>,
    /// This iteration's time in guest code, measured at each crossing.
    guest: Nanos,
    /// When the guest last began running.
    guest_since: Option<Nanos>,
    /// Guest calls under way inside a host call: the canonical ABI's
    /// `realloc` while a host call lowers its result. Their crossings are
    /// not measured (the host call goes on around them); a tick that finds
    /// one running charges it to the guest. (A tick's worth at most may go
    /// to the wrong side there: the host work just before such a call, or
    /// an epoch yield inside one.)
    nested: u32,
    /// Charges in a row that found the guest busy for the whole tick.
    streak: u32,
    /// What the last charge found: the guest ran less than half a tick
    /// since it resumed (it has been off the CPU, parked).
    fresh: bool,
    /// When the guest last returned to the runner (an iteration ended).
    returned: Option<Nanos>,
    /// Since the VU began: guest and host time.
    total_guest: Nanos,
    total_host: Nanos,
}

impl CpuBudget {
    /// A budget of `limit` per iteration.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit: nanos(limit),
            used: 0,
            last: now(),
            host: 0,
            entered: None,
            guest: 0,
            guest_since: None,
            nested: 0,
            streak: 0,
            fresh: false,
            returned: None,
            total_guest: 0,
            total_host: 0,
        }
    }

    /// Starts a new iteration with the full budget.
    pub fn reset(&mut self) {
        self.total_host = self.total_host.saturating_add(self.host);
        self.total_guest = self.total_guest.saturating_add(self.guest);
        self.used = 0;
        self.host = 0;
        self.guest = 0;
        // Between iterations no call is under way (one that trapped never
        // returned).
        self.entered = None;
        self.nested = 0;
        // A VU that goes from one iteration straight into the next is still
        // busy: its streak goes on, or a loop of short iterations would
        // escape taking turns for the first ticks of each. A pause (think
        // time, pacing) ends it.
        let now = now();
        let gap = self.returned.map_or(TICK_GAP, |t| now.saturating_sub(t));
        if gap >= TICK_GAP {
            self.streak = 0;
        }
        self.last = now;
    }

    /// Forgets the host call under way (the epoch check's own yield, which
    /// is not the host's CPU time).
    pub fn not_host(&mut self) {
        // Inside a nested guest call the host call around it goes on.
        if self.nested == 0 {
            self.entered = None;
        }
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
    /// Crossings inside a host call (its guest `realloc`, the epoch check
    /// that interrupts one) read no clock.
    pub fn cross(&mut self, into_guest: bool, from_host_call: bool, tick: Duration) {
        if !from_host_call && (self.entered.is_some() || self.nested > 0) {
            if into_guest {
                self.nested += 1;
            } else {
                self.nested = self.nested.saturating_sub(1);
            }
            return;
        }
        if self.nested > 0 {
            return;
        }
        let now = now();
        let tick = nanos(tick);
        if into_guest {
            if from_host_call {
                if let Some(entered) = self.entered.take() {
                    let from = entered.max(self.last);
                    self.host += now.saturating_sub(from).min(tick);
                }
            }
            self.guest_since = Some(now);
        } else {
            if let Some(since) = self.guest_since.take() {
                self.guest += now.saturating_sub(since).min(tick);
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
        self.host.saturating_mul(2) > self.used
    }

    /// This iteration's CPU time so far: (in guest code, in host calls).
    pub fn this_iteration(&self) -> (Duration, Duration) {
        (
            Duration::from_nanos(self.guest),
            Duration::from_nanos(self.host),
        )
    }

    /// CPU time so far, finished iterations and this one: (in guest code,
    /// in host calls).
    pub fn totals(&self) -> (Duration, Duration) {
        (
            Duration::from_nanos(self.total_guest.saturating_add(self.guest)),
            Duration::from_nanos(self.total_host.saturating_add(self.host)),
        )
    }

    /// Notes that the guest resumes running now, after a host call.
    pub fn resumed(&mut self) {
        self.resumed_at(now());
    }

    fn resumed_at(&mut self, now: Nanos) {
        if self
            .entered
            .is_some_and(|e| now.saturating_sub(e) < PARK_MIN)
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
        let now = now();
        let tick = nanos(tick);
        // A guest stretch is measured a tick at a time (it may have been
        // suspended at a yield in between).
        if let Some(since) = self.guest_since {
            self.guest += now.saturating_sub(since).min(tick);
            self.guest_since = Some(now);
        }
        // A guest call nested in a host call (a `realloc` that spins) is
        // the guest's time, not the host call's.
        if self.nested > 0 {
            if let Some(entered) = self.entered {
                self.guest += now.saturating_sub(entered.max(self.last)).min(tick);
                self.entered = Some(now);
            }
        }
        let spent = now.saturating_sub(self.last);
        self.fresh = spent < tick / 2;
        // A busy tick lengthens the streak; a short one does not end it:
        // the ticker's own jitter makes some ticks short, and ending the
        // streak there let a busy VU run outside the turns for another
        // 50 ms. A park ends it (`resumed`), as does a pause between
        // iterations.
        if spent >= tick * 9 / 10 {
            self.streak = self.streak.saturating_add(1);
        }
        self.used += spent.min(tick);
        self.last = now;
        self.used <= self.limit
    }

    /// The per-iteration limit.
    pub fn limit(&self) -> Duration {
        Duration::from_nanos(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = now();
        b.entered = Some(t);
        b.resumed_at(t + 2_000);
        assert_eq!(b.busy_streak(), 3);
        // A call that waited ends it.
        b.entered = Some(t);
        b.resumed_at(t + 1_000_000);
        assert_eq!(b.busy_streak(), 0);
    }

    /// Crossings as a store's call hook reports them.
    fn calling_wasm(b: &mut CpuBudget) {
        b.cross(true, false, TICK);
    }
    fn returning_from_wasm(b: &mut CpuBudget) {
        b.cross(false, false, TICK);
    }
    fn calling_host(b: &mut CpuBudget) {
        b.cross(false, true, TICK);
    }
    fn returning_from_host(b: &mut CpuBudget) {
        b.cross(true, true, TICK);
    }
    const TICK: Duration = Duration::from_millis(100);

    fn spin(d: Duration) {
        let t = std::time::Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn guest_and_host_time_are_told_apart_and_a_realloc_counts_with_its_host_call() {
        let mut b = CpuBudget::new(Duration::from_secs(60));
        b.reset();
        calling_wasm(&mut b);
        spin(Duration::from_millis(20)); // guest code
        calling_host(&mut b);
        spin(Duration::from_millis(10)); // the host call...
        calling_wasm(&mut b); // ...lowers its result through the guest's realloc
        spin(Duration::from_millis(10));
        returning_from_wasm(&mut b);
        spin(Duration::from_millis(10));
        returning_from_host(&mut b);
        spin(Duration::from_millis(5)); // guest code again
        returning_from_wasm(&mut b);
        let (guest, host) = b.this_iteration();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        assert!((25.0..40.0).contains(&ms(guest)), "guest {guest:?}");
        assert!((30.0..45.0).contains(&ms(host)), "host {host:?}");
        // The next crossing is at the top level again: measured.
        calling_wasm(&mut b);
        spin(Duration::from_millis(5));
        returning_from_wasm(&mut b);
        assert!(b.this_iteration().0 > guest);
        assert_eq!(b.this_iteration().1, host);
    }

    #[test]
    fn a_spinning_realloc_is_charged_to_the_guest() {
        let tick = Duration::from_millis(10);
        let mut b = CpuBudget::new(Duration::from_secs(60));
        b.reset();
        calling_wasm(&mut b);
        calling_host(&mut b);
        calling_wasm(&mut b); // the realloc that never ends
        for _ in 0..5 {
            spin(tick);
            assert!(b.charge(tick));
            // The epoch check is a host call of its own.
            b.cross(false, true, tick);
            b.not_host();
            b.cross(true, true, tick);
        }
        let (guest, host) = b.this_iteration();
        assert!(guest >= Duration::from_millis(40), "guest {guest:?}");
        assert!(host < Duration::from_millis(5), "host {host:?}");
        assert!(!b.mostly_host());
    }
}
