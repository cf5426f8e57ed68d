//! Containment: a VU that panics, spins, eats memory, overflows its stack
//! or hangs ends only its own iteration; the other VUs go on at their
//! normal rate and the run ends normally.

mod common;

use std::time::Duration;

use common::*;

fn chaos_run(target: &Target, name: &str, extra: &[&str]) -> (serde_json::Value, Run) {
    let dir = scratch(name);
    let json = dir.join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let out = format!("json={}", json.display());
    let mut args = vec![
        "run",
        component("chaos").to_str().unwrap().to_owned().leak(),
        "--duration",
        "4s",
        "--ramp-up",
        "0s",
        "--grace",
        "5s",
        "-e",
        &base,
        "-e",
        "STEADY=4",
        "-e",
        "THINK_MS=20",
        "--quiet",
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    let r = run(&args, Duration::from_secs(90));
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    (summary(&json), r)
}

fn steady_requests(s: &serde_json::Value) -> u64 {
    total_requests(s)
}

#[test]
fn misbehaving_vus_are_contained() {
    let target = Target::start();
    let (baseline, _) = chaos_run(&target, "baseline", &[]);
    let before = target.requests();
    let (chaos, r) = chaos_run(
        &target,
        "chaos",
        &[
            "-e",
            "PANIC=2",
            "-e",
            "SPIN=1",
            "-e",
            "HOG=1",
            "-e",
            "DEEP=1",
            "-e",
            "FAIL=1",
            "--cpu-limit",
            "300ms",
            "--memory-limit",
            "16MiB",
        ],
    );
    let served = target.requests() - before;

    // Every kind of misbehaviour was stopped and counted by kind.
    assert!(
        count(&chaos, "traps", "panic") >= 2,
        "traps: {}",
        chaos["traps"]
    );
    assert!(
        count(&chaos, "traps", "cpu-limit") >= 1,
        "traps: {}",
        chaos["traps"]
    );
    assert!(
        count(&chaos, "traps", "memory-limit") >= 1,
        "traps: {}",
        chaos["traps"]
    );
    assert!(
        count(&chaos, "traps", "memory-fault") >= 1,
        "traps: {}",
        chaos["traps"]
    );
    assert!(chaos["iterations"]["failed"].as_u64().unwrap() >= 1);
    // The panic's own message reaches the log, with the VU id.
    assert!(
        r.stderr.contains("ended by panic: panicked at"),
        "stderr: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("panics on purpose"),
        "stderr: {}",
        r.stderr
    );

    // The well-behaved VUs kept their rate, and every request was counted.
    let (b, c) = (steady_requests(&baseline), steady_requests(&chaos));
    assert!(b > 200, "baseline too small to compare: {b}");
    assert!(
        c * 100 >= b * 75,
        "steady VUs slowed down: {c} requests beside misbehaving VUs vs {b} alone"
    );
    assert_eq!(c, served, "runner and server disagree");
    assert_eq!(chaos["checks"][0]["fail"], 0);

    // The run ended on time: the spinning VU did not hold it up.
    assert!(
        r.elapsed < Duration::from_secs(15),
        "run took {:?}",
        r.elapsed
    );
}

#[test]
fn a_stuck_iteration_is_cancelled_by_its_timeout() {
    let (r, s) = run_example(
        "idle",
        "timeout",
        &[
            "--vus",
            "3",
            "--duration",
            "1s",
            "--iteration-timeout",
            "200ms",
            "-e",
            "SLEEP_MS=60000",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(count(&s, "traps", "timeout") >= 3, "traps: {}", s["traps"]);
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
}

#[test]
fn the_grace_period_ends_with_cancellation() {
    let (r, s) = run_example(
        "idle",
        "grace",
        &[
            "--vus",
            "5",
            "--duration",
            "500ms",
            "--grace",
            "500ms",
            "--ramp-up",
            "0s",
            "-e",
            "SLEEP_MS=60000",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(
        count(&s, "traps", "interrupted"),
        5,
        "traps: {}",
        s["traps"]
    );
    assert!(r.elapsed < Duration::from_secs(8), "took {:?}", r.elapsed);
}

#[test]
fn fuel_metering_stops_a_runaway_loop() {
    let (r, s) = run_example(
        "chaos",
        "fuel",
        &[
            "--iterations",
            "2",
            "-e",
            "STEADY=0",
            "-e",
            "SPIN=1",
            "--fuel",
            "50000000",
            "--cpu-limit",
            "60s",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(count(&s, "traps", "fuel"), 2, "traps: {}", s["traps"]);
}

#[test]
fn guest_output_reaches_the_log_with_the_vu_id_and_is_rate_limited() {
    let chatty = ["--iterations", "1", "-e", "STEADY=0", "-e", "CHATTY=2"];
    let (r, s) = run_example("chaos", "chatty", &chatty);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    for needle in [
        "vu 0: stdout line 0 of VU 0",
        "vu 1: stdout line 2 of VU 1",
        "vu 1: stderr line 1",
        "vu 0: log line 2",
    ] {
        assert!(
            r.stderr.contains(needle),
            "{needle:?} missing from: {}",
            r.stderr
        );
    }
    assert_eq!(s["meta"]["log_lines_suppressed"], 0);

    // 2 VUs × 100 lines × 3 streams against a budget of 10 lines a second.
    let mut flooding = chatty.to_vec();
    flooding.extend_from_slice(&["-e", "LINES=100", "--log-rate", "10"]);
    let (r, s) = run_example("chaos", "chatty-flood", &flooding);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let suppressed = s["meta"]["log_lines_suppressed"].as_u64().unwrap();
    assert!(suppressed >= 500, "suppressed {suppressed} of 600 lines");
    assert!(
        r.stderr.lines().filter(|l| l.contains("line")).count() <= 40,
        "stderr: {}",
        r.stderr
    );
}

#[test]
fn values_over_the_host_s_sizes_are_cut_or_refused() {
    let target = Target::start();
    let (s, r) = chaos_run(
        &target,
        "oversize",
        &[
            "-e",
            "OVERSIZE=1",
            "--max-body",
            "1MiB",
            "--log-rate",
            "10000",
        ],
    );
    // Requests over the sizes are refused before anything is sent.
    for c in [
        "an oversized URL is refused",
        "too many headers are refused",
        "a body over --max-body is refused",
    ] {
        let row = s["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == c)
            .unwrap_or_else(|| panic!("no check {c:?}: {}", s["checks"]));
        assert!(row["pass"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["fail"], 0, "{row}");
    }
    // Log lines and messages are cut, and say so.
    let longest = r.stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 6_000, "a {longest}-byte line reached the log");
    assert!(
        r.stderr.contains("more bytes cut"),
        "{}",
        &r.stderr[..2000.min(r.stderr.len())]
    );
    assert!(r.stderr.contains("more lines cut"));
    // The 10 KB metric name is kept cut, marked.
    let counters = s["counters"].as_object().unwrap();
    let name = counters
        .keys()
        .find(|k| k.starts_with("nnn"))
        .expect("the counter");
    assert!(
        name.len() <= 256 && name.ends_with('…'),
        "{} bytes",
        name.len()
    );
    assert!(count(&s, "iterations", "failed") > 0);
    assert!(steady_requests(&s) > 0);
}

#[test]
fn a_vu_looping_on_host_calls_spends_its_cpu_budget_and_is_named_for_it() {
    let target = Target::start();
    let (baseline, _) = chaos_run(&target, "hostloop-baseline", &[]);
    let before = target.requests();
    let (s, r) = chaos_run(
        &target,
        "hostloop",
        &["-e", "HOSTLOOP=1", "--cpu-limit", "300ms"],
    );
    let served = target.requests() - before;
    // Ended as a spinning VU is, and named for where it spent its time.
    assert!(
        count(&s, "traps", "host-cpu-limit") >= 2,
        "traps: {}",
        s["traps"]
    );
    assert_eq!(count(&s, "traps", "cpu-limit"), 0, "{}", s["traps"]);
    assert!(
        r.stderr.contains("most of it in host calls"),
        "{}",
        r.stderr
    );
    let (b, c) = (steady_requests(&baseline), steady_requests(&s));
    assert!(
        c * 100 >= b * 75,
        "steady VUs slowed down: {c} requests beside the loop vs {b} alone"
    );
    assert_eq!(c, served, "runner and server disagree");
}

/// Requests of the HTTP row named `name`.
fn row_requests(s: &serde_json::Value, name: &str) -> u64 {
    s["http"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .and_then(|r| r["requests"].as_u64())
        .unwrap_or(0)
}

#[test]
fn vus_that_hoard_handles_or_connections_are_contained() {
    // On every loopback address, so one VU can open thousands of
    // connections to distinct origins (127.0.X.Y).
    let target = Target::start_on("0.0.0.0:0");
    let steady = format!("GET {}/", target.url);
    let (baseline, _) = chaos_run(&target, "hoard-baseline", &[]);
    let before = target.requests();
    let (attack, r) = chaos_run(&target, "hoard", &["-e", "HANDLES=1", "-e", "CONNS=1"]);
    let served = target.requests() - before;

    // The hoarder ends at its handle limit, by kind, again and again.
    assert!(
        count(&attack, "traps", "resource-limit") >= 2,
        "traps: {}",
        attack["traps"]
    );
    assert!(
        r.stderr
            .contains("holds 1024 HTTP responses without dropping them"),
        "{}",
        r.stderr
    );
    // The connection churner made thousands of connections, all served.
    let conns = row_requests(&attack, "conns");
    assert!(conns >= 2_000, "{conns}");
    assert!(row_requests(&attack, "handles") >= 2 * 1024);
    assert_eq!(
        total_requests(&attack),
        served,
        "runner and server disagree"
    );
    for row in attack["http"].as_array().expect("rows") {
        assert_eq!(row["failed"], 0, "{row}");
    }

    // The neighbours kept at least 90% of their requests; the run ended on
    // time; the runner's own memory stayed small.
    let (b, c) = (
        row_requests(&baseline, &steady),
        row_requests(&attack, &steady),
    );
    assert!(b > 200, "baseline too small to compare: {b}");
    assert!(
        c * 100 >= b * 90,
        "steady VUs slowed down: {c} requests beside hoarders vs {b} alone"
    );
    assert!(r.elapsed < Duration::from_secs(15), "{:?}", r.elapsed);
    let rss = attack["meta"]["runner_peak_rss"]
        .as_u64()
        .expect("peak RSS");
    assert!(rss < 400 << 20, "the runner grew to {} MiB", rss >> 20);
}

#[test]
fn giant_option_lists_are_refused_in_one_line() {
    let c = component("chaos");
    let r = run(
        &[
            "run",
            c.to_str().unwrap(),
            "-e",
            "OPTIONS_HUGE=5000",
            "--duration",
            "1s",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        "error: cannot start the run: the scenario's options declare 5011 VU classes; at most 1000 are allowed"
    );
}
