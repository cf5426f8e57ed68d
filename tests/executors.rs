//! Load models against a counting server: the open model's arrival rate,
//! dropped arrivals, Poisson spacing, and latency free of coordinated
//! omission against a server that stalls.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A hello-http run that must succeed (thresholds held).
fn hello(target: &str, name: &str, extra: &[&str]) -> (Run, serde_json::Value) {
    let (r, s) = run_against("hello-http", target, name, extra);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    (r, s)
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn the_open_model_starts_exactly_rate_times_duration_iterations() {
    let target = Target::start();
    let (r, s) = hello(
        &target.url,
        "rate",
        &[
            "--rate",
            "100",
            "--duration",
            "3s",
            "--vus",
            "5",
            "-e",
            "THINK_MS=0",
            "--threshold",
            "http_req_latency p(99)<1s",
            "--threshold",
            "iteration_latency p(50)<1s",
        ],
    );
    assert_eq!(
        r.code,
        Some(0),
        "thresholds on latency from the intended start hold"
    );
    let it = &s["iterations"];
    assert_eq!(u(&it["ok"]), 300, "iterations: {it}");
    assert_eq!(u(&it["dropped"]), 0);
    assert_eq!(target.requests(), 300);
    let rate = it["arrival_rate"].as_f64().unwrap();
    assert!((rate - 100.0).abs() <= 1.0, "achieved {rate}/s for 100/s");
    // Latency from the intended start is each request's service time plus
    // how late it started, so every percentile of it is at least the same
    // percentile of the service time (and so for iterations).
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    let (http, it_ms) = (&s["http"][0], &it["duration_ms"]);
    for q in ["p50", "p90", "p99"] {
        let (service, corrected) = (
            f(&http["latency_ms"][q]),
            f(&http["latency_corrected_ms"][q]),
        );
        assert!(
            service > 0.0 && corrected >= service,
            "{q}: {corrected} < {service}"
        );
        let (duration, latency) = (f(&it_ms[q]), f(&it["latency_ms"][q]));
        assert!(
            latency >= duration,
            "iterations {q}: {latency} < {duration}"
        );
    }
    assert_eq!(s["meta"]["open_model"]["rate"].as_f64(), Some(100.0));
}

#[test]
fn arrivals_that_find_no_free_vu_are_dropped_not_delayed() {
    let target = Target::start();
    // Two VUs at ~100 ms per iteration serve ~20/s of the 100/s asked.
    let (r, s) = run_against(
        "hello-http",
        &target.url,
        "dropped",
        &[
            "--rate",
            "100",
            "--duration",
            "3s",
            "--vus",
            "1",
            "--max-vus",
            "2",
            "-e",
            "THINK_MS=100",
            "--threshold",
            "dropped_iterations count<10",
        ],
    );
    assert_eq!(
        r.code,
        Some(99),
        "the dropped-iterations threshold fails the run"
    );
    assert_eq!(s["thresholds"][0]["pass"], false);
    let it = &s["iterations"];
    let (ok, dropped) = (u(&it["ok"]), u(&it["dropped"]));
    assert_eq!(
        ok + dropped,
        300,
        "every arrival either ran or was dropped: {it}"
    );
    assert!(dropped >= 200, "dropped {dropped}");
    assert_eq!(target.requests(), ok);
    // No arrival waited for a VU: the schedule itself stayed on time.
    assert!(
        it["scheduler_lag_ms"]["p99"].as_f64().unwrap() < 20.0,
        "{it}"
    );
}

#[test]
fn poisson_arrivals_average_to_the_rate() {
    let target = Target::start();
    let (_, s) = hello(
        &target.url,
        "poisson",
        &[
            "--rate",
            "200",
            "--duration",
            "3s",
            "--arrival",
            "poisson",
            "--vus",
            "10",
            "-e",
            "THINK_MS=0",
        ],
    );
    let ok = u(&s["iterations"]["ok"]);
    // 600 expected; a Poisson count has a standard deviation of ~25.
    assert!((500..=700).contains(&ok), "{ok} arrivals for 600 expected");
    assert_eq!(target.requests(), ok);
}

/// Starts the built-in target with a periodic stall.
fn stalling_target(stall: &str) -> (std::process::Child, String) {
    let mut child = Command::new(runner())
        .args(["target", "--listen", "127.0.0.1:0", "--stall", stall])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the target");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    (child, url)
}

#[test]
fn a_stalling_server_moves_the_open_models_percentiles_as_it_should() {
    // The server pauses 500 ms every 2 s: a quarter of the arrivals wait,
    // uniformly 0–500 ms. A correct tool reports p90 ≈ 300 ms (the top 40%
    // of waits) and p99 ≈ 480 ms (the top 4%).
    let (mut server, url) = stalling_target("2s:500ms");
    let stats = "p(50),p(90),p(99)";
    let (_, open) = hello(
        &url,
        "stall-open",
        &[
            "--rate",
            "300",
            "--duration",
            "6s",
            "-e",
            "THINK_MS=0",
            "--summary-trend-stats",
            stats,
        ],
    );
    let corrected = &open["http"][0]["latency_corrected_ms"];
    let (p90, p99) = (
        corrected["p90"].as_f64().unwrap(),
        corrected["p99"].as_f64().unwrap(),
    );
    assert!(
        (230.0..=370.0).contains(&p90),
        "open model p90 {p90} ms, expected ~300"
    );
    assert!(
        (420.0..=520.0).contains(&p99),
        "open model p99 {p99} ms, expected ~480"
    );
    let it = &open["iterations"];
    assert_eq!(u(&it["dropped"]), 0, "enough VUs for every arrival: {it}");

    // The closed model, each VU waiting for its last answer, sends almost
    // nothing during a stall, and its service times hide the pauses: the
    // coordinated omission the open model avoids.
    let (_, closed) = hello(
        &url,
        "stall-closed",
        &["--vus", "4", "--duration", "6s", "-e", "THINK_MS=1"],
    );
    let closed_p99 = closed["http"][0]["latency_ms"]["p99"].as_f64().unwrap();
    assert!(
        closed_p99 < p99 / 4.0,
        "closed-model p99 {closed_p99} ms vs open {p99} ms"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn open_model_flags_are_checked() {
    let c = component("idle");
    let c = c.to_str().unwrap();
    for (args, needle) in [
        (vec!["--rate", "10"], "--rate needs --duration"),
        (
            vec!["--rate", "10", "-d", "1s", "--iterations", "3"],
            "--iterations does not apply with --rate",
        ),
        (
            vec!["--rate", "10", "-d", "1s", "--vus", "5", "--max-vus", "2"],
            "--max-vus 2 is less than",
        ),
    ] {
        let mut full = vec!["run", c];
        full.extend(args);
        let r = run(&full, Duration::from_secs(30));
        assert_eq!(r.code, Some(1), "{full:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{full:?}: {}", r.stderr);
    }
    let r = run(
        &["run", c, "--rate", "0", "-d", "1s"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("--rate must be above 0 without stages"),
        "{}",
        r.stderr
    );
    let r = run(
        &["run", c, "--rate", "-5", "-d", "1s"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(2));
}

#[test]
fn ramping_vus_follow_the_stages() {
    let target = Target::start();
    let dir = scratch("ramp-vus");
    let series = dir.join("r.ndjson");
    let out = format!("ndjson={}", series.display());
    // VU-seconds: 0→10 over 2 s (10), 10 for 2 s (20), 10→0 over 1 s (5):
    // 35, at ~10 iterations per VU-second.
    let (_, s) = hello(
        &target.url,
        "ramp-vus",
        &[
            "--stage",
            "2s:10",
            "--stage",
            "2s:10",
            "--stage",
            "1s:0",
            "-e",
            "THINK_MS=100",
            "--out",
            &out,
        ],
    );
    let ok = u(&s["iterations"]["ok"]);
    assert!((300..=380).contains(&ok), "{ok} iterations for ~350");
    assert_eq!(target.requests(), ok);
    assert_eq!(s["meta"]["vus"], 10);
    // (seconds, VUs) of each one-second record.
    let vus: Vec<(f64, u64)> = std::fs::read_to_string(&series)
        .unwrap()
        .lines()
        .map(|l| {
            let v = serde_json::from_str::<serde_json::Value>(l).unwrap();
            (v["t"].as_f64().unwrap(), v["vus"].as_u64().unwrap())
        })
        .collect();
    assert!(vus.len() >= 5, "{vus:?}");
    let at = |secs: f64| {
        vus.iter()
            .min_by(|a, b| (a.0 - secs).abs().total_cmp(&(b.0 - secs).abs()))
            .map(|p| p.1)
            .unwrap()
    };
    assert!(
        (3..=7).contains(&at(1.0)),
        "half-way up the first ramp: {vus:?}"
    );
    assert_eq!(at(3.0), 10, "{vus:?}");
}

#[test]
fn ramping_arrival_rates_start_exactly_the_integral() {
    let target = Target::start();
    // 0→100/s over 2 s (100 arrivals), then 100/s for 1 s (100).
    let (_, s) = hello(
        &target.url,
        "ramp-rate",
        &[
            "--rate",
            "0",
            "--stage",
            "2s:100",
            "--stage",
            "1s:100",
            "-e",
            "THINK_MS=0",
        ],
    );
    assert_eq!(u(&s["iterations"]["ok"]), 200, "{}", s["iterations"]);
    assert_eq!(target.requests(), 200);
}

#[test]
fn ramp_down_cancels_iterations_after_the_grace_period() {
    let dir = scratch("ramp-down");
    let json = dir.join("r.json");
    let r = run(
        &[
            "run",
            component("idle").to_str().unwrap(),
            "--stage",
            "500ms:4",
            "--stage",
            "1s:0",
            "--grace",
            "300ms",
            "-e",
            "SLEEP_MS=60000",
            "--quiet",
            "--out",
            &format!("json={}", json.display()),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let s = summary(&json);
    assert_eq!(count(&s, "traps", "ramp-down"), 4, "traps: {}", s["traps"]);
    assert!(r.elapsed < Duration::from_secs(6), "took {:?}", r.elapsed);
}

#[test]
fn stage_flags_are_checked() {
    let c = component("idle");
    let c = c.to_str().unwrap();
    let r = run(
        &["run", c, "--stage", "1s:3", "--duration", "5s"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("--stage sets the run's length"),
        "{}",
        r.stderr
    );
    let r = run(&["run", c, "--stage", "1s"], Duration::from_secs(30));
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("DURATION:TARGET"), "{}", r.stderr);
}

#[test]
fn a_scenario_brings_its_own_classes_and_load_models() {
    let target = Target::start();
    let dir = scratch("shop");
    let json = dir.join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let out = format!("json={}", json.display());
    let shop = component("shop");
    let r = run(
        &[
            "run",
            shop.to_str().unwrap(),
            "-e",
            &base,
            "--quiet",
            "--out",
            &out,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let s = summary(&json);
    let requests = |name: &str| {
        s["http"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| u(&r["requests"]))
            .unwrap_or(0)
    };
    // api: 20/s for the scenario's 3 s, exactly.
    assert_eq!(requests("api"), 60);
    // batch: 2 VUs × 3 paced iterations, reading the class's own env.
    assert_eq!(requests("batch-nightly"), 6);
    // browser: ramping 0→4 VUs over 1 s, 4 for 2 s: ~10 VU-seconds at ~10/s.
    let browser = requests("browser");
    assert!((70..=120).contains(&browser), "browser {browser}");
    assert_eq!(target.requests(), 60 + 6 + browser);
    assert_eq!(s["thresholds"][0]["threshold"], "checks rate==1");
    let classes = s["meta"]["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 3);

    // Pacing holds iterations 500 ms apart: in 0.7 s each batch VU starts
    // its 1st and 2nd (at 0 and 0.5 s) but not its 3rd (at 1 s).
    let r = run(
        &[
            "run",
            shop.to_str().unwrap(),
            "-e",
            &base,
            "-d",
            "700ms",
            "--ramp-up",
            "0s",
            "--quiet",
            "--out",
            &out,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let s = summary(&json);
    let batch = s["http"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "batch-nightly")
        .unwrap();
    assert_eq!(u(&batch["requests"]), 4, "pacing: {batch}");

    // A --rate on the command line overrides every class's own model.
    let before = target.requests();
    let r = run(
        &[
            "run",
            shop.to_str().unwrap(),
            "-e",
            &base,
            "--rate",
            "10",
            "-d",
            "2s",
            "--quiet",
            "--out",
            &out,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let s = summary(&json);
    assert_eq!(u(&s["iterations"]["ok"]), 20, "{}", s["iterations"]);
    assert_eq!(target.requests() - before, 20);
}

#[test]
fn inspect_shows_imports_and_declared_options() {
    let shop = component("shop");
    let r = run(
        &["inspect", shop.to_str().unwrap(), "--json"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert!(v["imports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i == "runner:scenario/http@0.1.0"));
    assert_eq!(v["exports"][0], "runner:scenario/scenario@0.1.0");
    assert!(v["bytes"].as_u64().unwrap() > 1000);
    assert!(
        v["language"]
            .as_str()
            .is_some_and(|l| l.starts_with("Rust")),
        "{}",
        v["language"]
    );
    let classes = v["options"]["classes"].as_array().unwrap();
    let names: Vec<&str> = classes
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "browser", "batch"]);
    assert_eq!(classes[0]["rate"].as_f64(), Some(20.0));
    assert_eq!(classes[1]["stages"][0][1].as_f64(), Some(4.0));
    assert_eq!(classes[2]["pacing_s"].as_f64(), Some(0.5));
    assert_eq!(v["options"]["thresholds"][0], "checks rate==1");

    let text = run(
        &["inspect", shop.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(
        text.stdout
            .contains("class     api: 2 VUs, open model 20/s"),
        "{}",
        text.stdout
    );
    let bad = run(&["inspect", "/nonexistent.wasm"], Duration::from_secs(30));
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("cannot read scenario"),
        "{}",
        bad.stderr
    );
}

#[test]
fn pacing_and_think_time_flags_space_the_iterations() {
    let target = Target::start();
    // 2 VUs, one iteration every 400 ms for 2 s: 5 each, 10 in all.
    let (_, s) = hello(
        &target.url,
        "pacing-flag",
        &[
            "--vus",
            "2",
            "--duration",
            "2s",
            "--ramp-up",
            "0s",
            "--pacing",
            "400ms",
            "-e",
            "THINK_MS=0",
        ],
    );
    let n = u(&s["iterations"]["ok"]);
    assert!((9..=11).contains(&n), "{n} iterations with --pacing 400ms");
    assert_eq!(total_requests(&s), target.requests());
    // A 300 ms think time after each iteration: about 7 each in 2 s.
    let target = Target::start();
    let (_, s) = hello(
        &target.url,
        "think-flag",
        &[
            "--vus",
            "2",
            "--duration",
            "2s",
            "--ramp-up",
            "0s",
            "--think-time",
            "300ms",
            "-e",
            "THINK_MS=0",
        ],
    );
    let n = u(&s["iterations"]["ok"]);
    assert!(
        (12..=15).contains(&n),
        "{n} iterations with --think-time 300ms"
    );
    assert_eq!(total_requests(&s), target.requests());
}

#[test]
fn every_http_row_of_the_open_model_shows_latency_from_the_intended_start() {
    let target = Target::start();
    let json = scratch("tagged-corrected").join("r.json");
    let (c, base, out) = (
        component("tour"),
        format!("BASE_URL={}", target.url),
        format!("json={}", json.display()),
    );
    let r = run(
        &[
            "run",
            c.to_str().unwrap(),
            "-e",
            &base,
            "--rate",
            "5",
            "-d",
            "2s",
            "--vus",
            "4",
            "--out",
            &out,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let s = summary(&json);
    let rows = s["http"].as_array().unwrap();
    let tagged = rows
        .iter()
        .filter(|r| r["tags"].as_object().is_some_and(|t| !t.is_empty()))
        .count();
    assert!(tagged > 0, "the tour tags some requests: {rows:?}");
    // Every row with a latency, tagged or not, has its line in the table
    // (invalid requests have none).
    let timed = rows
        .iter()
        .filter(|r| r["latency_corrected_ms"].is_object())
        .count();
    assert_eq!(timed, rows.len() - 1, "{rows:?}");
    let lines = r.stdout.matches("from intended start:").count();
    assert_eq!(lines, timed, "{}", r.stdout);
}
