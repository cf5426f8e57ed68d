//! Authoring: `runner new` writes a project anywhere on disk that builds
//! with one command and runs, its requests matching the target's count.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{root, run, summary, total_requests, Target};

/// Runs a project's build `command` in `dir` (with `env` set), as its
/// author would; fails the test with the build's output if it fails.
fn build(dir: &Path, command: &str, env: &[(&str, String)]) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run the build");
    assert!(
        out.status.success(),
        "`{command}` failed in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `wasm` with `vus` VUs of `iterations` iterations each against a
/// fresh target, no think time; the runner's request count, the target's
/// own and the passing checks must all be `vus × iterations`.
fn run_counted(wasm: &Path, tmp: &Path, vus: u64, iterations: u64) {
    let target = Target::start();
    let json = tmp.join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let out = format!("json={}", json.display());
    let (v, i) = (vus.to_string(), iterations.to_string());
    let r = run(
        &[
            "run",
            wasm.to_str().unwrap(),
            "--vus",
            &v,
            "--iterations",
            &i,
            "-e",
            &base,
            "-e",
            "THINK_MS=0",
            "--quiet",
            "--out",
            &out,
        ],
        Duration::from_secs(90),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let s = summary(&json);
    let n = vus * iterations;
    assert_eq!(total_requests(&s), n);
    assert_eq!(target.requests(), n, "the target's own count");
    assert_eq!(s["checks"][0]["pass"], n, "{}", s["checks"]);
}

#[test]
fn a_new_rust_project_builds_outside_the_repository_and_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("checkout-flow");
    let made = run(
        &["new", dir.to_str().unwrap(), "--lang", "rust"],
        Duration::from_secs(30),
    );
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    assert!(made.stdout.contains("cargo component build --release"));
    // Shared by every run of this test, so dependencies build once.
    let target_dir = root().join("target/new-projects");
    build(
        &dir,
        ". ./wasm-env.sh && cargo component build --release",
        &[("CARGO_TARGET_DIR", target_dir.display().to_string())],
    );
    let wasm = target_dir.join("wasm32-wasip1/release/checkout_flow.wasm");
    assert!(wasm.exists(), "{} was not built", wasm.display());
    run_counted(&wasm, tmp.path(), 3, 2);

    // A second project in the same place is refused in one line.
    let again = run(&["new", dir.to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(again.code, Some(1));
    assert!(
        again.stderr.contains("exists and is not empty"),
        "{}",
        again.stderr
    );
    let bad = run(&["new", "9lives"], Duration::from_secs(30));
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("is not a scenario name"),
        "{}",
        bad.stderr
    );
}

/// componentize-py, from the project's virtualenv (scripts/setup.sh).
fn componentize_py() -> std::path::PathBuf {
    let p = root().join("target/pyenv/bin/componentize-py");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

#[test]
fn a_new_python_project_builds_outside_the_repository_and_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("py-flow");
    let made = run(
        &["new", dir.to_str().unwrap(), "--lang", "python"],
        Duration::from_secs(30),
    );
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let command = made
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("componentize-py "))
        .expect("the build command")
        .to_owned();
    // The printed command, with the virtualenv's componentize-py.
    let bin = componentize_py();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    build(&dir, &command, &[("PATH", path)]);

    let shown = run(
        &["inspect", dir.join("app.wasm").to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(
        shown.stdout.contains("language  Python 3.") && shown.stdout.contains("(componentize-py)"),
        "{}",
        shown.stdout
    );
    // No extra flags: the runner sizes the pool from the component.
    run_counted(&dir.join("app.wasm"), tmp.path(), 3, 4);
}

/// Runs the Python chaos example for 4 s with `env` (`KEY=VALUE`).
fn python_chaos(target: &Target, name: &str, env: &[&str]) -> (serde_json::Value, common::Run) {
    let json = common::scratch(name).join("r.json");
    let out = format!("json={}", json.display());
    let base = format!("BASE_URL={}", target.url);
    let c = common::component("chaos-py");
    let mut args = vec![
        "run",
        c.to_str().unwrap(),
        "--duration",
        "4s",
        "--ramp-up",
        "0s",
        "--cpu-limit",
        "300ms",
        "--quiet",
        "--out",
        &out,
        "-e",
        &base,
    ];
    for e in env {
        args.extend_from_slice(&["-e", e]);
    }
    let r = run(&args, Duration::from_secs(120));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    (summary(&json), r)
}

#[test]
fn python_vus_that_spin_raise_or_eat_memory_end_only_their_own_iteration() {
    let target = Target::start();
    let (alone, _) = python_chaos(&target, "py-alone", &[]);
    let before = target.requests();
    let (chaos, r) = python_chaos(&target, "py-chaos", &["SPIN=1", "FAIL=1", "HOG=1"]);
    let served = target.requests() - before;
    let traps = &chaos["traps"];
    assert!(traps["cpu-limit"].as_u64().unwrap_or(0) >= 1, "{traps}");
    assert!(traps["memory-limit"].as_u64().unwrap_or(0) >= 1, "{traps}");
    // An exception fails its iteration, with its traceback in the log.
    assert!(chaos["iterations"]["failed"].as_u64().unwrap_or(0) >= 1);
    assert!(
        r.stderr.contains("Traceback (most recent call last)")
            && r.stderr.contains("ValueError: chaos: failing on purpose"),
        "{}",
        r.stderr
    );
    // The steady VUs went on, every request counted by both sides.
    let (a, c) = (total_requests(&alone), total_requests(&chaos));
    assert_eq!(c, served, "runner and server disagree");
    assert!(a > 100, "too few to compare: {a}");
    assert!(
        c * 100 >= a * 75,
        "{c} requests beside misbehaving VUs vs {a} alone"
    );
    assert_eq!(chaos["checks"][0]["fail"], 0);
    assert!(r.elapsed < Duration::from_secs(30), "{:?}", r.elapsed);
}

#[test]
fn python_mqtt_and_nats_counts_match_the_brokers_own() {
    let broker = common::brokers::Mosquitto::start("py-messaging");
    let server = common::brokers::Nats::start("py-messaging");
    let mqtt_url = format!("MQTT_URL={}", broker.url());
    let nats_url = format!("NATS_URL={}", server.url());
    let (r, s) = common::run_example(
        "messaging-py",
        "py-messaging",
        &[
            "-e",
            &mqtt_url,
            "-e",
            &nats_url,
            "--vus",
            "2",
            "--iterations",
            "3",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(s["iterations"]["ok"], 6, "{}", r.stderr);
    for c in s["checks"].as_array().expect("checks") {
        assert_eq!(c["fail"], 0, "{c}");
        assert_eq!(c["pass"], 6, "{c}");
    }
    let row = |section: &str, name: &str| common::messaging_row(&s, section, name).clone();
    // 2 VUs × 3 iterations × 5 messages, each way, on both protocols.
    assert_eq!(row("mqtt", "py-topic")["published"], 30);
    assert_eq!(row("mqtt", "py-topic")["received"], 30);
    assert_eq!(row("nats", "py-subject")["published"], 30);
    assert_eq!(row("nats", "py-subject")["received"], 30);
    let sys = broker.sys(&["publish/messages/received", "publish/messages/sent"]);
    assert_eq!(sys["publish/messages/received"], 30, "{sys:?}");
    assert_eq!(sys["publish/messages/sent"], 30, "{sys:?}");
    assert_eq!(server.varz("in_msgs"), 30);
    assert_eq!(server.varz("out_msgs"), 30);
}
