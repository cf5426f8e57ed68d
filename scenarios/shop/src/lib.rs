//! A scenario that brings its own load model, the gobench way: three VU
//! classes with their own counts, executors and settings, and thresholds.
//! `runner run shop.wasm -e BASE_URL=...` needs no other flag; flags such as
//! `--vus`, `--rate` or `--stage` override the classes' own settings.
//!
//! - `api`: an open model, 20 requests per second whatever the latency.
//! - `browser`: a closed model ramping up to 4 VUs, then holding.
//! - `batch`: 2 VUs, 3 iterations each, one every 500 ms (constant pacing),
//!   with a class-specific environment value.

use std::time::Duration;

use guest_sdk::http::Request;
use guest_sdk::{check, vu, Class, Options, Scenario};

struct Shop;

fn get(path: &str, name: &str) -> guest_sdk::Result {
    let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");
    let r = Request::get(format!("{base}{path}"))
        .name(name)
        .discard_body()
        .send()?;
    check(&format!("{name} status 200"), r.status() == 200);
    Ok(())
}

impl Scenario for Shop {
    fn options() -> Options {
        Options::new()
            .duration(Duration::from_secs(3))
            .with_class(Class::new("api", 2).rate(20.0).max_vus(10))
            .with_class(
                Class::new("browser", 0)
                    .stage(Duration::from_secs(1), 4.0)
                    .stage(Duration::from_secs(2), 4.0)
                    .think_time(Duration::from_millis(100)),
            )
            .with_class(
                Class::new("batch", 2)
                    .iterations(3)
                    .pacing(Duration::from_millis(500))
                    .env("ROLE", "nightly"),
            )
            .threshold("checks rate==1")
    }

    fn run(class: &str) -> guest_sdk::Result {
        match class {
            "api" => get("/", "api"),
            "browser" => get("/", "browser"),
            _ => get("/", &format!("batch-{}", vu::env_or("ROLE", "none"))),
        }
    }
}

guest_sdk::export_scenario!(Shop);
