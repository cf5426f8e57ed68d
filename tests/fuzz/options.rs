//! Target 2: run options and specs (REST bodies, federation
//! assignments, the scenario's own declared options).

#![allow(unused_imports)]

use super::*;

#[rustfmt::skip]
pub(crate) const OPTION_KEYS: &[&str] = &[
    "vus", "max_vus", "duration", "iterations", "shared_iterations", "rate", "stages", "arrival",
    "think_time", "pacing", "ramp_up", "grace", "env", "thresholds", "cpu_limit", "fuel",
    "memory_limit", "instance_limit", "table_limit", "table_elements", "iteration_timeout",
    "http_timeout", "max_body", "insecure", "log_rate", "max_series", "allow_hosts", "block_hosts",
    "seed", "max_memory",
    "scenario", "options", "outputs", "name", "sha256", "bytes", "json", "ndjson", "csv",
    "snapshots", "html",
];

pub(crate) fn option_seeds() -> Vec<Value> {
    vec![
        json!({"vus": 3, "duration": "5s", "stages": [], "memory_limit": "64MiB",
               "env": {"A": "b"}, "arrival": "poisson"}),
        json!({"vus": 3, "stages": ["1s:2", "2s:0"], "memory_limit": 1048576}),
        json!({"vus": 2, "max_vus": 10, "duration": "60s", "ramp_up": "0s",
               "env": {"BASE_URL": "http://127.0.0.1:8080", "THINK_MS": "50"}}),
        json!({"rate": 50.5, "duration": "30s", "max_vus": 20, "arrival": "even",
               "thresholds": ["http_req_duration p(95)<200ms", "checks rate>0.99"]}),
        json!({"shared_iterations": 100, "vus": 4, "grace": "1m 30s", "fuel": 1000000,
               "cpu_limit": "250ms", "iteration_timeout": "10s", "http_timeout": "2s"}),
        json!({"iterations": 5, "think_time": "1s", "pacing": "2s", "insecure": true,
               "log_rate": 0, "max_series": 1000000, "instance_limit": 1000,
               "table_limit": 1, "table_elements": 10000000, "max_body": "16MiB"}),
        json!({"allow_hosts": ["*.example.com", "10.0.0.0/8", "[::1]:80"],
               "block_hosts": ["secret.example.com"], "duration": "366d"}),
        json!({}),
    ]
}

pub(crate) fn spec_seeds() -> Vec<Value> {
    let mut v = vec![
        json!({"scenario": {"name": "shop.wasm", "sha256": "ab".repeat(32), "bytes": 1234},
               "options": {"vus": 2, "duration": "10s"},
               "outputs": [{"json": "r.json"}, {"html": "r.html"}, {"csv": "r.csv"},
                           {"ndjson": "r.ndjson"}, {"snapshots": "s.ndjson"}]}),
        json!({"scenario": {"name": "hello-http.wasm"}, "options": {}}),
    ];
    let spec = RunSpec {
        scenario: ScenarioRef {
            name: "tour.wasm".into(),
            sha256: "0f".repeat(32),
            bytes: 99,
        },
        options: serde_json::from_value(option_seeds()[3].clone()).expect("options"),
        outputs: Vec::new(),
        enforced: None,
    };
    v.push(serde_json::to_value(&spec).expect("a spec serializes"));
    v
}

/// The scenario's own options, as a component may declare them (the plan
/// checks them: they come from user code).
#[derive(Arbitrary, Debug)]
pub(crate) struct ScenarioArb {
    classes: Vec<ClassArb>,
    duration: Option<Nanos>,
    thresholds: Vec<Text>,
}

#[derive(Arbitrary, Debug)]
pub(crate) struct ClassArb {
    name: Text,
    vus: Count,
    rate: Option<Real>,
    max_vus: Option<Count>,
    stages: Vec<(Nanos, Real)>,
    start_rate: Option<Real>,
    poisson_start: bool,
    think_time: Option<Nanos>,
    pacing: Option<Nanos>,
    iterations: Option<Nanos>,
    env: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
pub(crate) enum Count {
    Small(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
pub(crate) enum Nanos {
    Secs(u16),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
pub(crate) enum Real {
    Small(i8),
    Edge(u8),
    Any(f64),
}

impl Count {
    pub(crate) fn get(&self) -> u32 {
        match self {
            Count::Small(n) => u32::from(*n),
            Count::Any(n) => *n,
        }
    }
}

impl Nanos {
    pub(crate) fn get(&self) -> u64 {
        match self {
            Nanos::Secs(s) => u64::from(*s) * 1_000_000_000,
            Nanos::Any(n) => *n,
        }
    }
}

impl Real {
    pub(crate) fn get(&self) -> f64 {
        const EDGES: &[f64] = &[
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            MAX_RATE,
            MAX_RATE + 1.0,
            1e-300,
        ];
        match self {
            Real::Small(n) => f64::from(*n),
            Real::Edge(i) => EDGES[usize::from(*i) % EDGES.len()],
            Real::Any(f) => *f,
        }
    }
}

impl ScenarioArb {
    pub(crate) fn build(&self) -> ScenarioOptions {
        ScenarioOptions {
            classes: self
                .classes
                .iter()
                .map(|c| VuClass {
                    name: c.name.render(&["default", "api", "browser", ""]),
                    vus: c.vus.get(),
                    rate: c.rate.as_ref().map(Real::get),
                    max_vus: c.max_vus.as_ref().map(Count::get),
                    stages: c
                        .stages
                        .iter()
                        .map(|(d, t)| {
                            host_api::bindings::exports::runner::scenario::scenario::Stage {
                                duration: d.get(),
                                target: t.get(),
                            }
                        })
                        .collect(),
                    start_rate: c.start_rate.as_ref().map(Real::get),
                    poisson_start: c.poisson_start,
                    think_time: c.think_time.as_ref().map(Nanos::get),
                    pacing: c.pacing.as_ref().map(Nanos::get),
                    iterations: c.iterations.as_ref().map(Nanos::get),
                    env: c.env.clone(),
                })
                .collect(),
            duration: self.duration.as_ref().map(Nanos::get),
            thresholds: self.thresholds.iter().map(|t| t.render(STRINGS)).collect(),
        }
    }
}

/// Scenario options of the kinds the examples declare.
pub(crate) fn scenario_fixtures() -> Vec<ScenarioOptions> {
    let class = |name: &str, vus: u32| VuClass {
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
    };
    let mut open = class("api", 2);
    open.rate = Some(50.0);
    open.max_vus = Some(10);
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
    paced.start_rate = Some(2.0);
    paced.poisson_start = true;
    vec![
        ScenarioOptions {
            classes: Vec::new(),
            duration: None,
            thresholds: Vec::new(),
        },
        ScenarioOptions {
            classes: vec![open, ramp, paced],
            duration: Some(2_000_000_000),
            thresholds: vec!["checks rate>0.9".into()],
        },
    ]
}

/// What the plan makes of valid options; never a panic.
pub(crate) fn plan_checks(o: &RunOptions, scenario: &ScenarioOptions) -> Option<Plan> {
    match Plan::new(o, scenario) {
        Err(e) => {
            assert!(!e.to_string().trim().is_empty(), "an empty plan error");
            None
        }
        Ok(p) => {
            let _ = (p.total_vus(), p.local_vus(), p.pool_vus(), p.is_open());
            let n = p.max_vus();
            let _ = (p.start_offset(0), p.start_offset(n.saturating_sub(1)));
            Some(p)
        }
    }
}

/// Decoded options: validated as `prepare` does, written back, planned.
pub(crate) fn options_checks(o: &RunOptions, fixtures: &[ScenarioOptions]) -> bool {
    match o.validate() {
        Err(e) => {
            assert!(one_line(&e), "not a one-line error: {e:?}");
            false
        }
        Ok(()) => {
            // A valid spec crosses the wire (to a worker) unchanged.
            let text = serde_json::to_string(o).expect("options serialize");
            // Exactly: serde_json reads floats back bit for bit (its
            // `float_roundtrip` feature, which this fuzzer asked for).
            let back: RunOptions = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("valid options do not read back: {e}\n{text}"));
            assert_eq!(&back, o, "valid options change on a round trip: {text}");
            for f in fixtures {
                plan_checks(o, f);
            }
            true
        }
    }
}

#[test]
pub(crate) fn options_and_specs() {
    let fixtures = scenario_fixtures();
    let mut seeds = option_seeds();
    // Every option seed is valid, and so are the specs.
    for s in &seeds {
        let o: RunOptions = serde_json::from_value(s.clone())
            .unwrap_or_else(|e| panic!("{s} no longer decodes: {e}"));
        o.validate()
            .unwrap_or_else(|e| panic!("{s} is no longer valid: {e}"));
        assert!(plan_checks(&o, &fixtures[0]).is_some(), "{s} does not plan");
    }
    for s in spec_seeds() {
        let spec: RunSpec = serde_json::from_value(s.clone())
            .unwrap_or_else(|e| panic!("{s} no longer decodes: {e}"));
        spec.options.validate().expect("valid");
        seeds.push(s);
    }
    for bad in [
        json!({"vu": 3}),
        json!({"duration": "soon"}),
        json!({"vus": -1}),
        json!({"rate": "x"}),
        json!({"stages": ["1s:-3"]}),
    ] {
        assert!(
            serde_json::from_value::<RunOptions>(bad.clone()).is_err(),
            "{bad} decodes"
        );
    }
    for bad in [
        json!({"vus": 0}),
        json!({"rate": -1.0}),
        json!({"rate": 1e300}),
        json!({"grace": "367d"}),
        json!({"thresholds": ["http_req_duration p(95)"]}),
        json!({"stages": ["300d:1", "300d:1"]}),
        json!({"env": {"": "x"}}),
        json!({"shared_iterations": 3, "iterations": 2}),
    ] {
        let o: RunOptions = serde_json::from_value(bad.clone()).expect("decodes");
        assert!(o.validate().is_err(), "{bad} is valid");
    }

    let corpus = Corpus::json(seeds, OPTION_KEYS);
    let (mut decoded, mut valid) = (0u64, 0u64);
    let cases = fuzz("options", 50_000, |rng| {
        let input = corpus.input(rng);
        note(&input);
        let scenario = match rng.one_in(4) {
            true => arb::<ScenarioArb>(rng, 200).map(|s| s.build()),
            false => None,
        };
        let (d, v) = check_options(&input, &fixtures, scenario.as_ref());
        decoded += d;
        valid += v;
    });
    eprintln!("options: {decoded} decoded, {valid} valid, of {cases} inputs");
    assert!(
        valid > cases / 50,
        "too few valid inputs ({valid} of {cases})"
    );
}

/// One input of the options target: `input` as run options (a REST
/// body, `--config`) and as a run spec (an assignment to a worker).
/// What decodes is validated; what is valid reads back unchanged and is
/// planned against each of `fixtures` and against `scenario` (options a
/// scenario declares). Returns how many decodes and valid results.
pub fn check_options(
    input: &[u8],
    fixtures: &[ScenarioOptions],
    scenario: Option<&ScenarioOptions>,
) -> (u64, u64) {
    let (mut decoded, mut valid) = (0u64, 0u64);
    let options = serde_json::from_slice::<RunOptions>(input);
    if let Ok(o) = &options {
        decoded += 1;
        valid += u64::from(options_checks(o, fixtures));
    }
    if let Ok(spec) = serde_json::from_slice::<RunSpec>(input) {
        decoded += 1;
        let _ = spec.egress();
        if options_checks(&spec.options, fixtures) {
            valid += 1;
            let text = serde_json::to_string(&spec).expect("a spec serializes");
            let mut back: RunSpec = serde_json::from_str(&text).expect("a spec reads back");
            back.options.rate = spec.options.rate;
            assert_eq!(back, spec);
        }
    }
    // The scenario's declared options, with the options given.
    if let Some(s) = scenario {
        plan_checks(&RunOptions::default(), s);
        if let Ok(o) = &options {
            if o.validate().is_ok() {
                plan_checks(o, s);
            }
        }
    }
    (decoded, valid)
}
