//! A mixed journey, as a connected-car app might run it: log in over HTTP,
//! then open an MQTT connection and send a few telemetry readings at QoS 1,
//! then disconnect. Every iteration is one whole session, so the summary
//! shows HTTP login latency, MQTT connect latency and publish latency side
//! by side.
//!
//! Settings: `BASE_URL` (default `http://127.0.0.1:8080`), `MQTT_URL`
//! (default `mqtt://127.0.0.1:1883`), `READINGS` per session (default 5).

use std::time::Duration;

use guest_sdk::http::Request;
use guest_sdk::mqtt::{Connect, QoS};
use guest_sdk::{check, group, vu, Options, Scenario};

struct Journey;

impl Scenario for Journey {
    fn options() -> Options {
        Options::new()
            .duration(Duration::from_secs(10))
            .class("driver", 10)
            .threshold("checks rate==1")
            .threshold("mqtt_publish p(95)<250ms")
    }

    fn run(_class: &str) -> guest_sdk::Result {
        let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");
        let login = group("login", || {
            Request::post(format!("{base}/"))
                .header("content-type", "application/json")
                .body(format!("{{\"user\":\"driver-{}\"}}", vu::id()))
                .name("login")
                .send()
        })?;
        check("logged in", login.status() == 200);
        let car = Connect::new(vu::env_or("MQTT_URL", "mqtt://127.0.0.1:1883"))
            .client_id(format!("car-{}-{}", vu::id(), vu::iteration()))
            .name("car")
            .connect()?;
        let readings = vu::env("READINGS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5u32);
        for n in 0..readings {
            let reading = format!("{{\"car\":{},\"speed\":{}}}", vu::id(), 40 + n);
            car.message(
                &format!("cars/{}/telemetry", vu::id()),
                guest_sdk::stamp(reading),
            )
            .qos(QoS::AtLeastOnce)
            .name("telemetry")
            .send()?;
            guest_sdk::sleep(Duration::from_millis(50));
        }
        car.disconnect()?;
        Ok(())
    }
}

guest_sdk::export_scenario!(Journey);
