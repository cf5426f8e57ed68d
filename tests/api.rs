//! The HTTP API against real processes: `runner serve` (and `runner run
//! --web`) driving real runs against the built-in target, whose own request
//! counts are the ground truth.

mod common;

use std::time::{Duration, Instant};

use common::api::*;
use common::*;
use serde_json::json;

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).expect("component")
}

/// The sum of a Prometheus counter over all its series.
fn prometheus_total(text: &str, metric: &str) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn a_run_submitted_over_http_is_watched_steered_stopped_and_counted() {
    let target = Target::start();
    let agent = Agent::start(&[]);
    let health = get(&format!("{}/api/v1/health", agent.url));
    assert_eq!(health.status, 200);
    assert_eq!(health.json["status"], "ok");

    let config = json!({
        "vus": 2, "max_vus": 10, "duration": "60s", "ramp_up": "0s",
        "env": {"BASE_URL": target.url, "THINK_MS": "50"}
    });
    let created = submit(&agent.url, "hello-http.wasm", &bytes("hello-http"), &config);
    assert_eq!(created.status, 201, "{}", created.text);
    let location = created.location.clone().expect("Location");
    let run = format!("{}{location}", agent.url);
    let id = created.json["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/api/v1/runs/{id}"));
    assert_eq!(created.json["state"], "running");
    assert_eq!(
        created.json["scenario"]["sha256"].as_str().map(str::len),
        Some(64)
    );

    let events = events(&format!("{run}/events"));
    let (first, _) = wait_for(&events, "snapshot", Duration::from_secs(10));
    assert_eq!(first.data["seq"], 1);
    let (second, _) = wait_for(&events, "snapshot", Duration::from_secs(5));
    assert_eq!(second.data["seq"], 2);
    assert!(
        second.data["requests"].as_u64().unwrap() > 0,
        "{}",
        second.data
    );
    assert_eq!(second.data["vus"], 2);

    // Two VUs at ~50 ms per iteration: ~40/s at the target. Eight: ~160/s.
    let before = target.rate_over(Duration::from_secs(2));
    let patched = call(
        "PATCH",
        &run,
        Some(&json!({"class": "default", "vus": 8})),
        None,
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json["events"][0]["kind"], "vus");
    assert_eq!(patched.json["events"][0]["to"], 8.0);
    std::thread::sleep(Duration::from_millis(500));
    let after = target.rate_over(Duration::from_secs(2));
    assert!(
        after > before * 3.0 && after < before * 5.0,
        "the target's own rate went {before:.0}/s → {after:.0}/s for 2 → 8 VUs"
    );
    let (control, _) = wait_for(&events, "control", Duration::from_secs(5));
    assert_eq!(control.data["kind"], "vus");
    // The next snapshot shows the new load.
    let (next, _) = wait_for(&events, "snapshot", Duration::from_secs(5));
    assert_eq!(next.data["target_vus"], 8.0, "{}", next.data);
    let info = get(&run);
    assert_eq!(info.json["vus"], 8, "{}", info.text);
    assert_eq!(info.json["classes"][0]["target_vus"], 8.0);

    // While it runs there are no results yet, but live totals.
    let early = get(&format!("{run}/results"));
    assert_eq!(early.status, 409);
    let (totals, _) = wait_for(&events, "totals", Duration::from_secs(5));
    assert!(totals.data["http"][0]["requests"].as_u64().unwrap() > 0);

    let stopped = call("POST", &format!("{run}/stop"), None, None);
    assert_eq!(stopped.status, 202, "{}", stopped.text);
    assert_eq!(stopped.json["kind"], "stop");
    assert_eq!(stopped.json["by"], "api");
    let (end, _) = wait_for(&events, "end", Duration::from_secs(40));
    assert!(
        end.data.get("raw").is_none(),
        "the end event leaves out raw histograms"
    );
    wait_state(&run, "finished", Duration::from_secs(10));

    let results = get(&format!("{run}/results"));
    assert_eq!(results.status, 200);
    let total = total_requests(&results.json);
    assert!(total > 100, "{total}");
    assert_eq!(
        total,
        target.requests(),
        "the results count what the target served"
    );
    assert_eq!(results.json["meta"]["stopped_by"], "api");
    assert_eq!(results.json["meta"]["peak_vus"], 8);
    assert_eq!(results.json["meta"]["events"][0]["kind"], "vus");
    assert_eq!(
        end.data["iterations"]["ok"],
        results.json["iterations"]["ok"]
    );

    let csv = get(&format!("{run}/results.csv"));
    assert_eq!(csv.status, 200);
    assert!(csv.content_type.starts_with("text/csv"));
    let http_count: u64 = csv
        .text
        .lines()
        .filter(|l| l.starts_with("http,"))
        .map(|l| l.split(',').nth(3).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(http_count, total);

    let metrics = get(&format!("{}/metrics", agent.url));
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .content_type
        .starts_with("text/plain; version=0.0.4"));
    assert_eq!(
        prometheus_total(&metrics.text, "runner_http_requests_total"),
        total as f64,
        "the Prometheus request counter equals the summary's"
    );
    assert_eq!(
        prometheus_total(&metrics.text, "runner_checks_total"),
        results.json["checks"][0]["pass"].as_f64().unwrap()
    );

    let list = get(&format!("{}/api/v1/runs", agent.url));
    assert_eq!(list.json.as_array().map(Vec::len), Some(1));
    assert_eq!(list.json[0]["state"], "finished");
    assert_eq!(list.json[0]["thresholds_passed"], true);
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn the_arrival_rate_changes_live_and_the_target_sees_it() {
    let target = Target::start();
    let agent = Agent::start(&[]);
    let config = json!({
        "rate": 20, "max_vus": 50, "duration": "30s",
        "env": {"BASE_URL": target.url, "THINK_MS": "0"}
    });
    let created = submit(&agent.url, "hello-http.wasm", &bytes("hello-http"), &config);
    assert_eq!(created.status, 201, "{}", created.text);
    let run = format!("{}{}", agent.url, created.location.unwrap());
    std::thread::sleep(Duration::from_secs(1));
    let before = target.rate_over(Duration::from_secs(2));
    assert!((16.0..=24.0).contains(&before), "{before:.1}/s for 20/s");
    let vus = call("PATCH", &run, Some(&json!({"vus": 3})), None);
    assert_eq!(
        vus.status, 409,
        "VUs do not fit the open model: {}",
        vus.text
    );
    assert!(vus.json["detail"].as_str().unwrap().contains("\"rate\""));
    let patched = call("PATCH", &run, Some(&json!({"rate": 100})), None);
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json["events"][0]["kind"], "rate");
    std::thread::sleep(Duration::from_millis(300));
    let after = target.rate_over(Duration::from_secs(2));
    assert!((90.0..=110.0).contains(&after), "{after:.1}/s for 100/s");
    // A ramp: down to 10/s over 2 s, then held.
    let ramp = call(
        "PATCH",
        &run,
        Some(&json!({"rate": 10, "ramp": "2s"})),
        None,
    );
    assert_eq!(ramp.json["events"][0]["ramp_s"], 2.0);
    std::thread::sleep(Duration::from_millis(2300));
    let low = target.rate_over(Duration::from_secs(2));
    assert!((7.0..=13.0).contains(&low), "{low:.1}/s for 10/s");
    let stopped = call("POST", &format!("{run}/stop?abort=true"), None, None);
    assert_eq!(stopped.status, 202);
    assert_eq!(stopped.json["abort"], true);
    let done = wait_state(&run, "finished", Duration::from_secs(20));
    assert!(done["elapsed_s"].as_f64().unwrap() < 20.0);
    let results = get(&format!("{run}/results"));
    assert_eq!(total_requests(&results.json), target.requests());
}

#[test]
fn bad_requests_get_the_documented_status_and_a_sentence() {
    let agent = Agent::start(&["--max-upload", "256KiB"]);
    let runs = format!("{}/api/v1/runs", agent.url);
    let problem = |a: &Answer, status: u16, needle: &str| {
        assert_eq!(a.status, status, "{}", a.text);
        assert_eq!(a.content_type, "application/problem+json", "{}", a.text);
        assert_eq!(a.json["status"], status);
        let detail = a.json["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{needle:?} not in {detail:?}");
    };
    // Not multipart at all.
    let a = call("POST", &runs, Some(&json!({"vus": 1})), None);
    problem(&a, 400, "multipart/form-data");
    // Multipart without the component.
    let (ctype, body) = multipart(&[("config", None, "application/json", b"{}")]);
    problem(&post_raw(&runs, &ctype, &body), 400, "no `scenario` part");
    // A truncated multipart body.
    let (ctype, body) = multipart(&[("scenario", Some("x.wasm"), "application/wasm", b"abc")]);
    problem(
        &post_raw(&runs, &ctype, &body[..body.len() - 10]),
        400,
        "malformed multipart",
    );
    // Not WebAssembly.
    let a = submit(&agent.url, "notes.txt", b"#!/bin/sh\necho hi\n", &json!({}));
    problem(&a, 422, "is not a WebAssembly file");
    // A component of another world.
    let dir = scratch("api-world");
    let wat = dir.join("other.wat");
    std::fs::write(
        &wat,
        "(component (import \"other:pkg/api@1.0.0\" (instance (export \"f\" (func)))))",
    )
    .unwrap();
    let wasm = dir.join("other.wasm");
    let ok = std::process::Command::new("wasm-tools")
        .arg("parse")
        .arg(&wat)
        .arg("-o")
        .arg(&wasm)
        .status()
        .expect("wasm-tools is missing: run scripts/setup.sh");
    assert!(ok.success());
    let a = submit(
        &agent.url,
        "other.wasm",
        &std::fs::read(&wasm).unwrap(),
        &json!({}),
    );
    problem(&a, 422, "does not fit the runner:scenario@0.1.0 world");
    // Options that are not ours.
    let a = submit(&agent.url, "idle.wasm", &bytes("idle"), &json!({"vu": 3}));
    problem(&a, 400, "unknown field `vu`");
    let a = submit(
        &agent.url,
        "idle.wasm",
        &bytes("idle"),
        &json!({"duration": "soon"}),
    );
    problem(&a, 400, "soon");
    let a = submit(
        &agent.url,
        "idle.wasm",
        &bytes("idle"),
        &json!({"rate": 5, "think_time": "1s", "duration": "1s"}),
    );
    problem(&a, 400, "think_time");
    // Too large.
    let big = vec![0u8; 300 << 10];
    let a = submit(&agent.url, "big.wasm", &big, &json!({}));
    problem(&a, 413, "--max-upload");
    // A scenario that panics in options() fails that run only...
    let a = submit(
        &agent.url,
        "chaos.wasm",
        &bytes("chaos"),
        &json!({"env": {"OPTIONS_PANIC": "1"}}),
    );
    problem(&a, 422, "options() panics on purpose");
    // ...and the agent serves the next one.
    let created = submit(
        &agent.url,
        "idle.wasm",
        &bytes("idle"),
        &json!({"vus": 2, "duration": "30s"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let run = format!("{}{}", agent.url, created.location.unwrap());
    // One run at a time.
    let busy = submit(&agent.url, "idle.wasm", &bytes("idle"), &json!({}));
    problem(&busy, 409, "still running");
    // Changes that do not fit.
    problem(
        &call("PATCH", &run, Some(&json!({"vus": "x"})), None),
        400,
        "vus",
    );
    problem(
        &call("PATCH", &run, Some(&json!({"vus": 1, "rate": 2})), None),
        400,
        "exactly one",
    );
    problem(
        &call("PATCH", &run, Some(&json!({"rate": 2})), None),
        409,
        "set \"vus\" instead",
    );
    problem(
        &call(
            "PATCH",
            &run,
            Some(&json!({"class": "nope", "vus": 1})),
            None,
        ),
        400,
        "no VU class \"nope\"",
    );
    problem(
        &call("PATCH", &run, Some(&json!({"vus": 5})), None),
        409,
        "at most 2 VUs",
    );
    problem(
        &call(
            "PATCH",
            &run,
            Some(&json!({"vus": 1, "ramp": "later"})),
            None,
        ),
        400,
        "ramp",
    );
    problem(
        &call(
            "PATCH",
            &format!("{runs}/nope"),
            Some(&json!({"vus": 1})),
            None,
        ),
        404,
        "no run \"nope\"",
    );
    problem(
        &get(&format!("{}/api/v2/everything", agent.url)),
        404,
        "no such endpoint",
    );
    problem(
        &put_raw(&format!("{run}/scenario"), "application/wasm", b"junk"),
        422,
        "is not a WebAssembly file",
    );
    let stopped = call("POST", &format!("{run}/stop"), None, None);
    assert_eq!(stopped.status, 202);
    wait_state(&run, "finished", Duration::from_secs(10));
    problem(
        &call("POST", &format!("{run}/stop"), None, None),
        409,
        "no longer running",
    );
    problem(
        &call("PATCH", &run, Some(&json!({"vus": 1})), None),
        409,
        "no longer running",
    );
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0));
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn off_loopback_the_api_needs_its_token() {
    let r = run(&["serve", "--listen", "0.0.0.0:0"], Duration::from_secs(10));
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("needs a token"), "{}", r.stderr);

    let agent = Agent::start_on("0.0.0.0:0", &["--token", "s3cret-token"]);
    let health = format!("{}/api/v1/health", agent.url);
    let a = get(&health);
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(call("GET", &health, None, Some("wrong")).status, 401);
    assert_eq!(call("GET", &health, None, Some("s3cret-token")).status, 200);
    assert_eq!(get(&format!("{}/metrics", agent.url)).status, 401);
    assert_eq!(
        get(&format!("{}/metrics?token=s3cret-token", agent.url)).status,
        200
    );
}

#[test]
fn a_scenario_swapped_mid_run_takes_over_at_the_next_iteration() {
    let target = Target::start();
    let agent = Agent::start(&[]);
    let config = json!({
        "vus": 4, "duration": "9s", "ramp_up": "0s",
        "env": {"BASE_URL": target.url, "THINK_MS": "50", "SLEEP_MS": "100"}
    });
    let created = submit(&agent.url, "hello-http.wasm", &bytes("hello-http"), &config);
    assert_eq!(created.status, 201, "{}", created.text);
    let run = format!("{}{}", agent.url, created.location.unwrap());
    std::thread::sleep(Duration::from_secs(1));
    assert!(target.rate_over(Duration::from_secs(1)) > 40.0);
    // A component that is not a scenario leaves the run as it was.
    let bad = put_raw(
        &format!("{run}/scenario"),
        "application/wasm",
        b"\0asm\x0d\0\x01\0junk",
    );
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(target.rate_over(Duration::from_secs(1)) > 40.0);
    // Idle VUs make no requests: after the swap the target hears nothing.
    let idle = bytes("idle");
    let swapped = put_raw(
        &format!("{run}/scenario?name=idle.wasm"),
        "application/wasm",
        &idle,
    );
    assert_eq!(swapped.status, 200, "{}", swapped.text);
    assert_eq!(swapped.json["kind"], "scenario");
    assert_eq!(swapped.json["generation"], 1);
    let t_swap = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let after = target.rate_over(Duration::from_secs(2));
    assert!(
        after < 1.0,
        "{after:.1}/s after swapping to an idle scenario"
    );
    let done = wait_state(&run, "finished", Duration::from_secs(40));
    assert!(done["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "scenario"));
    let results = get(&format!("{run}/results"));
    assert_eq!(total_requests(&results.json), target.requests());
    let phases = results.json["meta"]["scenarios"]
        .as_array()
        .expect("phases")
        .clone();
    assert_eq!(phases.len(), 2, "{phases:?}");
    assert_eq!(phases[1]["name"], "idle.wasm");
    assert_eq!(phases[0]["sha256"], created.json["scenario"]["sha256"]);
    let idle_sha = results.json["meta"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "scenario")
        .map(|e| e["sha256"].clone())
        .unwrap();
    assert_eq!(phases[1]["sha256"], idle_sha);
    let (from, to) = (
        phases[1]["from_s"].as_f64().unwrap(),
        phases[1]["to_s"].as_f64().unwrap(),
    );
    assert!(from > 1.5 && to > from, "{phases:?}");
    assert!(t_swap.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_command_line_run_is_watched_and_steered_with_web() {
    let target = Target::start();
    let c = component("hello-http");
    let json_out = scratch("cli-web").join("r.json");
    let out = format!("json={}", json_out.display());
    let base = format!("BASE_URL={}", target.url);
    let mut child = std::process::Command::new(runner())
        .args([
            "run",
            c.to_str().unwrap(),
            "--vus",
            "2",
            "--max-vus",
            "6",
            "-d",
            "30s",
            "--ramp-up",
            "0s",
            "-e",
            &base,
            "-e",
            "THINK_MS=50",
            "--quiet",
            "--out",
            &out,
            "--web",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the runner");
    // The API's address is in the log.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let url = loop {
        let line = lines.next().expect("a log line").expect("utf-8");
        if let Some(rest) = line.split("live API: ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let rest =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    let info = get(&url);
    assert_eq!(info.status, 200, "{}", info.text);
    assert_eq!(info.json["state"], "running");
    let before = target.rate_over(Duration::from_secs(2));
    let patched = call("PATCH", &url, Some(&json!({"vus": 6})), None);
    assert_eq!(patched.status, 200, "{}", patched.text);
    std::thread::sleep(Duration::from_millis(500));
    let after = target.rate_over(Duration::from_secs(2));
    assert!(
        after > before * 2.2,
        "{before:.0}/s → {after:.0}/s for 2 → 6 VUs"
    );
    let stopped = call("POST", &format!("{url}/stop"), None, None);
    assert_eq!(stopped.status, 202);
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = rest.join().unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{log}");
    let s = summary(&json_out);
    assert_eq!(total_requests(&s), target.requests());
    assert_eq!(s["meta"]["interrupted"], true);
    assert_eq!(s["meta"]["peak_vus"], 6);
}

#[test]
fn sigterm_stops_a_run_as_ctrl_c_does_and_results_are_written() {
    let target = Target::start();
    let c = component("hello-http");
    let json_out = scratch("sigterm").join("r.json");
    let out = format!("json={}", json_out.display());
    let base = format!("BASE_URL={}", target.url);
    let child = std::process::Command::new(runner())
        .args([
            "run",
            c.to_str().unwrap(),
            "--vus",
            "3",
            "-d",
            "60s",
            "-e",
            &base,
            "--quiet",
            "--out",
            &out,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the runner");
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let r = wait(child, Duration::from_secs(30));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    assert!(
        r.stderr
            .contains("stopping: in-flight iterations have 30s to finish"),
        "{}",
        r.stderr
    );
    let s = summary(&json_out);
    assert_eq!(s["meta"]["stopped_by"], "signal");
    assert_eq!(s["meta"]["interrupted"], true);
    assert_eq!(total_requests(&s), target.requests());
}

#[test]
fn the_openapi_document_matches_the_running_server() {
    let st = root().join("target/pyenv/bin/schemathesis");
    assert!(
        st.exists(),
        "{} is missing: run scripts/setup.sh (it installs schemathesis)",
        st.display()
    );
    let agent = Agent::start(&[]);
    let doc = get(&format!("{}/api/openapi.json", agent.url));
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json["openapi"], "3.1.0");
    // A finished run, so every operation on a run id has one to work on
    // (and its event stream ends).
    let created = submit(
        &agent.url,
        "idle.wasm",
        &bytes("idle"),
        &json!({"vus": 1, "duration": "1s", "env": {"SLEEP_MS": "100"}}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_owned();
    wait_state(
        &format!("{}/api/v1/runs/{id}", agent.url),
        "finished",
        Duration::from_secs(20),
    );
    let dir = scratch("schemathesis");
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, format!("[parameters]\n\"path.id\" = \"{id}\"\n")).unwrap();
    // Every check but positive_data_acceptance: a schema can say "binary"
    // but not "a WebAssembly component of this world", so generated
    // uploads are rightly refused with 422.
    let out = std::process::Command::new(&st)
        // Its cache goes in the scratch directory, not the repository.
        .current_dir(&dir)
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("{}/api/openapi.json", agent.url),
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "50",
            "--request-timeout",
            "20",
            "--seed",
            "20261124",
        ])
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "{text}");
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0));
    assert!(!log.contains("panicked"), "{log}");
}
