//! An MQTT IoT device fleet: each VU of the `device` class is one device
//! that connects once, with its own client id, and publishes a telemetry
//! reading every second (constant pacing) for the whole run, at QoS 1 with
//! a send timestamp. A `dashboard` VU subscribes to all devices' telemetry,
//! so the summary shows the end-to-end latency. A device whose connection
//! is lost connects again on its next reading.
//!
//! With `DEVICES_PER_VU` above 1, each VU plays that many devices (each
//! with its own connection and client id): a fleet of 10,000 devices then
//! needs a tenth of the VUs, and of their memory.
//!
//! Settings: `MQTT_URL` (default `mqtt://127.0.0.1:1883`), `DEVICES`
//! (default 100; VUs of the class), `DEVICES_PER_VU` (default 1),
//! `PERIOD_MS` (default 1000), `DURATION_S` (default 30),
//! `MQTT_USER`/`MQTT_PASSWORD` (optional), `CRASH_EVERY` (optional: a
//! firmware bug that panics a device's VU on every Nth reading, to watch the
//! sandbox contain it and the broker see the connection closed cleanly).

use std::time::Duration;

use guest_sdk::mqtt::{self, Connect, Persistent, QoS};
use guest_sdk::{check, vu, Class, Options, Scenario};

use std::cell::RefCell;

thread_local! {
    /// The dashboard's connection.
    static CONN: Persistent = const { Persistent::new() };
    /// This VU's devices, one connection each.
    static DEVICES: RefCell<Vec<Persistent>> = const { RefCell::new(Vec::new()) };
}

fn env_num(key: &str, default: u64) -> u64 {
    vu::env(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn connect(client_id: String) -> Result<mqtt::Connection, mqtt::Error> {
    let mut c = Connect::new(vu::env_or("MQTT_URL", "mqtt://127.0.0.1:1883"))
        .client_id(client_id)
        .keep_alive(Duration::from_secs(30))
        .name("fleet");
    if let Some(user) = vu::env("MQTT_USER") {
        c = c.credentials(user, vu::env_or("MQTT_PASSWORD", ""));
    }
    c.connect()
}

struct Iot;

impl Scenario for Iot {
    fn options() -> Options {
        Options::new()
            .duration(Duration::from_secs(env_num("DURATION_S", 30)))
            .with_class(Class::new("dashboard", 1))
            .with_class(
                Class::new("device", env_num("DEVICES", 100) as u32)
                    .pacing(Duration::from_millis(env_num("PERIOD_MS", 1000))),
            )
    }

    fn run(class: &str) -> guest_sdk::Result {
        if class == "dashboard" {
            let r = dashboard();
            if r.is_err() {
                // Do not hammer a broker that is down.
                guest_sdk::sleep(Duration::from_millis(250));
            }
            return r;
        }
        let per_vu = env_num("DEVICES_PER_VU", 1).max(1);
        DEVICES.with(|devices| {
            let mut devices = devices.borrow_mut();
            while (devices.len() as u64) < per_vu {
                devices.push(Persistent::new());
            }
            let crash_every = env_num("CRASH_EVERY", 0);
            if crash_every > 0 && vu::iteration() % crash_every == crash_every - 1 {
                panic!("firmware bug on reading {}", vu::iteration());
            }
            for (k, device) in devices.iter().enumerate() {
                let id = u64::from(vu::id()) * per_vu + k as u64;
                // A reading that drifts a little per device and iteration.
                let reading = 20.0 + (id % 10) as f64 + (vu::iteration() % 7) as f64 * 0.1;
                let payload =
                    guest_sdk::stamp(format!("{{\"device\":{id},\"temp\":{reading:.1}}}"));
                device.with(
                    || connect(format!("device-{id}")),
                    |c| {
                        c.message(&format!("devices/{id}/telemetry"), &payload)
                            .qos(QoS::AtLeastOnce)
                            .name("telemetry")
                            .send()
                    },
                )?;
            }
            Ok::<_, mqtt::Error>(())
        })?;
        Ok(())
    }
}

fn dashboard() -> guest_sdk::Result {
    let end = vu::now() + Duration::from_secs(1);
    CONN.with(|c| {
        c.with(
            || {
                let c = connect(format!("dashboard-{}", vu::id()))?;
                c.subscribe_named("devices/+/telemetry", QoS::AtMostOnce, "telemetry")?;
                Ok(c)
            },
            |c| {
                while let Some(left) = end.checked_sub(vu::now()) {
                    if let Some(m) = c.next_message(left)? {
                        let body =
                            String::from_utf8_lossy(guest_sdk::unstamp(&m.payload)).into_owned();
                        check("telemetry has a temperature", body.contains("\"temp\""));
                    }
                }
                Ok(())
            },
        )
    })?;
    Ok(())
}

guest_sdk::export_scenario!(Iot);
