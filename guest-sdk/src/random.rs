//! Random numbers for scenarios: think times, picking a product, a user.
//!
//! Seeded from the host's random source for this VU, so a run given
//! `runner run --seed N` makes the same choices again, VU by VU; without
//! `--seed` the runner draws a seed and prints it, so any run can be
//! replayed. Not for secrets.

use std::cell::Cell;
use std::hash::BuildHasher;

thread_local! {
    static STATE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// A uniformly random `u64`.
pub fn u64() -> u64 {
    STATE.with(|s| {
        // std's hasher keys come from the host's (seeded) random source.
        let mut x = s
            .get()
            .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(0x5EED_u64));
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(Some(x));
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A uniformly random number in `[0, 1)`.
pub fn f64() -> f64 {
    (u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A random number in `low..high` (`low` when the range is empty).
pub fn range(low: u64, high: u64) -> u64 {
    if high <= low {
        return low;
    }
    low + u64() % (high - low)
}

/// A random element of `items`, if it has any.
pub fn pick<T>(items: &[T]) -> Option<&T> {
    if items.is_empty() {
        return None;
    }
    items.get(range(0, items.len() as u64) as usize)
}

/// True with probability `p` (0 to 1).
pub fn chance(p: f64) -> bool {
    f64() < p
}
