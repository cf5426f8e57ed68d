//! NATS publish/subscribe with a queue group.
//!
//! - `worker` (`WORKERS` VUs, default 3) subscribe to `orders.*` in the queue
//!   group `workers`, so each order reaches exactly one of them, and read
//!   their messages, checking each carries its send timestamp.
//! - `shop` (`SHOPS` VUs, default 10) publish `ORDERS` stamped orders each
//!   (default 100), one per iteration every `INTERVAL_MS` (default 10), to
//!   `orders.<vu>`, all counted under the metric name `orders`. They wait
//!   `START_DELAY_MS` (default 1000) first, so the workers are subscribed.
//!
//! Settings: `NATS_URL` (default `nats://127.0.0.1:4222`, credentials as
//! `nats://user:password@host:port`), `DURATION_S` (default 10), and
//! `JETSTREAM=1` to publish through JetStream, each order acknowledged by
//! the stream that stores it (create a stream capturing `orders.>` first).

use std::cell::RefCell;
use std::time::Duration;

use guest_sdk::nats::{self, Connect, Connection, Subscription};
use guest_sdk::{check, vu, Class, Options, Scenario};

thread_local! {
    static CONN: RefCell<Option<Connection>> = const { RefCell::new(None) };
    static SUB: RefCell<Option<Subscription>> = const { RefCell::new(None) };
}

fn env_num(key: &str, default: u64) -> u64 {
    vu::env(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn connect() -> Result<Connection, nats::Error> {
    Connect::new(vu::env_or("NATS_URL", "nats://127.0.0.1:4222"))
        .name("server")
        .connect()
}

struct PubSub;

impl Scenario for PubSub {
    fn options() -> Options {
        Options::new()
            .duration(Duration::from_secs(env_num("DURATION_S", 10)))
            .with_class(Class::new("worker", env_num("WORKERS", 3) as u32))
            .with_class(
                Class::new("shop", env_num("SHOPS", 10) as u32)
                    .iterations(env_num("ORDERS", 100))
                    .pacing(Duration::from_millis(env_num("INTERVAL_MS", 10))),
            )
            .threshold("nats_errors count==0")
    }

    fn run(class: &str) -> guest_sdk::Result {
        let r = CONN.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.is_none() {
                *slot = Some(connect()?);
            }
            let Some(c) = slot.as_ref() else {
                return Err("no connection".into());
            };
            if class == "worker" {
                work(c)
            } else {
                shop(c)
            }
        });
        if r.is_err() {
            // Do not hammer a server that is down.
            guest_sdk::sleep(Duration::from_millis(250));
        }
        r
    }
}

fn shop(c: &Connection) -> guest_sdk::Result {
    if vu::iteration() == 0 {
        guest_sdk::sleep(Duration::from_millis(env_num("START_DELAY_MS", 1000)));
    }
    let order = format!("{{\"shop\":{},\"order\":{}}}", vu::id(), vu::iteration());
    let subject = format!("orders.{}", vu::id());
    if vu::env("JETSTREAM").is_some_and(|v| v == "1") {
        // Stored by the stream that captures `orders.>`, and acknowledged.
        let seq = c.jetstream_publish_named(&subject, guest_sdk::stamp(order), "orders")?;
        check("stored with a sequence number", seq > 0);
    } else {
        c.publish_with(&subject, guest_sdk::stamp(order), None, &[], Some("orders"))?;
    }
    Ok(())
}

/// Reads orders for about a second per iteration.
fn work(c: &Connection) -> guest_sdk::Result {
    SUB.with(|sub| {
        let mut sub = sub.borrow_mut();
        if sub.is_none() {
            *sub = Some(c.subscribe_named("orders.*", Some("workers"), "orders")?);
        }
        let Some(s) = sub.as_ref() else {
            return Err("no subscription".into());
        };
        let end = vu::now() + Duration::from_secs(1);
        while let Some(left) = end.checked_sub(vu::now()) {
            if let Some(m) = s.next_message(left)? {
                check("order is stamped", m.latency.is_some());
            }
        }
        Ok(())
    })
}

guest_sdk::export_scenario!(PubSub);
