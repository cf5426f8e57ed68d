//! The demo scenario: each VU requests `BASE_URL`, checks the answer, then
//! thinks for `THINK_MS` milliseconds (default 100; 0 for none) before its
//! next iteration. `HTTP_VERSION=2` forces HTTP/2 (prior knowledge over
//! `http://`), `HTTP_VERSION=1` HTTP/1.1; by default `https://` negotiates.
//! `NAMES=N` names the requests `page-0` to `page-N-1` in turn (for
//! benchmarks of many request names); `NAME_BY_VU=1` names each VU's
//! requests `vu-ID` (for tests that VU ids are unique across workers).
//! `RANDOM_PATHS=1` requests `BASE_URL/VU/N` with a random N in each
//! iteration (for tests that `--seed` replays a run).

use std::sync::OnceLock;
use std::time::Duration;

use guest_sdk::{check, http, random, sleep, vu};

struct Config {
    url: String,
    think: Duration,
    version: Option<u8>,
    names: u64,
    by_vu: bool,
    random_paths: bool,
}

/// Read once per VU instance: the environment does not change in a run.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config {
        url: format!("{}/", vu::env_or("BASE_URL", "http://127.0.0.1:8080")),
        think: Duration::from_millis(vu::env_or("THINK_MS", "100").parse().unwrap_or(100)),
        version: vu::env("HTTP_VERSION").and_then(|v| v.parse().ok()),
        names: vu::env("NAMES").and_then(|v| v.parse().ok()).unwrap_or(0),
        by_vu: vu::env("NAME_BY_VU").is_some(),
        random_paths: vu::env("RANDOM_PATHS").is_some(),
    })
}

fn iteration() -> guest_sdk::Result {
    let c = config();
    let mut req = if c.random_paths {
        let n = random::range(0, 1_000_000);
        http::Request::get(format!("{}{}/{n}", c.url, vu::id())).name("random")
    } else {
        http::Request::get(c.url.as_str())
    }
    .discard_body();
    if c.by_vu {
        req = req.name(format!("vu-{}", vu::id()));
    } else if c.names > 0 {
        let n = (vu::iteration() + u64::from(vu::id())) % c.names;
        req = req.name(format!("page-{n}"));
    }
    req = match c.version {
        Some(1) => req.http1(),
        Some(2) => req.http2(),
        _ => req,
    };
    let r = req.send()?;
    check("status is 200", r.status() == 200);
    if !c.think.is_zero() {
        sleep(c.think);
    }
    Ok(())
}

guest_sdk::main!(iteration);
