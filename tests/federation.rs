//! Distributed runs with real processes over real QUIC: a coordinator and
//! workers on loopback (and one in a network namespace of the test's own
//! for the partition), against the built-in target, whose own counts
//! (overall and by client address) are the ground truth.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use host_api::recorder::Hist;

fn hello() -> String {
    component("hello-http").to_str().unwrap().to_owned()
}

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
    let workers: Vec<Proc> = (1..=3)
        .map(|i| {
            worker(
                &coord.addr,
                &coord.token,
                &format!("w{i}"),
                &["--capacity", "1"],
            )
        })
        .collect();
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
        assert!(w.running(), "workers wait for the next run: {}", w.log());
        assert!(w.log().contains("the run is over"), "{}", w.log());
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
    let _workers: Vec<Proc> = (1..=2)
        .map(|i| {
            worker(
                &coord.addr,
                &coord.token,
                &format!("w{i}"),
                &["--capacity", "1"],
            )
        })
        .collect();
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
    let _workers: Vec<Proc> = (1..=2)
        .map(|i| {
            worker(
                &coord.addr,
                &coord.token,
                &format!("w{i}"),
                &["--capacity", "1"],
            )
        })
        .collect();
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
fn a_killed_worker_s_share_is_taken_over_and_the_rate_recovers() {
    let target = Target::start();
    let out = scratch("fed-kill").join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let json = format!("json={}", out.display());
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "3",
            "--rate",
            "60",
            "-d",
            "16s",
            "--max-vus",
            "60",
            "-e",
            &base,
            "-e",
            "THINK_MS=0",
            "--quiet",
            "--out",
            &json,
        ],
    );
    let workers: Vec<Proc> = (1..=3)
        .map(|i| {
            worker(
                &coord.addr,
                &coord.token,
                &format!("w{i}"),
                &["--capacity", "1"],
            )
        })
        .collect();
    coord
        .proc
        .wait_line("starting 3 worker(s)", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let before = target.rate_over(Duration::from_secs(1));
    assert!((45.0..=75.0).contains(&before), "{before:.1}/s for 60/s");
    workers[1].signal(libc::SIGKILL);
    let killed = Instant::now();
    // A third of the rate goes until the lease (5 s) has surely run out;
    // then the others take it over.
    std::thread::sleep(Duration::from_secs(2));
    let during = target.rate_over(Duration::from_secs(1));
    assert!(during < 50.0, "{during:.1}/s with a worker down");
    coord.proc.wait_line("is lost", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    let after = target.rate_over(Duration::from_secs(2));
    assert!(
        (50.0..=70.0).contains(&after),
        "{after:.1}/s for 60/s after the rebalance ({:?} after the kill)",
        killed.elapsed()
    );
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    let s = summary(&out);
    // Everything the workers reported; the killed one's last unreported
    // second (at most its 20/s) is what the target saw beyond that.
    let (total, served) = (total_requests(&s), target.requests());
    assert!(
        total <= served && served - total <= 25,
        "{total} reported, {served} served"
    );
    let ws = s["meta"]["workers"].as_array().unwrap();
    assert_eq!(
        ws.iter().filter(|w| w["status"] == "lost").count(),
        1,
        "{ws:?}"
    );
    let reported: u64 = ws.iter().map(|w| w["requests"].as_u64().unwrap()).sum();
    assert_eq!(reported, total, "per-worker counts add up to the total");
    // What the lost worker's share could not do is counted: its third of
    // 60/s from its last report to the rebalance (about 8 s).
    let lost = ws.iter().find(|w| w["status"] == "lost").unwrap();
    let missed = lost["missed_iterations"].as_u64().unwrap();
    assert!((100..=250).contains(&missed), "{missed} missed arrivals");
    assert!(s["iterations"]["dropped"].as_u64().unwrap() >= missed);
    assert!(s["meta"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "worker" && e["then"] == "rebalance"));
}

#[test]
fn a_killed_worker_s_shared_iterations_are_run_by_the_others() {
    let target = Target::start();
    let out = scratch("fed-shared").join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let json = format!("json={}", out.display());
    // 6 VUs at about 10 iterations/s each: 900 take some 15 s.
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "3",
            "--vus",
            "6",
            "--shared-iterations",
            "900",
            "-e",
            &base,
            "-e",
            "THINK_MS=100",
            "--quiet",
            "--out",
            &json,
        ],
    );
    let workers: Vec<Proc> = (1..=3)
        .map(|i| worker(&coord.addr, &coord.token, &format!("w{i}"), &[]))
        .collect();
    coord
        .proc
        .wait_line("starting 3 worker(s)", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    workers[2].signal(libc::SIGKILL);
    coord.proc.wait_line("is lost", Duration::from_secs(20));
    let (code, _) = coord.proc.wait(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    let s = summary(&out);
    // Every iteration the lost worker did not report done was run by the
    // others: the reported total is exactly the number asked for.
    let it = &s["iterations"];
    let done = it["ok"].as_u64().unwrap() + it["failed"].as_u64().unwrap();
    assert_eq!(done, 900, "{it}");
    // Requests: one per iteration, and those of the killed worker's last
    // iterations (reported, but the iterations never ended).
    let (total, served) = (total_requests(&s), target.requests());
    assert!((900..=904).contains(&total), "{total} requests");
    // Beyond that, the target saw only the killed worker's last
    // unreported second (2 VUs at about 10/s).
    assert!(
        served >= total && served - total <= 30,
        "{total} reported, {served} served"
    );
    let ws = s["meta"]["workers"].as_array().unwrap();
    let lost = ws
        .iter()
        .find(|w| w["status"] == "lost")
        .expect("a lost worker");
    assert_eq!(lost["missed_iterations"], 0, "{lost}");
    let by_worker: u64 = ws.iter().map(|w| w["iterations"].as_u64().unwrap()).sum();
    assert_eq!(by_worker, 900);
    assert!(
        coord
            .proc
            .log()
            .contains("shared iterations of the lost worker go to the 2 others"),
        "{}",
        coord.proc.log()
    );
}

#[test]
fn a_partitioned_worker_stops_its_load_within_its_lease_and_rejoins() {
    let ns = Netns::create("part", 211);
    let target = Target::start_on("10.211.0.3:0");
    let base = format!("BASE_URL={}", target.url);
    let mut coord = Coordinator::start(
        &hello(),
        "10.211.0.1:0",
        &[
            "--workers",
            "2",
            "--vus",
            "4",
            "-d",
            "40s",
            "--ramp-up",
            "0s",
            "--on-worker-loss",
            "continue",
            "-e",
            &base,
            "-e",
            "THINK_MS=50",
            "--quiet",
        ],
    );
    // The target is on the namespaces' network, not loopback: the
    // workers' operator allows it.
    let allow = ["--capacity", "1", "--allow-host", "10.211.0.0/24"];
    let _near = worker(&coord.addr, &coord.token, "near", &allow);
    let mut cmd = ns.command(&runner());
    cmd.args([
        "join",
        "--coordinator",
        &coord.addr,
        "--token",
        &coord.token,
        "--name",
        "far",
    ])
    .args(allow);
    let mut far = Proc::spawn(cmd);
    coord
        .proc
        .wait_line("starting 2 worker(s)", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let far_ip = "10.211.0.2";
    assert!(
        target.rate_from(far_ip, Duration::from_secs(1)) > 10.0,
        "the far worker runs"
    );
    // Cut the far worker off from the coordinator (the target stays
    // reachable): within its lease it stops hammering the target.
    ns.cut("10.211.0.1", true);
    let cut = Instant::now();
    far.wait_line("stopping the load", Duration::from_secs(10));
    std::thread::sleep(
        Duration::from_millis(5_500)
            .saturating_sub(cut.elapsed())
            .max(Duration::from_millis(200)),
    );
    let n = target.requests_from(far_ip);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        target.requests_from(far_ip),
        n,
        "the cut-off worker still sends requests"
    );
    assert!(cut.elapsed() < Duration::from_secs(12));
    coord.proc.wait_line("is lost", Duration::from_secs(10));
    // Heal: it comes back and waits for the next run.
    ns.cut("10.211.0.1", false);
    coord
        .proc
        .wait_line("is back in contact", Duration::from_secs(30));
    assert!(far.running());
    coord.proc.signal(libc::SIGINT);
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
}

#[test]
fn when_the_coordinator_dies_every_worker_stops_its_load() {
    let target = Target::start();
    let base = format!("BASE_URL={}", target.url);
    let coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "2",
            "--vus",
            "4",
            "-d",
            "60s",
            "-e",
            &base,
            "-e",
            "THINK_MS=50",
            "--quiet",
        ],
    );
    let mut workers: Vec<Proc> = (1..=2)
        .map(|i| worker(&coord.addr, &coord.token, &format!("w{i}"), &[]))
        .collect();
    coord
        .proc
        .wait_line("starting 2 worker(s)", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    assert!(target.rate_over(Duration::from_secs(1)) > 20.0);
    coord.proc.signal(libc::SIGKILL);
    let killed = Instant::now();
    for w in &workers {
        w.wait_line("stopping the load", Duration::from_secs(10));
    }
    // Graceful first, cancelled a lease later: quiet by lease + a second.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(killed.elapsed()));
    let n = target.requests();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(target.requests(), n, "load after the coordinator died");
    for w in &mut workers {
        assert!(
            w.running(),
            "the worker waits for a coordinator: {}",
            w.log()
        );
    }
}

#[test]
fn wrong_tokens_and_bad_peers_get_a_clear_error() {
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "2",
            "--vus",
            "2",
            "-d",
            "1s",
            "--join-timeout",
            "40s",
            "--quiet",
        ],
    );
    // The right fingerprint, the wrong secret.
    let (fp, _) = coord.token.split_once(':').unwrap();
    let mut w = worker(
        &coord.addr,
        &format!("{fp}:0123456789abcdef0123"),
        "bad-secret",
        &[],
    );
    let (code, _) = w.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(w.log().contains("wrong token"), "{}", w.log());
    // The wrong fingerprint: the worker refuses the coordinator.
    let other = format!(
        "{}:{}",
        "ab".repeat(32),
        coord.token.split_once(':').unwrap().1
    );
    let mut w = worker(&coord.addr, &other, "bad-fp", &[]);
    let (code, _) = w.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(w.log().contains("fingerprint"), "{}", w.log());
    // Garbage datagrams on the port change nothing.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..1200).map(|j| (i * 31 + j * 7) as u8).collect();
        let _ = udp.send_to(&junk, &coord.addr);
    }
    // A client with the right token that speaks another protocol version,
    // then one that sends an oversized frame.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token: runner::federation::token::Token = coord.token.parse().unwrap();
    let addr: std::net::SocketAddr = coord.addr.parse().unwrap();
    rt.block_on(async {
        let reply = raw_hello(addr, &token, 99).await;
        assert!(reply.contains("protocol 99"), "{reply}");
        let closed = oversized(addr, &token).await;
        assert!(closed.contains("larger than"), "{closed}");
    });
    coord.proc.wait_line("larger than", Duration::from_secs(10));
    // The coordinator still takes good workers and runs.
    let _good1 = worker(&coord.addr, &coord.token, "good1", &[]);
    let _good2 = worker(&coord.addr, &coord.token, "good2", &[]);
    let (code, _) = coord.proc.wait(Duration::from_secs(40));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    assert!(!coord.proc.log().contains("panicked"));
}

/// Connects with `token` and says hello with `protocol`; returns the
/// coordinator's answer.
async fn raw_hello(
    addr: std::net::SocketAddr,
    token: &runner::federation::token::Token,
    protocol: u32,
) -> String {
    use runner::federation::{protocol::*, tls, wire};
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(
        tls::client_config(&tls::Trust::Pinned(token.fingerprint)).unwrap(),
    );
    let conn = ep.connect(addr, tls::SERVER_NAME).unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Up::Hello {
        protocol,
        version: "0.0.0".into(),
        name: "raw".into(),
        capacity: 1.0,
        secret: token.secret.clone(),
        resume: None,
    };
    wire::write(&mut send, &hello).await.unwrap();
    match wire::read::<Down>(&mut recv).await {
        Ok(Some(Down::Refused { reason })) => reason,
        other => format!("{other:?}"),
    }
}

/// Says hello properly, then sends a frame announcing 4 GiB; returns why
/// the coordinator closed the connection.
async fn oversized(addr: std::net::SocketAddr, token: &runner::federation::token::Token) -> String {
    use runner::federation::{protocol::*, tls, wire};
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(
        tls::client_config(&tls::Trust::Pinned(token.fingerprint)).unwrap(),
    );
    let conn = ep.connect(addr, tls::SERVER_NAME).unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Up::Hello {
        protocol: PROTOCOL,
        version: env!("CARGO_PKG_VERSION").into(),
        name: "oversized".into(),
        capacity: 1.0,
        secret: token.secret.clone(),
        resume: None,
    };
    wire::write(&mut send, &hello).await.unwrap();
    let welcome = wire::read::<Down>(&mut recv).await;
    assert!(
        matches!(welcome, Ok(Some(Down::Welcome { .. }))),
        "{welcome:?}"
    );
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    send.write_all(b"{}").await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    format!("{why:?}")
}

#[test]
fn with_a_ca_both_sides_show_certificates_it_signed() {
    let dir = scratch("fed-ca");
    let (ours, theirs) = (dir.join("ours"), dir.join("theirs"));
    for d in [&ours, &theirs] {
        let out = std::process::Command::new(runner())
            .args(["keygen", "--ca", "--dir"])
            .arg(d)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let file = |d: &std::path::Path, f: &str| d.join(f).to_str().unwrap().to_owned();
    let target = Target::start();
    let out = dir.join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let json = format!("json={}", out.display());
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "1",
            "--vus",
            "2",
            "-d",
            "2s",
            "--join-timeout",
            "40s",
            "-e",
            &base,
            "--quiet",
            "--out",
            &json,
            "--ca",
            &file(&ours, "ca.crt"),
            "--cert",
            &file(&ours, "coordinator.crt"),
            "--key",
            &file(&ours, "coordinator.key"),
        ],
    );
    let join = |d: &std::path::Path, ca: &std::path::Path, name: &str| {
        let mut cmd = std::process::Command::new(runner());
        cmd.args(["join", "--coordinator", &coord.addr, "--name", name])
            .args(["--ca", &file(ca, "ca.crt")])
            .args(["--cert", &file(d, "worker.crt")])
            .args(["--key", &file(d, "worker.key")]);
        Proc::spawn(cmd)
    };
    // A worker whose certificate another CA signed is refused by the
    // coordinator, in one clear line.
    let mut stranger = join(&theirs, &ours, "stranger");
    let (code, _) = stranger.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(
        stranger.log().contains("refused this worker's certificate"),
        "{}",
        stranger.log()
    );
    // A worker trusting another CA refuses the coordinator.
    let mut wary = join(&ours, &theirs, "wary");
    let (code, _) = wary.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(
        wary.log().contains("refusing the coordinator"),
        "{}",
        wary.log()
    );
    // Ours runs the test, and every request is counted.
    let _good = join(&ours, &ours, "good");
    let (code, _) = coord.proc.wait(Duration::from_secs(40));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    let s = summary(&out);
    assert!(total_requests(&s) > 0);
    assert_eq!(total_requests(&s), target.requests());
}

#[test]
fn a_truncated_component_is_refused_by_the_worker() {
    use runner::federation::{protocol::*, tls, wire};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A coordinator of the test's own that sends half a component.
        let id = tls::Identity::generate().unwrap();
        let ep =
            quinn::Endpoint::server(id.server_config().unwrap(), "127.0.0.1:0".parse().unwrap())
                .unwrap();
        let addr = ep.local_addr().unwrap().to_string();
        let token = format!(
            "{}:0123456789abcdef0123",
            runner::federation::token::hex(&id.fingerprint)
        );
        let mut w = worker(&addr, &token, "w", &[]);
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let hello = wire::read::<Up>(&mut recv).await.unwrap().unwrap();
        assert!(matches!(hello, Up::Hello { .. }), "{hello:?}");
        let welcome = Down::Welcome {
            protocol: PROTOCOL,
            version: "test".into(),
            worker: 1,
            resumed: false,
        };
        wire::write(&mut send, &welcome).await.unwrap();
        let mut spec = runner::spec::RunSpec::default();
        spec.scenario.sha256 = "ab".repeat(32);
        let assign = Down::Assign {
            run: 7,
            spec: Box::new(spec),
            share: Default::default(),
            lease_ms: 5000,
        };
        wire::write(&mut send, &assign).await.unwrap();
        let need = wire::read::<Up>(&mut recv).await.unwrap().unwrap();
        assert!(matches!(need, Up::Need { run: 7, .. }), "{need:?}");
        let mut s = conn.open_uni().await.unwrap();
        let head = ComponentHeader {
            sha256: "ab".repeat(32),
            len: 1000,
        };
        wire::write(&mut s, &head).await.unwrap();
        s.write_all(&[0u8; 10]).await.unwrap();
        s.finish().unwrap();
        let failed = loop {
            match wire::read::<Up>(&mut recv).await.unwrap().unwrap() {
                Up::Failed { run: 7, error } => break error,
                _ => continue,
            }
        };
        assert!(failed.contains("cut short"), "{failed}");
        assert!(w.log().contains("unusable"), "{}", w.log());
        assert!(w.running(), "the worker goes on: {}", w.log());
    });
}
