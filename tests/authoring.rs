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
    assert!(made
        .stdout
        .contains("cargo component build --release --target $WASM_TARGET"));
    // Shared by every run of this test, so dependencies build once.
    let target_dir = root().join("target/new-projects");
    build(
        &dir,
        ". ./wasm-env.sh && cargo component build --release --target $WASM_TARGET \
         && echo $WASM_TARGET > built-for",
        &[("CARGO_TARGET_DIR", target_dir.display().to_string())],
    );
    let built_for = std::fs::read_to_string(dir.join("built-for")).expect("built-for");
    let wasm = target_dir.join(format!("{}/release/checkout_flow.wasm", built_for.trim()));
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

/// Runs `runner new DIR --lang LANG`; returns the printed build command,
/// the line that starts with `starts`.
fn new_project(dir: &Path, lang: &str, starts: &str) -> String {
    let made = run(
        &["new", dir.to_str().unwrap(), "--lang", lang],
        Duration::from_secs(30),
    );
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    made.stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(starts))
        .expect("the build command")
        .to_owned()
}

#[test]
fn a_new_python_project_builds_outside_the_repository_and_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("py-flow");
    let command = new_project(&dir, "python", "componentize-py ");
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

#[test]
fn a_new_js_project_builds_outside_the_repository_and_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("js-flow");
    let command = new_project(&dir, "js", "npm install");
    // As printed; npm's cache (filled by scripts/setup.sh) serves the tools.
    build(
        &dir,
        &command,
        &[("npm_config_prefer_offline", "true".into())],
    );
    let shown = run(
        &["inspect", dir.join("app.wasm").to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(
        shown.stdout.contains("language  JavaScript (QuickJS"),
        "{}",
        shown.stdout
    );
    run_counted(&dir.join("app.wasm"), tmp.path(), 3, 4);
}

#[test]
fn a_k6_script_runs_with_its_scenarios_executors_and_thresholds() {
    let target = Target::start();
    let (r, s) = common::run_against("shop-js", &target.url, "shop-js", &[]);
    // Thresholds from the script's options held: exit 0.
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let requests = |name: &str| {
        s["http"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .map(|x| common::num(&x["requests"]))
            .unwrap_or_else(|| panic!("no HTTP row {name}: {}", s["http"]))
    };
    // per-vu-iterations: 2 VUs × 3, with the scenario's own env value.
    assert_eq!(requests("batch-nightly"), 6);
    // constant-arrival-rate: 20/s for the 3 s of the script's duration.
    assert_eq!(requests("api"), 60);
    // ramping-vus: each iteration one home and one product page, each
    // product page counted by the script's own Counter.
    let products = requests("product");
    assert!(products > 20, "{products}");
    assert_eq!(requests("home"), products);
    assert_eq!(
        s["counters"]["products_viewed {group=product, product=p-1}"],
        products
    );
    assert_eq!(
        total_requests(&s),
        target.requests(),
        "the target's own count"
    );
    let thresholds = s["thresholds"].as_array().expect("thresholds");
    assert_eq!(thresholds.len(), 3, "{thresholds:?}");
    for c in s["checks"].as_array().expect("checks") {
        assert_eq!(c["fail"], 0, "{c}");
    }
    // The Trend's milliseconds: the product page answers after 5 ms.
    let product_time = &s["timings"]["page_time {group=product, page=product}"];
    assert!(
        product_time["min"].as_f64().unwrap_or(0.0) >= 5.0,
        "{product_time}"
    );
}

/// Runs a chaos example (`chaos-py`, `chaos-js`) for 4 s with `env`
/// (`KEY=VALUE`).
fn chaos(target: &Target, example: &str, env: &[&str]) -> (serde_json::Value, common::Run) {
    let json = common::scratch(&format!("{example}-{}", env.len())).join("r.json");
    let out = format!("json={}", json.display());
    let base = format!("BASE_URL={}", target.url);
    let c = common::component(example);
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

/// The chaos example `example` beside its steady VUs: a spinning VU ends
/// at the CPU limit, a memory hog at the memory limit, an exception fails
/// its iteration with `error_lines` in the log; the steady VUs go on, every
/// request counted by both sides.
fn misbehaving_vus_end_only_their_own_iteration(example: &str, error_lines: &[&str]) {
    let target = Target::start();
    let (alone, _) = chaos(&target, example, &[]);
    let before = target.requests();
    let (chaos, r) = chaos(&target, example, &["SPIN=1", "FAIL=1", "HOG=1"]);
    let served = target.requests() - before;
    let traps = &chaos["traps"];
    assert!(traps["cpu-limit"].as_u64().unwrap_or(0) >= 1, "{traps}");
    assert!(traps["memory-limit"].as_u64().unwrap_or(0) >= 1, "{traps}");
    assert!(chaos["iterations"]["failed"].as_u64().unwrap_or(0) >= 1);
    for line in error_lines {
        assert!(r.stderr.contains(line), "no {line:?} in {}", r.stderr);
    }
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
fn python_vus_that_spin_raise_or_eat_memory_end_only_their_own_iteration() {
    misbehaving_vus_end_only_their_own_iteration(
        "chaos-py",
        &[
            "Traceback (most recent call last)",
            "ValueError: chaos: failing on purpose",
        ],
    );
}

#[test]
fn js_vus_that_spin_throw_or_eat_memory_end_only_their_own_iteration() {
    misbehaving_vus_end_only_their_own_iteration(
        "chaos-js",
        // Its stack, with the function it was thrown in.
        &["TypeError: chaos: failing on purpose", "    at fail"],
    );
}

/// The messaging example `example` (2 VUs × 3 iterations × 5 messages
/// each way, names prefixed `prefix`) against real brokers: the runner's
/// counts and the brokers' own agree.
fn messaging_counts_match_the_brokers_own(example: &str, prefix: &str) {
    let broker = common::brokers::Mosquitto::start(example);
    let server = common::brokers::Nats::start(example);
    let mqtt_url = format!("MQTT_URL={}", broker.url());
    let nats_url = format!("NATS_URL={}", server.url());
    let (r, s) = common::run_example(
        example,
        example,
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
    let row = |section: &str, name: &str| {
        common::messaging_row(&s, section, &format!("{prefix}-{name}")).clone()
    };
    // 2 VUs × 3 iterations × 5 messages, each way, on both protocols.
    assert_eq!(row("mqtt", "topic")["published"], 30);
    assert_eq!(row("mqtt", "topic")["received"], 30);
    assert_eq!(row("nats", "subject")["published"], 30);
    assert_eq!(row("nats", "subject")["received"], 30);
    let sys = broker.sys(&["publish/messages/received", "publish/messages/sent"]);
    assert_eq!(sys["publish/messages/received"], 30, "{sys:?}");
    assert_eq!(sys["publish/messages/sent"], 30, "{sys:?}");
    assert_eq!(server.varz("in_msgs"), 30);
    assert_eq!(server.varz("out_msgs"), 30);
}

#[test]
fn python_mqtt_and_nats_counts_match_the_brokers_own() {
    messaging_counts_match_the_brokers_own("messaging-py", "py");
}

#[test]
fn js_mqtt_and_nats_counts_match_the_brokers_own() {
    messaging_counts_match_the_brokers_own("messaging-js", "js");
}

#[test]
fn python_vus_share_their_interpreter_image_and_the_ceiling_knows_it() {
    // 150 CPython VUs each map the same 8 MiB copy-on-write image: counted
    // per mapping that is 1.2 GiB, over the ceiling below; counted as held
    // (each VU's own pages, the image once) it is a third of it.
    // Compiled once beforehand (the compile cache), so the run's memory is
    // its VUs', not Cranelift's.
    let c = common::component("hello-py");
    let shown = run(&["inspect", c.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    let target = Target::start();
    let (r, s) = common::run_against(
        "hello-py",
        &target.url,
        "py-shared",
        &[
            "--vus",
            "150",
            "--duration",
            "3s",
            "--ramp-up",
            "0s",
            "-e",
            "THINK_MS=200",
            "--max-memory",
            "700MiB",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_ne!(s["meta"]["stopped_by"], "memory", "{}", r.stderr);
    let peak = s["meta"]["runner_peak_rss"].as_u64().expect("peak");
    assert!(peak < 700 << 20, "{peak}");
    assert!(total_requests(&s) >= 150, "every VU made requests");
    assert_eq!(total_requests(&s), target.requests());
    // The limit in force, sized from the component, is recorded.
    assert_eq!(s["meta"]["options"]["memory_limit"], 32 << 20);
    // A limit below the interpreter's start is refused in one line.
    let small = run(
        &[
            "run",
            c.to_str().unwrap(),
            "--memory-limit",
            "4MiB",
            "--iterations",
            "1",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(small.code, Some(1));
    assert!(
        small.stderr.contains(
            "starts with 13.1 MiB of linear memory per VU; raise --memory-limit (now 4.0 MiB)"
        ),
        "{}",
        small.stderr
    );
}
