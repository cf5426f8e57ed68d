//! Target 4: REST bodies, through the real router and a real run.

#![allow(unused_imports)]

use super::*;

pub(crate) mod rest {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, Method, Request, StatusCode};
    use runner::agent::{Agent, RunRecord};
    use runner::web::{router, AppState};
    use tower::ServiceExt as _;

    pub struct Api {
        pub rt: tokio::runtime::Runtime,
        pub app: axum::Router,
        pub agent: Arc<Agent>,
    }

    pub struct Answer {
        pub status: StatusCode,
        pub json: Value,
    }

    impl Api {
        pub fn new() -> Self {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let agent = Agent::new(4, None);
            let app = router(AppState {
                agent: agent.clone(),
                token: None,
                max_upload: 1 << 20,
            });
            Api { rt, app, agent }
        }

        pub fn call(
            &self,
            method: Method,
            uri: &str,
            content_type: Option<&str>,
            body: Vec<u8>,
        ) -> Answer {
            let mut req = Request::builder().method(method).uri(uri);
            if let Some(ct) = content_type {
                req = req.header(header::CONTENT_TYPE, ct);
            }
            let req = req.body(Body::from(body)).expect("a request");
            self.rt.block_on(async {
                let resp = self.app.clone().oneshot(req).await.expect("infallible");
                let status = resp.status();
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .expect("a body");
                let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                Answer { status, json }
            })
        }

        /// Starts a run of the idle scenario (VUs that only sleep).
        pub fn start(&self, options: Value) -> Arc<RunRecord> {
            // From the runner's tests or from the fuzz crate in tests/fuzz.
            let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let path = here
                .ancestors()
                .map(|d| d.join("target/scenarios/idle.wasm"))
                .find(|p| p.exists())
                .unwrap_or_else(|| here.join("../target/scenarios/idle.wasm"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: run scripts/setup.sh first (it builds the example scenarios)",
                    path.display()
                )
            });
            let spec = RunSpec {
                scenario: ScenarioRef {
                    name: "idle.wasm".into(),
                    ..ScenarioRef::default()
                },
                options: serde_json::from_value(options).expect("options"),
                outputs: Vec::new(),
                enforced: None,
            };
            self.rt
                .block_on(self.agent.submit(spec, Arc::from(bytes)))
                .unwrap_or_else(|e| panic!("the run does not start: {e}"))
        }

        /// Stops `run` at once and waits for its end.
        pub fn stop(&self, run: &RunRecord) {
            let a = self.call(
                Method::POST,
                &format!("/api/v1/runs/{}/stop?abort=true", run.id),
                None,
                Vec::new(),
            );
            assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json);
            let until = Instant::now() + Duration::from_secs(30);
            while !run.is_over() {
                assert!(Instant::now() < until, "the run does not stop");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// An error answer is a problem document with a sentence.
    pub fn problem(a: &Answer, allowed: &[StatusCode], input: &[u8]) {
        assert!(
            allowed.contains(&a.status),
            "status {} for {:?}: {}",
            a.status,
            String::from_utf8_lossy(input),
            a.json
        );
        if a.status.is_client_error() || a.status.is_server_error() {
            assert_eq!(a.json["status"], a.status.as_u16(), "{}", a.json);
            let detail = a.json["detail"].as_str().unwrap_or_default();
            assert!(!detail.trim().is_empty(), "no detail: {}", a.json);
        }
    }
}

pub(crate) const PATCH_KEYS: &[&str] = &["class", "vus", "rate", "ramp", "default", "api"];

/// A load change as a client may send it: the right fields, with any
/// values.
#[derive(Arbitrary, Debug)]
pub(crate) struct PatchArb {
    class: Option<Text>,
    vus: Option<Count>,
    rate: Option<Real>,
    ramp: Option<Text>,
    negative: bool,
}

impl PatchArb {
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut o = serde_json::Map::new();
        if let Some(c) = &self.class {
            o.insert(
                "class".into(),
                json!(c.render(&["default", "", "Default", "api"])),
            );
        }
        if let Some(v) = &self.vus {
            let v = i64::from(v.get());
            o.insert("vus".into(), json!(if self.negative { -v } else { v }));
        }
        if let Some(r) = &self.rate {
            let r = r.get();
            o.insert("rate".into(), json!(if self.negative { -r } else { r }));
        }
        if let Some(t) = &self.ramp {
            o.insert("ramp".into(), json!(t.render(STRINGS)));
        }
        serde_json::to_vec(&o).expect("json")
    }
}

/// Fuzzes `PATCH /api/v1/runs/{id}` of a running run; returns the number
/// of changes made.
pub(crate) fn fuzz_patches(
    api: &rest::Api,
    run: &runner::agent::RunRecord,
    name: &str,
    seeds: Vec<Value>,
    open: bool,
    max_vus: f64,
) -> u64 {
    let corpus = Corpus::json(seeds, PATCH_KEYS);
    let mut changed = 0u64;
    fuzz(name, 20_000, |rng| {
        let body = match rng.one_in(3) {
            true => arb::<PatchArb>(rng, 48).map_or_else(Vec::new, |p| p.render()),
            false => corpus.input(rng),
        };
        note(&body);
        let ct = match rng.below(40) {
            0 => None,
            1 => Some("text/plain"),
            2 => Some("application/json; charset=utf-16"),
            _ => Some("application/json"),
        };
        changed += u64::from(check_patch(api, run, &body, ct, open, max_vus));
    });
    changed
}

#[test]
pub(crate) fn rest_bodies() {
    use axum::http::{Method, StatusCode};
    let api = rest::Api::new();

    // A closed-model run: VU counts change.
    let run = api.start(json!({
        "vus": 2, "max_vus": 16, "duration": "120s", "ramp_up": "0s",
        "env": {"SLEEP_MS": "50"}
    }));
    let uri = format!("/api/v1/runs/{}", run.id);
    let patch = |body: Value| {
        api.call(
            Method::PATCH,
            &uri,
            Some("application/json"),
            serde_json::to_vec(&body).expect("json"),
        )
    };
    let a = patch(json!({"class": "default", "vus": 4, "ramp": "1s"}));
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["events"][0]["to"], 4.0);
    for (body, status) in [
        (json!({"vus": 17}), StatusCode::CONFLICT),
        (json!({"rate": 1}), StatusCode::CONFLICT),
        (json!({"vus": -1}), StatusCode::BAD_REQUEST),
        (json!({"class": "nope", "vus": 1}), StatusCode::BAD_REQUEST),
        (json!({"vus": 1, "rate": 1}), StatusCode::BAD_REQUEST),
        (json!({"vus": 1, "extra": 1}), StatusCode::BAD_REQUEST),
        (json!({"vus": 1, "ramp": "soon"}), StatusCode::BAD_REQUEST),
    ] {
        let a = patch(body.clone());
        assert_eq!(a.status, status, "{body}: {}", a.json);
    }
    let closed = fuzz_patches(
        &api,
        &run,
        "rest-patch-closed",
        vec![
            json!({"vus": 3}),
            json!({"class": "default", "vus": 5}),
            json!({"vus": 8, "ramp": "2s"}),
            json!({"vus": 0}),
            json!({"class": "default", "vus": 16, "ramp": "100ms"}),
            json!({"class": "", "vus": 1}),
            json!({"rate": 5}),
            json!({}),
        ],
        false,
        16.0,
    );

    // The options of a new run, as a multipart form: while a run is
    // active, a valid config is refused as busy (409), an invalid one as
    // malformed (400); no input starts a run or fails the server.
    let corpus = Corpus::json(option_seeds(), OPTION_KEYS);
    let mut busy = 0u64;
    let created = fuzz("rest-create", 5_000, |rng| {
        let config = corpus.input(rng);
        let mut form = multipart_form(&config);
        if rng.one_in(10) {
            mutate_bytes(&mut form, rng, &[]);
        }
        note(&form);
        busy += u64::from(check_create(&api, &form));
    });
    eprintln!("rest: {busy} of {created} forms held valid options (refused as busy)");
    assert!(busy > 0, "no fuzzed config decoded");

    // The run went through all of it, and still answers.
    let a = api.call(Method::GET, &uri, None, Vec::new());
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["state"], "running", "{}", a.json);
    api.stop(&run);

    // Stop queries: refused (400) or the run is over (409).
    let stop = format!("/api/v1/runs/{}/stop", run.id);
    for (q, status) in [
        ("", StatusCode::CONFLICT),
        ("?abort=true", StatusCode::CONFLICT),
        ("?abort=maybe", StatusCode::BAD_REQUEST),
    ] {
        let a = api.call(Method::POST, &format!("{stop}{q}"), None, Vec::new());
        assert_eq!(a.status, status, "{q}: {}", a.json);
    }
    let queries = Corpus {
        seeds: [
            "abort=true",
            "abort=false",
            "abort=1",
            "",
            "abort=true&abort=false",
            "x=y",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        trees: Vec::new(),
        keys: Vec::new(),
    };
    fuzz("rest-stop-query", 5_000, |rng| {
        let q = queries.input(rng);
        note(&q);
        check_stop_query(&api, &stop, &q);
    });

    // An open-model run: rates change.
    let run = api.start(json!({
        "rate": 2.0, "max_vus": 4, "duration": "120s", "env": {"SLEEP_MS": "10"}
    }));
    let uri = format!("/api/v1/runs/{}", run.id);
    let patch = |body: Value| {
        api.call(
            Method::PATCH,
            &uri,
            Some("application/json"),
            serde_json::to_vec(&body).expect("json"),
        )
    };
    let a = patch(json!({"rate": 3.5}));
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["events"][0]["to"], 3.5);
    for (body, status) in [
        (json!({"vus": 2}), StatusCode::CONFLICT),
        (json!({"rate": 1e300}), StatusCode::CONFLICT),
        (json!({"rate": -1}), StatusCode::BAD_REQUEST),
        (
            json!({"class": "default", "rate": 0, "ramp": "366d"}),
            StatusCode::OK,
        ),
    ] {
        let a = patch(body.clone());
        assert_eq!(a.status, status, "{body}: {}", a.json);
    }
    let raw = api.call(
        Method::PATCH,
        &uri,
        Some("application/json"),
        b"{\"rate\": 1e999}".to_vec(),
    );
    assert_eq!(raw.status, StatusCode::BAD_REQUEST, "{}", raw.json);
    let open = fuzz_patches(
        &api,
        &run,
        "rest-patch-open",
        vec![
            json!({"rate": 3.5}),
            json!({"class": "default", "rate": 0}),
            json!({"rate": 0.001, "ramp": "1h"}),
            json!({"rate": 40, "ramp": "250ms"}),
            json!({"class": "default", "rate": 2, "ramp": "0s"}),
            json!({"vus": 2}),
        ],
        true,
        0.0,
    );
    let a = api.call(Method::GET, &uri, None, Vec::new());
    assert_eq!(a.json["state"], "running", "{}", a.json);
    api.stop(&run);
    eprintln!("rest: {closed} VU changes and {open} rate changes made");
    assert!(closed > 0 && open > 0, "no change was accepted");
}

#[test]
pub(crate) fn stages_read_back() {
    // A stage crosses the wire as text: every valid one reads back.
    let corpus = Corpus {
        seeds: STAGE_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(),
        trees: Vec::new(),
        keys: Vec::new(),
    };
    fuzz("stages", 20_000, |rng| {
        let text = String::from_utf8_lossy(&corpus.input(rng)).into_owned();
        note(text.as_bytes());
        check_stage(&text);
    });
}

/// Stages of each form `--stage` documents.
pub const STAGE_SEEDS: &[&str] = &["30s:100", "1s:2", "0s:0", "1h 30m:0.5", "250ms:1e3"];

/// One input of the stage check: a stage that parses has a finite,
/// non-negative target and reads back the same from its own text.
pub fn check_stage(text: &str) {
    match text.parse::<Stage>() {
        Err(e) => assert!(one_line(&e), "not a one-line error: {e:?}"),
        Ok(s) => {
            assert!(s.target.is_finite() && s.target >= 0.0, "{s:?}");
            assert_eq!(s.to_string().parse::<Stage>(), Ok(s), "{text:?}");
        }
    }
}

/// `PATCH`ed load changes must answer one of these.
const PATCH_ANSWERS: &[axum::http::StatusCode] = &[
    axum::http::StatusCode::OK,
    axum::http::StatusCode::BAD_REQUEST,
    axum::http::StatusCode::CONFLICT,
    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
];

/// One input of the load-change check: `body` (of content type `ct`)
/// sent as `PATCH /api/v1/runs/{id}` to the running `run`. The answer
/// is a change or a problem document; a change moves the VUs (`open`:
/// the rate) to a value in range; the run survives whatever it gets.
/// Returns whether the load changed.
pub fn check_patch(
    api: &rest::Api,
    run: &runner::agent::RunRecord,
    body: &[u8],
    ct: Option<&str>,
    open: bool,
    max_vus: f64,
) -> bool {
    use axum::http::{Method, StatusCode};
    let uri = format!("/api/v1/runs/{}", run.id);
    let a = api.call(Method::PATCH, &uri, ct, body.to_vec());
    rest::problem(&a, PATCH_ANSWERS, body);
    let changed = a.status == StatusCode::OK;
    if changed {
        let events = a.json["events"].as_array().expect("events");
        assert!(!events.is_empty(), "a change without events: {}", a.json);
        for e in events {
            let kind = if open { "rate" } else { "vus" };
            assert_eq!(e["kind"], kind, "{e}");
            let to = e["to"].as_f64().expect("a number");
            let top = if open { MAX_RATE } else { max_vus };
            assert!((0.0..=top).contains(&to), "a change to {to}: {e}");
            assert!(e["from"].as_f64().is_some_and(f64::is_finite), "{e}");
            assert!(e["t"].as_f64().is_some_and(|t| t >= 0.0), "{e}");
        }
    }
    // Nothing a body holds breaks the run.
    assert!(
        run.hub.error().is_none(),
        "the run failed: {:?}",
        run.hub.error()
    );
    assert!(!run.is_over(), "the run ended");
    changed
}

/// The boundary of the forms [`multipart_form`] makes.
pub const BOUNDARY: &str = "fuzzfuzzBOUNDARY";

/// A `POST /api/v1/runs` form: a tiny not-quite component, and `config`
/// as the run's options.
pub fn multipart_form(config: &[u8]) -> Vec<u8> {
    let mut form = format!(
        "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"scenario\"; filename=\"idle.wasm\"\r\n\r\n\0asm\r\n--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"config\"\r\ncontent-type: application/json\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(config);
    form.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    form
}

/// One input of the new-run check: `form` posted while a run is active.
/// A valid config is refused as busy (409), anything else as malformed
/// (400); no input starts a run or fails the server. Returns whether the
/// form held valid options.
pub fn check_create(api: &rest::Api, form: &[u8]) -> bool {
    use axum::http::{Method, StatusCode};
    let a = api.call(
        Method::POST,
        "/api/v1/runs",
        Some(&format!("multipart/form-data; boundary={BOUNDARY}")),
        form.to_vec(),
    );
    rest::problem(&a, &[StatusCode::BAD_REQUEST, StatusCode::CONFLICT], form);
    a.status == StatusCode::CONFLICT
}

/// One input of the stop check: `q` (what a URI may carry of it, the
/// rest percent-encoded) as the query of `stop_uri`, a run that is over:
/// refused (400) or over already (409).
pub fn check_stop_query(api: &rest::Api, stop_uri: &str, q: &[u8]) {
    use axum::http::{Method, StatusCode};
    let q: String = q[..q.len().min(4096)]
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"=&-_.~%+".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let a = api.call(Method::POST, &format!("{stop_uri}?{q}"), None, Vec::new());
    rest::problem(
        &a,
        &[StatusCode::BAD_REQUEST, StatusCode::CONFLICT],
        q.as_bytes(),
    );
}
