//! A tour of the SDK: every host call once per iteration, each result
//! checked with a named check, so a test (or a curious reader) sees the
//! whole API work end to end against the built-in target (`BASE_URL`).

use std::time::Duration;

use guest_sdk::http::{self, Request};
use guest_sdk::{check, log, metrics, sleep, vu};

fn iteration() -> guest_sdk::Result {
    let base = vu::env_or("BASE_URL", "http://127.0.0.1:8080");

    // A body, its size and headers.
    let r = http::get(format!("{base}/bytes/1000"))?;
    check("bytes: status 200", r.status() == 200);
    check("bytes: body has 1000 bytes", r.body().len() == 1000);
    check("bytes: body read twice is the same", r.text().len() == 1000);
    check("bytes: body_size is 1000", r.body_size() == 1000);
    check(
        "bytes: content-length header",
        r.header("Content-Length").as_deref() == Some("1000"),
    );
    check(
        "bytes: headers listed",
        r.headers().iter().any(|(k, _)| k == "content-length"),
    );
    check(
        "bytes: timed by the host",
        r.timings().total > Duration::ZERO,
    );

    // Other methods, names, headers, statuses.
    let r = Request::post(format!("{base}/status/201"))
        .header("content-type", "application/json")
        .body(r#"{"hello":"world"}"#)
        .name("create")
        .timeout(Duration::from_secs(5))
        .send()?;
    check("create: status 201", r.status() == 201);
    let r = Request::delete(format!("{base}/status/404"))
        .name("missing")
        .send()?;
    check("missing: status 404", r.status() == 404);
    let r = Request::get(format!("{base}/")).http2().name("h2").send()?;
    check("h2: over HTTP/2", r.is_http2());

    // Tags and groups: one summary row per name and tags, and totals by
    // tag; checks and custom metrics in a group carry its tag, and the
    // group's own duration is recorded.
    guest_sdk::group("checkout", || -> guest_sdk::Result {
        let r = Request::get(format!("{base}/"))
            .name("cart")
            .tag("page", "cart")
            .send()?;
        check("tagged request in a group", r.status() == 200);
        metrics::counter_tagged("tour_carts", 1, &[("page", "cart")]);
        Ok(())
    })?;

    // Errors are typed.
    match Request::get("ftp://example.invalid/").send() {
        Err(e) => check(
            "invalid URL is a typed error",
            matches!(e.kind(), http::ErrorKind::InvalidRequest(_)),
        ),
        Ok(_) => check("invalid URL is a typed error", false),
    };

    // Identity, clock, env, sleep.
    check("vu: class is default", vu::class() == "default");
    check(
        "vu: env passes through",
        vu::env("TOUR_MARK").as_deref() == Some("here"),
    );
    let before = vu::now();
    sleep(Duration::from_millis(20));
    check(
        "vu: sleep suspends at least 20 ms",
        vu::now() - before >= Duration::from_millis(20),
    );

    // Custom metrics.
    metrics::counter("tour_iterations", 1);
    metrics::gauge("tour_vu", f64::from(vu::id()));
    metrics::timing("tour_sleep", vu::now() - before);
    metrics::histogram("tour_bytes", 1000);
    log::debug(&format!("iteration {} done", vu::iteration()));
    Ok(())
}

guest_sdk::main!(iteration);
