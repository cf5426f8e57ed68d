//! Thresholds decide the exit code, as in CI: 0 when all hold, 99 when one
//! fails; `abort` stops a run early; the command line replaces the
//! scenario's own thresholds.

mod common;

use std::time::Duration;

use common::*;

fn run_with(target: &str, name: &str, extra: &[&str]) -> (Run, serde_json::Value) {
    let mut args = vec!["-e", "THINK_MS=5"];
    args.extend_from_slice(extra);
    run_against("hello-http", target, name, &args)
}

#[test]
fn passing_and_failing_thresholds_set_the_exit_code() {
    let target = Target::start();
    let (r, s) = run_with(
        &target.url,
        "pass",
        &[
            "--vus",
            "4",
            "--iterations",
            "10",
            "--threshold",
            "http_req_duration p(95)<5s",
            "--threshold",
            "checks rate==1",
            "--threshold",
            "http_reqs count==40",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let t = s["thresholds"].as_array().unwrap();
    assert_eq!(t.len(), 3);
    assert!(t.iter().all(|t| t["pass"] == true), "{t:?}");
    assert_eq!(t[2]["value"].as_f64(), Some(40.0));

    let (r, s) = run_with(
        &target.url,
        "fail",
        &[
            "--vus",
            "2",
            "--iterations",
            "3",
            "--threshold",
            "http_req_duration max<1us",
            "--threshold",
            "checks rate>0.5",
        ],
    );
    assert_eq!(
        r.code,
        Some(99),
        "a failed threshold exits 99; stderr: {}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("thresholds failed: http_req_duration max<1us"),
        "stderr: {}",
        r.stderr
    );
    assert_eq!(s["thresholds"][0]["pass"], false);
    assert_eq!(s["thresholds"][1]["pass"], true);
}

#[test]
fn an_abort_threshold_stops_the_run_early() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let (r, s) = run_with(
        &dead,
        "abort",
        &[
            "--vus",
            "2",
            "--duration",
            "60s",
            "--threshold",
            "http_req_failed rate<0.5 abort",
        ],
    );
    assert_eq!(r.code, Some(99), "stderr: {}", r.stderr);
    assert!(
        r.elapsed < Duration::from_secs(10),
        "the run went on for {:?}",
        r.elapsed
    );
    assert_eq!(
        s["meta"]["aborted_by_threshold"],
        "http_req_failed rate<0.5 abort"
    );
}

#[test]
fn the_command_line_replaces_the_scenarios_thresholds() {
    let target = Target::start();
    let dir = scratch("override");
    let json = dir.join("r.json");
    let chaos = component("chaos");
    let base = format!("BASE_URL={}", target.url);
    let out = format!("json={}", json.display());
    let common = [
        "run",
        chaos.to_str().unwrap(),
        "-e",
        &base,
        "-e",
        "STEADY=1",
        "-e",
        "THRESHOLD=iterations count>1000",
        "--iterations",
        "2",
        "--quiet",
        "--out",
        &out,
    ];

    let r = run(&common, Duration::from_secs(60));
    assert_eq!(
        r.code,
        Some(99),
        "the scenario's own threshold fails; stderr: {}",
        r.stderr
    );
    assert_eq!(
        summary(&json)["thresholds"][0]["threshold"],
        "iterations count>1000"
    );

    let mut args = common.to_vec();
    args.extend_from_slice(&["--threshold", "iterations count==2"]);
    let r = run(&args, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let t = &summary(&json)["thresholds"];
    assert_eq!(t.as_array().unwrap().len(), 1);
    assert_eq!(t[0]["threshold"], "iterations count==2");
}

#[test]
fn bad_thresholds_are_usage_errors() {
    let c = component("idle");
    // Each is refused with the threshold quoted and what is wrong with it.
    for (bad, why) in [
        ("http_req_duration", "expected a metric, then a condition"),
        ("checks rate<x", "the bound is not a number"),
        ("http_reqs p(95)<1", "does not apply to http_reqs"),
        ("x avg<1 parsecs", "expected METRIC CONDITION [abort]"),
    ] {
        let r = run(
            &["run", c.to_str().unwrap(), "--threshold", bad],
            Duration::from_secs(30),
        );
        assert_eq!(r.code, Some(2), "{bad:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("threshold {bad:?}: ")) && r.stderr.contains(why),
            "{bad:?}: {}",
            r.stderr
        );
        let first = r.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(why),
            "the reason is on the first line: {}",
            r.stderr
        );
    }
}
