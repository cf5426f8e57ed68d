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

/// Requests of the HTTP row named `name`.
fn row_requests(s: &serde_json::Value, name: &str) -> u64 {
    s["http"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .and_then(|r| r["requests"].as_u64())
        .unwrap_or(0)
}

/// Requests of the steady VUs (their row is named for the target).
fn steady_requests(s: &serde_json::Value, target: &Target) -> u64 {
    row_requests(s, &format!("GET {}/", target.url))
}

/// The steady VUs' requests in a run beside no attacker, measured once
/// for every test of this binary (tests run one at a time).
fn baseline() -> u64 {
    static ONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ONCE.get_or_init(|| {
        let target = Target::start();
        let (s, _) = chaos_run(&target, "baseline", &[]);
        let b = steady_requests(&s, &target);
        assert!(b > 200, "baseline too small to compare: {b}");
        b
    })
}

/// What every attack must leave true: the run ended on time, the
/// runner's memory stayed small, the results were written (`s` is the
/// JSON summary read back), the steady VUs kept at least 90% of their
/// requests, and the runner counted what the target served (`served`,
/// its own count).
fn contained(what: &str, s: &serde_json::Value, r: &Run, target: &Target, served: u64) {
    assert!(
        r.elapsed < Duration::from_secs(15),
        "{what}: the run took {:?}",
        r.elapsed
    );
    let rss = s["meta"]["runner_peak_rss"].as_u64().expect("peak RSS");
    assert!(
        rss < 400 << 20,
        "{what}: the runner grew to {} MiB",
        rss >> 20
    );
    let (b, c) = (baseline(), steady_requests(s, target));
    assert!(
        c * 100 >= b * 90,
        "{what}: the steady VUs slowed down: {c} requests beside it vs {b} alone"
    );
    // Requests the runner refused itself never reached the target.
    let refused: u64 = s["http"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| count(r, "errors", "denied") + count(r, "errors", "invalid-request"))
        .sum();
    assert_eq!(
        total_requests(s) - refused,
        served,
        "{what}: runner and server disagree"
    );
}

/// A class's entry in the JSON's `classes` (what its VUs cost).
fn class<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let c = &s["classes"][name];
    assert!(c.is_object(), "no class {name}: {}", s["classes"]);
    c
}

#[test]
fn misbehaving_vus_are_contained() {
    let target = Target::start();
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

    // The well-behaved VUs kept their rate, every request was counted,
    // and the run ended on time: the spinning VU did not hold it up.
    contained("misbehaving VUs", &chaos, &r, &target, served);
    assert_eq!(chaos["checks"][0]["fail"], 0);

    // Each class's cost is accounted where it was spent.
    let spin = class(&chaos, "spin");
    assert!(
        spin["guest_cpu_ms"].as_f64().unwrap() >= 300.0
            && spin["guest_cpu_ms"].as_f64() > spin["host_cpu_ms"].as_f64(),
        "{spin}"
    );
    assert!(
        spin["traps"]["cpu-limit"].as_u64().unwrap_or(0) >= 1,
        "{spin}"
    );
    let hog = class(&chaos, "hog");
    assert!(
        hog["peak_memory"].as_u64().unwrap() >= 8 << 20,
        "the hog held {} bytes at most: {hog}",
        hog["peak_memory"]
    );
    assert_eq!(
        hog["top_memory"][0]["value"].as_f64(),
        hog["peak_memory"].as_f64()
    );
    assert!(
        class(&chaos, "panic")["traps"]["panic"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    );
    assert!(class(&chaos, "steady")["traps"]
        .as_object()
        .unwrap()
        .is_empty());
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
    let before = target.requests();
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
        "headers over 64 KiB are refused",
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
    contained(
        "oversized values",
        &s,
        &r,
        &target,
        target.requests() - before,
    );
}

#[test]
fn a_vu_looping_on_host_calls_spends_its_cpu_budget_and_is_named_for_it() {
    let target = Target::start();
    // A loop on a call that does almost nothing, then one that logs.
    for (what, call) in [("host-call loop", "now"), ("log loop", "log")] {
        let before = target.requests();
        let (s, r) = chaos_run(
            &target,
            &format!("hostloop-{call}"),
            &[
                "-e",
                "HOSTLOOP=1",
                "-e",
                &format!("HOSTLOOP_CALL={call}"),
                "--cpu-limit",
                "300ms",
                "--fuel",
                "1000000000",
            ],
        );
        let served = target.requests() - before;
        // Ended as a spinning VU is, and named for where it spent its time.
        assert!(
            count(&s, "traps", "host-cpu-limit") >= 2,
            "{what}: traps: {}",
            s["traps"]
        );
        assert_eq!(count(&s, "traps", "cpu-limit"), 0, "{what}: {}", s["traps"]);
        assert!(
            r.stderr.contains("most of it in host calls"),
            "{what}: {}",
            r.stderr
        );
        contained(what, &s, &r, &target, served);
        // Its cost is accounted as host CPU, its VU (id 4: after the four
        // steady ones) named the costliest, its fuel metered.
        let c = class(&s, "hostloop");
        let (guest, host) = (
            c["guest_cpu_ms"].as_f64().unwrap(),
            c["host_cpu_ms"].as_f64().unwrap(),
        );
        assert!(host > guest && host >= 600.0, "{what}: {c}");
        assert_eq!(c["top_cpu"][0]["vu"], 4, "{what}: {c}");
        let top = c["top_cpu"][0]["value"].as_f64().unwrap();
        assert!((top - (guest + host)).abs() < 1.0, "{what}: {c}");
        assert!(c["fuel"].as_u64().unwrap_or(0) > 0, "{what}: {c}");
        let steady = class(&s, "steady");
        assert!(
            steady["top_cpu"][0]["value"].as_f64().unwrap() < top / 10.0,
            "{what}: {steady}"
        );
        if call == "log" {
            assert!(
                s["meta"]["log_lines_suppressed"].as_u64().unwrap() > 1000,
                "{}",
                s["meta"]
            );
        }
    }
}

#[test]
fn vus_that_hoard_handles_or_connections_are_contained() {
    // On every loopback address, so one VU can open thousands of
    // connections to distinct origins (127.0.X.Y).
    let target = Target::start_on("0.0.0.0:0");
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
    for row in attack["http"].as_array().expect("rows") {
        assert_eq!(row["failed"], 0, "{row}");
    }
    contained("hoarders", &attack, &r, &target, served);
}

#[test]
fn ever_new_names_and_destinations_are_folded_and_bounded() {
    let target = Target::start();
    let before = target.requests();
    let (s, r) = chaos_run(
        &target,
        "names",
        &[
            "-e",
            "NAMES=2",
            "-e",
            "DENIED=1",
            "--block-host",
            "*.invalid",
        ],
    );
    let served = target.requests() - before;
    contained("ever new names", &s, &r, &target, served);

    // Each family kept its bound (a tenth for timings and histograms),
    // folded the rest into one labelled row, and warned once.
    const OVERFLOW: &str = "(overflow: more series than --max-series)";
    let names = class(&s, "names")["iterations"].as_u64().unwrap();
    assert!(names > 100, "{names}");
    for (family, bound) in [
        ("counters", 1000),
        ("gauges", 1000),
        ("timings", 100),
        ("histograms", 100),
    ] {
        let rows = s[family].as_object().expect(family);
        assert_eq!(rows.len(), bound + 1, "{family}");
        assert!(rows.contains_key(OVERFLOW), "{family}");
        assert!(count(&s["meta"], "series_overflow", family) > 0, "{family}");
        let warned = r
            .stderr
            .matches(&format!("distinct {family} series"))
            .count();
        assert_eq!(warned, 1, "{family}: {}", r.stderr);
    }
    // Nothing was lost: every counted login is in some row.
    let counted: u64 = s["counters"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, names * 400);
    assert_eq!(s["checks"].as_array().unwrap().len(), 1000 + 1);
    let http = s["http"].as_array().unwrap();
    assert_eq!(http.len(), 1000 + 1);
    assert!(http.iter().any(|r| r["name"] == OVERFLOW));

    // Denied destinations: refused before any packet, counted by kind,
    // listed by name up to 100, the rest under one row.
    let denied = row_requests(&s, "denied");
    assert!(denied >= 1000, "{denied}");
    let row = s["http"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "denied")
        .expect("the denied row");
    assert_eq!(row["failed"].as_u64(), Some(denied), "{row}");
    assert_eq!(row["errors"]["denied"].as_u64(), Some(denied), "{row}");
    let listed = s["denied"].as_object().expect("denied destinations");
    assert_eq!(listed.len(), 100 + 1);
    assert_eq!(
        listed.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        denied
    );
    assert!(count(&s, "denied", "(others)") > 0);
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
        "error: cannot start the run: the scenario's options declare 5014 VU classes; at most 1000 are allowed"
    );
}

#[test]
fn a_sleep_at_the_bottom_of_a_deep_stack_finds_every_frame_intact() {
    // A sleeping VU gives its fiber stack's dead pages back: the guest
    // here sleeps nearly as deep as its stack limit allows (9,000 frames
    // overflow), and each of its 8,000 frames checks its value on return.
    let target = Target::start();
    let before = target.requests();
    let (s, r) = chaos_run(
        &target,
        "deep-sleep",
        &["-e", "DEEP_SLEEP=4", "-e", "DEPTH=8000"],
    );
    let served = target.requests() - before;
    let intact = s["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "deep-sleep: frames intact"))
        .cloned()
        .unwrap_or_default();
    // 4 VUs for 4 s, 60 ms a sleep.
    assert!(intact["pass"].as_u64().unwrap_or(0) >= 100, "{intact}");
    assert_eq!(intact["fail"], 0, "{intact}");
    assert_eq!(class(&s, "deep-sleep")["traps"], serde_json::json!({}));
    contained("deep sleepers", &s, &r, &target, served);
}
