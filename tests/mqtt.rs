//! MQTT against a real mosquitto broker: counts checked against the
//! broker's own `$SYS` counters, 1,000 long-lived connections closed
//! cleanly, a broker killed mid-run, and typed errors for bad URLs and
//! wrong credentials.

mod common;

use std::time::Duration;

use common::brokers::Mosquitto;
use common::{component, num as n, run_env, scratch, summary};

fn row<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    common::messaging_row(s, "mqtt", name)
}

#[test]
fn fan_in_counts_match_the_brokers_own_counters() {
    let broker = Mosquitto::start("mqtt-fan-in");
    let url = format!("MQTT_URL={}", broker.url());
    let (r, s) = run_env(
        "mqtt-fan-in",
        "mqtt-fan-in",
        &[
            &url,
            "PUBLISHERS=20",
            "MESSAGES=50",
            "QOS=1",
            "DURATION_S=4",
            "START_DELAY_MS=500",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let fanin = row(&s, "fanin");
    // Every publish was acknowledged, and the one subscriber got each.
    assert_eq!(n(&fanin["published"]), 1000);
    assert_eq!(n(&fanin["received"]), 1000);
    assert_eq!(n(&fanin["failed"]), 0, "{fanin}");
    // Each message carried its send timestamp: end-to-end latency exists.
    common::assert_latency(&fanin["message_latency_ms"], 10_000.0);
    common::assert_latency(&fanin["publish_ms"], 10_000.0);
    assert_eq!(n(&row(&s, "broker")["connects"]), 21);
    // The broker's own counts agree.
    let sys = broker.sys(&["publish/messages/received", "publish/messages/sent"]);
    assert_eq!(sys["publish/messages/received"], 1000, "{sys:?}");
    assert_eq!(sys["publish/messages/sent"], 1000, "{sys:?}");
}

#[test]
fn mqtt_5_at_exactly_once_completes_every_publish() {
    let broker = Mosquitto::start("mqtt-v5");
    let url = format!("MQTT_URL={}", broker.url());
    let (r, s) = run_env(
        "mqtt-fan-in",
        "mqtt-v5",
        &[
            &url,
            "PUBLISHERS=5",
            "MESSAGES=20",
            "QOS=2",
            "MQTT_VERSION=5",
            "DURATION_S=3",
            "START_DELAY_MS=500",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let fanin = row(&s, "fanin");
    assert_eq!(n(&fanin["published"]), 100);
    assert_eq!(n(&fanin["received"]), 100);
    // mosquitto leaves QoS 2 publishes out of `publish/messages/received`;
    // its byte count and its deliveries include them.
    let sys = broker.sys(&["publish/bytes/received", "publish/messages/sent"]);
    assert_eq!(
        sys["publish/bytes/received"],
        n(&fanin["bytes_sent"]),
        "{sys:?}"
    );
    assert_eq!(sys["publish/messages/sent"], 100, "{sys:?}");
    // The broker saw MQTT 5 clients.
    assert!(broker.log().contains("p5"), "log:\n{}", broker.log());
}

#[test]
fn a_thousand_connections_are_held_for_the_run_then_closed_cleanly() {
    let broker = Mosquitto::start("mqtt-1000");
    let url = format!("MQTT_URL={}", broker.url());
    let (r, s) = run_env("iot", "mqtt-1000", &[&url, "DEVICES=1000", "DURATION_S=5"]);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let fleet = row(&s, "fleet");
    // 1,000 devices and the dashboard, each connected once for the run.
    assert_eq!(n(&fleet["connects"]), 1001, "{fleet}");
    assert_eq!(n(&fleet["failed"]), 0, "{fleet}");
    let telemetry = row(&s, "telemetry");
    let published = n(&telemetry["published"]);
    assert!(
        published >= 4000,
        "1,000 devices for 5 s published {published}"
    );
    let sys = broker.sys(&[
        "clients/connected",
        "clients/maximum",
        "publish/messages/received",
    ]);
    assert_eq!(sys["clients/maximum"], 1001, "{sys:?}");
    assert_eq!(sys["publish/messages/received"], published, "{sys:?}");
    // All gone, and each said goodbye with DISCONNECT.
    assert!(sys["clients/connected"] <= 1, "only the observer: {sys:?}");
    let log = broker.log();
    let clean = log.matches(" disconnected.").count();
    assert_eq!(clean, 1001, "clean disconnects in the broker log");
    // (`<unknown>` is the harness's own port probe, which never speaks
    // MQTT; `observer-` its `$SYS` reader, whose close may or may not be
    // logged by now.)
    let unclean: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("closed its connection"))
        .filter(|l| !l.contains("<unknown>") && !l.contains("observer-"))
        .collect();
    assert!(unclean.is_empty(), "unclean closes: {unclean:?}");
}

#[test]
fn a_broker_killed_mid_run_is_counted_and_survived() {
    let mut broker = Mosquitto::start("mqtt-kill");
    let json = scratch("mqtt-kill").join("r.json");
    let out = format!("json={}", json.display());
    let url = format!("MQTT_URL={}", broker.url());
    let c = component("iot");
    let child = std::process::Command::new(common::runner())
        .args([
            "run",
            c.to_str().unwrap_or_default(),
            "--quiet",
            "--out",
            &out,
        ])
        .args([
            "-e",
            &url,
            "-e",
            "DEVICES=20",
            "-e",
            "PERIOD_MS=100",
            "-e",
            "DURATION_S=8",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the runner");
    std::thread::sleep(Duration::from_millis(2_500));
    broker.kill();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    // The run ends on time: nothing hangs on the dead connections.
    let r = common::wait(child, Duration::from_secs(30));
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(15), "took {:?}", r.elapsed);
    let s = summary(&json);
    let fleet = row(&s, "fleet");
    // Losing the broker is counted, and so are the refused reconnects.
    // Each lost connection is counted once (as `disconnected`, or `io` when
    // the socket fails in another way).
    let lost: u64 = ["disconnected", "io", "protocol"]
        .iter()
        .map(|k| n(&fleet["errors"][*k]))
        .sum();
    assert!(lost >= 20, "{fleet}");
    assert!(n(&fleet["errors"]["disconnected"]) >= 15, "{fleet}");
    assert!(n(&fleet["errors"]["connection-refused"]) > 0, "{fleet}");
    assert!(n(&s["iterations"]["failed"]) > 0);
    // Devices connected again once the broker was back, and published to
    // the new broker (which counts from zero).
    assert!(n(&fleet["connects"]) >= 2 * 21, "{fleet}");
    let sys = broker.sys(&["publish/messages/received"]);
    assert!(sys["publish/messages/received"] >= 100, "{sys:?}");
    assert!(
        r.stderr.contains("MQTT connection refused"),
        "stderr:\n{}",
        r.stderr
    );
}

#[test]
fn bad_urls_and_wrong_credentials_are_typed_errors() {
    // Nothing listens: connection refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("MQTT_URL=mqtt://127.0.0.1:{closed}");
    let (r, s) = run_env(
        "iot",
        "mqtt-refused",
        &[&url, "DEVICES=2", "DURATION_S=1", "PERIOD_MS=200"],
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    // Every failure is the refusal, each counted once.
    let fleet = row(&s, "fleet");
    let refused = n(&fleet["errors"]["connection-refused"]);
    assert!(refused > 0 && refused == n(&fleet["failed"]), "{fleet}");
    assert_eq!(n(&fleet["connects"]), 0, "{fleet}");
    assert!(r.stderr.contains("MQTT connection refused"), "{}", r.stderr);

    // Not an MQTT URL: invalid argument, named.
    let (r, s) = run_env(
        "iot",
        "mqtt-bad-url",
        &["MQTT_URL=http://127.0.0.1:1", "DEVICES=1", "DURATION_S=1"],
    );
    let invalid = row(&s, "invalid");
    let refused = n(&invalid["errors"]["invalid-argument"]);
    assert!(refused > 0 && refused == n(&invalid["failed"]), "{invalid}");
    assert!(
        r.stderr
            .contains("scheme \"http\" is not supported: use mqtt:// or mqtts://"),
        "{}",
        r.stderr
    );

    // Wrong password: not authorized.
    let broker = Mosquitto::start_with_password("mqtt-auth", "device", "s3cret");
    let url = format!("MQTT_URL={}", broker.url());
    let (r, s) = run_env(
        "iot",
        "mqtt-auth",
        &[
            &url,
            "DEVICES=2",
            "DURATION_S=1",
            "PERIOD_MS=200",
            "MQTT_USER=device",
            "MQTT_PASSWORD=wrong",
        ],
    );
    assert!(
        n(&row(&s, "fleet")["errors"]["not-authorized"]) > 0,
        "{}",
        s["mqtt"]
    );
    assert_eq!(n(&row(&s, "fleet")["connects"]), 0);
    assert!(r.stderr.contains("MQTT not authorized"), "{}", r.stderr);

    // The right password gets in.
    let (_, s) = run_env(
        "iot",
        "mqtt-auth-ok",
        &[
            &url,
            "DEVICES=2",
            "DURATION_S=1",
            "PERIOD_MS=200",
            "MQTT_USER=device",
            "MQTT_PASSWORD=s3cret",
        ],
    );
    assert_eq!(n(&row(&s, "fleet")["connects"]), 3, "{}", s["mqtt"]);
    assert_eq!(n(&row(&s, "fleet")["failed"]), 0, "{}", s["mqtt"]);
}

#[test]
fn a_vu_that_panics_closes_its_connection_cleanly() {
    let broker = Mosquitto::start("mqtt-panic");
    let url = format!("MQTT_URL={}", broker.url());
    let env = [
        url.as_str(),
        "DEVICES=10",
        "PERIOD_MS=100",
        "DURATION_S=3",
        "CRASH_EVERY=5",
    ];
    let (r, s) = run_env("iot", "mqtt-panic", &env);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let panics = n(&s["traps"]["panic"]);
    assert!(
        panics >= 30,
        "10 devices, a panic every 5th reading for 3 s: {panics}"
    );
    assert!(
        r.stderr.contains("firmware bug on reading 4"),
        "{}",
        r.stderr
    );
    // Each panic dropped the VU's store, and with it the connection, which
    // said DISCONNECT; the restarted VU connected afresh.
    let fleet = row(&s, "fleet");
    let connects = n(&fleet["connects"]);
    // (A VU that panicked in the last moments of the run is not restarted.)
    assert!(connects > panics, "{connects} connects for {panics} panics");
    assert_eq!(n(&fleet["failed"]), 0, "{fleet}");
    // The broker's log is the ground truth here: mosquitto 2.0's
    // `clients/connected` miscounts when a client id reconnects while its
    // old connection is closing, as a restarted device's does.
    let log = broker.log();
    let opened = log
        .lines()
        .filter(|l| l.contains("New client connected") && !l.contains(" as observer-"))
        .count() as u64;
    assert_eq!(opened, connects);
    assert_eq!(log.matches(" disconnected.").count() as u64, connects);
}

#[test]
fn a_mixed_journey_counts_http_and_mqtt_against_both_servers() {
    let target = common::Target::start();
    let broker = Mosquitto::start("mqtt-journey");
    let base = format!("BASE_URL={}", target.url);
    let url = format!("MQTT_URL={}", broker.url());
    let json = scratch("mqtt-journey").join("r.json");
    let series = scratch("mqtt-journey-series").join("t.ndjson");
    let outs = [
        format!("json={}", json.display()),
        format!("ndjson={}", series.display()),
    ];
    let c = component("journey");
    let args = [
        "run",
        c.to_str().unwrap_or_default(),
        "--quiet",
        "--vus",
        "5",
        "--duration",
        "3s",
        "-e",
        &base,
        "-e",
        &url,
        "-e",
        "READINGS=4",
        "--out",
        &outs[0],
        "--out",
        &outs[1],
    ];
    let r = common::run(&args, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let s = summary(&json);
    let sessions = n(&s["iterations"]["ok"]);
    assert!(sessions >= 10, "{sessions} sessions");
    // One login per session, counted by the target too.
    assert_eq!(common::total_requests(&s), target.requests());
    assert!(target.requests() >= sessions);
    // One MQTT connection and four readings per completed session.
    let car = row(&s, "car");
    let telemetry = row(&s, "telemetry");
    assert!(n(&car["connects"]) >= sessions);
    assert!(n(&telemetry["published"]) >= 4 * sessions);
    let sys = broker.sys(&["publish/messages/received"]);
    assert_eq!(sys["publish/messages/received"], n(&telemetry["published"]));
    // The time series carries the MQTT rows too, adding up to the summary.
    let text = std::fs::read_to_string(&series).expect("read the series");
    let published: u64 = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| n(&v["mqtt"]["telemetry"]["publish"]["count"]))
        .sum();
    assert_eq!(published, n(&telemetry["published"]));
}

#[test]
fn mqtts_connects_with_insecure_and_is_a_typed_tls_error_without() {
    let broker = Mosquitto::start_tls("mqtt-tls");
    let url = format!("MQTT_URL=mqtts://127.0.0.1:{}", broker.port);
    let env = [
        "-e",
        &url,
        "-e",
        "DEVICES=3",
        "-e",
        "PERIOD_MS=200",
        "-e",
        "DURATION_S=2",
    ];
    let mut insecure = env.to_vec();
    insecure.push("--insecure");
    let (r, s) = common::run_example("iot", "mqtt-tls", &insecure);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(n(&row(&s, "fleet")["connects"]), 4, "{}", s["mqtt"]);
    assert_eq!(n(&row(&s, "fleet")["failed"]), 0, "{}", s["mqtt"]);
    let published = n(&row(&s, "telemetry")["published"]);
    assert!(published >= 15, "{published}");
    let sys = broker.sys(&["publish/messages/received"]);
    assert_eq!(sys["publish/messages/received"], published);

    // The self-signed certificate is refused without --insecure.
    let (r, s) = common::run_example("iot", "mqtt-tls-verify", &env);
    assert!(n(&row(&s, "fleet")["errors"]["tls"]) > 0, "{}", s["mqtt"]);
    assert!(r.stderr.contains("MQTT TLS error"), "{}", r.stderr);
}

#[test]
fn every_mqtt_and_nats_host_call_works_end_to_end() {
    let broker = Mosquitto::start("messaging-tour");
    let server = common::brokers::Nats::start("messaging-tour");
    let mqtt_url = format!("MQTT_URL={}", broker.url());
    let nats_url = format!("NATS_URL={}", server.url());
    let (r, s) = common::run_example(
        "messaging-tour",
        "messaging-tour",
        &[
            "-e",
            &mqtt_url,
            "-e",
            &nats_url,
            "--vus",
            "3",
            "--iterations",
            "2",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(n(&s["iterations"]["ok"]), 6, "stderr:\n{}", r.stderr);
    let checks = s["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 12, "{checks:?}");
    for c in checks {
        assert_eq!(n(&c["fail"]), 0, "failed: {c}");
    }
    // Three publishes per iteration under one name, each received once.
    let published = row(&s, "tour-publish");
    assert_eq!(n(&published["published"]), 18);
    assert_eq!(n(&row(&s, "tour-wildcard")["received"]), 18);
    // Loopback delivers in well under a second, and the percentiles are
    // in order.
    let latency = &row(&s, "tour-wildcard")["message_latency_ms"];
    let at = |k: &str| latency[k].as_f64().unwrap_or(-1.0);
    assert!(
        0.0 < at("p50") && at("p50") <= at("max") && at("max") < 1_000.0,
        "{latency}"
    );
    // The no-responders request and the invalid subject are counted.
    let nats = s["nats"].as_array().expect("nats rows");
    let errors: u64 = nats.iter().map(|r| n(&r["errors"]["no-responders"])).sum();
    assert_eq!(errors, 6);
    assert_eq!(n(&row(&s, "tour/#")["errors"]["invalid-argument"]), 6);
    let space = nats.iter().find(|r| r["name"] == "has space").expect("row");
    assert_eq!(n(&space["errors"]["invalid-argument"]), 6);
}
