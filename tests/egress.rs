//! Egress rules: `--allow-host` and `--block-host` for HTTP, MQTT and
//! NATS, checked against the servers' own counts (a denied connection
//! reaches nothing), and an agent's operator rules that no submitted run
//! can lift.

mod common;

use std::time::Duration;

use common::api::{get, submit, wait_state, Agent};
use common::brokers::{Mosquitto, Nats};
use common::*;

fn hello(target: &Target, name: &str, extra: &[&str]) -> (Run, serde_json::Value) {
    let mut args = vec!["--vus", "2", "--iterations", "5", "-e", "THINK_MS=0"];
    args.extend_from_slice(extra);
    run_against("hello-http", &target.url, name, &args)
}

/// Requests failed as `denied`, over every HTTP row.
fn denied_requests(s: &serde_json::Value) -> u64 {
    s["http"]
        .as_array()
        .map(|rows| rows.iter().map(|r| num_or_0(&r["errors"]["denied"])).sum())
        .unwrap_or(0)
}

fn num_or_0(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A bare TCP listener that records whether anything connected: a denied
/// connection must send no packet, so not even a handshake completes.
struct Trap(std::net::TcpListener);

impl Trap {
    fn new() -> Trap {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        Trap(l)
    }

    fn addr(&self) -> String {
        self.0.local_addr().expect("addr").to_string()
    }

    fn untouched(&self) -> bool {
        matches!(self.0.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

fn port_of(url: &str) -> String {
    url.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

#[test]
fn http_goes_only_where_the_rules_allow() {
    let target = Target::start();
    let dest = format!("127.0.0.1:{}", port_of(&target.url));
    // Not on the allow list: every request fails as `denied`, and the
    // target hears nothing.
    let (r, s) = hello(&target, "egress-allow", &["--allow-host", "*.example.com"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(target.requests(), 0);
    assert_eq!(denied_requests(&s), 10, "{}", s["http"]);
    assert_eq!(s["denied"][&dest], 10, "{}", s["denied"]);
    // A network rule allows it; a block rule (even within it) wins.
    let (_, s) = hello(&target, "egress-net", &["--allow-host", "127.0.0.0/8"]);
    assert_eq!(total_requests(&s), 10);
    assert_eq!(target.requests(), 10);
    assert!(s["denied"].as_object().is_none_or(|d| d.is_empty()));
    let (_, s) = hello(
        &target,
        "egress-block",
        &["--allow-host", "127.0.0.0/8", "--block-host", &dest],
    );
    assert_eq!(target.requests(), 10, "nothing more reached the target");
    assert_eq!(s["denied"][&dest], 10);
    // A bad rule is one line, before anything runs.
    // Not a packet: nothing even connected to a denied listener.
    let trap = Trap::new();
    let (_, s) = run_against(
        "hello-http",
        &format!("http://{}", trap.addr()),
        "egress-trap",
        &[
            "--vus",
            "2",
            "--iterations",
            "3",
            "--allow-host",
            "*.example.com",
        ],
    );
    assert_eq!(s["denied"][&trap.addr()], 6, "{}", s["denied"]);
    assert!(trap.untouched(), "a denied request connected");
    let c = component("hello-http");
    let r = run(
        &["run", c.to_str().unwrap(), "--allow-host", "bad host"],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("--allow-host \"bad host\""),
        "{}",
        r.stderr
    );
}

#[test]
fn mqtt_and_nats_connections_follow_the_rules_too() {
    let broker = Mosquitto::start("egress-mqtt");
    let server = Nats::start("egress-nats");
    let (mqtt, nats) = (broker.url(), server.url());
    let block_mqtt = format!("127.0.0.1:{}", port_of(&mqtt));
    let block_nats = format!("127.0.0.1:{}", port_of(&nats));
    let (mqtt_url, nats_url) = (format!("MQTT_URL={mqtt}"), format!("NATS_URL={nats}"));
    let tour = |name: &str, block: &str| {
        run_example(
            "messaging-tour",
            name,
            &[
                "-e",
                &mqtt_url,
                "-e",
                &nats_url,
                "--vus",
                "1",
                "--iterations",
                "1",
                "--block-host",
                block,
            ],
        )
        .1
    };
    let denied = |s: &serde_json::Value, proto: &str| -> u64 {
        s[proto]
            .as_array()
            .map(|rows| rows.iter().map(|r| num_or_0(&r["errors"]["denied"])).sum())
            .unwrap_or(0)
    };
    // The tour connects to MQTT first: blocked, the iteration fails there.
    let s = tour("egress-mqtt", &block_mqtt);
    assert_eq!(num(&s["denied"][&block_mqtt]), 1, "{}", s["denied"]);
    assert_eq!(denied(&s, "mqtt"), 1, "{}", s["mqtt"]);
    assert_eq!(num(&s["iterations"]["ok"]), 0);
    // MQTT allowed, NATS blocked: the tour gets as far as NATS.
    let s = tour("egress-nats", &block_nats);
    assert_eq!(num(&s["denied"][&block_nats]), 1, "{}", s["denied"]);
    assert_eq!(denied(&s, "nats"), 1, "{}", s["nats"]);
    assert_eq!(denied(&s, "mqtt"), 0, "{}", s["mqtt"]);
    let published: u64 = s["mqtt"]
        .as_array()
        .map(|rows| rows.iter().map(|r| num_or_0(&r["published"])).sum())
        .unwrap_or(0);
    assert!(published > 0, "{}", s["mqtt"]);

    // Allow-lists hold for both protocols too, and a denied connection
    // sends nothing: bare listeners in the brokers' place see no one.
    let (mqtt_trap, nats_trap) = (Trap::new(), Trap::new());
    let (_, s) = run_example(
        "messaging-tour",
        "egress-trap",
        &[
            "-e",
            &format!("MQTT_URL=mqtt://{}", mqtt_trap.addr()),
            "-e",
            &format!("NATS_URL=nats://{}", nats_trap.addr()),
            "--vus",
            "1",
            "--iterations",
            "1",
            "--allow-host",
            "10.0.0.0/8",
        ],
    );
    assert_eq!(num(&s["denied"][&mqtt_trap.addr()]), 1, "{}", s["denied"]);
    assert_eq!(denied(&s, "mqtt"), 1, "{}", s["mqtt"]);
    assert!(mqtt_trap.untouched() && nats_trap.untouched());
}

#[test]
fn an_agent_s_rules_hold_whatever_a_submitted_run_asks() {
    let target = Target::start();
    // The operator allows another loopback address only.
    let agent = Agent::start(&["--allow-host", "127.0.0.2"]);
    let config = serde_json::json!({
        "vus": 1, "iterations": 3,
        "env": {"BASE_URL": target.url, "THINK_MS": "0"},
        "allow_hosts": ["127.0.0.1"]
    });
    let wasm = std::fs::read(component("hello-http")).unwrap();
    let created = submit(&agent.url, "hello-http.wasm", &wasm, &config);
    assert_eq!(created.status, 201, "{}", created.text);
    let run = format!("{}{}", agent.url, created.location.unwrap());
    wait_state(&run, "finished", Duration::from_secs(30));
    let results = get(&format!("{run}/results"));
    assert_eq!(denied_requests(&results.json), 3, "{}", results.text);
    assert_eq!(target.requests(), 0);
    let (_, log) = agent.stop();
    assert!(
        log.contains("submitted runs may connect to: 127.0.0.2"),
        "{log}"
    );
    // With no rule, an agent allows loopback only.
    let agent = Agent::start(&[]);
    let (_, log) = agent.stop();
    assert!(
        log.contains("submitted runs may connect to: localhost, 127.0.0.0/8, ::1"),
        "{log}"
    );
}
