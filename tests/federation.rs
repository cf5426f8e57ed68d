//! Distributed runs with real processes over real QUIC: a coordinator and
//! workers on loopback (and one in a network namespace of the test's own
//! for the partition), against the built-in target, whose own counts
//! (overall and by client address) are the ground truth.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use host_api::recorder::Hist;

#[test]
fn three_workers_make_one_run_whose_counts_and_percentiles_add_up() {
    let target = Target::start();
    let out = scratch("fed-three").join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let json = format!("json={}", out.display());
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "3",
            "--vus",
            "9",
            "-d",
            "4s",
            "--ramp-up",
            "0s",
            "-e",
            &base,
            "-e",
            "THINK_MS=50",
            "-e",
            "NAME_BY_VU=1",
            // Only the three workers' requests together pass this.
            "--threshold",
            "http_reqs count>450",
            "--quiet",
            "--out",
            &json,
        ],
    );
    let workers = workers(&coord, 3, &["--capacity", "1"]);
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    let s = summary(&out);
    let total = total_requests(&s);
    assert!(total > 450, "{total}");
    assert_eq!(total, target.requests(), "the merged count is the target's");
    // Every VU id names its own row: ids are unique across the workers.
    let rows = s["http"].as_array().unwrap();
    assert_eq!(rows.len(), 9, "{rows:?}");
    let ws = s["meta"]["workers"].as_array().unwrap();
    assert_eq!(ws.len(), 3);
    assert_eq!(
        ws.iter().map(|w| w["vus"].as_u64().unwrap()).sum::<u64>(),
        9
    );
    assert_eq!(
        ws.iter()
            .map(|w| w["requests"].as_u64().unwrap())
            .sum::<u64>(),
        total
    );
    assert!(ws.iter().all(|w| w["status"] == "ended"), "{ws:?}");
    // The summary's latencies are exactly the merge of the workers' own.
    let mut merged = Hist::micros();
    for w in ws {
        merged.merge(&Hist::decode(w["latency"].as_str().unwrap()).unwrap());
    }
    let summary: runner::report::Summary =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let mut all = Hist::micros();
    for r in summary.raw.http.values() {
        all.merge(&r.latency);
    }
    assert_eq!(merged.count(), all.count());
    for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
        assert_eq!(merged.quantile(q), all.quantile(q), "q{q}");
    }
    assert!(s["thresholds"][0]["pass"].as_bool().unwrap());
    assert!(s["meta"]["start_skew_ms"].as_f64().unwrap() < 50.0);
    for mut w in workers {
        // The coordinator's close reaches each worker soon after it exits.
        w.wait_line("the run is over", Duration::from_secs(10));
        assert!(w.running(), "workers wait for the next run: {}", w.log());
    }
}

#[test]
fn an_abort_threshold_is_judged_on_the_merged_data() {
    let target = Target::start();
    let out = scratch("fed-abort").join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let json = format!("json={}", out.display());
    // Two workers of one VU each, about 10 requests/s apiece: together
    // they pass 60 requests after some 3 s, alone only after 6 s.
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "2",
            "--vus",
            "2",
            "-d",
            "30s",
            "--ramp-up",
            "0s",
            "-e",
            &base,
            "-e",
            "THINK_MS=100",
            "--threshold",
            "http_reqs count<60 abort",
            "--quiet",
            "--out",
            &json,
        ],
    );
    let _workers = workers(&coord, 2, &["--capacity", "1"]);
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    assert_eq!(code, Some(99), "{}", coord.proc.log());
    let s = summary(&out);
    assert_eq!(
        s["meta"]["aborted_by_threshold"],
        "http_reqs count<60 abort"
    );
    let took = s["meta"]["duration_s"].as_f64().unwrap();
    assert!(
        took < 6.0,
        "stopped after {took:.1}s: not on the merged count"
    );
    let ws = s["meta"]["workers"].as_array().unwrap();
    assert!(
        ws.iter().all(|w| w["requests"].as_u64().unwrap() < 60),
        "{ws:?}"
    );
    assert_eq!(total_requests(&s), target.requests());
}

#[test]
fn the_coordinator_s_api_steers_every_worker() {
    use common::api::{call, get, put_raw};
    let target = Target::start();
    let base = format!("BASE_URL={}", target.url);
    let out = scratch("fed-api").join("r.json");
    let json = format!("json={}", out.display());
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "2",
            "--vus",
            "2",
            "--max-vus",
            "8",
            "-d",
            "60s",
            "--ramp-up",
            "0s",
            "-e",
            &base,
            "-e",
            "THINK_MS=50",
            "--quiet",
            "--web",
            "127.0.0.1:0",
            "--out",
            &json,
        ],
    );
    let _workers = workers(&coord, 2, &["--capacity", "1"]);
    let line = coord.proc.wait_line("live API: ", Duration::from_secs(30));
    let url = line
        .split("live API: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_secs(2));
    let info = get(&url);
    assert_eq!(
        info.json["workers"].as_array().map(Vec::len),
        Some(2),
        "{}",
        info.text
    );
    let before = target.rate_over(Duration::from_secs(2));
    let patched = call("PATCH", &url, Some(&serde_json::json!({"vus": 8})), None);
    assert_eq!(patched.status, 200, "{}", patched.text);
    std::thread::sleep(Duration::from_millis(700));
    let after = target.rate_over(Duration::from_secs(2));
    assert!(
        after > before * 3.0,
        "{before:.0}/s → {after:.0}/s for 2 → 8 VUs over two workers"
    );
    let rows = get(&url).json["workers"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    // A component that is not a scenario is refused by the coordinator
    // and the run goes on as it was.
    let bad = put_raw(
        &format!("{url}/scenario"),
        "application/wasm",
        b"\0asm\x0d\0\x01\0junk",
    );
    assert_eq!(bad.status, 422, "{}", bad.text);
    // Swapped to a scenario whose VUs make no request: both workers fetch
    // it, switch, and the target hears nothing more.
    let idle = std::fs::read(component("idle")).unwrap();
    let swapped = put_raw(
        &format!("{url}/scenario?name=idle.wasm"),
        "application/wasm",
        &idle,
    );
    assert_eq!(swapped.status, 200, "{}", swapped.text);
    assert_eq!(swapped.json["kind"], "scenario");
    assert_eq!(swapped.json["generation"], 1);
    assert!(
        swapped.json["message"]
            .as_str()
            .unwrap()
            .contains("on 2 worker(s)"),
        "{}",
        swapped.text
    );
    std::thread::sleep(Duration::from_millis(500));
    let quiet = target.rate_over(Duration::from_secs(2));
    assert!(
        quiet < 1.0,
        "{quiet:.1}/s after swapping to an idle scenario"
    );
    let stopped = call("POST", &format!("{url}/stop"), None, None);
    assert_eq!(stopped.status, 202, "{}", stopped.text);
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    let s = summary(&out);
    assert_eq!(total_requests(&s), target.requests());
    let phases = s["meta"]["scenarios"].as_array().expect("phases").clone();
    assert_eq!(phases.len(), 2, "{phases:?}");
    assert_eq!(phases[1]["name"], "idle.wasm");
}

#[test]
fn a_worker_that_joins_mid_run_takes_its_share_of_the_vus() {
    let target = Target::start();
    let out = scratch("fed-join").join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let json = format!("json={}", out.display());
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "1",
            "--vus",
            "6",
            "-d",
            "12s",
            "--ramp-up",
            "0s",
            "-e",
            &base,
            "-e",
            "THINK_MS=50",
            "--quiet",
            "--out",
            &json,
        ],
    );
    let _first = worker(&coord.addr, &coord.token, "first", &["--capacity", "1"]);
    coord
        .proc
        .wait_line("starting 1 worker(s)", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let before = target.rate_over(Duration::from_secs(2));
    let _second = worker(&coord.addr, &coord.token, "second", &["--capacity", "1"]);
    coord
        .proc
        .wait_line("takes part from", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    // The same 6 VUs, now on two workers: the rate does not double.
    let after = target.rate_over(Duration::from_secs(2));
    assert!(
        (after - before).abs() < before * 0.25,
        "{before:.0}/s before the join, {after:.0}/s after"
    );
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    let s = summary(&out);
    assert_eq!(total_requests(&s), target.requests());
    let ws = s["meta"]["workers"].as_array().unwrap();
    assert_eq!(ws.len(), 2, "{ws:?}");
    assert!(
        ws[1]["requests"].as_u64().unwrap() > 50,
        "the joiner worked: {ws:?}"
    );
    assert!(
        s["meta"]["peak_vus"].as_u64().unwrap() <= 6,
        "never more than 6 VUs at once"
    );
}

#[test]
fn a_worker_that_joins_mid_run_takes_its_share_of_the_rate() {
    let target = Target::start();
    let out = scratch("fed-join-rate").join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let json = format!("json={}", out.display());
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "1",
            "--rate",
            "50",
            "-d",
            "12s",
            "--max-vus",
            "40",
            "-e",
            &base,
            "-e",
            "THINK_MS=0",
            "--quiet",
            "--out",
            &json,
        ],
    );
    let _first = worker(&coord.addr, &coord.token, "first", &["--capacity", "1"]);
    coord
        .proc
        .wait_line("starting 1 worker(s)", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let _second = worker(&coord.addr, &coord.token, "second", &["--capacity", "1"]);
    coord
        .proc
        .wait_line("takes part from", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    let after = target.rate_over(Duration::from_secs(3));
    assert!(
        (40.0..=60.0).contains(&after),
        "{after:.1}/s for 50/s after the join"
    );
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    let s = summary(&out);
    assert_eq!(total_requests(&s), target.requests());
    // 12 s at 50/s, give or take the seconds around the join.
    let total = total_requests(&s);
    assert!((540..=620).contains(&total), "{total} for ~600");
    let ws = s["meta"]["workers"].as_array().unwrap();
    assert!(
        ws[1]["requests"].as_u64().unwrap() > 100,
        "the joiner worked: {ws:?}"
    );
}

#[test]
fn a_worker_at_its_memory_ceiling_is_named_in_the_run_s_one_line_reason() {
    let target = Target::start();
    let out = scratch("fed-memory").join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let json = format!("json={}", out.display());
    // 2,000 connected VUs on each of two workers need over 100 MiB each
    // (about 55 KiB a VU, and the process); the ceiling every worker
    // gets (the run's spec) is well below that.
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "2",
            "--vus",
            "4000",
            "-d",
            "30s",
            "--ramp-up",
            "3s",
            "--max-memory",
            "80MiB",
            "-e",
            &base,
            "--quiet",
            "--out",
            &json,
        ],
    );
    let ws = workers(&coord, 2, &["--capacity", "1"]);
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    let worker_logs: Vec<String> = ws.iter().map(|w| w.log()).collect();
    let log = coord.proc.log();
    assert_eq!(code, Some(1), "{log}\n{}", worker_logs.join("\n"));
    let line = log
        .lines()
        .find(|l| l.contains("error: the run ended early"))
        .unwrap_or_else(|| panic!("no one-line reason:\n{log}\n{}", worker_logs.join("\n")));
    assert!(
        line.contains("worker ") && line.contains("--max-memory (80.0 MiB)"),
        "{line}"
    );
    // The results are written, the stopped workers named in them.
    let s = summary(&out);
    let stopped: Vec<_> = s["meta"]["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter(|w| {
            w["stopped"]
                .as_str()
                .is_some_and(|m| m.contains("--max-memory"))
        })
        .collect();
    assert!(!stopped.is_empty(), "{}", s["meta"]["workers"]);
    assert!(total_requests(&s) > 0);
    assert_eq!(total_requests(&s), target.requests());
}

#[test]
fn a_worker_s_egress_rules_hold_whatever_the_coordinator_s_run_asks() {
    let target = Target::start();
    let dest = format!("127.0.0.1:{}", target.url.rsplit(':').next().unwrap());
    let out = scratch("fed-egress").join("r.json");
    let (base, json) = (
        format!("BASE_URL={}", target.url),
        format!("json={}", out.display()),
    );
    // The run asks for all of loopback; one worker's operator allows only
    // 127.0.0.2, the other keeps the default (loopback).
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "2",
            "--vus",
            "4",
            "-d",
            "3s",
            "--ramp-up",
            "0s",
            "-e",
            &base,
            "-e",
            "THINK_MS=50",
            "--allow-host",
            "127.0.0.0/8",
            "--quiet",
            "--out",
            &json,
        ],
    );
    let strict = worker(
        &coord.addr,
        &coord.token,
        "strict",
        &["--allow-host", "127.0.0.2"],
    );
    let open = worker(&coord.addr, &coord.token, "open", &[]);
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    strict.wait_line(
        "this worker's VUs may connect to: 127.0.0.2",
        Duration::from_secs(5),
    );
    open.wait_line(
        "this worker's VUs may connect to: localhost, 127.0.0.0/8, ::1",
        Duration::from_secs(5),
    );
    let s = summary(&out);
    let ws = s["meta"]["workers"].as_array().expect("workers");
    let by = |name: &str| {
        ws.iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("no worker {name}: {ws:?}"))
    };
    // Every request of the strict worker was denied, none of the other's.
    let (strict_row, open_row) = (by("strict"), by("open"));
    let denied = strict_row["requests"].as_u64().unwrap();
    assert!(denied > 10, "{strict_row}");
    assert_eq!(strict_row["failed"].as_u64(), Some(denied), "{strict_row}");
    assert_eq!(open_row["failed"], 0, "{open_row}");
    assert_eq!(s["denied"][&dest].as_u64(), Some(denied), "{}", s["denied"]);
    // The target heard only the open worker.
    assert_eq!(target.requests(), open_row["requests"].as_u64().unwrap());
    assert_eq!(total_requests(&s), denied + target.requests());
}
