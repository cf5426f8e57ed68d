//! How the load models shape the classes: a class's own model from the
//! scenario, ramping VUs and open-model rates from the command line, VU
//! counts scaled exactly, and how far closed classes may be raised live.

use std::time::Duration;

use anyhow::{bail, Result};

use super::profile::Profile;
use super::{ClassPlan, OpenClass, MAX_VUS};
use crate::spec::RunOptions;

/// Applies a class's own load model from the scenario's options: an
/// arrival rate (open model), stages, or neither (closed, constant VUs).
pub(super) fn own_model(
    class: &mut ClassPlan,
    spec: &host_api::VuClass,
    duration: Option<Duration>,
) -> Result<()> {
    let stages: Vec<crate::spec::Stage> = spec
        .stages
        .iter()
        .map(|s| crate::spec::Stage {
            duration: Duration::from_nanos(s.duration),
            target: s.target,
        })
        .collect();
    if let Some(rate) = spec.rate {
        let profile = if stages.is_empty() {
            let Some(d) = duration else {
                bail!("the scenario's class {:?} has an arrival rate but the run no duration; give --duration", spec.name);
            };
            if rate.is_nan() || rate <= 0.0 {
                bail!(
                    "the scenario's class {:?} has an arrival rate of {rate}; it must be above 0",
                    spec.name
                );
            }
            Profile::constant(rate, d)
        } else {
            Profile::stages(rate, &stages)
        };
        let max = spec
            .max_vus
            .unwrap_or_else(|| profile.max().ceil().min(f64::from(MAX_VUS)) as u32)
            .max(class.vus);
        class.open = Some(OpenClass {
            rate: profile,
            max_vus: max,
            global: None,
        });
    } else if !stages.is_empty() {
        let ramp = Profile::stages(0.0, &stages);
        class.vus = ramp.max().ceil() as u32;
        class.ramp = Some(ramp);
    }
    Ok(())
}

/// Sets how far each closed-model class may be raised while the run goes
/// on: `--max-vus` shared in proportion to the classes' VUs, never below
/// them; without it, each class's own count.
pub(super) fn closed_ceilings(
    classes: &mut [ClassPlan],
    o: &RunOptions,
    timed: bool,
) -> Result<()> {
    for c in classes.iter_mut().filter(|c| c.open.is_none()) {
        c.max = c.vus;
    }
    let Some(max) = o.max_vus.filter(|_| o.rate.is_none()) else {
        return Ok(());
    };
    if !timed || o.shared_iterations.is_some() {
        bail!("--max-vus applies to the open model and to runs of a set length (--duration or --stage), not to a run of a set number of iterations");
    }
    let closed: Vec<usize> = (0..classes.len())
        .filter(|&i| classes[i].open.is_none())
        .collect();
    let vus: u64 = closed.iter().map(|&i| u64::from(classes[i].vus)).sum();
    if u64::from(max) < vus {
        bail!("--max-vus {max} is less than the {vus} VUs the run starts with (--vus)");
    }
    let mut caps: Vec<ClassPlan> = closed.iter().map(|&i| classes[i].clone()).collect();
    scale(&mut caps, max, vus);
    for (&i, cap) in closed.iter().zip(caps) {
        classes[i].max = cap.vus.max(classes[i].vus);
    }
    Ok(())
}

/// Makes the classes ramp their running VUs through the stages, from
/// `--vus` (default 0), shared in proportion to their declared counts.
pub(super) fn ramping_vus(classes: &mut [ClassPlan], declared: u64, o: &RunOptions) -> Result<()> {
    let start = f64::from(o.vus.unwrap_or(0));
    let total = Profile::stages(start, &o.stages);
    if total.max() < 1.0 {
        bail!("the stages never reach 1 VU");
    }
    let weights: Vec<f64> = if declared == 0 {
        vec![1.0; classes.len()]
    } else {
        classes.iter().map(|c| f64::from(c.vus)).collect()
    };
    let sum: f64 = weights.iter().sum();
    for (c, w) in classes.iter_mut().zip(weights) {
        let ramp = total.scaled(w / sum);
        c.vus = ramp.max().ceil() as u32;
        c.ramp = Some(ramp);
    }
    Ok(())
}

/// Turns the classes into open-model classes sharing the arrival rate in
/// proportion to their VU counts: `rate` throughout, or ramping from `rate`
/// through the stages.
pub(super) fn open_model(
    classes: &mut [ClassPlan],
    rate: f64,
    duration: Option<Duration>,
    o: &RunOptions,
) -> Result<()> {
    let Some(duration) = duration else {
        bail!("--rate needs --duration (or --stage): an open-model run lasts a set time");
    };
    let profile = if o.stages.is_empty() {
        if rate <= 0.0 {
            bail!("--rate must be above 0 without stages");
        }
        Profile::constant(rate, duration)
    } else {
        Profile::stages(rate, &o.stages)
    };
    if o.iterations.is_some() {
        bail!(
            "--iterations does not apply with --rate: iterations start at the rate for --duration"
        );
    }
    let allocated: u64 = classes.iter().map(|c| u64::from(c.vus)).sum();
    // Enough VUs by default for iterations of up to a second at full rate.
    let max_total = match o.max_vus {
        Some(m) => u64::from(m),
        None => allocated
            .max(profile.max().ceil() as u64)
            .min(u64::from(MAX_VUS)),
    };
    if max_total < allocated {
        bail!("--max-vus {max_total} is less than the {allocated} VUs allocated up front (--vus)");
    }
    let mut caps: Vec<ClassPlan> = classes.to_vec();
    scale(
        &mut caps,
        u32::try_from(max_total).unwrap_or(MAX_VUS),
        allocated,
    );
    for (c, cap) in classes.iter_mut().zip(caps) {
        let share = f64::from(c.vus) / allocated.max(1) as f64;
        c.open = Some(OpenClass {
            rate: profile.scaled(share),
            max_vus: cap.vus.max(c.vus),
            global: None,
        });
    }
    Ok(())
}

/// Sets the classes' counts to add up to `total`, in proportion to their
/// declared counts (equal shares if none declared), by largest remainder.
pub(super) fn scale(classes: &mut [ClassPlan], total: u32, declared: u64) {
    let weights: Vec<u64> = if declared == 0 {
        vec![1; classes.len()]
    } else {
        classes.iter().map(|c| u64::from(c.vus)).collect()
    };
    let sum: u64 = weights.iter().sum();
    let mut given = 0u64;
    let mut rema: Vec<(u64, usize)> = Vec::with_capacity(classes.len());
    for (i, (c, w)) in classes.iter_mut().zip(&weights).enumerate() {
        let exact = u64::from(total) * w;
        let share = exact / sum;
        c.vus = u32::try_from(share).unwrap_or(u32::MAX);
        given += share;
        rema.push((exact % sum, i));
    }
    rema.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in rema.into_iter().take((u64::from(total) - given) as usize) {
        classes[i].vus += 1;
    }
}
