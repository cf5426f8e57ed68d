//! The dashboard and the HTML report in a real browser (headless Chromium
//! through chromedriver), during and after real runs against the built-in
//! target, with the target's own counts as ground truth.

mod common;

use std::time::Duration;

use common::api::*;
use common::browser::Browser;
use common::*;
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a tokio runtime")
}

/// `n` with thousands separators, as the page shows it.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn text_of(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_live_dashboard_follows_a_run_and_steers_it() {
    let target = Target::start();
    let agent = Agent::start(&[]);
    let wasm = std::fs::read(component("hello-http")).unwrap();
    let config = json!({
        "vus": 2, "max_vus": 10, "duration": "90s", "ramp_up": "0s",
        "env": {"BASE_URL": target.url, "THINK_MS": "50"}
    });
    let created = submit(&agent.url, "hello-http.wasm", &wasm, &config);
    assert_eq!(created.status, 201, "{}", created.text);
    let run = format!("{}{}", agent.url, created.location.unwrap());
    runtime().block_on(async {
        let b = Browser::start("live").await;
        b.client.goto(&format!("{}/", agent.url)).await.expect("open the dashboard");
        b.wait_for(
            "return document.querySelector('#state').textContent === 'running' \
             && window.dash.charts['latency-chart'].data[0].length >= 2",
            Duration::from_secs(20),
        )
        .await;
        // The latency chart gains points as the run goes on.
        let n1 = b.js("return window.dash.charts['latency-chart'].data[0].length").await;
        let rps1 = text_of(&b.js("return document.querySelector('#tile-rps .value').textContent").await);
        let before = target.rate_over(Duration::from_secs(2));
        let n2 = b.js("return window.dash.charts['latency-chart'].data[0].length").await;
        assert!(n2.as_u64() > n1.as_u64(), "{n1} → {n2} points");
        let p95 = b.js("return window.dash.charts['latency-chart'].data[3].slice(-1)[0]").await;
        assert!(p95.as_f64().is_some_and(|v| v > 0.0), "latest p95 {p95}");

        // Raise the VUs from the page: the target's own rate follows.
        b.js("const i = document.querySelector('.class-control[data-class=\"default\"] input.target'); \
              i.value = '8'; return true")
            .await;
        b.js("document.querySelector('.class-control[data-class=\"default\"] button.apply').click(); return true")
            .await;
        b.wait_for(
            "return document.querySelector('#status').textContent.includes('2 → 8 VUs')",
            Duration::from_secs(10),
        )
        .await;
        std::thread::sleep(Duration::from_millis(500));
        let after = target.rate_over(Duration::from_secs(2));
        assert!(after > before * 3.0, "the target's rate went {before:.0}/s → {after:.0}/s for 2 → 8 VUs");
        b.wait_for(
            "return document.querySelector('#tile-vus .value').textContent === '8 / 8'",
            Duration::from_secs(5),
        )
        .await;
        let rps2 = text_of(&b.js("return document.querySelector('#tile-rps .value').textContent").await);
        assert_ne!(rps1, rps2, "the request-rate tile changes");
        // A marker where the load changed.
        let events = b.js("return window.dash.state.events.length").await;
        assert_eq!(events, json!(1));
        b.screenshot("dashboard").await;

        // A reload brings the whole history back.
        let points = b.js("return window.dash.state.points.length").await.as_u64().unwrap();
        b.client.refresh().await.expect("reload");
        b.wait_for(
            &format!("return window.dash && window.dash.charts['rps-chart'].data[0].length >= {points}"),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(b.js("return window.dash.state.events.length").await, json!(1));

        // Stop from the page: the run ends and the page shows its summary.
        b.js("document.querySelector('#stop').click(); return true").await;
        b.wait_for(
            "return document.querySelector('#state').textContent === 'finished' \
             && !document.querySelector('#summary-panel').hidden",
            Duration::from_secs(40),
        )
        .await;
        let shown = text_of(&b.js("return document.querySelector('#total-requests').textContent").await);
        assert_eq!(shown, target.requests().to_string(), "the page's total is the target's");
        let errors = b.js("return window.__errors").await;
        assert_eq!(errors, json!([]), "no errors in the page");
        b.close().await;
    });
    // The same run's report, from the API.
    let report = get(&format!("{run}/report"));
    assert_eq!(report.status, 200);
    assert!(report.content_type.starts_with("text/html"));
    assert!(report.text.contains("window.REPORT = {"));
}

#[test]
fn the_html_report_opens_offline_and_shows_the_summary_numbers() {
    let target = Target::start();
    let dir = scratch("report");
    let (html, json_out) = (dir.join("report.html"), dir.join("r.json"));
    let base = format!("BASE_URL={}", target.url);
    let r = run(
        &[
            "run",
            component("hello-http").to_str().unwrap(),
            "--vus",
            "3",
            "--duration",
            "3s",
            "-e",
            &base,
            "-e",
            "THINK_MS=20",
            "--threshold",
            "http_req_duration p(95)<2s",
            "--quiet",
            "--out",
            &format!("html={}", html.display()),
            "--out",
            &format!("json={}", json_out.display()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let s = summary(&json_out);
    let total = total_requests(&s);
    assert_eq!(total, target.requests());
    drop(target);
    runtime().block_on(async {
        let b = Browser::start("report").await;
        b.client
            .goto(&format!("file://{}", html.display()))
            .await
            .expect("open the report");
        b.wait_for(
            "return document.querySelectorAll('canvas').length >= 4",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(b.js("return window.__errors").await, json!([]), "no errors");
        // Nothing was fetched: everything is in the file.
        let fetched = b
            .js("return performance.getEntriesByType('resource').map(e => e.name)")
            .await;
        assert_eq!(fetched, json!([]), "the report made network requests");
        let shown = b.js("return document.querySelector('#total-requests').textContent").await;
        assert_eq!(text_of(&shown), total.to_string());
        let row = b
            .js("return [...document.querySelectorAll('#http-rows tbody tr td')].map(t => t.textContent)")
            .await;
        let p95 = s["http"][0]["latency_ms"]["p95"].as_f64().unwrap();
        let expect_p95 = if p95 >= 1.0 {
            format!("{p95:.2}ms")
        } else {
            format!("{:.0}µs", p95 * 1000.0)
        };
        assert_eq!(row[1], json!(grouped(total)), "requests in the table: {row}");
        assert_eq!(row[6], json!(expect_p95), "p95 in the table: {row}");
        assert_eq!(
            text_of(&b.js("return document.querySelector('#thresholds-verdict').textContent").await),
            "all passed"
        );
        // The charts cover the whole run, and the distribution is drawn.
        let points = b.js("return window.dash.charts['rps-chart'].data[0].length").await;
        assert!(points.as_u64().unwrap() >= 3, "{points}");
        let dist = b.js("return window.dash.charts['dist-chart'].data[1].length").await;
        assert_eq!(dist, json!(17));
        b.screenshot("report").await;
        b.close().await;
    });
}
