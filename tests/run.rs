//! End-to-end runs against the built-in target in its own process: the
//! runner's counts must equal what the server received.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn request_counts_match_the_servers_ground_truth() {
    let target = Target::start();
    let dir = scratch("counts");
    let json = dir.join("r.json");
    let r = run(
        &[
            "run",
            component("hello-http").to_str().unwrap(),
            "--vus",
            "20",
            "--duration",
            "3s",
            "--ramp-up",
            "200ms",
            "-e",
            &format!("BASE_URL={}", target.url),
            "-e",
            "THINK_MS=10",
            "--out",
            &format!("json={}", json.display()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let s = summary(&json);
    let sent = total_requests(&s);
    assert!(
        sent > 500,
        "20 VUs thinking 10 ms for 3 s should send well over 500 requests, sent {sent}"
    );
    assert_eq!(
        sent,
        target.requests(),
        "runner and server disagree on the request count"
    );
    let row = &s["http"][0];
    assert_eq!(row["failed"], 0);
    assert_eq!(row["statuses"]["200"].as_u64(), Some(sent));
    assert_eq!(s["checks"][0]["name"], "status is 200");
    assert_eq!(s["checks"][0]["pass"].as_u64(), Some(sent));
    assert_latency(&row["latency_ms"], 3_000.0);
    // Keep-alive: each VU opens one connection and reuses it.
    assert_eq!(row["connections"].as_u64(), Some(20));
    // The summary table names the request.
    assert!(
        r.stdout.contains(&format!("GET {}/", target.url)),
        "table: {}",
        r.stdout
    );
    // The raw aggregates carry a decodable HdrHistogram of every response.
    let raw = &s["raw"]["http"][row["name"].as_str().unwrap()];
    assert_eq!(raw["responses"].as_u64(), Some(sent));
    let latency = host_api::recorder::Hist::decode(raw["latency"].as_str().expect("latency"))
        .expect("an HdrHistogram V2 encoding");
    assert_eq!(latency.count(), sent);
}

#[test]
fn iterations_per_vu_are_exact() {
    let target = Target::start();
    let (r, s) = run_against(
        "hello-http",
        &target.url,
        "iterations",
        &["--vus", "7", "--iterations", "5", "-e", "THINK_MS=1"],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(r.stdout.is_empty(), "--quiet prints no table");
    assert_eq!(s["iterations"]["ok"].as_u64(), Some(35));
    assert_eq!(total_requests(&s), 35);
    assert_eq!(target.requests(), 35);
}

#[test]
fn a_dead_target_is_reported_as_typed_errors() {
    // Bind and drop a listener to get a port where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = scratch("dead");
    let json = dir.join("r.json");
    let r = run(
        &[
            "run",
            component("hello-http").to_str().unwrap(),
            "--vus",
            "3",
            "--iterations",
            "4",
            "-e",
            &format!("BASE_URL=http://127.0.0.1:{port}"),
            "--out",
            &format!("json={}", json.display()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(
        r.code,
        Some(0),
        "a run against a dead target still completes; stderr: {}",
        r.stderr
    );
    let s = summary(&json);
    let row = &s["http"][0];
    assert_eq!(row["errors"]["connection-refused"].as_u64(), Some(12));
    assert_eq!(row["failed"].as_u64(), Some(12));
    // The scenario propagates the error with `?`: each iteration fails.
    assert_eq!(s["iterations"]["failed"].as_u64(), Some(12));
    assert!(
        r.stderr.contains("connection refused"),
        "stderr: {}",
        r.stderr
    );
}

#[test]
fn ctrl_c_stops_gracefully_and_still_writes_results() {
    let target = Target::start();
    let dir = scratch("sigint");
    let json = dir.join("r.json");
    let child = std::process::Command::new(runner())
        .args([
            "run",
            component("hello-http").to_str().unwrap(),
            "--vus",
            "10",
            "--duration",
            "60s",
            "--grace",
            "5s",
            "-e",
            &format!("BASE_URL={}", target.url),
            "--out",
            &format!("json={}", json.display()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start runner");
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let r = wait(child, Duration::from_secs(20));
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(
        r.elapsed < Duration::from_secs(10),
        "stopped after {:?}",
        r.elapsed
    );
    let s = summary(&json);
    assert_eq!(s["meta"]["interrupted"], true);
    let sent = total_requests(&s);
    assert!(sent > 0);
    assert_eq!(sent, target.requests());
}

#[test]
fn a_second_signal_cancels_in_flight_iterations_and_still_writes_the_results() {
    // Iterations that sleep 30 s: the first signal's grace (60 s) would
    // wait for them; the second cancels them.
    let dir = scratch("second-signal");
    let json = dir.join("r.json");
    let child = std::process::Command::new(runner())
        .args([
            "run",
            component("idle").to_str().unwrap(),
            "--vus",
            "5",
            "--duration",
            "60s",
            "--grace",
            "60s",
            "-e",
            "SLEEP_MS=30000",
            "--out",
            &format!("json={}", json.display()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the runner");
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: sending signals to our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(1));
    unsafe { libc::kill(pid, libc::SIGINT) };
    let r = wait(child, Duration::from_secs(30));
    assert!(
        r.elapsed < Duration::from_secs(10),
        "stopped after {:?}; stderr: {}",
        r.elapsed,
        r.stderr
    );
    let s = summary(&json);
    assert_eq!(s["meta"]["interrupted"], true);
    assert_eq!(count(&s, "iterations", "aborted"), 5, "{}", s["iterations"]);
    assert_eq!(count(&s, "iterations", "ok"), 0, "{}", s["iterations"]);
}

fn hello(target_url: &str, json: &std::path::Path, extra: &[&str]) -> (Run, serde_json::Value) {
    let mut args = vec![
        "run".to_owned(),
        component("hello-http").to_str().unwrap().to_owned(),
        "--vus".into(),
        "2".into(),
        "--iterations".into(),
        "3".into(),
        "-e".into(),
        format!("BASE_URL={target_url}"),
        "-e".into(),
        "THINK_MS=1".into(),
        "--quiet".into(),
        "--out".into(),
        format!("json={}", json.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(&args, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let s = summary(json);
    (r, s)
}

#[test]
fn http2_by_prior_knowledge_and_http1_on_request() {
    let target = Target::start();
    let dir = scratch("h2c");
    let (_, s) = hello(&target.url, &dir.join("a.json"), &["-e", "HTTP_VERSION=2"]);
    assert_eq!(s["http"][0]["statuses"]["200"].as_u64(), Some(6));
    let stats = target.stats();
    assert_eq!(stats["http2"].as_u64(), Some(6), "stats: {stats}");
    let (_, _) = hello(&target.url, &dir.join("b.json"), &["-e", "HTTP_VERSION=1"]);
    let stats = target.stats();
    assert_eq!(stats["http1"].as_u64(), Some(6), "stats: {stats}");
}

#[test]
fn https_verifies_certificates_unless_insecure() {
    let target = Target::start_tls();
    let dir = scratch("tls");
    // A self-signed certificate is refused by default, as a typed TLS error.
    let (r, s) = hello(&target.url, &dir.join("strict.json"), &[]);
    assert_eq!(
        s["http"][0]["errors"]["tls"].as_u64(),
        Some(6),
        "summary: {}",
        s["http"]
    );
    assert!(r.stderr.contains("TLS error"), "stderr: {}", r.stderr);
    // With --insecure it is accepted, and ALPN picks HTTP/2.
    let (_, s) = hello(&target.url, &dir.join("insecure.json"), &["--insecure"]);
    let row = &s["http"][0];
    assert_eq!(row["statuses"]["200"].as_u64(), Some(6), "summary: {row}");
    assert_eq!(
        row["connections"].as_u64(),
        Some(2),
        "one kept-alive TLS connection per VU"
    );
    // Forcing HTTP/1.1 over TLS works too.
    let (_, s) = hello(
        &target.url,
        &dir.join("h1.json"),
        &["--insecure", "-e", "HTTP_VERSION=1"],
    );
    assert_eq!(s["http"][0]["statuses"]["200"].as_u64(), Some(6));
}

#[test]
fn slow_responses_time_out_as_typed_errors() {
    let target = Target::start();
    let dir = scratch("timeouts");
    let slow = format!("{}/delay/2000", target.url);
    let started = std::time::Instant::now();
    let (_, s) = hello(&slow, &dir.join("r.json"), &["--http-timeout", "200ms"]);
    let row = &s["http"][0];
    assert_eq!(row["errors"]["timeout"].as_u64(), Some(6), "summary: {row}");
    assert_eq!(s["iterations"]["failed"].as_u64(), Some(6));
    // 3 sequential iterations per VU, each cut at 200 ms, not 2 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn every_host_call_works_end_to_end() {
    let target = Target::start();
    let dir = scratch("tour");
    let json = dir.join("r.json");
    let r = run(
        &[
            "run",
            component("tour").to_str().unwrap(),
            "--vus",
            "3",
            "--iterations",
            "2",
            "-e",
            &format!("BASE_URL={}", target.url),
            "-e",
            "TOUR_MARK=here",
            "--threshold",
            "http_req_duration{page:cart} max<10s",
            "--threshold",
            "http_reqs{group:checkout} count==6",
            "--threshold",
            "checks{group:checkout} rate==1",
            "--threshold",
            "group_duration{group:checkout} max<10s",
            "--threshold",
            "tour_carts{page:cart} count==6",
            "--out",
            &format!("json={}", json.display()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let s = summary(&json);
    assert_eq!(
        s["iterations"]["ok"].as_u64(),
        Some(6),
        "stderr: {}",
        r.stderr
    );
    let checks = s["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 15, "checks: {checks:?}");
    for c in checks {
        assert_eq!(c["fail"], 0, "check failed: {c}");
        assert_eq!(c["pass"], 6, "check: {c}");
    }
    // Named requests, statuses as failures, and the invalid request.
    let by_name = |n: &str| {
        s["http"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
    };
    assert_eq!(by_name("create").unwrap()["statuses"]["201"], 6);
    assert_eq!(by_name("missing").unwrap()["failed"], 6);
    assert_eq!(by_name("h2").unwrap()["statuses"]["200"], 6);
    assert_eq!(by_name("invalid").unwrap()["errors"]["invalid-request"], 6);
    // Tags: the group and the request's own tag, per row and in total.
    let cart = by_name("cart").unwrap();
    assert_eq!(cart["tags"]["group"], "checkout");
    assert_eq!(cart["tags"]["page"], "cart");
    assert_eq!(s["http_by_tag"]["group=checkout"]["requests"], 6);
    assert_eq!(s["http_by_tag"]["page=cart"]["requests"], 6);
    // Checks and custom metrics inside the group carry its tag; the
    // group's duration is a timing of its own; thresholds filter on tags.
    let grouped = checks
        .iter()
        .find(|c| c["name"] == "tagged request in a group")
        .expect("the grouped check");
    assert_eq!(grouped["tags"]["group"], "checkout", "{grouped}");
    assert_eq!(s["counters"]["tour_carts {group=checkout, page=cart}"], 6);
    // The group's duration holds its request's: never shorter.
    let group = &s["timings"]["group_duration {group=checkout}"];
    let shortest = group["min"].as_f64().expect("group duration");
    assert!(
        shortest >= cart["latency_ms"]["min"].as_f64().expect("cart latency"),
        "{group} vs {cart}"
    );
    let passed = s["thresholds"].as_array().unwrap();
    assert_eq!(passed.len(), 5);
    assert!(passed.iter().all(|t| t["pass"] == true), "{passed:?}");
    // 5 requests per iteration reached the server.
    assert_eq!(target.requests(), 30);
    assert_eq!(target.stats()["http2"], 6);
    // Custom metrics.
    assert_eq!(s["counters"]["tour_iterations"], 6);
    assert_eq!(s["histograms"]["tour_bytes"]["max"].as_f64(), Some(1000.0));
    assert!(s["timings"]["tour_sleep"]["min"].as_f64().unwrap() >= 20.0);
    let gauge = &s["gauges"]["tour_vu"];
    assert_eq!(
        (gauge[1].as_f64(), gauge[2].as_f64()),
        (Some(0.0), Some(2.0)),
        "gauge: {gauge}"
    );
}

#[test]
fn the_summary_table_shows_the_chosen_trend_stats() {
    let target = Target::start();
    let r = run(
        &[
            "run",
            component("hello-http").to_str().unwrap(),
            "--vus",
            "2",
            "--iterations",
            "2",
            "-e",
            &format!("BASE_URL={}", target.url),
            "-e",
            "THINK_MS=1",
            "--summary-trend-stats",
            "avg,med,p(99.99)",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let header = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("HTTP"))
        .expect("an HTTP table");
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        ["HTTP", "requests", "req/s", "failed", "avg", "med", "p(99.99)"]
    );
    // No terminal, so no color codes in the log.
    assert!(
        !r.stderr.contains('\u{1b}'),
        "stderr has escape codes: {:?}",
        r.stderr
    );
}

#[test]
fn shared_iterations_are_split_among_the_vus() {
    let target = Target::start();
    let (r, s) = run_against(
        "hello-http",
        &target.url,
        "shared",
        &[
            "--vus",
            "5",
            "--shared-iterations",
            "23",
            "-e",
            "THINK_MS=1",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(s["iterations"]["ok"].as_u64(), Some(23));
    assert_eq!(target.requests(), 23);
    let bad = run(
        &[
            "run",
            component("hello-http").to_str().unwrap(),
            "--shared-iterations",
            "3",
            "--iterations",
            "2",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(bad.code, Some(2), "conflicting flags: {}", bad.stderr);
}

#[test]
fn vus_connect_from_the_local_addresses_given_in_turn() {
    // A target on every loopback address, which counts requests by peer.
    let target = Target::start_on("0.0.0.0:0");
    let (r, s) = run_against(
        "hello-http",
        &target.url,
        "local-addr",
        &[
            "--vus",
            "6",
            "--iterations",
            "5",
            "-e",
            "THINK_MS=0",
            "--local-addr",
            "127.0.0.2-127.0.0.3,127.0.0.4",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(total_requests(&s), 30);
    // Two VUs per address, five requests each; none from the default.
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        assert_eq!(target.requests_from(ip), 10, "{ip}");
    }
    assert_eq!(target.requests_from("127.0.0.1"), 0);
    // An address this machine does not have is refused before the start.
    let c = component("hello-http");
    let r = run(
        &["run", c.to_str().unwrap(), "--local-addr", "192.0.2.1"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--local-addr 192.0.2.1 is not an address of this machine"),
        "{}",
        r.stderr
    );
    let r = run(
        &[
            "run",
            c.to_str().unwrap(),
            "--local-addr",
            "127.0.0.9-127.0.0.2",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("the range ends before it starts"),
        "{}",
        r.stderr
    );
}
