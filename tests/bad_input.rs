//! Bad input gets one clear line naming the problem, and a non-zero exit;
//! never a panic or a hang.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn fails_with(args: &[&str], code: i32, needle: &str) {
    let r = run(args, Duration::from_secs(60));
    assert_eq!(r.code, Some(code), "args {args:?}; stderr: {}", r.stderr);
    assert!(
        r.stderr.contains(needle),
        "args {args:?}: expected {needle:?} in stderr: {}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("panicked"),
        "the runner panicked: {}",
        r.stderr
    );
}

/// Assembles component or module text with wasm-tools (installed by setup).
fn assemble(dir: &Path, name: &str, wat: &str) -> String {
    let src = dir.join(format!("{name}.wat"));
    let out = dir.join(format!("{name}.wasm"));
    std::fs::write(&src, wat).unwrap();
    let status = Command::new("wasm-tools")
        .arg("parse")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("wasm-tools is missing: run scripts/setup.sh");
    assert!(status.success());
    out.to_str().unwrap().to_owned()
}

#[test]
fn a_missing_file() {
    fails_with(
        &["run", "/nonexistent/scenario.wasm"],
        1,
        "cannot read scenario /nonexistent/scenario.wasm",
    );
}

#[test]
fn a_file_that_is_not_wasm() {
    let dir = scratch("notwasm");
    let p = dir.join("scenario.wasm");
    std::fs::write(&p, "#!/bin/sh\necho hello\n").unwrap();
    fails_with(
        &["run", p.to_str().unwrap()],
        1,
        "is not a WebAssembly file",
    );
}

#[test]
fn a_core_module_instead_of_a_component() {
    let dir = scratch("core");
    let p = assemble(&dir, "core", "(module (func (export \"run\")))");
    fails_with(
        &["run", &p],
        1,
        "is a core WebAssembly module, not a component",
    );
}

#[test]
fn a_component_for_another_world() {
    let dir = scratch("world");
    let p = assemble(
        &dir,
        "other",
        "(component (import \"other:pkg/api@1.0.0\" (instance (export \"f\" (func)))))",
    );
    fails_with(
        &["run", &p],
        1,
        "does not fit the runner:scenario@0.1.0 world",
    );
}

#[test]
fn a_component_that_exports_no_scenario() {
    let dir = scratch("noexport");
    let p = assemble(&dir, "empty", "(component)");
    fails_with(
        &["run", &p],
        1,
        "does not export the runner:scenario@0.1.0 scenario interface",
    );
}

#[test]
fn a_truncated_component() {
    let dir = scratch("truncated");
    let bytes = std::fs::read(component("hello-http")).unwrap();
    let p = dir.join("cut.wasm");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &["run", p.to_str().unwrap()],
        1,
        "is not a valid WebAssembly component",
    );
}

#[test]
fn bad_flag_values() {
    let c = component("idle");
    let c = c.to_str().unwrap();
    fails_with(&["run", c, "--vus", "0"], 2, "--vus");
    fails_with(&["run", c, "--vus", "many"], 2, "--vus");
    fails_with(&["run", c, "--duration", "soon"], 2, "--duration");
    fails_with(
        &["run", c, "--memory-limit", "12 parsecs"],
        2,
        "--memory-limit",
    );
    fails_with(
        &["run", c, "--out", "xml=a.xml"],
        2,
        "unknown output format",
    );
    fails_with(&["run", c, "-e", "NOEQUALS"], 2, "is not KEY=VALUE");
    fails_with(&["target", "--listen", "not-an-address"], 2, "--listen");
}

#[test]
fn more_vus_than_the_kernel_allows_is_refused_with_the_setting_to_change() {
    let have: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(u64::MAX);
    // The runner estimates ~5 mappings per VU; 1,000,000 VUs is its maximum.
    if have >= 6_000_000 {
        eprintln!("skipped: vm.max_map_count {have} allows even the largest run");
        return;
    }
    let vus = (have / 5 + 10_000).min(1_000_000).to_string();
    fails_with(
        &["run", component("idle").to_str().unwrap(), "--vus", &vus],
        1,
        "sudo sysctl -w vm.max_map_count=",
    );
}

#[test]
fn more_connecting_vus_than_open_files_is_refused_for_every_protocol() {
    // An MQTT-only and a NATS-only scenario hold connections as HTTP ones
    // do; the idle one (no network) needs no file per VU.
    let limited = |scenario: &str| {
        let out = Command::new("prlimit")
            .arg("--nofile=300:300")
            .arg(runner())
            .args([
                "run",
                component(scenario).to_str().unwrap(),
                "--vus",
                "2000",
            ])
            .args(["--duration", "1s", "--quiet"])
            .output()
            .expect("run prlimit");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for scenario in ["iot", "nats-pubsub", "hello-http"] {
        let (code, stderr) = limited(scenario);
        assert_eq!(code, Some(1), "{scenario}: {stderr}");
        assert!(
            stderr.contains("VUs that may each hold a connection need about")
                && stderr.contains("ulimit -n"),
            "{scenario}: {stderr}"
        );
    }
    let (code, stderr) = limited("idle");
    assert_eq!(code, Some(0), "idle: {stderr}");
}

#[test]
fn limits_too_small_for_the_scenario_name_the_flag_to_raise() {
    let c = component("idle");
    let c = c.to_str().unwrap();
    // The pool is sized from the component: exactly the core instances
    // inspect counts are enough, one fewer is refused up front.
    let inspect = run(&["inspect", c, "--json"], Duration::from_secs(30));
    let v: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("JSON");
    let needed = v["core_instances"].as_u64().expect("core_instances");
    assert!((2..=8).contains(&needed), "{v}");
    let exact = needed.to_string();
    let ok = run(
        &[
            "run",
            c,
            "--instance-limit",
            &exact,
            "--vus",
            "3",
            "--duration",
            "1s",
            "--quiet",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    let fewer = (needed - 1).to_string();
    fails_with(
        &["run", c, "--instance-limit", &fewer],
        1,
        &format!("raise --instance-limit (now {fewer}) to at least {needed}"),
    );
    fails_with(
        &["run", c, "--memory-limit", "64KiB"],
        1,
        "raise --memory-limit",
    );
    fails_with(
        &["run", c, "--instance-limit", "1"],
        1,
        // Counted from the component, so the hint names the number needed.
        "core instances per VU; raise --instance-limit (now 1) to at least",
    );
    fails_with(
        &["run", c, "--table-elements", "4"],
        1,
        "raise --table-elements",
    );
}
