//! VU classes that misbehave beside one that does not, to show (and test)
//! that a VU's failure stays in that VU.
//!
//! Class counts come from `-e`: `STEADY` (default 4) VUs GET `BASE_URL`
//! every `THINK_MS` (default 50) ms; `PANIC`, `SPIN` (infinite loop),
//! `HOG` (allocates without bound), `DEEP` (unbounded recursion) and
//! `FAIL` (returns an error) and `CHATTY` (prints `LINES` lines, default 3,
//! to stdout, stderr and the log) and `OVERSIZE` (hands the host values
//! over every size it takes: a 4 MiB log line, 10,000 lines in one call,
//! a huge URL, too many headers, 80 KB of headers, a body over `--max-body`, a 10 KB
//! metric name, a 1 MiB error) and `HOSTLOOP` (calls a cheap host function
//! in a tight loop: for `HOSTLOOP_MS` per iteration, or forever if 0, the
//! default), `HANDLES` (keeps every HTTP response it gets, never dropping
//! one) and `CONNS` (requests 2,000 distinct origins per iteration,
//! `127.0.X.Y` at `BASE_URL`'s port: a target listening on all loopback
//! addresses), `NAMES` (a new metric name or tag value in every call:
//! counters, checks, gauges, timings, histograms and request names and
//! tags, as a user id or a timestamp in a name does) and `DENIED`
//! (requests ever new host names under `.invalid`, for runs that deny
//! them with `--block-host '*.invalid'`) and `DEEP_SLEEP` (sleeps 60 ms
//! at the bottom of `DEPTH` nested calls, default 3,000, then checks every
//! frame's value on the way back: a sleep deep in a stack must find its
//! frames intact) VUs, default 0 each.
//! `HOSTLOOP_CALL=log` makes the host-call loop log a line per call
//! instead. `OPTIONS_HUGE=N` declares N classes
//! and N thresholds. `THRESHOLD` adds a
//! threshold to the scenario's options; `OPTIONS_PANIC` makes `options()`
//! itself panic.

use std::time::Duration;

use guest_sdk::{check, http, metrics, sleep, vu, Options, Scenario};

struct Chaos;

fn count(key: &str, default: u32) -> u32 {
    vu::env(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn steady() -> guest_sdk::Result {
    let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");
    let think: u64 = vu::env_or("THINK_MS", "50").parse()?;
    let r = http::get(format!("{base}/"))?;
    check("status is 200", r.status() == 200);
    sleep(Duration::from_millis(think));
    Ok(())
}

/// Every value over the host's sizes once; each refused request is a
/// passing check, and the iteration fails with a 1 MiB message.
fn oversize() -> guest_sdk::Result {
    let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");
    guest_sdk::log::info(&"x".repeat(4 << 20));
    guest_sdk::log::info(&"line\n".repeat(10_000));
    let invalid = |r: Result<http::Response, http::Error>| {
        matches!(
            r.as_ref().map_err(http::Error::kind),
            Err(http::ErrorKind::InvalidRequest(_))
        )
    };
    let url = format!("{base}/?q={}", "a".repeat(20_000));
    check("an oversized URL is refused", invalid(http::get(url)));
    let mut many = http::Request::get(format!("{base}/"));
    for i in 0..200 {
        many = many.header(format!("x-h{i}"), "v");
    }
    check("too many headers are refused", invalid(many.send()));
    let mut heavy = http::Request::get(format!("{base}/"));
    for i in 0..40 {
        heavy = heavy.header(format!("x-big{i}"), "v".repeat(2048));
    }
    check("headers over 64 KiB are refused", invalid(heavy.send()));
    let big = http::post(format!("{base}/"), vec![0u8; 2 << 20]);
    check("a body over --max-body is refused", invalid(big));
    guest_sdk::metrics::counter(&"n".repeat(10_000), 1);
    sleep(Duration::from_millis(100));
    Err("e".repeat(1 << 20).into())
}

/// A new series in every family, 200 times per iteration, and a request
/// whose name and tag are new each time.
fn names() -> guest_sdk::Result {
    let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");
    let first = (u64::from(vu::id()) << 32) + vu::iteration() * 200;
    for n in first..first + 200 {
        let id = n.to_string();
        metrics::counter(&format!("user-{id}"), 1);
        metrics::counter_tagged("logins", 1, &[("user", &id)]);
        metrics::check(&format!("user {id} logged in"), true);
        metrics::gauge(&format!("queue-{id}"), 1.0);
        metrics::timing(&format!("step-{id}"), Duration::from_micros(n % 1000));
        metrics::histogram(&format!("size-{id}"), n);
    }
    let r = http::Request::get(format!("{base}/"))
        .name(format!("GET /user/{first}"))
        .tag("session", first.to_string())
        .discard_body()
        .send()?;
    check("names: status is 200", r.status() == 200);
    Ok(())
}

/// Ever new destinations the egress rules deny: each is refused before a
/// packet leaves, and counted.
fn denied() -> guest_sdk::Result {
    let first = (u64::from(vu::id()) << 32) + vu::iteration() * 100;
    for n in first..first + 100 {
        let r = http::Request::get(format!("http://h{n}.invalid/"))
            .name("denied")
            .send();
        let refused = matches!(
            r.as_ref().map_err(http::Error::kind),
            Err(http::ErrorKind::Denied(_))
        );
        check("denied: refused", refused);
    }
    Ok(())
}

#[inline(never)]
#[allow(unconditional_recursion)] // on purpose: a stack overflow
fn deep(n: u64) -> u64 {
    // Recursion the optimizer cannot turn into a loop.
    let mut frame = [n; 64];
    frame[(n % 64) as usize] = std::hint::black_box(deep(n + 1));
    frame.iter().sum()
}

/// Sleeps at depth `depth`, then returns 1 + the sum of `3n + 1` over
/// the levels above, each read back from its own frame.
#[inline(never)]
fn deep_sleep(n: u32, depth: u32) -> u64 {
    if n >= depth {
        sleep(Duration::from_millis(60));
        return 1;
    }
    let local = std::hint::black_box(u64::from(n) * 3 + 1);
    let below = std::hint::black_box(deep_sleep(n + 1, depth));
    below + local
}

impl Scenario for Chaos {
    fn options() -> Options {
        // A scenario that cannot even declare its options (for the tests
        // of a run that fails to start).
        if vu::env("OPTIONS_PANIC").is_some() {
            panic!("chaos: options() panics on purpose");
        }
        let options = Options::new()
            .class("steady", count("STEADY", 4))
            .class("panic", count("PANIC", 0))
            .class("spin", count("SPIN", 0))
            .class("hog", count("HOG", 0))
            .class("deep", count("DEEP", 0))
            .class("fail", count("FAIL", 0))
            .class("chatty", count("CHATTY", 0))
            .class("oversize", count("OVERSIZE", 0))
            .class("hostloop", count("HOSTLOOP", 0))
            .class("handles", count("HANDLES", 0))
            .class("conns", count("CONNS", 0))
            .class("names", count("NAMES", 0))
            .class("denied", count("DENIED", 0))
            .class("deep-sleep", count("DEEP_SLEEP", 0));
        let huge = count("OPTIONS_HUGE", 0);
        let options = (0..huge).fold(options, |o, i| {
            o.class(format!("extra-{i}"), 0)
                .threshold(format!("checks rate>0.{i}"))
        });
        // A scenario-defined threshold, for tests of `--threshold` overrides.
        match vu::env("THRESHOLD") {
            Some(t) => options.threshold(t),
            None => options,
        }
    }

    fn run(class: &str) -> guest_sdk::Result {
        match class {
            "panic" => {
                sleep(Duration::from_millis(20));
                panic!("chaos: VU {} panics on purpose", vu::id());
            }
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "handles" => {
                let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");
                let mut kept = Vec::new();
                for _ in 0..5_000 {
                    kept.push(
                        http::Request::get(format!("{base}/handles"))
                            .name("handles")
                            .send()?,
                    );
                }
                std::hint::black_box(&kept);
                Ok(())
            }
            "conns" => {
                let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");
                let port = base
                    .rsplit(':')
                    .next()
                    .unwrap_or("8080")
                    .trim_end_matches('/');
                for i in 0..2_000u32 {
                    let url = format!("http://127.0.{}.{}:{port}/", i / 250, 1 + i % 250);
                    let r = http::Request::get(url)
                        .name("conns")
                        .discard_body()
                        .send()?;
                    check("conns: status is 200", r.status() == 200);
                }
                Ok(())
            }
            "deep-sleep" => {
                let depth = count("DEPTH", 3000);
                let want = 1 + (0..u64::from(depth)).map(|n| 3 * n + 1).sum::<u64>();
                check("deep-sleep: frames intact", deep_sleep(0, depth) == want);
                Ok(())
            }
            "deep" => {
                std::hint::black_box(deep(0));
                Ok(())
            }
            "chatty" => {
                for i in 0..count("LINES", 3) {
                    println!("stdout line {i} of VU {}", vu::id());
                    eprintln!("stderr line {i}");
                    guest_sdk::log::info(&format!("log line {i}"));
                }
                Ok(())
            }
            "oversize" => oversize(),
            "names" => names(),
            "denied" => denied(),
            "hostloop" => {
                // vu::now() is a host call that does almost nothing: the
                // cost is the crossing itself, over and over.
                let ms = u64::from(count("HOSTLOOP_MS", 0));
                let log = vu::env("HOSTLOOP_CALL").as_deref() == Some("log");
                let start = vu::now();
                loop {
                    if log {
                        guest_sdk::log::info("hostloop: one more line");
                    }
                    let spent = vu::now().saturating_sub(start);
                    if ms > 0 && spent >= Duration::from_millis(ms) {
                        return Ok(());
                    }
                }
            }
            "fail" => {
                sleep(Duration::from_millis(20));
                Err("chaos: this iteration fails on purpose".into())
            }
            _ => steady(),
        }
    }
}

guest_sdk::export_scenario!(Chaos);
