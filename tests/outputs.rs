//! Result files: the JSON summary and the NDJSON and CSV time series agree
//! with each other and with the server, and a killed run never leaves a
//! partial file.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn time_series_add_up_to_the_summary_and_the_server() {
    let target = Target::start();
    let dir = scratch("series");
    let (json, nd, csv) = (dir.join("r.json"), dir.join("r.ndjson"), dir.join("r.csv"));
    let r = run(
        &[
            "run",
            component("hello-http").to_str().unwrap(),
            "--vus",
            "5",
            "--duration",
            "3s",
            "--ramp-up",
            "0s",
            "-e",
            &format!("BASE_URL={}", target.url),
            "-e",
            "THINK_MS=20",
            "--quiet",
            "--out",
            &format!("json={}", json.display()),
            "--out",
            &format!("ndjson={}", nd.display()),
            "--out",
            &format!("csv={}", csv.display()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let total = total_requests(&summary(&json));
    assert!(total > 100, "total {total}");
    assert_eq!(total, target.requests());

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&nd)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(lines.len() >= 3, "{} intervals for a 3 s run", lines.len());
    let per_interval = |l: &serde_json::Value| -> u64 {
        l["http"]
            .as_object()
            .map(|m| m.values().map(|s| s["count"].as_u64().unwrap()).sum())
            .unwrap_or(0)
    };
    assert_eq!(
        lines.iter().map(per_interval).sum::<u64>(),
        total,
        "intervals add up to the total"
    );
    let busy = &lines[1];
    assert_eq!(busy["vus"], 5);
    let name = format!("GET {}/", target.url);
    // An interval's latencies are real measurements: positive, in order,
    // and below the 3 s run (loopback answers in well under a second).
    let row = &busy["http"][&name];
    let at = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k} in {row}"));
    assert!(at("p50") > 0.0, "{row}");
    assert!(
        at("p50") <= at("p90") && at("p90") <= at("p95") && at("p95") <= at("p99"),
        "{row}"
    );
    assert!(at("p99") <= at("max") && at("max") < 1_000.0, "{row}");
    assert!(row["rate"].as_f64().unwrap() > 50.0);
    assert_eq!(row["failed"], 0);

    let text = std::fs::read_to_string(&csv).unwrap();
    let mut rows = text.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let count_col = header.iter().position(|h| *h == "count").unwrap();
    let metric_col = header.iter().position(|h| *h == "metric").unwrap();
    let csv_total: u64 = rows
        .map(|r| r.split(',').collect::<Vec<_>>())
        .filter(|f| f[metric_col] == "http")
        .map(|f| f[count_col].parse::<u64>().unwrap())
        .sum();
    assert_eq!(csv_total, total);
}

#[test]
fn a_killed_run_leaves_its_seconds_so_far_and_the_previous_summary() {
    let target = Target::start();
    let dir = scratch("killed");
    let paths = [dir.join("r.json"), dir.join("r.ndjson"), dir.join("r.csv")];
    for p in &paths {
        std::fs::write(p, "previous run\n").unwrap();
    }
    let mut child = Command::new(runner())
        .args([
            "run",
            component("hello-http").to_str().unwrap(),
            "--vus",
            "5",
            "--duration",
            "60s",
            "-e",
            &format!("BASE_URL={}", target.url),
            "--quiet",
            "--out",
            &format!("json={}", paths[0].display()),
            "--out",
            &format!("ndjson={}", paths[1].display()),
            "--out",
            &format!("csv={}", paths[2].display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    child.kill().unwrap();
    child.wait().unwrap();
    // The summary is written whole at the end or not at all.
    assert_eq!(
        std::fs::read_to_string(&paths[0]).unwrap(),
        "previous run\n"
    );
    // The time series has every second before the kill, each line whole.
    let nd = std::fs::read_to_string(&paths[1]).unwrap();
    let lines: Vec<serde_json::Value> = nd
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is whole JSON"))
        .collect();
    assert!(lines.len() >= 2, "{nd}");
    assert_eq!(lines[0]["t"].as_f64().map(f64::round), Some(1.0));
    let csv = std::fs::read_to_string(&paths[2]).unwrap();
    assert!(csv.starts_with("t,interval,vus,metric"), "{csv}");
    assert!(
        csv.lines().filter(|l| l.contains(",http,")).count() >= 2,
        "{csv}"
    );
    let served = target.requests();
    let counted: u64 = lines
        .iter()
        .map(|l| {
            l["http"]
                .as_object()
                .unwrap()
                .values()
                .map(|s| s["count"].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert!(
        counted > 0 && counted <= served,
        "{counted} in the file, {served} served"
    );
}

#[test]
fn raw_snapshots_merge_exactly_into_the_summary() {
    let target = Target::start();
    let dir = scratch("snapshots");
    let (json, snaps) = (dir.join("r.json"), dir.join("r.snapshots"));
    let base = format!("BASE_URL={}", target.url);
    let r = run(
        &[
            "run",
            component("hello-http").to_str().unwrap(),
            "--vus",
            "4",
            "--duration",
            "3s",
            "-e",
            &base,
            "-e",
            "THINK_MS=10",
            "-e",
            "NAMES=3",
            "--quiet",
            "--out",
            &format!("json={}", json.display()),
            "--out",
            &format!("snapshots={}", snaps.display()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let text = std::fs::read_to_string(&snaps).unwrap();
    let mut merged = runner::run::Snapshot::default();
    let mut seqs = Vec::new();
    for line in text.lines() {
        let s: runner::run::Snapshot = serde_json::from_str(line).expect("a snapshot per line");
        seqs.push(s.seq);
        merged.metrics.merge(&s.metrics);
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let summary: runner::report::Summary =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("summary");
    assert_eq!(merged.metrics.http_requests(), summary.raw.http_requests());
    assert_eq!(merged.metrics.http_requests(), target.requests());
    assert_eq!(merged.metrics.http.len(), 3, "page-0..page-2");
    for (name, stats) in &summary.raw.http {
        let m = &merged.metrics.http[name];
        // The same histogram, bucket for bucket: every percentile agrees.
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                m.latency.quantile(q),
                stats.latency.quantile(q),
                "{name} q{q}"
            );
        }
        assert_eq!(m.latency.count(), stats.latency.count());
    }
}

#[test]
fn series_past_max_series_fold_into_one_counted_row() {
    let target = Target::start();
    let (r, s) = run_against(
        "hello-http",
        &target.url,
        "max-series",
        &[
            "--vus",
            "4",
            "--duration",
            "2s",
            "-e",
            "THINK_MS=0",
            "-e",
            "NAMES=5000",
            "--max-series",
            "50",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let rows = s["http"].as_array().unwrap();
    assert_eq!(rows.len(), 51, "50 names and the overflow row");
    let overflow = rows
        .iter()
        .find(|r| r["name"].as_str().unwrap().starts_with("(overflow"))
        .expect("the overflow row");
    let folded = s["meta"]["series_overflow"]["http"].as_u64().unwrap();
    assert_eq!(overflow["requests"].as_u64().unwrap(), folded);
    assert!(folded > 100, "{folded}");
    // Nothing is lost: the rows still add up to what the target served.
    assert_eq!(total_requests(&s), target.requests());
    assert_eq!(
        r.stderr.matches("distinct http series").count(),
        1,
        "{}",
        r.stderr
    );
}

#[test]
fn an_output_that_cannot_be_written_is_named_and_the_summary_still_prints() {
    let target = Target::start();
    let c = component("hello-http");
    let base = format!("BASE_URL={}", target.url);
    let args = |out: &str| -> Vec<String> {
        [
            "run",
            c.to_str().unwrap(),
            "--vus",
            "2",
            "-d",
            "1s",
            "-e",
            &base,
            "--out",
            out,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    // A full disk: a device, written in place (never replaced), fails.
    let a = args("json=/dev/full");
    let r = run(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cannot write /dev/full: No space left on device"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("status is 200"),
        "the summary prints: {}",
        r.stdout
    );
    use std::os::unix::fs::FileTypeExt as _;
    let full = std::fs::metadata("/dev/full").unwrap();
    assert!(full.file_type().is_char_device(), "/dev/full was replaced");
    // A directory that does not exist: the same, after the run.
    let missing = scratch("out-missing").join("no/such/dir/r.json");
    let a = args(&format!("json={}", missing.display()));
    let r = run(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("cannot write"), "{}", r.stderr);
    assert!(r.stdout.contains("status is 200"), "{}", r.stdout);
    assert!(target.requests() > 0);
}
