//! The HTTP side of an [`Agent`]: the dashboard page at `/`, the REST API
//! ([`api`]) with its live event stream ([`events`]), the Prometheus
//! endpoint, and the OpenAPI document generated from the handlers. Served
//! by `runner serve` and by `runner run --web`.
//!
//! Security: it binds loopback unless told otherwise, and anything else
//! needs a bearer token, checked in constant time on every request. A
//! runner that accepts scenarios is a remote-code-execution surface by
//! design; the sandbox bounds what a scenario can do to this machine, not
//! where it sends traffic.

pub mod api;
mod events;
mod problem;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use problem::Problem;

use crate::agent::Agent;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The runs.
    pub agent: Arc<Agent>,
    /// The bearer token every request needs, if set.
    pub token: Option<Arc<str>>,
    /// Largest upload accepted, bytes.
    pub max_upload: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "runner",
        description = "Load tests whose scenarios are WebAssembly components: submit, watch, steer and read runs.",
        license(name = "Apache-2.0")
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    // A token only when the agent was given one.
    security((), ("bearer" = [])),
    tags((name = "runs", description = "Runs: submit, watch, change, stop, results"),
         (name = "agent", description = "The agent itself"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Every operation answers 401 when the agent has a token and the
        // request does not carry it.
        let unauthorized = ResponseBuilder::new()
            .description("The agent has a token and the request does not carry it")
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("401".into())
                    .or_insert_with(|| unauthorized.clone().into());
            }
        }
    }
}

/// The whole HTTP surface: API, events, metrics, OpenAPI document.
pub fn router(state: AppState) -> Router {
    let (api_router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::health))
        .routes(routes!(api::list_runs, api::create_run))
        .routes(routes!(api::get_run, api::patch_run))
        .routes(routes!(api::stop_run))
        .routes(routes!(api::swap_scenario))
        .routes(routes!(events::run_events))
        .routes(routes!(api::results))
        .routes(routes!(api::results_csv))
        .routes(routes!(api::report))
        .routes(routes!(api::metrics))
        .split_for_parts();
    let openapi = Arc::new(openapi);
    let limit = state.max_upload;
    api_router
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/", axum::routing::get(dashboard))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

/// The live dashboard: one page, everything inline.
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(crate::ui::dashboard())
}

async fn not_allowed(req: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {} (the API is described at /api/openapi.json)",
            req.uri().path(),
            req.method()
        ),
    )
}

async fn not_found(req: Request) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} {} (the API is described at /api/openapi.json)",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Refuses requests without the bearer token, when one is set.
async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| query_token(req.uri().query()));
    let ok = given.is_some_and(|g| {
        use subtle::ConstantTimeEq as _;
        bool::from(g.as_bytes().ct_eq(token.as_bytes()))
    });
    if ok {
        return next.run(req).await;
    }
    let mut r = Problem::new(
        StatusCode::UNAUTHORIZED,
        "this runner needs its token: send `Authorization: Bearer TOKEN` (or ?token=TOKEN for a browser's event stream)",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// `token=...` from a query string (EventSource cannot set headers).
fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

/// Binds `addr` for the API: loopback freely, anything else only with a
/// token.
pub async fn bind(addr: SocketAddr, token: Option<&str>) -> Result<TcpListener> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        bail!(
            "serving the API on {addr} (not loopback) needs a token: add --token TOKEN (or set RUNNER_TOKEN); clients then send `Authorization: Bearer TOKEN`"
        );
    }
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}; pick another address"))
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await
        .context("the API server failed")
}
