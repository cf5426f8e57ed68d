//! NATS request/reply: a responder class and a requester class in one
//! scenario.
//!
//! - `responder` (`RESPONDERS` VUs, default 2) serve `rpc.quote` in the
//!   queue group `responders`: each request gets one answer.
//! - `requester` (`REQUESTERS` VUs, default 10) send a request per
//!   iteration, every `INTERVAL_MS` (default 10), and check the reply; the
//!   summary shows the round trip under the name `quote`. They wait
//!   `START_DELAY_MS` (default 1000) first, so the responders are listening.
//!
//! Settings: `NATS_URL` (default `nats://127.0.0.1:4222`), `DURATION_S`
//! (default 10), `REQUESTS` (per requester; default: until the end).

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
        .timeout(Duration::from_secs(2))
        .connect()
}

struct Rpc;

impl Scenario for Rpc {
    fn options() -> Options {
        let mut requester = Class::new("requester", env_num("REQUESTERS", 10) as u32)
            .pacing(Duration::from_millis(env_num("INTERVAL_MS", 10)));
        if let Some(n) = vu::env("REQUESTS").and_then(|v| v.parse().ok()) {
            requester = requester.iterations(n);
        }
        Options::new()
            .duration(Duration::from_secs(env_num("DURATION_S", 10)))
            .with_class(Class::new("responder", env_num("RESPONDERS", 2) as u32))
            .with_class(requester)
            .threshold("nats_request p(99)<100ms")
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
            if class == "responder" {
                respond(c)
            } else {
                request(c)
            }
        });
        if r.is_err() {
            // Do not hammer a server that is down.
            guest_sdk::sleep(Duration::from_millis(250));
        }
        r
    }
}

fn request(c: &Connection) -> guest_sdk::Result {
    if vu::iteration() == 0 {
        guest_sdk::sleep(Duration::from_millis(env_num("START_DELAY_MS", 1000)));
    }
    let ask = format!("quote for {}-{}", vu::id(), vu::iteration());
    let reply = c.request_with("rpc.quote", ask.as_bytes(), None, Some("quote"))?;
    check(
        "reply echoes the request",
        reply.payload.ends_with(ask.as_bytes()),
    );
    Ok(())
}

/// Answers requests for about a second per iteration.
fn respond(c: &Connection) -> guest_sdk::Result {
    SUB.with(|sub| {
        let mut sub = sub.borrow_mut();
        if sub.is_none() {
            *sub = Some(c.subscribe_named("rpc.quote", Some("responders"), "quote-requests")?);
        }
        let Some(s) = sub.as_ref() else {
            return Err("no subscription".into());
        };
        let end = vu::now() + Duration::from_secs(1);
        while let Some(left) = end.checked_sub(vu::now()) {
            if let Some(m) = s.next_message(left)? {
                let mut answer = b"42 for ".to_vec();
                answer.extend_from_slice(&m.payload);
                c.respond(&m, answer)?;
            }
        }
        Ok(())
    })
}

guest_sdk::export_scenario!(Rpc);
