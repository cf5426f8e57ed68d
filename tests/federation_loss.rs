//! Distributed runs when workers or the coordinator fail, with real
//! processes over real QUIC: a killed worker's share taken over (rate and
//! shared iterations), a partitioned worker (a network namespace of the
//! test's own) stopping within its lease, a dead coordinator.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

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
    let workers = workers(&coord, 3, &["--capacity", "1"]);
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
    let workers = workers(&coord, 3, &[]);
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
    let mut workers = workers(&coord, 2, &[]);
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
fn a_worker_lost_before_the_start_is_replaced_when_it_joins_again() {
    let ns = Netns::create("prestart", 212);
    let target = Target::start_on("10.212.0.3:0");
    let out = scratch("fed-prestart").join("r.json");
    let (base, json) = (
        format!("BASE_URL={}", target.url),
        format!("json={}", out.display()),
    );
    let mut coord = Coordinator::start(
        &hello(),
        "10.212.0.1:0",
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
            "--quiet",
            "--out",
            &json,
        ],
    );
    let allow = ["--capacity", "1", "--allow-host", "10.212.0.0/24"];
    let mut cmd = ns.command(&runner());
    cmd.args([
        "join",
        "--coordinator",
        &coord.addr,
        "--token",
        &coord.token,
    ])
    .args(["--name", "far"])
    .args(allow);
    let far = Proc::spawn(cmd);
    coord
        .proc
        .wait_line("joined: 1 of 2", Duration::from_secs(30));
    // Cut the far worker off, then let the second one join: the far one's
    // share is assigned into the void, and its connection dies.
    ns.cut("10.212.0.1", true);
    let _near = worker(&coord.addr, &coord.token, "near", &allow);
    coord
        .proc
        .wait_line("left before the start", Duration::from_secs(40));
    // Healed, it joins again and takes its share; the run goes on.
    ns.cut("10.212.0.1", false);
    coord
        .proc
        .wait_line("takes the share of worker", Duration::from_secs(15));
    let (code, _) = coord.proc.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}\n{}", coord.proc.log(), far.log());
    let s = summary(&out);
    assert_eq!(
        total_requests(&s),
        target.requests(),
        "runner and target agree"
    );
    let ws = s["meta"]["workers"].as_array().expect("workers");
    assert_eq!(ws.len(), 2, "{ws:?}");
    for w in ws {
        assert!(w["requests"].as_u64().unwrap() > 20, "{w}");
        assert_eq!(w["status"], "ended", "{w}");
    }
    assert!(
        target.requests_from("10.212.0.2") > 20,
        "the far worker ran"
    );
}
