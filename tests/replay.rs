//! Deterministic replay (`--seed`): the same seed makes every VU send the
//! same requests again, as the target's own request log shows; any run
//! records the seed it used, so it can be replayed; and the runner's own
//! memory ceiling (`--max-memory`) ends a run gracefully, results written.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{component, run, scratch, summary, total_requests};

/// A minimal HTTP/1.1 server that logs each request's path, in the order
/// it arrived: the ground truth of what the runner sent.
struct LoggingServer {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggingServer {
    fn start() -> LoggingServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = shared.clone();
                std::thread::spawn(move || serve(conn, &log));
            }
        });
        LoggingServer { url, log }
    }

    /// The logged paths, emptied.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

fn serve(conn: TcpStream, log: &Mutex<Vec<String>>) {
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        // Headers, up to the blank line (GETs carry no body).
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        log.lock().expect("log").push(path);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
            .is_err()
        {
            return;
        }
    }
}

/// Each VU's requests, in order: `/VU/N` paths grouped by VU.
fn by_vu(paths: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in paths {
        let mut parts = p.trim_matches('/').splitn(2, '/');
        let vu = parts.next().unwrap_or("").to_owned();
        m.entry(vu)
            .or_default()
            .push(parts.next().unwrap_or("").to_owned());
    }
    m
}

/// Runs hello-http with random paths against `server`; returns the
/// summary and each VU's requests as the server saw them.
fn random_run(
    server: &LoggingServer,
    name: &str,
    extra: &[&str],
) -> (serde_json::Value, BTreeMap<String, Vec<String>>) {
    let how = ["--vus", "4", "-e", "RANDOM_PATHS=1", "-e", "THINK_MS=0"];
    random_run_of("hello-http", &how, server, name, extra)
}

/// Like [`random_run`], for `scenario` run with `how`: 4 VUs requesting
/// `/VU/N` with a random N, 12 iterations each.
fn random_run_of(
    scenario: &str,
    how: &[&str],
    server: &LoggingServer,
    name: &str,
    extra: &[&str],
) -> (serde_json::Value, BTreeMap<String, Vec<String>>) {
    let json = scratch(name).join("r.json");
    let out = format!("json={}", json.display());
    let base = format!("BASE_URL={}", server.url);
    let c = component(scenario);
    let mut args = vec![
        "run",
        c.to_str().unwrap(),
        "--quiet",
        "--out",
        &out,
        "--iterations",
        "12",
        "-e",
        &base,
    ];
    args.extend_from_slice(how);
    args.extend_from_slice(extra);
    let r = run(&args, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let s = summary(&json);
    let paths = server.take();
    assert_eq!(paths.len() as u64, total_requests(&s), "server vs runner");
    assert_eq!(paths.len(), 48, "4 VUs × 12 iterations");
    (s, by_vu(&paths))
}

#[test]
fn the_same_seed_makes_the_same_requests_vu_by_vu() {
    let server = LoggingServer::start();
    // A run without --seed draws one and records it.
    let (first, first_log) = random_run(&server, "replay-first", &[]);
    let seed = first["meta"]["options"]["seed"]
        .as_u64()
        .expect("the summary records the seed it used");
    assert_eq!(first_log.len(), 4, "{first_log:?}");
    assert!(first_log.values().all(|v| v.len() == 12));
    // Random within a VU and across VUs, not a constant.
    let distinct: std::collections::BTreeSet<&String> = first_log.values().flatten().collect();
    assert!(distinct.len() > 40, "{first_log:?}");

    let seed_arg = seed.to_string();
    let (again, again_log) = random_run(&server, "replay-again", &["--seed", &seed_arg]);
    assert_eq!(again["meta"]["options"]["seed"].as_u64(), Some(seed));
    assert_eq!(
        again_log, first_log,
        "the same seed replays every VU's requests"
    );

    let other = (seed ^ 1).to_string();
    let (_, other_log) = random_run(&server, "replay-other", &["--seed", &other]);
    assert_ne!(other_log, first_log, "another seed makes other requests");
}

#[test]
fn python_s_random_and_javascript_s_math_random_replay_with_the_seed() {
    let server = LoggingServer::start();
    let how = ["-e", "STEADY=0", "-e", "RANDOM=4"];
    for scenario in ["chaos-py", "chaos-js"] {
        let run = |name: &str, seed: &str| {
            let name = format!("{scenario}-{name}");
            random_run_of(scenario, &how, &server, &name, &["--seed", seed]).1
        };
        let first = run("a", "11");
        assert_eq!(first.len(), 4, "{scenario}: {first:?}");
        let distinct: std::collections::BTreeSet<&String> = first.values().flatten().collect();
        assert!(distinct.len() > 40, "{scenario}: not random: {first:?}");
        assert_eq!(run("b", "11"), first, "{scenario}: the same seed replays");
        assert_ne!(run("c", "12"), first, "{scenario}: another seed differs");
    }
}

#[test]
fn poisson_arrivals_repeat_with_the_seed() {
    let target = common::Target::start();
    let count = |name: &str, seed: &str| {
        let json = scratch(name).join("r.json");
        let out = format!("json={}", json.display());
        let base = format!("BASE_URL={}", target.url);
        let c = component("hello-http");
        let r = run(
            &[
                "run",
                c.to_str().unwrap(),
                "--quiet",
                "--out",
                &out,
                "--rate",
                "300",
                "--arrival",
                "poisson",
                "--duration",
                "2s",
                "--vus",
                "20",
                "--max-vus",
                "200",
                "--seed",
                seed,
                "-e",
                &base,
                "-e",
                "THINK_MS=0",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let s = summary(&json);
        assert_eq!(s["iterations"]["dropped"].as_u64().unwrap_or(0), 0, "{s}");
        total_requests(&s)
    };
    let a = count("poisson-a", "7");
    let b = count("poisson-b", "7");
    // A Poisson count over 2 s at 300/s varies by about ±25 from seed to
    // seed; with one seed it is the same number every time.
    assert_eq!(a, b, "the same seed gives the same arrivals");
    assert!((450..=750).contains(&a), "{a}");
}

#[test]
fn a_runner_at_its_memory_ceiling_stops_starting_iterations_and_says_why() {
    let target = common::Target::start();
    let dir = scratch("max-memory");
    let json = dir.join("r.json");
    let out = format!("json={}", json.display());
    let base = format!("BASE_URL={}", target.url);
    let c = component("hello-http");
    // 4,000 VUs need about 250 MiB; the ceiling is far below that.
    let r = run(
        &[
            "run",
            c.to_str().unwrap(),
            "--quiet",
            "--out",
            &out,
            "--vus",
            "4000",
            "--ramp-up",
            "3s",
            "--duration",
            "30s",
            "--max-memory",
            "120MiB",
            "-e",
            &base,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error: the run ended early"))
        .unwrap_or_else(|| panic!("no one-line reason:\n{}", r.stderr));
    assert!(line.contains("--max-memory (120.0 MiB)"), "{line}");
    assert!(r.elapsed < Duration::from_secs(25), "{:?}", r.elapsed);
    // The results are written, and say why the run ended.
    let s = summary(&json);
    assert_eq!(s["meta"]["stopped_by"], "memory", "{}", s["meta"]);
    assert!(s["meta"]["memory_stop"]
        .as_str()
        .is_some_and(|m| m.contains("no new iterations")));
    assert!(total_requests(&s) > 0);
}
