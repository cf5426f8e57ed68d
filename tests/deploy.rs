//! The deployment files: the Kubernetes manifests validate against the
//! API's schemas, every `runner` command line in them parses, and a
//! certificate and token made with `runner keygen` are the ones a
//! coordinator started with them announces.

mod common;

use std::process::Command;
use std::time::Duration;

use clap::Parser as _;
use common::cluster::Coordinator;
use common::*;

fn manifests() -> Vec<std::path::PathBuf> {
    let dir = root().join("runner/deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the manifests")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files
}

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    let tool = root().join("target/pyenv/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run scripts/setup.sh",
        tool.display()
    );
    let out = Command::new(&tool)
        .args(["--strict", "-k", "1.30.0"])
        .args(manifests())
        .output()
        .expect("run kubernetes-validate");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed ").count(), 3, "{text}");
}

#[test]
fn every_runner_command_in_the_manifests_parses() {
    // The containers' args, read with the YAML parser kubernetes-validate
    // brings along.
    let python = root().join("target/pyenv/bin/python");
    let script = "import sys, yaml, json\n\
        out = []\n\
        for f in sys.argv[1:]:\n\
        \x20   for doc in yaml.safe_load_all(open(f)):\n\
        \x20       spec = doc.get('spec', {})\n\
        \x20       pod = spec.get('template', {}).get('spec', {})\n\
        \x20       for c in pod.get('containers', []):\n\
        \x20           out.append(c['args'])\n\
        print(json.dumps(out))";
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(manifests())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commands: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(commands.len(), 2);
    // The values the manifests take from the Secret.
    std::env::set_var(
        "RUNNER_JOIN_TOKEN",
        format!("{}:0123456789abcdef", "ab".repeat(32)),
    );
    for args in commands {
        let argv = std::iter::once("runner".to_owned()).chain(args.iter().cloned());
        if let Err(e) = runner::cli::Cli::try_parse_from(argv) {
            panic!("{args:?} does not parse: {e}");
        }
    }
}

#[test]
fn keygen_makes_the_token_a_coordinator_with_those_keys_announces() {
    let dir = scratch("keygen");
    let r = run(
        &[
            "keygen",
            "--dir",
            dir.to_str().unwrap(),
            "--secret",
            "0123456789abcdef-secret",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let token = std::fs::read_to_string(dir.join("token"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.ends_with(":0123456789abcdef-secret"), "{token}");
    let cert = dir.join("coordinator.crt");
    let key = dir.join("coordinator.key");
    let c = component("idle");
    let coord = Coordinator::start(
        c.to_str().unwrap(),
        "127.0.0.1:0",
        &[
            "--workers",
            "1",
            "--join-timeout",
            "5s",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--secret",
            "0123456789abcdef-secret",
        ],
    );
    // The same certificate: the fingerprint the coordinator announces is
    // the token's (an operator's secret is not repeated in its log).
    assert_eq!(
        coord.token.split_once(':').unwrap().0,
        token.split_once(':').unwrap().0
    );
    assert!(coord.token.ends_with(":YOUR-SECRET"), "{}", coord.token);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the key is private");
}
