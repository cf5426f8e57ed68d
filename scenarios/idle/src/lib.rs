//! VUs that only sleep, `SLEEP_MS` milliseconds per iteration (default
//! 1000): what the runner costs per parked VU.

use std::time::Duration;

use guest_sdk::{sleep, vu};

fn iteration() -> guest_sdk::Result {
    let ms: u64 = vu::env_or("SLEEP_MS", "1000").parse()?;
    sleep(Duration::from_millis(ms));
    Ok(())
}

guest_sdk::main!(iteration);
