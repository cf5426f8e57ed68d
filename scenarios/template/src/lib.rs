//! A new scenario (what `runner new` writes): edit `iteration`. Build with
//! `. ./wasm-env.sh && cargo component build --release --target $WASM_TARGET`;
//! run with `runner run target/$WASM_TARGET/release/<name>.wasm --vus 10 -d 30s`.

use std::time::Duration;

use guest_sdk::{check, http, sleep, vu};

/// One iteration of one virtual user. Returning an error counts a failed
/// iteration; a panic ends only this VU's iteration.
fn iteration() -> guest_sdk::Result {
    let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");
    let r = http::get(format!("{base}/"))?;
    check("status is 200", r.status() == 200);
    sleep(Duration::from_secs(1));
    Ok(())
}

guest_sdk::main!(iteration);
