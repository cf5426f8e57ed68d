//! The libFuzzer targets' entry points (`fuzz_targets/*.rs` call these,
//! one each), and the seeds of their corpora. Each takes libFuzzer's
//! bytes to the same checks the bounded engine runs.

use std::path::Path;
use std::sync::LazyLock;

use super::frames::{after_decode, check_histogram, frame_bytes, frame_seeds, histogram_seeds};
use super::rest_api::{
    check_create, check_patch, check_stage, check_stop_query, multipart_form, rest, STAGE_SEEDS,
};
use super::text::{check_token_and_pattern, egress_seeds, token_seed};
use super::*;

/// The scenarios options are planned against.
static FIXTURES: LazyLock<Vec<ScenarioOptions>> = LazyLock::new(scenario_fixtures);

/// The fuzz targets, by name (`fuzz_targets/<name>.rs`). The MQTT
/// decoder's (`mqtt`) is host-api's own.
pub const NAMES: &[&str] = &[
    "thresholds",
    "options",
    "frames",
    "histograms",
    "rest",
    "text",
    "mqtt",
];

/// Threshold text (`--threshold`, a scenario's, a REST body's).
pub fn thresholds(data: &[u8]) {
    static METRICS: LazyLock<(Metrics, Metrics)> =
        LazyLock::new(|| (sample_metrics(), Metrics::default()));
    let text = String::from_utf8_lossy(data);
    check_threshold(&text, &METRICS.0, &METRICS.1);
}

/// Run options and specs as JSON; the same bytes, read by `arbitrary`,
/// as the options a scenario declares.
pub fn options(data: &[u8]) {
    let scenario = ScenarioArb::arbitrary(&mut Unstructured::new(data))
        .ok()
        .map(|s| s.build());
    check_options(data, &FIXTURES, scenario.as_ref());
}

/// A federation frame (length prefix and JSON body) as each message
/// either side reads, then acted on as the receiver does.
pub fn frames(data: &[u8]) {
    // A fresh merge per input, so a crash replays from its input alone.
    let mut buckets = Buckets::new();
    let mut rng = Rng::new(name_hash(&String::from_utf8_lossy(data)));
    after_decode(data, &mut buckets, &mut rng, &FIXTURES);
}

/// A histogram's binary encoding, as a snapshot carries it (in base64).
pub fn histograms(data: &[u8]) {
    check_histogram(&base64::engine::general_purpose::STANDARD.encode(data));
}

/// The API with a closed-model run going after one that is over, and
/// a second API (a server runs one run at a time) with an open-model
/// run going: what the REST target sends its bodies to.
struct Rest {
    api: rest::Api,
    closed: Arc<runner::agent::RunRecord>,
    stop_uri: String,
    open_api: rest::Api,
    open: Arc<runner::agent::RunRecord>,
}

static REST: LazyLock<Rest> = LazyLock::new(|| {
    let api = rest::Api::new();
    let over = api.start(json!({"vus": 1, "duration": "1s", "env": {"SLEEP_MS": "50"}}));
    api.stop(&over);
    // Runs that outlast any fuzzing session.
    let closed = api.start(json!({
        "vus": 2, "max_vus": 16, "duration": "30d", "ramp_up": "0s",
        "env": {"SLEEP_MS": "50"}
    }));
    let open_api = rest::Api::new();
    let open = open_api.start(json!({
        "rate": 2.0, "max_vus": 4, "duration": "30d", "env": {"SLEEP_MS": "10"}
    }));
    Rest {
        stop_uri: format!("/api/v1/runs/{}/stop", over.id),
        api,
        closed,
        open_api,
        open,
    }
});

/// A REST body: the first byte chooses where it goes (a load change to
/// either run, a new run's config or whole form, a stop query) and its
/// content type; the rest is the body.
pub fn rest(data: &[u8]) {
    let Some((&op, body)) = data.split_first() else {
        return;
    };
    let r = &*REST;
    let ct = match op >> 3 {
        0 => None,
        1 => Some("text/plain"),
        2 => Some("application/json; charset=utf-16"),
        _ => Some("application/json"),
    };
    match op & 7 {
        0 | 1 => {
            check_patch(&r.api, &r.closed, body, ct, false, 16.0);
        }
        2 | 3 => {
            check_patch(&r.open_api, &r.open, body, ct, true, 0.0);
        }
        4 => {
            check_create(&r.api, &multipart_form(body));
        }
        5 => {
            check_create(&r.api, body);
        }
        _ => check_stop_query(&r.api, &r.stop_uri, body),
    }
}

/// Short texts: a join token, an egress pattern, a stage.
pub fn text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_token_and_pattern(&text);
    check_stage(&text);
}

/// Every target's seeds, by target name.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let bytes = |v: &Value| serde_json::to_vec(v).expect("json");
    let mut options: Vec<Vec<u8>> = option_seeds().iter().map(bytes).collect();
    options.extend(spec_seeds().iter().map(bytes));
    let (ups, downs, snaps, heads) = frame_seeds();
    let frames = [ups, downs, snaps, heads]
        .iter()
        .flatten()
        .map(frame_bytes)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let histograms = histogram_seeds()
        .iter()
        .map(|h| b64.decode(h).expect("a seed is base64"))
        .collect();
    // Load changes with the first byte choosing the run (0: closed, 2:
    // open) and JSON (3 << 3); new runs' configs (4); stop queries (6).
    let json_op = |op: u8| 3 << 3 | op;
    let mut rest = Vec::new();
    for body in [
        json!({"vus": 3}),
        json!({"class": "default", "vus": 5, "ramp": "2s"}),
    ] {
        rest.push([&[json_op(0)], &bytes(&body)[..]].concat());
    }
    for body in [json!({"rate": 3.5}), json!({"rate": 0.001, "ramp": "1h"})] {
        rest.push([&[json_op(2)], &bytes(&body)[..]].concat());
    }
    for o in option_seeds().iter().take(4) {
        rest.push([&[json_op(4)], &bytes(o)[..]].concat());
    }
    for q in ["abort=true", "abort=maybe", ""] {
        rest.push([&[json_op(6)], q.as_bytes()].concat());
    }
    let mut text: Vec<Vec<u8>> = egress_seeds()
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    text.push(token_seed().into_bytes());
    text.extend(STAGE_SEEDS.iter().map(|s| s.as_bytes().to_vec()));
    vec![
        (
            "thresholds",
            threshold_seeds()
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        ),
        ("options", options),
        ("frames", frames),
        ("histograms", histograms),
        ("rest", rest),
        ("text", text),
        ("mqtt", host_api::fuzzing::mqtt_seeds()),
    ]
}

/// Writes every target's seeds to `dir/<target>/seed-<n>`, beside what
/// earlier runs found there.
pub fn write_seeds(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for (target, seeds) in seeds() {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), s)?;
            n += 1;
        }
    }
    Ok(n)
}

/// `scripts/fuzz.sh` writes the corpora's seeds with this, to
/// `$FUZZ_CORPUS` (ignored by a plain `cargo test`). It checks that every
/// seed passes its target and that every target has seeds.
#[test]
#[ignore = "run by scripts/fuzz.sh"]
fn write_seed_corpus() {
    let dir = std::env::var_os("FUZZ_CORPUS").expect("FUZZ_CORPUS names the corpus folder");
    let all = seeds();
    let names: Vec<&str> = all.iter().map(|(t, _)| *t).collect();
    assert_eq!(names, NAMES, "a target without seeds");
    for (target, seeds) in &all {
        assert!(!seeds.is_empty(), "{target} has no seeds");
    }
    let n = write_seeds(Path::new(&dir)).expect("the corpus folder is writable");
    eprintln!("{n} seeds written to {}", Path::new(&dir).display());
}

/// Every seed passes its own target's check (the REST target's starts
/// runs of the built idle scenario).
#[test]
fn seeds_pass_their_targets() {
    for (target, seeds) in seeds() {
        for s in &seeds {
            match target {
                "thresholds" => thresholds(s),
                "options" => options(s),
                "frames" => frames(s),
                "histograms" => histograms(s),
                "rest" => rest(s),
                "text" => text(s),
                "mqtt" => host_api::fuzzing::mqtt_from_broker(s),
                t => panic!("no entry point for target {t}"),
            }
        }
    }
}
