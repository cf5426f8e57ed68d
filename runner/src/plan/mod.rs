//! The load plan: which VU classes run, how many VUs each, for how long,
//! from the scenario's own options overridden by command-line flags.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use host_api::ScenarioOptions;

pub mod arrivals;
mod models;
pub mod profile;
pub mod share;

use crate::spec::{Arrival, RunOptions};
use models::{closed_ceilings, open_model, own_model, ramping_vus, scale};
use profile::Profile;

/// Most VUs one runner process will start.
pub const MAX_VUS: u32 = 1_000_000;

/// Checks what the scenario declares as the command line's values are
/// checked: names, counts, rates, stage targets and durations in range (a
/// guest's numbers are as untrusted as a user's).
/// Most VU classes a scenario may declare.
pub const MAX_CLASSES: usize = 1_000;
/// Most stages per class.
pub const MAX_STAGES: usize = 1_000;
/// Most thresholds a scenario may declare.
pub const MAX_THRESHOLDS: usize = 1_000;
/// Most env values per class.
pub const MAX_ENV: usize = 1_000;

fn check_scenario(options: &ScenarioOptions) -> Result<()> {
    use crate::spec::MAX_RATE;
    use crate::units::MAX_DURATION;
    let long = |nanos: u64| Duration::from_nanos(nanos) > MAX_DURATION;
    if options.duration.is_some_and(long) {
        bail!("the scenario's options set a duration longer than a year");
    }
    // Lists a scenario could make as long as its memory allows: each is
    // far past any real use, and past it the plan's cost would grow
    // without bound.
    let too_many = |what: &str, n: usize, most: usize| {
        anyhow::anyhow!("the scenario's options declare {n} {what}; at most {most} are allowed")
    };
    if options.classes.len() > MAX_CLASSES {
        return Err(too_many("VU classes", options.classes.len(), MAX_CLASSES));
    }
    if options.thresholds.len() > MAX_THRESHOLDS {
        return Err(too_many(
            "thresholds",
            options.thresholds.len(),
            MAX_THRESHOLDS,
        ));
    }
    for c in &options.classes {
        let name = &c.name;
        if name.is_empty() {
            bail!("the scenario declares a VU class with an empty name");
        }
        if name.len() > host_api::limits::sizes::NAME {
            bail!(
                "the scenario declares a VU class name of {} bytes; at most {}",
                name.len(),
                host_api::limits::sizes::NAME
            );
        }
        if c.stages.len() > MAX_STAGES {
            return Err(too_many("stages in one class", c.stages.len(), MAX_STAGES));
        }
        if c.env.len() > MAX_ENV {
            return Err(too_many("env values in one class", c.env.len(), MAX_ENV));
        }
        if c.vus > MAX_VUS || c.max_vus.is_some_and(|m| m > MAX_VUS) {
            bail!("the scenario's class {name:?} asks for more than {MAX_VUS} VUs");
        }
        let rate_ok = |r: f64| r.is_finite() && (0.0..=MAX_RATE).contains(&r);
        if let Some(r) = c.start_rate.filter(|r| !rate_ok(*r) || *r <= 0.0) {
            bail!("the scenario's class {name:?} has a start rate of {r}; it must be above 0 and at most {MAX_RATE}");
        }
        if let Some(r) = c.rate.filter(|r| !rate_ok(*r)) {
            bail!("the scenario's class {name:?} has an arrival rate of {r}; it must be 0 to {MAX_RATE}");
        }
        let most = if c.rate.is_some() {
            MAX_RATE
        } else {
            f64::from(MAX_VUS)
        };
        for s in &c.stages {
            if !(s.target.is_finite() && (0.0..=most).contains(&s.target)) {
                bail!(
                    "the scenario's class {name:?} has a stage target of {}; it must be 0 to {most}",
                    s.target
                );
            }
        }
        let staged = c
            .stages
            .iter()
            .map(|s| s.duration)
            .try_fold(0u64, u64::checked_add);
        if staged.is_none_or(long) || c.think_time.is_some_and(long) || c.pacing.is_some_and(long) {
            bail!("the scenario's class {name:?} has stages, a think time or a pacing longer than a year");
        }
    }
    Ok(())
}

/// The class name used when a scenario declares none.
pub const DEFAULT_CLASS: &str = "default";

/// One VU class in the plan.
#[derive(Clone, Debug)]
pub struct ClassPlan {
    /// The class name passed to the scenario's `run`.
    pub name: Arc<str>,
    /// VUs of this class (closed model), or VUs allocated up front (open).
    pub vus: u32,
    /// The open model's arrival rate and VU cap, if this class is open.
    pub open: Option<OpenClass>,
    /// Closed model: the most VUs this class may be raised to while the
    /// run goes on (at least `vus`; the engine's pool is sized for it).
    pub max: u32,
    /// Closed model with stages: the number of VUs that should be running
    /// over time (`vus` is its maximum).
    pub ramp: Option<Profile>,
    /// Closed model: VUs started per second, and whether at Poisson times
    /// (instead of the run's `--ramp-up`).
    pub start_rate: Option<(f64, bool)>,
    /// Closed model: iterations per VU.
    pub iterations: Option<u64>,
    /// Closed model: pause after each iteration.
    pub think: Option<Duration>,
    /// Closed model: least time between iteration starts.
    pub pacing: Option<Duration>,
    /// The class's own `vu.env` values.
    pub env: Vec<(String, String)>,
    /// Iterations left to share among all VUs (`--shared-iterations`).
    pub shared: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Closed model, in a distributed run: the global indices of the VUs
    /// this worker runs (sorted); `None` runs them all.
    pub owned: Option<Vec<u32>>,
    /// Pool room for VUs taken over from a lost worker.
    pub spare: u32,
    /// This worker's fraction of the class (1 when alone).
    pub fraction: f64,
    /// Open model, distributed: where this worker's VU ids start within
    /// the class's.
    pub id_offset: u32,
    /// Open model, distributed: the VU ids the class takes cluster-wide (0:
    /// its own `max_vus`).
    pub id_span: u32,
}

impl ClassPlan {
    /// A closed-model class of `vus` VUs with no settings of its own.
    pub fn simple(name: &str, vus: u32) -> Self {
        Self {
            name: name.into(),
            vus,
            open: None,
            max: vus,
            ramp: None,
            start_rate: None,
            iterations: None,
            think: None,
            pacing: None,
            env: Vec::new(),
            shared: None,
            owned: None,
            spare: 0,
            fraction: 1.0,
            id_offset: 0,
            id_span: 0,
        }
    }

    /// What `vu.env` reads for this class: `base` (the `-e` values) with
    /// the class's own over them.
    pub fn env_over(
        &self,
        base: &std::collections::HashMap<String, String>,
    ) -> std::collections::HashMap<String, String> {
        let mut env = base.clone();
        env.extend(self.env.iter().cloned());
        env
    }

    /// When VU `j` of this class starts, with its own start rate; `None`
    /// when the class has none (the run's ramp-up applies).
    pub fn start_offsets(&self, seed: u64) -> Option<Vec<Duration>> {
        let (rate, poisson) = self.start_rate?;
        let mut counts = arrivals::Counts::new(
            if poisson {
                Arrival::Poisson
            } else {
                Arrival::Even
            },
            seed,
        );
        let mut c = 0.0;
        let mut out = Vec::with_capacity(self.vus as usize);
        for _ in 0..self.vus {
            let at = Duration::try_from_secs_f64(c / rate.max(1e-9)).unwrap_or(Duration::MAX);
            out.push(at.min(crate::units::MAX_DURATION));
            c = counts.next(c);
        }
        Some(out)
    }
    /// The most VUs this class may run at once (in a distributed run, on
    /// this worker for an open class, cluster-wide for a closed one).
    pub fn max_vus(&self) -> u32 {
        self.open
            .as_ref()
            .map_or(self.max.max(self.vus), |o| o.max_vus.max(self.vus))
    }

    /// The VU ids the class takes, cluster-wide.
    pub fn id_span(&self) -> u32 {
        if self.id_span > 0 {
            self.id_span
        } else {
            self.max_vus()
        }
    }

    /// Whether this process runs global VU `index` of the class.
    pub fn owns(&self, index: u32) -> bool {
        self.owned
            .as_ref()
            .is_none_or(|o| o.binary_search(&index).is_ok())
    }

    /// VUs this process starts with.
    pub fn local_vus(&self) -> u32 {
        match (&self.open, &self.owned) {
            (None, Some(o)) => o.partition_point(|&i| i < self.vus) as u32,
            _ => self.vus,
        }
    }

    /// Instances this process's pool needs for the class.
    pub fn pool_vus(&self) -> u32 {
        let own = match (&self.open, &self.owned) {
            (None, Some(o)) => o.len() as u32,
            _ => self.max_vus(),
        };
        own.saturating_add(self.spare)
    }
}

/// An open-model class: iterations start at a set rate, whether or not
/// earlier ones have finished.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenClass {
    /// Iterations started per second, over time.
    pub rate: Profile,
    /// VUs the class may grow to when the allocated ones are busy.
    pub max_vus: u32,
    /// A worker's share of a distributed run: the whole run's rate (`rate`
    /// is this worker's part of it).
    pub global: Option<Profile>,
}

/// A run's plan: VUs looping over iterations (closed model), or arrivals
/// at a rate (open model).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The classes, in the scenario's order.
    pub classes: Vec<ClassPlan>,
    /// Stop starting iterations after this long.
    pub duration: Option<Duration>,
    /// Iterations per VU.
    pub iterations: Option<u64>,
    /// The VUs' starts are spread evenly over this time.
    pub ramp_up: Duration,
    /// Time for in-flight iterations to finish at the end.
    pub grace: Duration,
    /// Wall-clock limit of one iteration.
    pub iteration_timeout: Option<Duration>,
    /// Spacing of arrivals in the open model.
    pub arrival: Arrival,
}

impl Plan {
    /// The plan for `args` applied to the scenario's `options`.
    pub fn new(o: &RunOptions, options: &ScenarioOptions) -> Result<Plan> {
        check_scenario(options)?;
        let mut classes: Vec<ClassPlan> = Vec::new();
        for c in &options.classes {
            if classes.iter().any(|k| *k.name == *c.name) {
                bail!("the scenario declares the VU class {:?} twice", c.name);
            }
            let mut class = ClassPlan::simple(&c.name, c.vus);
            class.start_rate = c.start_rate.map(|r| (r, c.poisson_start));
            class.iterations = c.iterations;
            class.think = o.think_time.or(c.think_time.map(Duration::from_nanos));
            class.pacing = o.pacing.or(c.pacing.map(Duration::from_nanos));
            class.env = c.env.clone();
            classes.push(class);
        }
        if classes.is_empty() {
            let mut class = ClassPlan::simple(DEFAULT_CLASS, 1);
            class.think = o.think_time;
            class.pacing = o.pacing;
            classes.push(class);
        }
        let declared: u64 = classes.iter().map(|c| u64::from(c.vus)).sum();
        if !o.stages.is_empty() && o.duration.is_some() {
            bail!("--stage sets the run's length; drop --duration (or the stages)");
        }
        if !o.stages.is_empty() && o.iterations.is_some() {
            bail!("--iterations does not apply with --stage");
        }
        if o.duration.is_none() && o.stages.is_empty() && options.duration == Some(0) {
            bail!("the scenario's options set a duration of 0; give one with --duration");
        }
        let mut duration = if o.stages.is_empty() {
            o.duration.or(options.duration.map(Duration::from_nanos))
        } else {
            Some(o.stages.iter().map(|s| s.duration).sum())
        };
        if o.rate.is_none() && !o.stages.is_empty() {
            ramping_vus(&mut classes, declared, o)?;
        } else if let Some(total) = o.vus {
            scale(&mut classes, total, declared);
        } else if declared == 0 {
            bail!("the scenario's VU classes declare 0 VUs; give a count with --vus");
        }
        if let Some(rate) = o.rate {
            open_model(&mut classes, rate, duration, o)?;
        } else if o.stages.is_empty() {
            // No load model on the command line: each class's own. Unless
            // --duration says otherwise, the longest class's stages set the
            // run's length for all.
            for spec in options.classes.iter().filter(|_| o.duration.is_none()) {
                let staged: Duration = spec
                    .stages
                    .iter()
                    .map(|s| Duration::from_nanos(s.duration))
                    .sum();
                if !staged.is_zero() {
                    duration = Some(duration.unwrap_or_default().max(staged));
                }
            }
            for (class, spec) in classes.iter_mut().zip(&options.classes) {
                own_model(class, spec, duration)?;
            }
        }
        closed_ceilings(&mut classes, o, duration.is_some())?;
        let total: u64 = classes.iter().map(|c| u64::from(c.max_vus())).sum();
        if total > u64::from(MAX_VUS) {
            bail!("{total} VUs is more than one runner runs ({MAX_VUS}); split the load over several runners");
        }
        let iterations = match (duration, o.iterations) {
            (None, None) if o.rate.is_none() && o.shared_iterations.is_none() => Some(1),
            (_, i) => i,
        };
        for c in &mut classes {
            c.iterations = o
                .iterations
                .or(c.iterations)
                .or(iterations.filter(|_| duration.is_none()));
        }
        if let Some(n) = o.shared_iterations {
            let pool = Arc::new(std::sync::atomic::AtomicU64::new(n));
            for c in &mut classes {
                c.iterations = None;
                c.shared = Some(pool.clone());
            }
        }
        Ok(Plan {
            classes,
            duration,
            iterations,
            ramp_up: o.ramp_up,
            grace: o.grace,
            iteration_timeout: o.iteration_timeout,
            arrival: o.arrival,
        })
    }

    /// VUs across all classes (allocated up front, in the open model).
    pub fn total_vus(&self) -> u32 {
        self.classes.iter().map(|c| c.vus).sum()
    }

    /// VUs this process starts with (all of them, unless it is a worker
    /// with a share).
    pub fn local_vus(&self) -> u32 {
        self.classes.iter().map(ClassPlan::local_vus).sum()
    }

    /// Instances this process's pool needs.
    pub fn pool_vus(&self) -> u32 {
        self.classes
            .iter()
            .map(ClassPlan::pool_vus)
            .fold(0u32, u32::saturating_add)
    }

    /// The most VUs that may run at once, across all classes.
    pub fn max_vus(&self) -> u32 {
        self.classes.iter().map(ClassPlan::max_vus).sum()
    }

    /// Whether the classes run in the open model.
    pub fn is_open(&self) -> bool {
        self.classes.iter().any(|c| c.open.is_some())
    }

    /// When the `i`-th VU (0-based) of the closed-model classes without
    /// stages starts, after the run's start: evenly spread over the ramp-up.
    pub fn start_offset(&self, i: u32) -> Duration {
        let n: u32 = self
            .classes
            .iter()
            .filter(|c| c.open.is_none() && c.ramp.is_none())
            .map(|c| c.vus)
            .sum::<u32>()
            .max(1);
        self.ramp_up.mul_f64(f64::from(i) / f64::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use host_api::VuClass;

    fn args(extra: &[&str]) -> RunOptions {
        let mut v = vec!["runner", "run", "x.wasm"];
        v.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(v).command {
            crate::cli::Command::Run(a) => a.spec().options,
            _ => unreachable!(),
        }
    }

    fn opts(classes: &[(&str, u32)]) -> ScenarioOptions {
        ScenarioOptions {
            classes: classes.iter().map(|(n, v)| class(n, *v)).collect(),
            thresholds: Vec::new(),
            duration: None,
        }
    }

    fn class(name: &str, vus: u32) -> VuClass {
        VuClass {
            name: name.into(),
            vus,
            rate: None,
            max_vus: None,
            stages: Vec::new(),
            start_rate: None,
            poisson_start: false,
            think_time: None,
            pacing: None,
            iterations: None,
            env: Vec::new(),
        }
    }

    #[test]
    fn classes_bring_their_own_load_models_unless_flags_say_otherwise() {
        let mut open = class("api", 2);
        open.rate = Some(50.0);
        let mut ramp = class("browser", 0);
        ramp.stages = vec![
            host_api::bindings::exports::runner::scenario::scenario::Stage {
                duration: 4_000_000_000,
                target: 8.0,
            },
        ];
        let mut paced = class("batch", 3);
        paced.pacing = Some(1_000_000_000);
        paced.iterations = Some(5);
        paced.env = vec![("K".into(), "v".into())];
        let options = ScenarioOptions {
            classes: vec![open, ramp, paced],
            thresholds: Vec::new(),
            duration: Some(2_000_000_000),
        };
        let p = Plan::new(&args(&[]), &options).expect("plan");
        assert_eq!(
            p.duration,
            Some(Duration::from_secs(4)),
            "stages lengthen the run"
        );
        let o = p.classes[0].open.as_ref().expect("open");
        assert_eq!((o.rate.area(), o.max_vus), (200.0, 50));
        assert_eq!(p.classes[1].vus, 8);
        assert!(p.classes[1].ramp.is_some());
        assert_eq!(p.classes[2].pacing, Some(Duration::from_secs(1)));
        // The flags replace every class's own pause.
        let q = Plan::new(
            &args(&["--pacing", "250ms", "--think-time", "10ms"]),
            &options,
        )
        .expect("plan");
        assert!(q
            .classes
            .iter()
            .all(|c| c.pacing == Some(Duration::from_millis(250))));
        assert!(q
            .classes
            .iter()
            .all(|c| c.think == Some(Duration::from_millis(10))));
        let q = Plan::new(&args(&["--pacing", "1s"]), &opts(&[])).expect("plan");
        assert_eq!(q.classes[0].pacing, Some(Duration::from_secs(1)));
        assert_eq!(p.classes[2].iterations, Some(5));
        let rt =
            p.classes[2].env_over(&[("K".to_string(), "cli".to_string())].into_iter().collect());
        assert_eq!(rt["K"], "v", "the class's env wins over -e");

        // --rate on the command line makes every class open, shared by VUs.
        let p = Plan::new(&args(&["--rate", "100", "-d", "1s"]), &options).expect("plan");
        assert!(p.classes.iter().all(|c| c.open.is_some()));
        // --iterations overrides the class's own.
        let p = Plan::new(&args(&["--iterations", "2"]), &options).expect("plan");
        assert_eq!(p.classes[2].iterations, Some(2));
    }

    #[test]
    fn start_rates_space_vu_starts() {
        let mut c = ClassPlan::simple("x", 4);
        c.start_rate = Some((2.0, false));
        let o = c.start_offsets(1).expect("offsets");
        assert_eq!(
            o,
            vec![
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_millis(1500)
            ]
        );
        c.start_rate = Some((2.0, true));
        let o = c.start_offsets(7).expect("offsets");
        assert!(o.windows(2).all(|w| w[0] <= w[1]), "{o:?}");
    }

    #[test]
    fn defaults_to_one_vu_one_iteration() {
        let p = Plan::new(&args(&[]), &opts(&[])).expect("plan");
        assert_eq!(p.total_vus(), 1);
        assert_eq!(p.iterations, Some(1));
        assert_eq!(&*p.classes[0].name, DEFAULT_CLASS);
    }

    #[test]
    fn vus_flag_scales_declared_classes_exactly() {
        let p = Plan::new(
            &args(&["--vus", "10", "-d", "1s"]),
            &opts(&[("a", 1), ("b", 2)]),
        )
        .expect("plan");
        assert_eq!(p.total_vus(), 10);
        assert_eq!(p.classes[0].vus, 3);
        assert_eq!(p.classes[1].vus, 7);
        assert_eq!(p.iterations, None);
        let p = Plan::new(&args(&[]), &opts(&[("a", 4), ("b", 6)])).expect("plan");
        assert_eq!((p.classes[0].vus, p.classes[1].vus), (4, 6));
    }

    #[test]
    fn rejects_bad_classes() {
        assert!(Plan::new(&args(&[]), &opts(&[("a", 1), ("a", 1)])).is_err());
        assert!(Plan::new(&args(&[]), &opts(&[("a", 0)])).is_err());
        assert!(Plan::new(&args(&[]), &opts(&[("", 1)])).is_err());
        let mut wild = class("a", 1);
        wild.rate = Some(f64::INFINITY);
        assert!(Plan::new(
            &args(&["-d", "1s"]),
            &ScenarioOptions {
                classes: vec![wild],
                ..opts(&[])
            }
        )
        .is_err());
        let mut wild = class("a", 1);
        wild.stages = vec![
            host_api::bindings::exports::runner::scenario::scenario::Stage {
                duration: u64::MAX,
                target: 1.0,
            },
            host_api::bindings::exports::runner::scenario::scenario::Stage {
                duration: u64::MAX,
                target: 1.0,
            },
        ];
        let e = Plan::new(
            &args(&[]),
            &ScenarioOptions {
                classes: vec![wild],
                ..opts(&[])
            },
        )
        .expect_err("stages");
        assert!(e.to_string().contains("longer than a year"), "{e}");
        let mut wild = class("a", 1);
        wild.stages = vec![
            host_api::bindings::exports::runner::scenario::scenario::Stage {
                duration: 1,
                target: f64::NAN,
            },
        ];
        assert!(Plan::new(
            &args(&[]),
            &ScenarioOptions {
                classes: vec![wild],
                ..opts(&[])
            }
        )
        .is_err());
        let zero = ScenarioOptions {
            duration: Some(0),
            ..opts(&[("a", 1)])
        };
        assert!(Plan::new(&args(&[]), &zero).is_err());
        assert!(
            Plan::new(&args(&["-d", "1s"]), &zero).is_ok(),
            "the flag wins"
        );
        assert!(
            Plan::new(&args(&["--stage", "1s:2"]), &zero).is_ok(),
            "stages set the length"
        );
    }

    #[test]
    fn max_vus_sets_how_far_closed_classes_may_grow() {
        let p = Plan::new(
            &args(&["--vus", "10", "-d", "5s", "--max-vus", "40"]),
            &opts(&[("a", 1), ("b", 3)]),
        )
        .expect("plan");
        assert_eq!((p.classes[0].vus, p.classes[1].vus), (3, 7));
        assert_eq!((p.classes[0].max, p.classes[1].max), (12, 28));
        assert_eq!(p.max_vus(), 40);
        let p = Plan::new(&args(&["--vus", "10", "-d", "5s"]), &opts(&[])).expect("plan");
        assert_eq!(p.max_vus(), 10, "without --max-vus a class keeps its count");
        let e = Plan::new(&args(&["--vus", "10", "--max-vus", "40"]), &opts(&[]))
            .expect_err("iterations");
        assert!(e.to_string().contains("set length"), "{e}");
        let e = Plan::new(
            &args(&["--vus", "10", "-d", "1s", "--max-vus", "4"]),
            &opts(&[]),
        )
        .expect_err("below");
        assert!(e.to_string().contains("less than"), "{e}");
    }

    #[test]
    fn starts_spread_over_ramp_up() {
        let p = Plan::new(&args(&["--vus", "4", "--ramp-up", "2s"]), &opts(&[])).expect("plan");
        assert_eq!(p.start_offset(0), Duration::ZERO);
        assert_eq!(p.start_offset(2), Duration::from_secs(1));
    }
}
