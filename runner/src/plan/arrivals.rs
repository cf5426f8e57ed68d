//! The sequence of arrivals in "count space": arrival k is due when the
//! integral of the rate reaches its count, so a rate that changes (stages,
//! or a live change) needs no special case (time-rescaling of a unit-rate
//! process). Used for the open model's arrivals and for VU start times.

use crate::spec::Arrival;

/// Successive arrival counts: evenly one apart, or Poisson.
pub struct Counts {
    arrival: Arrival,
    state: u64,
}

impl Counts {
    /// A sequence of `arrival` spacing; `seed` drives the Poisson steps.
    pub fn new(arrival: Arrival, seed: u64) -> Self {
        Self {
            arrival,
            // xorshift needs a non-zero state.
            state: seed | 1,
        }
    }

    /// The count of the arrival after one at `count`: one more (even), or
    /// an exponential step of mean one (Poisson).
    pub fn next(&mut self, count: f64) -> f64 {
        match self.arrival {
            Arrival::Even => count + 1.0,
            Arrival::Poisson => count + self.exponential(),
        }
    }

    /// An exponential sample of mean one.
    fn exponential(&mut self) -> f64 {
        // xorshift64*: statistical quality is ample for spacing.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        -u.ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_counts_step_by_one_on_average() {
        let mut c = Counts::new(Arrival::Poisson, 42);
        let n = 100_000;
        let mut count = 0.0;
        for _ in 0..n {
            count = c.next(count);
        }
        let mean = count / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "mean step {mean}");
        let mut e = Counts::new(Arrival::Even, 1);
        assert_eq!(e.next(299.0), 300.0);
    }
}
