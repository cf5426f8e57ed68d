//! The REST handlers: submit a run, list and read runs, change their load,
//! stop them, swap their scenario, read their results and the agent's
//! Prometheus metrics. Every error is a [`Problem`] with a sentence.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AppState, Problem};
use crate::agent::{RunRecord, SubmitError};
use crate::run::{ClassState, ControlError, ControlEvent, LoadChange, LoadTarget, RunState};
use crate::spec::{RunOptions, RunSpec, ScenarioRef};

/// The agent's health.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` when the agent answers.
    pub status: String,
    /// The runner's version.
    pub version: String,
    /// The active run, if one is.
    pub active_run: Option<String>,
    /// Runs the agent knows (active and kept).
    pub runs: usize,
}

/// Whether the agent is up, and what it runs.
#[utoipa::path(get, path = "/api/v1/health", tag = "agent",
    responses((status = 200, description = "The agent is up", body = Health)))]
pub async fn health(State(s): State<AppState>) -> Json<Health> {
    let runs = s.agent.list();
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        active_run: runs.iter().find(|r| !r.is_over()).map(|r| r.id.clone()),
        runs: runs.len(),
    })
}

/// A run as the API shows it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunInfo {
    /// The run's id.
    pub id: String,
    /// Where it is in its life.
    pub state: RunState,
    /// Its scenario.
    pub scenario: ScenarioRef,
    /// The options it was given.
    pub options: RunOptions,
    /// When it was accepted, ms since the Unix epoch.
    pub created_unix_ms: u64,
    /// Seconds it has run (all of it, once over).
    pub elapsed_s: f64,
    /// VUs running now.
    pub vus: u64,
    /// The most VUs that ran at once.
    pub peak_vus: u32,
    /// Each class's VUs and load now.
    pub classes: Vec<ClassState>,
    /// HTTP requests per second in the last second.
    pub rps: f64,
    /// Iterations per second in the last second.
    pub iterations_per_s: f64,
    /// HTTP requests so far.
    pub requests: u64,
    /// Of which failed.
    pub failed: u64,
    /// Load changes, stops and swaps so far.
    pub events: Vec<ControlEvent>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Whether every threshold held (once over).
    pub thresholds_passed: Option<bool>,
    /// A distributed run's workers: name, VUs, requests, status.
    #[schema(value_type = Vec<Object>)]
    pub workers: Vec<crate::report::WorkerRow>,
}

impl RunInfo {
    fn of(r: &RunRecord) -> Self {
        let hub = &r.hub;
        let last = hub.last_point();
        let points = hub.points(0);
        let meta = hub.meta();
        let summary = hub.summary();
        RunInfo {
            id: r.id.clone(),
            state: hub.state(),
            scenario: r.spec.scenario.clone(),
            options: r.spec.options.clone(),
            created_unix_ms: r.created_unix_ms,
            elapsed_s: summary
                .as_ref()
                .map_or(meta.duration_s, |s| s.meta.duration_s),
            vus: last.as_ref().map_or(0, |p| p.vus),
            peak_vus: summary.as_ref().map_or(meta.peak_vus, |s| s.meta.peak_vus),
            classes: last.as_ref().map(|p| p.classes.clone()).unwrap_or_default(),
            rps: last.as_ref().map_or(0.0, |p| p.rps),
            iterations_per_s: last.as_ref().map_or(0.0, |p| p.iterations_per_s),
            requests: points.iter().map(|p| p.requests).sum(),
            failed: points.iter().map(|p| p.failed).sum(),
            events: hub.events(0),
            error: hub.error(),
            workers: summary
                .as_ref()
                .map_or_else(|| meta.workers.clone(), |s| s.meta.workers.clone())
                .into_iter()
                .map(|w| crate::report::WorkerRow { latency: None, ..w })
                .collect(),
            thresholds_passed: summary.map(|s| s.thresholds_passed()),
        }
    }
}

/// Every run the agent knows, oldest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs",
    responses((status = 200, description = "The runs", body = Vec<RunInfo>)))]
pub async fn list_runs(State(s): State<AppState>) -> Json<Vec<RunInfo>> {
    Json(s.agent.list().iter().map(|r| RunInfo::of(r)).collect())
}

/// The form of `POST /api/v1/runs`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes the multipart form for the OpenAPI document
pub struct RunUpload {
    /// The scenario component (`cargo component build --release`).
    #[schema(value_type = String, format = Binary)]
    scenario: Vec<u8>,
    /// The run's options as JSON (all optional).
    config: Option<RunOptions>,
}

/// Starts a run of an uploaded scenario.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs",
    request_body(content((RunUpload = "multipart/form-data",
        encoding(("config" = (content_type = "application/json")))))),
    responses(
        (status = 201, description = "The run started", body = RunInfo,
            headers(("location" = String, description = "The run's URL"))),
        (status = 400, description = "Malformed form or options", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another run is active", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The upload is too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a scenario component of this runner's world", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This machine cannot hold the run", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_run(
    State(s): State<AppState>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, Problem> {
    let mut form = form.map_err(|e| {
        Problem::bad_request(format!(
            "send a multipart/form-data body with a `scenario` file and an optional `config` JSON part ({e})"
        ))
    })?;
    let mut scenario: Option<(String, Bytes)> = None;
    let mut config: Option<RunOptions> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_problem(e, s.max_upload)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let file = field.file_name().map(str::to_owned);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_problem(e, s.max_upload))?;
        match name.as_str() {
            "scenario" => {
                scenario = Some((file.unwrap_or_else(|| "scenario.wasm".into()), bytes));
            }
            "config" => {
                let parsed: RunOptions = serde_json::from_slice(&bytes)
                    .map_err(|e| Problem::bad_request(format!("config: {e}")))?;
                config = Some(parsed);
            }
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown form field {other:?}: send `scenario` (the component) and `config` (JSON options)"
                )))
            }
        }
    }
    let Some((file, bytes)) = scenario else {
        return Err(Problem::bad_request(
            "no `scenario` part: attach the component, e.g. curl -F scenario=@hello-http.wasm",
        ));
    };
    let spec = RunSpec {
        scenario: ScenarioRef {
            name: file,
            ..ScenarioRef::default()
        },
        options: config.unwrap_or_default(),
        outputs: Vec::new(),
        // The agent's own rules are added when it takes the run.
        enforced: None,
    };
    let record = s
        .agent
        .submit(spec, Arc::from(bytes.as_ref()))
        .await
        .map_err(|e| match e {
            SubmitError::Busy(_) => Problem::conflict(e.to_string()),
            SubmitError::Prepare(p) => prepare_problem(p),
        })?;
    let location = format!("/api/v1/runs/{}", record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(RunInfo::of(&record)),
    )
        .into_response())
}

fn multipart_problem(e: axum::extract::multipart::MultipartError, limit: usize) -> Problem {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is larger than this agent accepts ({} MiB; raise it with runner serve --max-upload)",
                limit >> 20
            ),
        )
    } else {
        Problem::bad_request(format!("malformed multipart body: {e}"))
    }
}

fn prepare_problem(e: crate::run::PrepareError) -> Problem {
    use crate::run::PrepareError::*;
    match e {
        Spec(m) => Problem::bad_request(m),
        Scenario(m) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, m),
        System(m) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

fn find(s: &AppState, id: &str) -> Result<Arc<RunRecord>, Problem> {
    s.agent.get(id).ok_or_else(|| Problem::no_run(id))
}

/// One run: state, VUs, rates, events.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = RunInfo),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunInfo>, Problem> {
    Ok(Json(RunInfo::of(find(&s, &id)?.as_ref())))
}

/// A change of load: `vus` for closed-model classes, `rate` for
/// open-model ones.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadPatch {
    /// The class to change; absent: every class of the fitting model,
    /// shared in proportion to their load now.
    pub class: Option<String>,
    /// Running VUs (closed model).
    #[schema(minimum = 0)]
    pub vus: Option<u32>,
    /// Iterations started per second (open model).
    #[schema(minimum = 0)]
    pub rate: Option<f64>,
    /// How long the change takes, e.g. `"10s"` (default: at once).
    #[schema(example = "10s")]
    pub ramp: Option<String>,
}

/// The events a change made.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Changed {
    /// One per class changed.
    pub events: Vec<ControlEvent>,
}

/// Changes a running run's VUs or rate.
#[utoipa::path(patch, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    request_body = LoadPatch,
    responses(
        (status = 200, description = "Changed; the next snapshot shows it", body = Changed),
        (status = 400, description = "Malformed change", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The change does not fit the class's model, its limits, or the run is over", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn patch_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<LoadPatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Changed>, Problem> {
    let r = find(&s, &id)?;
    let Json(p) = body.map_err(|e| Problem::bad_request(e.body_text()))?;
    let target = match (p.vus, p.rate) {
        (Some(v), None) => LoadTarget::Vus(v),
        (None, Some(r)) if r.is_finite() && r >= 0.0 => LoadTarget::Rate(r),
        (None, Some(_)) => return Err(Problem::bad_request("rate must be a number >= 0")),
        _ => {
            return Err(Problem::bad_request(
                "give exactly one of \"vus\" (closed model) or \"rate\" (open model)",
            ))
        }
    };
    let ramp = match &p.ramp {
        None => Duration::ZERO,
        Some(t) => crate::units::parse_duration(t)
            .map_err(|e| Problem::bad_request(format!("ramp: {e}")))?,
    };
    let change = LoadChange {
        class: p.class,
        target,
        ramp,
    };
    let events = r
        .controller()
        .change(change)
        .await
        .map_err(control_problem)?;
    Ok(Json(Changed { events }))
}

fn control_problem(e: ControlError) -> Problem {
    match e {
        ControlError::NoSuchClass(..) => Problem::bad_request(e.to_string()),
        ControlError::Scenario(m) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, m),
        ControlError::WrongModel(_) | ControlError::TooMuch(_) | ControlError::Finished => {
            Problem::conflict(e.to_string())
        }
    }
}

/// How to stop.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StopQuery {
    /// Cancel in-flight iterations now instead of giving them the grace
    /// period.
    #[serde(default)]
    pub abort: bool,
}

/// Stops a run: no new iterations; in-flight ones finish within the grace
/// period (or, with `abort=true`, are cancelled).
#[utoipa::path(post, path = "/api/v1/runs/{id}/stop", tag = "runs",
    params(("id" = String, Path, description = "The run's id"), StopQuery),
    responses(
        (status = 202, description = "Stopping; the summary follows when it is over", body = ControlEvent),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is over", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stop_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<StopQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let r = find(&s, &id)?;
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let e = r
        .controller()
        .stop(q.abort, crate::run::StopBy::Api)
        .await
        .map_err(control_problem)?;
    Ok((StatusCode::ACCEPTED, Json(e)).into_response())
}

/// Continues a running run on another component of the same world: it is
/// compiled and checked first; each VU switches at its next iteration.
#[utoipa::path(put, path = "/api/v1/runs/{id}/scenario", tag = "runs",
    params(("id" = String, Path, description = "The run's id"),
        ("name" = Option<String>, Query, description = "A name for the new component (default: its hash)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The new component (any content type)"),
    responses(
        (status = 200, description = "Swapped", body = ControlEvent),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is over", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The upload is too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The component cannot replace the scenario; the run goes on unchanged", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn swap_scenario(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<
        Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ControlEvent>, Problem> {
    let r = find(&s, &id)?;
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the component is larger than this agent accepts (runner serve --max-upload)",
            )
        } else {
            Problem::bad_request(e.body_text())
        }
    })?;
    if r.is_over() {
        return Err(control_problem(ControlError::Finished));
    }
    let name = q.get("name").cloned().unwrap_or_else(|| {
        format!(
            "sha256:{}",
            crate::run::short(&crate::engine::sha256_hex(&bytes))
        )
    });
    let Some(swapper) = r.swapper() else {
        return Err(Problem::conflict(
            "this run cannot swap its scenario (its checker failed to start; see the log): stop it and start another",
        ));
    };
    let swap = swapper
        .prepare(&name, Arc::from(bytes.as_ref()))
        .await
        .map_err(control_problem)?;
    let e = r.controller().swap(swap).await.map_err(control_problem)?;
    Ok(Json(e))
}

/// The JSON summary of a finished run (the same as `--out json=FILE`).
#[utoipa::path(get, path = "/api/v1/runs/{id}/results", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The summary, with raw HdrHistograms", body = Object),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is not over yet", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn results(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let r = find(&s, &id)?;
    let summary = finished(&r)?;
    Ok(Json(summary.as_ref()).into_response())
}

fn finished(r: &RunRecord) -> Result<Arc<crate::report::Summary>, Problem> {
    if let Some(e) = r.hub.error() {
        return Err(Problem::conflict(format!("run {} failed: {e}", r.id)));
    }
    r.hub.summary().ok_or_else(|| {
        Problem::conflict(format!(
            "run {} is not over yet; its live figures are at /api/v1/runs/{}/events",
            r.id, r.id
        ))
    })
}

/// The summary of a finished run as CSV: one row per metric name.
#[utoipa::path(get, path = "/api/v1/runs/{id}/results.csv", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "One row per name", body = String, content_type = "text/csv"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is not over yet", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn results_csv(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let r = find(&s, &id)?;
    let summary = finished(&r)?;
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        summary.csv(),
    )
        .into_response())
}

/// The HTML report of a finished run: charts over the whole run, tables,
/// the latency distribution, options and thresholds, in one offline page.
#[utoipa::path(get, path = "/api/v1/runs/{id}/report", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The report", body = String, content_type = "text/html"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is not over yet", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let r = find(&s, &id)?;
    let summary = finished(&r)?;
    let page = crate::report::html::render(summary.as_ref(), &r.hub.points(0));
    Ok(axum::response::Html(page).into_response())
}

/// The active (or last) run's figures in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "agent",
    responses((status = 200, description = "Prometheus text exposition", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let text = match s.agent.current() {
        Some(r) => crate::sinks::prometheus::render_run(&r.id, &r.hub),
        None => crate::sinks::prometheus::render_idle(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
