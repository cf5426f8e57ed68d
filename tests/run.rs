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
    assert!(row["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
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
    assert!(raw["latency"].as_str().is_some_and(|h| !h.is_empty()));
}

#[test]
fn iterations_per_vu_are_exact() {
    let target = Target::start();
    let dir = scratch("iterations");
    let json = dir.join("r.json");
    let r = run(
        &[
            "run",
            component("hello-http").to_str().unwrap(),
            "--vus",
            "7",
            "--iterations",
            "5",
            "-e",
            &format!("BASE_URL={}", target.url),
            "-e",
            "THINK_MS=1",
            "--quiet",
            "--out",
            &format!("json={}", json.display()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(r.stdout.is_empty(), "--quiet prints no table");
    let s = summary(&json);
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
