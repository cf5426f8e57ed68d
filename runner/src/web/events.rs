//! A run's live event stream (Server-Sent Events): its whole history first,
//! so a page that reloads loses nothing, then as it happens. Events:
//! `state` (running, stopping, finished, failed), `snapshot` (a
//! [`crate::run::Point`] per second), `control` (a load change, a stop, a
//! swap), `totals` (the summary so far, thresholds judged live), and `end`
//! (the final summary, without its raw histograms) before the stream
//! closes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use tokio::sync::mpsc;

use super::{AppState, Problem};
use crate::agent::RunRecord;
use crate::run::RunState;

/// One event of the stream, as a client sees it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes the stream for the OpenAPI document
pub struct StreamEvent {
    /// What the data is.
    #[schema(value_type = String, pattern = "^(state|snapshot|control|totals|end)$")]
    event: String,
    /// The event's JSON: `{"state": ...}`, a Point, a ControlEvent, the
    /// summary so far, or the final summary.
    data: String,
}

/// The live events of a run.
#[utoipa::path(get, path = "/api/v1/runs/{id}/events", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "Server-Sent Events: state, snapshot, control, totals, end", body = StreamEvent, content_type = "text/event-stream"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn run_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let record = s.agent.get(&id).ok_or_else(|| Problem::no_run(&id))?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(feed(record, tx));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Sse::new(futures_util::StreamExt::map(stream, Ok))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Sends `record`'s history, then its news, until it is over or the
/// client has gone.
async fn feed(record: Arc<RunRecord>, tx: mpsc::Sender<Event>) {
    let hub = record.hub.clone();
    let mut watch = hub.watch();
    let (mut points, mut events) = (0usize, 0usize);
    let mut state: Option<RunState> = None;
    loop {
        // Marks what is about to be read as seen before reading it, so a
        // change in between wakes the loop again.
        watch.borrow_and_update();
        // The summary first: if it is there, every point and event made
        // before it is too, and goes out before `end`.
        let over = hub.summary();
        let now = hub.state();
        if state != Some(now) {
            state = Some(now);
            if send(&tx, "state", &serde_json::json!({ "state": now }))
                .await
                .is_err()
            {
                return;
            }
        }
        let new_points = hub.points(points);
        points += new_points.len();
        for p in &new_points {
            if send(&tx, "snapshot", p.as_ref()).await.is_err() {
                return;
            }
        }
        let new_events = hub.events(events);
        events += new_events.len();
        for e in &new_events {
            if send(&tx, "control", e).await.is_err() {
                return;
            }
        }
        if let Some(summary) = over {
            let mut v = serde_json::to_value(summary.as_ref()).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("raw");
            }
            let _ = send(&tx, "end", &v).await;
            return;
        }
        if now == RunState::Failed {
            let why = hub.error().unwrap_or_default();
            let _ = send(&tx, "end", &serde_json::json!({ "error": why })).await;
            return;
        }
        if !new_points.is_empty() {
            let totals = hub.live_summary();
            let mut v = serde_json::to_value(totals.as_ref()).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("raw");
            }
            if send(&tx, "totals", &v).await.is_err() {
                return;
            }
        }
        tokio::select! {
            r = watch.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
    }
}

async fn send<T: serde::Serialize + ?Sized>(
    tx: &mpsc::Sender<Event>,
    name: &str,
    data: &T,
) -> Result<(), ()> {
    let data = serde_json::to_string(data).map_err(|_| ())?;
    tx.send(Event::default().event(name).data(data))
        .await
        .map_err(|_| ())
}
