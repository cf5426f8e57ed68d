//! MQTT fan-in: many publishers, one subscriber class.
//!
//! - `subscriber` (`SUBSCRIBERS` VUs, default 1) connects once, subscribes
//!   to `fanin/#` and reads every message, checking that each carries its
//!   send timestamp (the host records the end-to-end latency).
//! - `publisher` (`PUBLISHERS` VUs, default 20) publish `MESSAGES` stamped
//!   messages each (default 50), one per iteration every `INTERVAL_MS`
//!   (default 20), to their own topic `fanin/<vu>`, all counted under the
//!   metric name `fanin`. They wait `START_DELAY_MS` (default 1000) first, so
//!   the subscribers are listening.
//!
//! Other settings: `MQTT_URL` (default `mqtt://127.0.0.1:1883`), `QOS` (0, 1
//! or 2; default 1), `MQTT_VERSION` (3 or 5; default 3), `DURATION_S`
//! (default 10).

use std::time::Duration;

use guest_sdk::mqtt::{self, Connect, Persistent, QoS};
use guest_sdk::{check, vu, Class, Options, Scenario};

thread_local!(static CONN: Persistent = const { Persistent::new() });

fn env_num(key: &str, default: u64) -> u64 {
    vu::env(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn qos() -> QoS {
    match env_num("QOS", 1) {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn connect() -> Result<mqtt::Connection, mqtt::Error> {
    let mut c = Connect::new(vu::env_or("MQTT_URL", "mqtt://127.0.0.1:1883")).name("broker");
    if env_num("MQTT_VERSION", 3) == 5 {
        c = c.v5();
    }
    c.connect()
}

struct FanIn;

impl Scenario for FanIn {
    fn options() -> Options {
        let publishers = env_num("PUBLISHERS", 20) as u32;
        Options::new()
            .duration(Duration::from_secs(env_num("DURATION_S", 10)))
            .with_class(Class::new("subscriber", env_num("SUBSCRIBERS", 1) as u32))
            .with_class(
                Class::new("publisher", publishers)
                    .iterations(env_num("MESSAGES", 50))
                    .pacing(Duration::from_millis(env_num("INTERVAL_MS", 20))),
            )
            .threshold("mqtt_errors count==0")
    }

    fn run(class: &str) -> guest_sdk::Result {
        if class == "subscriber" {
            let r = subscribe();
            if r.is_err() {
                // Do not hammer a broker that is down.
                guest_sdk::sleep(Duration::from_millis(250));
            }
            return r;
        }
        if vu::iteration() == 0 {
            guest_sdk::sleep(Duration::from_millis(env_num("START_DELAY_MS", 1000)));
        }
        let topic = format!("fanin/{}", vu::id());
        let payload =
            guest_sdk::stamp(format!("{{\"vu\":{},\"n\":{}}}", vu::id(), vu::iteration()));
        CONN.with(|c| {
            c.with(connect, |c| {
                c.message(&topic, &payload).qos(qos()).name("fanin").send()
            })
        })?;
        Ok(())
    }
}

/// Reads messages for about a second per iteration.
fn subscribe() -> guest_sdk::Result {
    let end = vu::now() + Duration::from_secs(1);
    CONN.with(|c| {
        c.with(
            || {
                let c = connect()?;
                c.subscribe_named("fanin/#", qos(), "fanin")?;
                Ok(c)
            },
            |c| {
                while let Some(left) = end.checked_sub(vu::now()) {
                    if let Some(m) = c.next_message(left)? {
                        check("message is stamped", m.latency.is_some());
                    }
                }
                Ok(())
            },
        )
    })?;
    Ok(())
}

guest_sdk::export_scenario!(FanIn);
