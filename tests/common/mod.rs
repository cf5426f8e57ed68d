//! Helpers shared by the integration tests: the runner binary, the example
//! components (built once by scripts/setup.sh), the built-in target as a
//! real server process, and bounded process runs.

#![allow(dead_code)]

pub mod api;
pub mod brokers;
pub mod browser;
pub mod cluster;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The runner binary under test.
pub fn runner() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_runner"))
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An example component built by scripts/setup.sh.
pub fn component(name: &str) -> PathBuf {
    let p = root().join("target/scenarios").join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh first (it builds the example scenarios)",
        p.display()
    );
    p
}

/// A scratch directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("runner-test-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// The built-in HTTP target, as its own process on a free loopback port.
pub struct Target {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Target {
    /// Starts `runner target --listen 127.0.0.1:0` and waits for its address.
    pub fn start() -> Target {
        Self::start_with(&[])
    }

    /// Like [`Target::start`], serving HTTPS with a self-signed certificate.
    pub fn start_tls() -> Target {
        Self::start_with(&["--tls"])
    }

    /// Like [`Target::start`], listening on `addr`.
    pub fn start_on(addr: &str) -> Target {
        Self::start_at(addr, &[])
    }

    fn start_with(extra: &[&str]) -> Target {
        Self::start_at("127.0.0.1:0", extra)
    }

    fn start_at(addr: &str, extra: &[&str]) -> Target {
        let mut child = Command::new(runner())
            .args(["target", "--listen", addr])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the target");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the target's address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect("address line")
            .to_owned();
        Target { child, url }
    }

    /// Requests the target has served (its own ground truth).
    pub fn requests(&self) -> u64 {
        self.stats()["requests"].as_u64().expect("requests")
    }

    /// The requests per second the target itself serves over `window`.
    pub fn rate_over(&self, window: Duration) -> f64 {
        let (n0, t0) = (self.requests(), Instant::now());
        std::thread::sleep(window);
        (self.requests() - n0) as f64 / t0.elapsed().as_secs_f64()
    }

    /// Requests the target served to clients at `ip`.
    pub fn requests_from(&self, ip: &str) -> u64 {
        self.stats()["by_peer"][ip].as_u64().unwrap_or(0)
    }

    /// The requests per second the target serves to clients at `ip` over
    /// `window`.
    pub fn rate_from(&self, ip: &str, window: Duration) -> f64 {
        let (n0, t0) = (self.requests_from(ip), Instant::now());
        std::thread::sleep(window);
        (self.requests_from(ip) - n0) as f64 / t0.elapsed().as_secs_f64()
    }

    /// The target's `/stats`: `requests`, `http1`, `http2`, `by_peer`.
    /// Plain HTTP only.
    pub fn stats(&self) -> serde_json::Value {
        let addr = self.url.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect to target");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        let body = text.split("\r\n\r\n").nth(1).expect("body");
        serde_json::from_str(body.trim()).expect("stats json")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a bounded run of the runner produced.
pub struct Run {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Runs the runner with `args`, killing it after `limit`.
pub fn run(args: &[&str], limit: Duration) -> Run {
    let child = Command::new(runner())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the runner");
    wait(child, limit)
}

/// Waits for `child` for at most `limit`, then kills it; collects output.
pub fn wait(mut child: Child, limit: Duration) -> Run {
    let started = Instant::now();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    assert!(
        status.is_some(),
        "the runner did not finish within {limit:?}; stderr:\n{stderr}"
    );
    Run {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
        elapsed,
    }
}

/// Reads a JSON summary written with `--out json=FILE`.
pub fn summary(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("summary is JSON")
}

/// Total requests of all names in a summary.
pub fn total_requests(s: &serde_json::Value) -> u64 {
    s["http"]
        .as_array()
        .map(|a| a.iter().map(|r| r["requests"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}

/// A count from an object in the summary (`traps`, ...), 0 if absent.
pub fn count(s: &serde_json::Value, section: &str, key: &str) -> u64 {
    s[section][key].as_u64().unwrap_or(0)
}

/// Runs the example `scenario`, quietly, writing its JSON summary into a
/// scratch directory `name`, plus `extra` flags; returns the run and the
/// summary.
pub fn run_example(scenario: &str, name: &str, extra: &[&str]) -> (Run, serde_json::Value) {
    let json = scratch(name).join("r.json");
    let out = format!("json={}", json.display());
    let c = component(scenario);
    let mut args = vec!["run", c.to_str().unwrap(), "--quiet", "--out", &out];
    args.extend_from_slice(extra);
    let r = run(&args, Duration::from_secs(90));
    let s = summary(&json);
    (r, s)
}

/// Like [`run_example`], with `BASE_URL=target`.
pub fn run_against(
    scenario: &str,
    target: &str,
    name: &str,
    extra: &[&str],
) -> (Run, serde_json::Value) {
    let base = format!("BASE_URL={target}");
    let mut args = vec!["-e", base.as_str()];
    args.extend_from_slice(extra);
    run_example(scenario, name, &args)
}

/// Like [`run_example`], with `-e` before each of `env` (`KEY=VALUE`).
pub fn run_env(scenario: &str, name: &str, env: &[&str]) -> (Run, serde_json::Value) {
    let args: Vec<&str> = env.iter().flat_map(|e| ["-e", e]).collect();
    run_example(scenario, name, &args)
}

/// The summary row of metric `name` in the `mqtt` or `nats` section.
pub fn messaging_row<'a>(
    s: &'a serde_json::Value,
    proto: &str,
    name: &str,
) -> &'a serde_json::Value {
    s[proto]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no {proto} row {name:?} in {}", s[proto]))
}

/// A count in the summary; 0 when absent.
pub fn num(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Checks a summary's latency block (`min` … `max`, milliseconds) is a
/// real measurement: positive, its percentiles in order, the mean within
/// them, and nothing longer than `upto_ms` (the run's length).
pub fn assert_latency(p: &serde_json::Value, upto_ms: f64) {
    let f = |k: &str| {
        p[k].as_f64()
            .unwrap_or_else(|| panic!("no {k} in the latency block {p}"))
    };
    let order = ["min", "p50", "p90", "p95", "p99", "p99.9", "max"].map(f);
    assert!(order[0] > 0.0, "a latency of zero: {p}");
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {p}"
    );
    let mean = f("mean");
    assert!(
        order[0] <= mean && mean <= order[6],
        "the mean is outside min..max: {p}"
    );
    assert!(order[6] <= upto_ms, "a latency over {upto_ms} ms: {p}");
}
