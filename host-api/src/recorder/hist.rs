//! [`Hist`]: an HdrHistogram that merges exactly and travels as its
//! standard V2 encoding.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest value a latency histogram holds: one hour in microseconds.
/// Larger values are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// Highest value a plain histogram holds.
const MAX_VALUE: u64 = u64::MAX / 2;

/// Most samples a decoded histogram may hold: 2^53, 28 years at ten
/// million a second. hdrhistogram adds counts up unchecked when it
/// answers a quantile, so a peer's histogram whose counts come near 2^64
/// (found by the `histograms` fuzz target) would overflow there; below
/// this bound, 2,048 of them still merge without overflow.
const MAX_COUNT: u64 = 1 << 53;

/// A mergeable HdrHistogram with 3 significant digits.
///
/// It starts small and grows to the largest value recorded (a histogram of
/// millisecond latencies takes 16 KiB, not the 188 KiB one sized for an
/// hour would), so a run with many request names stays light. Values
/// above its maximum are clamped to it.
///
/// Serializes as the base64 of its HdrHistogram V2 encoding, the format
/// other HdrHistogram tools read.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>, u64);

impl Hist {
    /// A histogram for latencies in microseconds, up to one hour.
    pub fn micros() -> Self {
        Self::with_max(MAX_MICROS)
    }

    /// A histogram for arbitrary non-negative integers.
    pub fn values() -> Self {
        Self::with_max(MAX_VALUE)
    }

    fn with_max(max: u64) -> Self {
        // Bounds are constants known to be valid, so this cannot fail.
        let mut h = Histogram::new_with_bounds(1, 2, 3)
            .or_else(|_| Histogram::new(3))
            .unwrap_or_else(|_| unreachable!("3 significant digits is valid"));
        h.auto(true);
        Self(h, max)
    }

    /// Records one value, clamped into the histogram's range.
    pub fn record(&mut self, value: u64) {
        let v = value.clamp(1, self.1);
        if self.0.record(v).is_err() {
            self.0.saturating_record(v);
        }
    }

    /// Adds every count of `other` into `self`.
    pub fn merge(&mut self, other: &Hist) {
        if self.0.add(&other.0).is_err() {
            // Only possible when ranges differ; fall back to re-recording.
            for v in other.0.iter_recorded() {
                self.0
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// The underlying HdrHistogram.
    pub fn inner(&self) -> &Histogram<u64> {
        &self.0
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0.0–1.0); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    /// Encodes as base64 of the HdrHistogram V2 format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Writing into a Vec cannot fail for a well-formed histogram.
        if V2Serializer::new().serialize(&self.0, &mut buf).is_err() {
            buf.clear();
        }
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    /// Decodes what [`Hist::encode`] produced.
    ///
    /// The header is checked before anything is allocated, so an encoding
    /// from another process (a federation worker) cannot make this one
    /// allocate more than the text it sent: only the uncompressed V2
    /// format, with this type's bounds and precision, is accepted.
    pub fn decode(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("histogram is not base64: {e}"))?;
        check_header(&bytes)?;
        if holds_unnegatable(&bytes[40..]) {
            return Err("histogram encoding refused: a run of zeros of 2^63".into());
        }
        let mut h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("histogram is not an HdrHistogram V2 encoding: {e:?}"))?;
        // hdrhistogram's total saturates, so this also refuses counts
        // that add up past 2^64.
        if h.len() > MAX_COUNT {
            return Err(format!(
                "histogram encoding refused: it holds {} samples, more than the {MAX_COUNT} a run can record",
                h.len()
            ));
        }
        h.auto(true);
        Ok(Self(h, MAX_VALUE))
    }
}

/// Whether a V2 payload holds the zig-zag number for -2^63, a run of
/// zeros hdrhistogram's decoder negates unchecked (a panic with overflow
/// checks; found by the `histograms` fuzz target). The payload is LEB128,
/// the ninth byte of a number taken whole, as that decoder reads it.
fn holds_unnegatable(payload: &[u8]) -> bool {
    let mut bytes = payload.iter();
    'numbers: loop {
        let mut n = 0u64;
        for i in 0..9 {
            let Some(&b) = bytes.next() else {
                return false;
            };
            if i == 8 {
                n |= u64::from(b) << 56;
                break;
            }
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if n == u64::MAX {
                    return true;
                }
                continue 'numbers;
            }
        }
        if n == u64::MAX {
            return true;
        }
    }
}

/// The V2 uncompressed encoding's cookies (with and without the word-size
/// bits some writers set).
const V2_COOKIES: [u32; 2] = [0x1c84_9303, 0x1c84_9313];

/// Accepts only headers this type writes: V2 uncompressed, a payload no
/// longer than what follows, 3 significant digits, lowest 1, highest at
/// most this type's largest (so a decoded histogram takes at most 425 KiB).
fn check_header(b: &[u8]) -> Result<(), String> {
    let bad = |why: &str| Err(format!("histogram encoding refused: {why}"));
    if b.len() < 40 {
        return bad("shorter than its header");
    }
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_be_bytes(a)
    };
    if !V2_COOKIES.contains(&u32_at(0)) {
        return bad("not the uncompressed V2 format");
    }
    if u32_at(4) as usize > b.len() - 40 {
        return bad("its payload is longer than what was sent");
    }
    if u32_at(12) != 3 || u64_at(16) != 1 {
        return bad("not 3 significant digits from 1");
    }
    if !(2..=MAX_VALUE).contains(&u64_at(24)) {
        return bad("an unexpected highest value");
    }
    Ok(())
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Hist::decode(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_grow_to_what_they_hold_and_clamp_at_their_maximum() {
        let mut small = Hist::micros();
        small.record(1_500);
        let mut big = Hist::micros();
        big.record(3_000_000);
        big.record(u64::MAX);
        assert_eq!(
            big.inner().max(),
            big.inner().highest_equivalent(MAX_MICROS)
        );
        // Merged either way round, every value is kept.
        let mut m = small.clone();
        m.merge(&big);
        assert_eq!(m.count(), 3);
        assert_eq!(m.quantile(0.0), small.quantile(0.0));
        let back = Hist::decode(&m.encode()).expect("decodes");
        assert_eq!(back.quantile(1.0), m.quantile(1.0));
        // Small values stay small in memory.
        assert!(
            small.inner().distinct_values() <= 4096,
            "{}",
            small.inner().distinct_values()
        );
    }

    #[test]
    fn hostile_encodings_are_refused_before_allocating() {
        let mut h = Hist::micros();
        h.record(42);
        let good = base64::engine::general_purpose::STANDARD
            .decode(h.encode())
            .expect("base64");
        assert!(Hist::decode(&h.encode()).is_ok());
        assert!(Hist::decode(&Hist::values().encode()).is_ok());
        let tamper = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        // A payload length of 4 GiB, a precision of 5 digits, a huge range.
        assert!(Hist::decode(&tamper(4, &u32::MAX.to_be_bytes())).is_err());
        assert!(Hist::decode(&tamper(12, &5u32.to_be_bytes())).is_err());
        assert!(Hist::decode(&tamper(24, &u64::MAX.to_be_bytes())).is_err());
        assert!(Hist::decode(&tamper(24, &0u64.to_be_bytes())).is_err());
        assert!(Hist::decode(&tamper(0, &0x1c84_9314u32.to_be_bytes())).is_err());
        assert!(Hist::decode("AAAA").is_err());
    }

    /// Found by the `histograms` fuzz target: counts adding up past 2^64
    /// made `quantile` overflow (a panic with overflow checks, a wrong
    /// answer without). Such an encoding, and one just past the bound,
    /// are refused; one at the bound answers.
    #[test]
    fn encodings_whose_counts_overflow_are_refused() {
        // Five values of `count` each (the encoding holds counts up to
        // 2^63, so it takes several to pass 2^64).
        let at = |count: u64| {
            let mut h = Hist::micros();
            for v in [7, 9, 11, 13, 15] {
                h.0.record_n(v, count).expect("in range");
            }
            h.encode()
        };
        let err = Hist::decode(&at(1 << 62)).expect_err("overflowing counts");
        assert!(err.contains("samples"), "{err}");
        assert!(Hist::decode(&at(MAX_COUNT / 5 + 1)).is_err());
        let h = Hist::decode(&at(MAX_COUNT / 5)).expect("at the bound");
        assert_eq!(h.quantile(1.0), 15);
    }

    /// Found by the `histograms` fuzz target: a run of zeros of 2^63
    /// (nine bytes 0xff) made hdrhistogram's decoder overflow.
    #[test]
    fn a_run_of_zeros_of_two_to_the_63_is_refused() {
        let mut h = Hist::micros();
        h.record(42);
        let mut b = base64::engine::general_purpose::STANDARD
            .decode(h.encode())
            .expect("base64");
        b.truncate(40);
        b.extend([
            0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ]);
        let len = (b.len() - 40) as u32;
        b[4..8].copy_from_slice(&len.to_be_bytes());
        let text = base64::engine::general_purpose::STANDARD.encode(&b);
        let err = Hist::decode(&text).expect_err("refused");
        assert!(err.contains("2^63"), "{err}");
        assert!(!holds_unnegatable(&[0x02, 0xfe, 0xff, 0x01]));
        assert!(holds_unnegatable(&[0xff; 9]));
    }
}
