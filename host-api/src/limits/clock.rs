//! The budget's clock: monotonic nanoseconds as a plain integer.
//!
//! A VU crosses between guest and host code several times per request, and
//! each crossing reads the clock; `Instant`'s arithmetic (normalising
//! seconds and nanoseconds on every subtraction) cost more than the read
//! itself. The clock `Instant` reads on Linux, `CLOCK_MONOTONIC`, kept as
//! one `u64`.

/// Nanoseconds on the monotonic clock.
pub type Nanos = u64;

/// The monotonic clock now.
pub fn now() -> Nanos {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on
    // every Linux the runner supports, and on failure `ts` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vu::nanos;

    #[test]
    fn the_clock_moves_forward_in_step_with_instant() {
        let (a, i) = (now(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (b, j) = (now(), std::time::Instant::now());
        let ours = b - a;
        let std = nanos(j - i);
        assert!(ours >= 5_000_000, "{ours}");
        assert!(ours.abs_diff(std) < 1_000_000, "{ours} vs {std}");
    }
}
