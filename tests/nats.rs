//! NATS against a real nats-server: counts checked against the server's
//! own monitoring endpoint, request/reply between two VU classes,
//! JetStream acknowledgements against the stream's own state, a server
//! killed mid-run, and typed errors for bad URLs and wrong credentials.

mod common;

use std::time::Duration;

use common::brokers::Nats;
use common::{component, num as n, run_env, scratch, summary};

fn row<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    common::messaging_row(s, "nats", name)
}

#[test]
fn queue_group_counts_match_the_servers_own_counters() {
    let server = Nats::start("nats-pubsub");
    let url = format!("NATS_URL={}", server.url());
    let (r, s) = run_env(
        "nats-pubsub",
        "nats-pubsub",
        &[
            &url,
            "SHOPS=10",
            "ORDERS=50",
            "WORKERS=3",
            "DURATION_S=4",
            "START_DELAY_MS=500",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let orders = row(&s, "orders");
    assert_eq!(n(&orders["published"]), 500, "{orders}");
    // The queue group hands each order to exactly one worker.
    assert_eq!(n(&orders["received"]), 500, "{orders}");
    assert_eq!(n(&orders["failed"]), 0, "{orders}");
    common::assert_latency(&orders["message_latency_ms"], 10_000.0);
    assert_eq!(n(&row(&s, "server")["connects"]), 13);
    assert_eq!(server.varz("in_msgs"), 500);
    assert_eq!(server.varz("out_msgs"), 500);
    // Every connection closed with its VU.
    assert_eq!(server.varz("connections"), 0);
}

#[test]
fn request_reply_between_two_classes_matches_the_server() {
    let server = Nats::start("nats-rpc");
    let url = format!("NATS_URL={}", server.url());
    let (r, s) = run_env(
        "nats-rpc",
        "nats-rpc",
        &[
            &url,
            "REQUESTERS=5",
            "REQUESTS=100",
            "RESPONDERS=2",
            "DURATION_S=4",
            "START_DELAY_MS=500",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let quote = row(&s, "quote");
    assert_eq!(n(&quote["requests"]), 500, "{quote}");
    common::assert_latency(&quote["request_ms"], 10_000.0);
    assert_eq!(n(&row(&s, "quote-requests")["received"]), 500);
    assert_eq!(n(&row(&s, "reply")["published"]), 500);
    assert_eq!(n(&s["checks"][0]["fail"]), 0, "{}", s["checks"]);
    assert_eq!(n(&s["checks"][0]["pass"]), 500, "{}", s["checks"]);
    // 500 requests in and 500 replies in; each delivered once.
    assert_eq!(server.varz("in_msgs"), 1000);
    assert_eq!(server.varz("out_msgs"), 1000);
}

#[test]
fn jetstream_publishes_are_acknowledged_and_stored() {
    let server = Nats::start_jetstream("nats-js");
    let created = server.request(
        "$JS.API.STREAM.CREATE.ORDERS",
        r#"{"name":"ORDERS","subjects":["orders.>"],"storage":"memory"}"#,
    );
    assert!(
        created.contains("\"ORDERS\""),
        "stream not created: {created}"
    );
    let url = format!("NATS_URL={}", server.url());
    let (r, s) = run_env(
        "nats-pubsub",
        "nats-js",
        &[
            &url,
            "JETSTREAM=1",
            "SHOPS=5",
            "ORDERS=20",
            "DURATION_S=3",
            "START_DELAY_MS=500",
        ],
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let orders = row(&s, "orders");
    assert_eq!(n(&orders["published"]), 100, "{orders}");
    assert_eq!(n(&orders["received"]), 100, "{orders}");
    let info = server.request("$JS.API.STREAM.INFO.ORDERS", "");
    let info: serde_json::Value = serde_json::from_str(&info).expect("stream info JSON");
    assert_eq!(n(&info["state"]["messages"]), 100, "{info}");
}

#[test]
fn a_server_killed_mid_run_is_counted_and_survived() {
    let mut server = Nats::start("nats-kill");
    let json = scratch("nats-kill").join("r.json");
    let out = format!("json={}", json.display());
    let url = format!("NATS_URL={}", server.url());
    let c = component("nats-rpc");
    let child = std::process::Command::new(common::runner())
        .args([
            "run",
            c.to_str().unwrap_or_default(),
            "--quiet",
            "--out",
            &out,
        ])
        .args(["-e", &url, "-e", "REQUESTERS=5", "-e", "DURATION_S=8"])
        .args(["-e", "START_DELAY_MS=200", "-e", "INTERVAL_MS=20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the runner");
    std::thread::sleep(Duration::from_millis(2_500));
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    let r = common::wait(child, Duration::from_secs(40));
    assert!(r.elapsed < Duration::from_secs(20), "took {:?}", r.elapsed);
    // A failed threshold (p99 of a request that waited out the outage) is
    // the only acceptable non-zero exit.
    assert!(
        matches!(r.code, Some(0) | Some(99)),
        "stderr:\n{}",
        r.stderr
    );
    let s = summary(&json);
    // Each of the 7 connections saw the server go.
    assert!(
        n(&row(&s, "server")["errors"]["disconnected"]) >= 7,
        "{}",
        s["nats"]
    );
    let quote = row(&s, "quote");
    assert!(n(&quote["failed"]) > 0, "{quote}");
    assert!(n(&s["iterations"]["failed"]) > 0);
    // The connections came back by themselves: the new server (counting
    // from zero) answered requests.
    assert!(server.varz("in_msgs") >= 100, "requests after the restart");
    assert!(server.varz("connections") == 0, "connections left open");
}

#[test]
fn bad_urls_and_wrong_credentials_are_typed_errors() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("NATS_URL=nats://127.0.0.1:{closed}");
    let with = |url: &str, name: &str| {
        let env = [
            url,
            "SHOPS=1",
            "WORKERS=1",
            "ORDERS=3",
            "DURATION_S=2",
            "START_DELAY_MS=100",
        ];
        run_env("nats-pubsub", name, &env)
    };
    let (r, s) = with(&url, "nats-refused");
    // Every failure is the refusal, each counted once.
    let server = row(&s, "server");
    let refused = n(&server["errors"]["connection-refused"]);
    assert!(refused > 0 && refused == n(&server["failed"]), "{server}");
    assert!(r.stderr.contains("NATS connection refused"), "{}", r.stderr);

    let (r, s) = with("NATS_URL=mqtt://127.0.0.1:1", "nats-bad-url");
    let invalid = row(&s, "invalid");
    let refused = n(&invalid["errors"]["invalid-argument"]);
    assert!(refused > 0 && refused == n(&invalid["failed"]), "{invalid}");
    assert!(
        r.stderr
            .contains("scheme \"mqtt\" is not supported: use nats:// or tls://"),
        "{}",
        r.stderr
    );

    let server = Nats::start_with_password("nats-auth", "shop", "s3cret");
    let wrong = format!("NATS_URL=nats://shop:wrong@127.0.0.1:{}", server.port);
    let (r, s) = with(&wrong, "nats-auth");
    assert!(
        n(&row(&s, "server")["errors"]["not-authorized"]) > 0,
        "{}",
        s["nats"]
    );
    assert_eq!(n(&row(&s, "server")["connects"]), 0);
    assert!(r.stderr.contains("NATS not authorized"), "{}", r.stderr);

    let right = format!("NATS_URL=nats://shop:s3cret@127.0.0.1:{}", server.port);
    let (_, s) = with(&right, "nats-auth-ok");
    assert_eq!(n(&row(&s, "server")["connects"]), 2, "{}", s["nats"]);
    assert_eq!(n(&row(&s, "orders")["published"]), 3, "{}", s["nats"]);
}

#[test]
fn tls_connects_with_insecure_and_is_a_typed_tls_error_without() {
    let server = Nats::start_tls("nats-tls");
    let url = format!("NATS_URL=tls://127.0.0.1:{}", server.port);
    let env = [
        "-e",
        &url,
        "-e",
        "SHOPS=2",
        "-e",
        "WORKERS=1",
        "-e",
        "ORDERS=5",
        "-e",
        "DURATION_S=2",
        "-e",
        "START_DELAY_MS=200",
    ];
    let mut insecure = env.to_vec();
    insecure.push("--insecure");
    let (r, s) = common::run_example("nats-pubsub", "nats-tls", &insecure);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(n(&row(&s, "orders")["published"]), 10, "{}", s["nats"]);
    assert_eq!(n(&row(&s, "orders")["received"]), 10, "{}", s["nats"]);
    assert_eq!(server.varz("in_msgs"), 10);

    let (r, s) = common::run_example("nats-pubsub", "nats-tls-verify", &env);
    assert!(n(&row(&s, "server")["errors"]["tls"]) > 0, "{}", s["nats"]);
    assert!(r.stderr.contains("NATS TLS error"), "{}", r.stderr);
}

#[test]
fn a_vu_that_hoards_connections_and_subscriptions_is_refused_at_the_limits() {
    let server = Nats::start("nats-hoard");
    let broker = common::brokers::Mosquitto::start("mqtt-hoard");
    let before = server.varz("total_connections");
    let dir = scratch("hoard");
    let json = dir.join("r.json");
    let c = component("messaging-tour");
    let r = common::run(
        &[
            "run",
            c.to_str().unwrap(),
            "--vus",
            "1",
            "--iterations",
            "1",
            "-e",
            "HOARD=1",
            "-e",
            &format!("NATS_URL={}", server.url()),
            "-e",
            &format!("MQTT_URL={}", broker.url()),
            "--quiet",
            "--out",
            &format!("json={}", json.display()),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let s = summary(&json);
    // Every refusal came at the limit, as a typed error.
    for c in s["checks"].as_array().expect("checks") {
        assert_eq!((n(&c["pass"]), n(&c["fail"])), (1, 0), "{c}");
    }
    assert_eq!(s["checks"].as_array().unwrap().len(), 3);
    let held = |name: &str| s["gauges"][name][0].as_f64().unwrap_or(-1.0);
    assert_eq!(held("hoard_nats_subscriptions"), 1024.0, "{}", s["gauges"]);
    assert_eq!(held("hoard_nats_connections"), 256.0, "{}", s["gauges"]);
    assert_eq!(held("hoard_mqtt_connections"), 4096.0, "{}", s["gauges"]);
    // The server saw exactly that many connections, and all were closed
    // when the iteration ended.
    assert_eq!(server.varz("total_connections") - before, 256);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.varz("connections") > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.varz("connections"), 0, "connections left open");
    let rss = s["meta"]["runner_peak_rss"].as_u64().expect("peak RSS");
    assert!(rss < 600 << 20, "the runner grew to {} MiB", rss >> 20);
}
