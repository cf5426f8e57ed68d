//! Every MQTT and NATS host call, each outcome checked: the messaging
//! counterpart of `tour`, used by the tests. Each VU uses topics and
//! subjects of its own, so VUs do not see each other's messages.
//!
//! Settings: `MQTT_URL`, `NATS_URL` (defaults: the standard local ports).
//! `HOARD=1` makes each iteration a hoarder instead: it opens NATS
//! subscriptions and connections, then MQTT connections, keeping them all,
//! until the host refuses more (checked), for the tests of those limits.

use std::time::Duration;

use guest_sdk::mqtt::{self, QoS};
use guest_sdk::nats;
use guest_sdk::{check, vu};

const WAIT: Duration = Duration::from_secs(2);

fn iteration() -> guest_sdk::Result {
    if vu::env("HOARD").is_some() {
        return hoard();
    }
    mqtt_tour()?;
    nats_tour()?;
    Ok(())
}

fn mqtt_tour() -> guest_sdk::Result {
    let me = format!("{}-{}", vu::id(), vu::iteration());
    let c = mqtt::Connect::new(vu::env_or("MQTT_URL", "mqtt://127.0.0.1:1883"))
        .client_id(format!("tour-{me}"))
        .keep_alive(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .v5()
        .connect()?;
    check("mqtt: connected", c.is_connected());

    // A retained message reaches a later subscriber, flagged as retained.
    let retained = format!("tour/{me}/retained");
    c.message(&retained, b"kept")
        .qos(QoS::AtLeastOnce)
        .retain()
        .send()?;
    let granted = c.subscribe(&retained, QoS::ExactlyOnce)?;
    check("mqtt: subscription granted", granted == QoS::ExactlyOnce);
    let m = c.next_message(WAIT)?;
    check(
        "mqtt: retained message delivered as retained",
        m.as_ref().is_some_and(|m| m.retain && m.payload == b"kept"),
    );
    // Clear the retained message (an empty retained payload).
    c.unsubscribe(&retained)?;
    c.message(&retained, b"")
        .qos(QoS::AtLeastOnce)
        .retain()
        .send()?;

    // Wildcards, each QoS, and the end-to-end latency of stamped payloads.
    c.subscribe_named(&format!("tour/{me}/+/t"), QoS::ExactlyOnce, "tour-wildcard")?;
    for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        c.message(&format!("tour/{me}/{n}/t"), guest_sdk::stamp(b"x"))
            .qos(qos)
            .name("tour-publish")
            .send()?;
        let m = c.next_message(WAIT)?;
        check(
            "mqtt: wildcard delivery with latency",
            m.as_ref().is_some_and(|m| {
                m.topic == format!("tour/{me}/{n}/t")
                    && m.latency.is_some()
                    && guest_sdk::unstamp(&m.payload) == b"x"
            }),
        );
    }
    // After unsubscribing, nothing more arrives.
    c.unsubscribe(&format!("tour/{me}/+/t"))?;
    c.publish(&format!("tour/{me}/9/t"), b"late", QoS::AtLeastOnce)?;
    check(
        "mqtt: nothing after unsubscribe",
        c.next_message(Duration::from_millis(200))?.is_none(),
    );
    // Bad topics are typed errors, and the connection lives on.
    let bad = c.publish("tour/#", b"", QoS::AtMostOnce);
    check(
        "mqtt: wildcard topic refused as invalid",
        matches!(bad, Err(e) if matches!(e.kind(), mqtt::ErrorKind::InvalidArgument(_))),
    );
    check("mqtt: still connected", c.is_connected());
    c.disconnect()?;
    Ok(())
}

fn nats_tour() -> guest_sdk::Result {
    let me = format!("{}_{}", vu::id(), vu::iteration());
    let c = nats::Connect::new(vu::env_or("NATS_URL", "nats://127.0.0.1:4222"))
        .timeout(Duration::from_secs(5))
        .name("tour-server")
        .connect()?;
    check("nats: connected", c.is_connected());
    let subject = format!("tour.{me}.a");
    let sub = c.subscribe(&subject)?;
    let headers = vec![("x-tour".to_owned(), "yes".to_owned())];
    c.publish_with(
        &subject,
        guest_sdk::stamp(b"hi"),
        Some("tour.reply"),
        &headers,
        None,
    )?;
    let m = sub.next_message(WAIT)?;
    check(
        "nats: message with reply subject, headers and latency",
        m.as_ref().is_some_and(|m| {
            m.reply.as_deref() == Some("tour.reply")
                && m.headers.iter().any(|(k, v)| k == "x-tour" && v == "yes")
                && m.latency.is_some()
        }),
    );
    c.flush()?;
    // Nobody serves this subject: a typed error, quickly.
    let none = c.request_with(&format!("tour.{me}.nobody"), b"?", Some(WAIT), None);
    check(
        "nats: no responders is a typed error",
        matches!(none, Err(e) if matches!(e.kind(), nats::ErrorKind::NoResponders)),
    );
    // After unsubscribing, nothing more arrives.
    sub.unsubscribe()?;
    let sub2 = c.subscribe(&format!("tour.{me}.b"))?;
    c.publish(&subject, b"late")?;
    check(
        "nats: nothing on an unrelated subscription",
        sub2.next_message(Duration::from_millis(200))?.is_none(),
    );
    let bad = c.publish("has space", b"");
    check(
        "nats: subject with a space refused as invalid",
        matches!(bad, Err(e) if matches!(e.kind(), nats::ErrorKind::InvalidArgument(_))),
    );
    Ok(())
}

/// Opens subscriptions and connections without closing any, past the
/// host's limits; each refusal must be an `invalid-argument` error.
fn hoard() -> guest_sdk::Result {
    let nats_url = vu::env_or("NATS_URL", "nats://127.0.0.1:4222");
    let first = nats::connect(nats_url.as_str())?;
    let mut subscriptions = Vec::new();
    let refused = loop {
        match first.subscribe(&format!("hoard.{}", subscriptions.len())) {
            Ok(s) if subscriptions.len() < 5_000 => subscriptions.push(s),
            Ok(_) => break false,
            Err(e) => break matches!(e.kind(), nats::ErrorKind::InvalidArgument(_)),
        }
    };
    check("nats: subscriptions past the limit are refused", refused);
    let mut connections = vec![first];
    let refused = loop {
        match nats::connect(nats_url.as_str()) {
            Ok(c) if connections.len() < 5_000 => connections.push(c),
            Ok(_) => break false,
            Err(e) => break matches!(e.kind(), nats::ErrorKind::InvalidArgument(_)),
        }
    };
    check("nats: connections past the limit are refused", refused);
    let mqtt_url = vu::env_or("MQTT_URL", "mqtt://127.0.0.1:1883");
    let mut devices = Vec::new();
    let refused = loop {
        let id = format!("hoard-{}-{}", vu::id(), devices.len());
        match mqtt::Connect::new(mqtt_url.as_str())
            .client_id(id)
            .connect()
        {
            Ok(c) if devices.len() < 10_000 => devices.push(c),
            Ok(_) => break false,
            Err(e) => break matches!(e.kind(), mqtt::ErrorKind::InvalidArgument(_)),
        }
    };
    check("mqtt: connections past the limit are refused", refused);
    guest_sdk::metrics::gauge("hoard_nats_subscriptions", subscriptions.len() as f64);
    guest_sdk::metrics::gauge("hoard_nats_connections", connections.len() as f64);
    guest_sdk::metrics::gauge("hoard_mqtt_connections", devices.len() as f64);
    Ok(())
}

guest_sdk::main!(iteration);
