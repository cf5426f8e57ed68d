//! Seeds for everything random a VU can reach, derived from one run seed
//! (`--seed`), so a run can be replayed: the same seed gives each VU id the
//! same random streams (WASI `random`, `insecure`, `insecure-seed`), and
//! the runner the same arrival and start times.

use rand::rngs::StdRng;
use rand::SeedableRng;

/// What a derived seed is for, so streams of one VU differ from each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// `wasi:random/random`.
    Secure = 1,
    /// `wasi:random/insecure`.
    Insecure = 2,
    /// `wasi:random/insecure-seed` (low half).
    InsecureSeedLow = 3,
    /// `wasi:random/insecure-seed` (high half).
    InsecureSeedHigh = 4,
    /// A class's open-model arrival times.
    Arrivals = 5,
    /// A class's VU start times.
    Starts = 6,
    /// The `vu.random-seed` a guest seeds its own generator with.
    Guest = 7,
}

/// The seed of `stream` for `id` (a VU id, or a class index) in a run seeded
/// with `run`: splitmix64 over the three, so nearby ids give unrelated seeds.
pub fn derive(run: u64, id: u32, stream: Stream) -> u64 {
    let mut x = run ^ (u64::from(id) << 8) ^ (stream as u64).wrapping_mul(0xA076_1D64_78BD_642F);
    x = mix(x);
    mix(x ^ u64::from(id))
}

/// A fresh run seed from the operating system (when `--seed` is not given,
/// so that any run can be replayed from the seed its summary records).
pub fn fresh() -> u64 {
    rand::Rng::next_u64(&mut rand::rng())
}

/// A generator for `stream` of VU `vu` in a run seeded with `run`.
pub fn rng(run: u64, vu: u32, stream: Stream) -> StdRng {
    StdRng::seed_from_u64(derive(run, vu, stream))
}

/// The 128-bit value `wasi:random/insecure-seed` returns to VU `vu`.
pub fn insecure_seed(run: u64, vu: u32) -> u128 {
    let low = derive(run, vu, Stream::InsecureSeedLow);
    let high = derive(run, vu, Stream::InsecureSeedHigh);
    (u128::from(high) << 64) | u128::from(low)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_seed_same_stream_other_vu_other_stream() {
        let a: Vec<u64> = (0..4)
            .map(|_| rng(7, 3, Stream::Secure).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut r = rng(7, 3, Stream::Secure);
        let first = r.next_u64();
        assert_ne!(first, r.next_u64());
        assert_ne!(first, rng(7, 4, Stream::Secure).next_u64());
        assert_ne!(first, rng(8, 3, Stream::Secure).next_u64());
        assert_ne!(first, rng(7, 3, Stream::Insecure).next_u64());
        assert_ne!(insecure_seed(7, 3), insecure_seed(7, 4));
        assert_ne!(fresh(), fresh());
    }
}
