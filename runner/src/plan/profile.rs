//! A target that changes over a run: linear ramps between stage targets
//! (`--stage 30s:100`), for ramping VUs and ramping arrival rates.

use std::time::Duration;

use crate::spec::Stage;

/// A piecewise-linear function of time from 0 to its duration.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// (seconds, value), time ascending, the first at 0.
    points: Vec<(f64, f64)>,
}

impl Profile {
    /// `value` throughout `duration`.
    pub fn constant(value: f64, duration: Duration) -> Self {
        Self {
            points: vec![(0.0, value), (duration.as_secs_f64(), value)],
        }
    }

    /// From `start`, through each stage in turn.
    pub fn stages(start: f64, stages: &[Stage]) -> Self {
        let mut points = vec![(0.0, start)];
        let mut t = 0.0;
        for s in stages {
            t += s.duration.as_secs_f64();
            points.push((t, s.target));
        }
        Self { points }
    }

    /// The whole length.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.points.last().map_or(0.0, |p| p.0))
    }

    /// The integral over the whole profile (e.g. all arrivals, for a rate).
    pub fn area(&self) -> f64 {
        self.points
            .windows(2)
            .map(|w| (w[0].1 + w[1].1) / 2.0 * (w[1].0 - w[0].0))
            .sum()
    }

    /// The integral from `t0` to `t1` seconds (e.g. arrivals due between
    /// them, for a rate).
    pub fn area_between(&self, t0: f64, t1: f64) -> f64 {
        let upto = |t: f64| -> f64 {
            self.points
                .windows(2)
                .map(|w| {
                    let (a, b) = (w[0].0, w[1].0.min(t));
                    if b <= a {
                        0.0
                    } else {
                        (w[0].1 + self.value_at(b)) / 2.0 * (b - a)
                    }
                })
                .sum()
        };
        (upto(t1) - upto(t0)).max(0.0)
    }

    /// The largest value.
    pub fn max(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }

    /// Every value multiplied by `k`.
    pub fn scaled(&self, k: f64) -> Self {
        Self {
            points: self.points.iter().map(|&(t, v)| (t, v * k)).collect(),
        }
    }

    /// The value at `t` seconds (the last value after the end).
    pub fn value_at(&self, t: f64) -> f64 {
        for w in self.points.windows(2) {
            let ((t0, v0), (t1, v1)) = (w[0], w[1]);
            if t <= t1 {
                if t1 <= t0 {
                    return v1;
                }
                return v0 + (v1 - v0) * ((t - t0).max(0.0) / (t1 - t0));
            }
        }
        self.points.last().map_or(0.0, |p| p.1)
    }

    /// This profile up to `t` seconds, then a linear ramp from its value at
    /// `t` to `value` over `ramp`, then `value` held until `end` seconds.
    /// The integral up to `t` is unchanged, so arrivals already scheduled
    /// keep their times and the next ones follow the new rate.
    pub fn retarget(&self, t: f64, value: f64, ramp: Duration, end: f64) -> Profile {
        let t = t.max(0.0);
        let mut points: Vec<(f64, f64)> = self.points.iter().copied().filter(|p| p.0 < t).collect();
        let from = self.value_at(t);
        points.push((t, from));
        let reached = t + ramp.as_secs_f64();
        if reached <= end {
            points.push((reached, value));
            if end > reached {
                points.push((end, value));
            }
        } else if end > t {
            // The ramp outlasts the run: it stops where the run does.
            points.push((end, from + (value - from) * (end - t) / (reached - t)));
        }
        Profile { points }
    }

    /// This profile up to `t` seconds, and `k` times it from then on (a
    /// worker whose share of a rate changes mid-run).
    pub fn scaled_from(&self, t: f64, k: f64) -> Profile {
        let t = t.max(0.0);
        let mut points: Vec<(f64, f64)> = self.points.iter().copied().filter(|p| p.0 < t).collect();
        let at = self.value_at(t);
        points.push((t, at));
        points.push((t, at * k));
        points.extend(
            self.points
                .iter()
                .filter(|p| p.0 > t)
                .map(|&(pt, v)| (pt, v * k)),
        );
        if points.len() == 2 {
            // `t` is past the end: hold the scaled value.
            points.pop();
            points.push((t, at * k));
        }
        Profile { points }
    }

    /// This profile up to `t` seconds, and `other` from then on (a worker
    /// whose share of a rate changes mid-run: the past stays as it was).
    pub fn then_from(&self, t: f64, other: &Profile) -> Profile {
        let t = t.max(0.0);
        let mut points: Vec<(f64, f64)> = self.points.iter().copied().filter(|p| p.0 < t).collect();
        points.push((t, self.value_at(t)));
        points.push((t, other.value_at(t)));
        points.extend(other.points.iter().copied().filter(|p| p.0 > t));
        Profile { points }
    }

    /// When the integral of the profile (e.g. arrivals so far, for a rate)
    /// reaches `count`, in seconds; `None` if it does not before the end.
    pub fn time_of(&self, count: f64) -> Option<f64> {
        let mut need = count;
        for w in self.points.windows(2) {
            let ((t0, r0), (t1, r1)) = (w[0], w[1]);
            let len = t1 - t0;
            if len <= 0.0 {
                continue;
            }
            let area = (r0 + r1) / 2.0 * len;
            // A segment with no area (a rate of zero) holds no arrival.
            if need <= area && area > 0.0 {
                // Solve r0·x + (r1 − r0)/(2·len)·x² = need for x in [0, len],
                // in the form that stays exact when r1 = r0.
                let a = (r1 - r0) / (2.0 * len);
                let disc = (r0 * r0 + 4.0 * a * need).max(0.0);
                let denom = r0 + disc.sqrt();
                let x = if denom > 0.0 { 2.0 * need / denom } else { 0.0 };
                return Some(t0 + x.clamp(0.0, len));
            }
            need -= area;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(secs: u64, target: f64) -> Stage {
        Stage {
            duration: Duration::from_secs(secs),
            target,
        }
    }

    #[test]
    fn areas_between_two_moments() {
        let p = Profile::stages(0.0, &[st(10, 100.0)]);
        assert!((p.area_between(0.0, 10.0) - p.area()).abs() < 1e-9);
        assert!((p.area_between(4.0, 6.0) - 100.0).abs() < 1e-9);
        assert_eq!(p.area_between(6.0, 4.0), 0.0);
    }

    #[test]
    fn values_ramp_linearly() {
        let p = Profile::stages(0.0, &[st(10, 100.0), st(10, 100.0), st(5, 0.0)]);
        assert_eq!(p.duration(), Duration::from_secs(25));
        assert_eq!(p.value_at(5.0), 50.0);
        assert_eq!(p.value_at(15.0), 100.0);
        assert_eq!(p.value_at(22.5), 50.0);
        assert_eq!(p.max(), 100.0);
    }

    #[test]
    fn retargeting_keeps_the_past_and_ramps_to_the_new_value() {
        let c = Profile::constant(100.0, Duration::from_secs(10));
        // At 4 s, ramp to 200/s over 2 s; held to 10 s.
        let r = c.retarget(4.0, 200.0, Duration::from_secs(2), 10.0);
        assert_eq!(r.time_of(400.0), Some(4.0), "the first 4 s are unchanged");
        assert_eq!(r.value_at(5.0), 150.0);
        assert_eq!(r.value_at(8.0), 200.0);
        assert!((r.area() - (400.0 + 300.0 + 800.0)).abs() < 1e-9);
        // A ramp longer than the run stops at its end.
        let long = c.retarget(8.0, 300.0, Duration::from_secs(20), 10.0);
        assert_eq!(long.duration(), Duration::from_secs(10));
        assert_eq!(long.value_at(10.0), 120.0);
        // A step (no ramp) to 0: no arrival after 4 s.
        let z = c.retarget(4.0, 0.0, Duration::ZERO, 10.0);
        assert_eq!(z.time_of(401.0), None);
        assert_eq!(z.value_at(4.5), 0.0);
    }

    #[test]
    fn splicing_keeps_the_past_and_follows_the_other_after() {
        let zero = Profile::constant(0.0, Duration::from_secs(10));
        let full = Profile::constant(100.0, Duration::from_secs(10));
        let s = zero.then_from(4.0, &full.scaled(0.5));
        assert_eq!(s.time_of(0.0), Some(4.0), "nothing before the splice");
        assert!((s.time_of(1.0).expect("an arrival") - 4.02).abs() < 1e-9);
        assert_eq!(s.value_at(9.0), 50.0);
        assert!((s.area() - 300.0).abs() < 1e-9);
    }

    #[test]
    fn scaling_from_a_moment_keeps_the_past() {
        let c = Profile::stages(0.0, &[st(10, 100.0)]);
        let s = c.scaled_from(5.0, 2.0);
        assert!((s.value_at(6.0) - 120.0).abs() < 1e-9);
        assert_eq!(s.value_at(10.0), 200.0);
        assert_eq!(
            s.time_of(125.0),
            c.time_of(125.0),
            "arrivals before 5 s are unchanged"
        );
    }

    #[test]
    fn arrival_times_integrate_the_rate() {
        // Constant 100/s: arrival k at k/100 s.
        let c = Profile::constant(100.0, Duration::from_secs(3));
        assert_eq!(c.time_of(150.0), Some(1.5));
        assert_eq!(c.time_of(300.0), Some(3.0));
        assert_eq!(c.time_of(300.5), None);
        // 0 → 100/s over 10 s: 500 arrivals; the 125th at 5 s.
        let r = Profile::stages(0.0, &[st(10, 100.0)]);
        let t = r.time_of(125.0).expect("within");
        assert!((t - 5.0).abs() < 1e-9, "{t}");
        assert!(r.time_of(501.0).is_none());
        // Ramp down 100 → 0 over 10 s: half the 500 arrivals in ~2.93 s.
        let d = Profile::stages(100.0, &[st(10, 0.0)]);
        let t = d.time_of(250.0).expect("within");
        assert!((t - (10.0 - 50f64.sqrt())).abs() < 1e-9, "{t}");
    }
}
