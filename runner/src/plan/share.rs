//! A worker's part of a distributed run ([`Share`]), and how a plan is
//! split into such parts ([`split`]) so that they add up exactly to the
//! whole: the VUs of a closed-model class are striped by global index
//! (worker `owner[i]` runs VU `i`, interleaved in proportion to capacity,
//! as k6's execution segments are), so at any VU count every worker runs
//! its part of it; an open-model class's arrival rate is shared by
//! fraction; shared iterations and VU ids are split so nothing is counted
//! twice or left out.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{ClassPlan, Plan};

/// What one worker runs of a plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// One per class, in the plan's order.
    pub classes: Vec<ClassShare>,
    /// Of `--shared-iterations`, the number this worker runs.
    pub shared_iterations: Option<u64>,
}

/// What one worker runs of one class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassShare {
    /// The class.
    pub name: String,
    /// Closed model: the global indices of the VUs this worker runs.
    pub owned: Vec<u32>,
    /// Open model: the fraction of the class's arrival rate.
    pub fraction: f64,
    /// Open model: VUs allocated up front.
    pub vus: u32,
    /// Open model: the most VUs this worker starts for the class.
    pub max_vus: u32,
    /// Open model: where this worker's VU ids start within the class's.
    pub id_offset: u32,
    /// Open model: the VU ids the class takes cluster-wide (the sum of
    /// every worker's `max_vus`, the same in every share).
    pub id_span: u32,
    /// Pool room for VUs taken over from a lost worker.
    pub spare: u32,
}

/// Which of `weights.len()` workers owns each of `n` global indices:
/// smooth weighted round-robin, so every prefix `0..t` is split in
/// proportion to the weights to within one per worker.
pub fn stripes(weights: &[f64], n: u32) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let mut credit = vec![0.0f64; weights.len()];
    (0..n)
        .map(|_| {
            for (c, w) in credit.iter_mut().zip(weights) {
                *c += w;
            }
            let pick = credit
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .map_or(0, |(i, _)| i);
            credit[pick] -= total;
            pick
        })
        .collect()
}

/// `total` in whole parts proportional to `weights`, by largest remainder.
pub fn parts(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut out: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let given: u64 = out.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    for &i in order.iter().take(total.saturating_sub(given) as usize) {
        out[i] += 1;
    }
    out
}

/// Splits `plan` over workers of capacity `weights`. With `spare` above
/// zero, each worker's pool gets room for the largest other worker's part
/// too, to take over a lost worker's.
pub fn split(plan: &Plan, weights: &[f64], spare: f64) -> Vec<Share> {
    let k = weights.len();
    let sum: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut shares: Vec<Share> = (0..k).map(|_| Share::default()).collect();
    for class in &plan.classes {
        match &class.open {
            None => {
                let owners = stripes(weights, class.max_vus());
                let owned: Vec<Vec<u32>> = (0..k)
                    .map(|w| {
                        (0..class.max_vus())
                            .filter(|&i| owners[i as usize] == w)
                            .collect()
                    })
                    .collect();
                for (w, share) in shares.iter_mut().enumerate() {
                    // Room to take over the largest other worker's part.
                    let other = (0..k)
                        .filter(|&v| v != w)
                        .map(|v| owned[v].len() as u32)
                        .max()
                        .unwrap_or(0);
                    share.classes.push(ClassShare {
                        name: class.name.to_string(),
                        owned: owned[w].clone(),
                        fraction: weights[w] / sum,
                        spare: if spare > 0.0 { other } else { 0 },
                        ..ClassShare::default()
                    });
                }
            }
            Some(open) => {
                let allocated = parts(u64::from(class.vus), weights);
                let most = parts(u64::from(open.max_vus.max(class.vus)), weights);
                let maxes: Vec<u32> = (0..k).map(|w| most[w].max(allocated[w]) as u32).collect();
                // Twice the ids the workers take: the second half is for
                // workers that join mid-run.
                let span: u32 = maxes.iter().sum::<u32>().saturating_mul(2);
                let mut offset = 0u32;
                for (w, share) in shares.iter_mut().enumerate() {
                    // Room to take over the largest other worker's part.
                    let other = (0..k)
                        .filter(|&v| v != w)
                        .map(|v| maxes[v])
                        .max()
                        .unwrap_or(0);
                    share.classes.push(ClassShare {
                        name: class.name.to_string(),
                        fraction: weights[w] / sum,
                        vus: allocated[w] as u32,
                        max_vus: maxes[w],
                        id_offset: offset,
                        id_span: span,
                        spare: if spare > 0.0 { other } else { 0 },
                        ..ClassShare::default()
                    });
                    offset += maxes[w];
                }
            }
        }
    }
    if let Some(pool) = plan.classes.iter().find_map(|c| c.shared.as_ref()) {
        let left = pool.load(std::sync::atomic::Ordering::Relaxed);
        for (share, n) in shares.iter_mut().zip(parts(left, weights)) {
            share.shared_iterations = Some(n);
        }
    }
    shares
}

impl Plan {
    /// Narrows this (whole) plan to a worker's `share` of it.
    pub fn apply(&mut self, share: &Share) -> Result<()> {
        if share.classes.len() != self.classes.len() {
            bail!(
                "the coordinator's plan has {} VU classes and this worker's {}: both must run the same scenario",
                share.classes.len(),
                self.classes.len()
            );
        }
        let pool = share.shared_iterations.map(|n| Arc::new(AtomicU64::new(n)));
        for (class, part) in self.classes.iter_mut().zip(&share.classes) {
            if *class.name != *part.name {
                bail!(
                    "the coordinator's class {:?} is {:?} here: both must run the same scenario",
                    part.name,
                    class.name
                );
            }
            apply_class(class, part)?;
            if let Some(p) = &pool {
                class.shared = Some(p.clone());
            }
        }
        Ok(())
    }
}

fn apply_class(class: &mut ClassPlan, part: &ClassShare) -> Result<()> {
    class.spare = part.spare;
    class.fraction = part.fraction;
    match &mut class.open {
        None => {
            if part.owned.iter().any(|&i| i >= class.max_vus()) {
                bail!(
                    "the coordinator gave this worker VUs beyond class {:?}'s",
                    class.name
                );
            }
            class.owned = Some(part.owned.clone());
        }
        Some(open) => {
            class.id_span = part.id_span.max(open.max_vus.max(class.vus));
            open.global = Some(open.rate.clone());
            open.rate = open.rate.scaled(part.fraction);
            open.max_vus = part.max_vus;
            class.vus = part.vus;
            class.id_offset = part.id_offset;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_share_every_prefix_in_proportion() {
        let owners = stripes(&[2.0, 1.0, 1.0], 100);
        for t in [4u32, 10, 37, 100] {
            let mut counts = [0u32; 3];
            for &o in &owners[..t as usize] {
                counts[o] += 1;
            }
            assert_eq!(counts.iter().sum::<u32>(), t);
            let want = [t as f64 / 2.0, t as f64 / 4.0, t as f64 / 4.0];
            for (c, w) in counts.iter().zip(want) {
                assert!((f64::from(*c) - w).abs() <= 1.0, "{t}: {counts:?}");
            }
        }
    }

    #[test]
    fn parts_add_up() {
        assert_eq!(parts(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(parts(7, &[3.0, 1.0]).iter().sum::<u64>(), 7);
        assert_eq!(parts(0, &[1.0]), vec![0]);
    }
}
