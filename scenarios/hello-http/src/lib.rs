//! The demo scenario: each VU requests `BASE_URL`, checks the answer, then
//! thinks for `THINK_MS` milliseconds (default 100) before its next
//! iteration.

use std::time::Duration;

use guest_sdk::{check, http, sleep, vu};

fn iteration() -> guest_sdk::Result {
    let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");
    let think: u64 = vu::env_or("THINK_MS", "100").parse()?;
    let r = http::Request::get(format!("{base}/")).discard_body().send()?;
    check("status is 200", r.status() == 200);
    sleep(Duration::from_millis(think));
    Ok(())
}

guest_sdk::main!(iteration);
