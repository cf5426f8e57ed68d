//! Authoring: `runner new` writes a project anywhere on disk that builds
//! with one command and runs, its requests matching the target's count.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{root, run, summary, total_requests, Target};

/// Builds the project in `dir` with the command `runner new` printed,
/// through the repository's choice of wasm toolchain.
fn build(dir: &std::path::Path, command: &str) {
    // Shared by every run of this test, so dependencies build once.
    let target_dir = root().join("target/new-projects");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(". ./wasm-env.sh && {command}"))
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("run the build");
    assert!(
        out.status.success(),
        "`{command}` failed in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
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
    build(&dir, "cargo component build --release");
    let wasm = root().join("target/new-projects/wasm32-wasip1/release/checkout_flow.wasm");
    assert!(wasm.exists(), "{} was not built", wasm.display());

    let target = Target::start();
    let json = tmp.path().join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let out = format!("json={}", json.display());
    let r = run(
        &[
            "run",
            wasm.to_str().unwrap(),
            "--vus",
            "3",
            "--iterations",
            "2",
            "-e",
            &base,
            "--quiet",
            "--out",
            &out,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let s = summary(&json);
    assert_eq!(total_requests(&s), 6);
    assert_eq!(target.requests(), 6, "the target's own count");
    assert_eq!(s["checks"][0]["pass"], 6, "{}", s["checks"]);

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
