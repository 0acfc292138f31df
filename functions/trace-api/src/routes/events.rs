//! `GET /api/v1/jobs/status/{message_id}/events`: the trace as server-sent events.
//!
//! Each change is one `event: status` whose `id` is the body's ETag and whose `data` is
//! the same JSON as the status route. The stream closes after a terminal status, when
//! the trace disappears, or after [`STREAM_LIFETIME`] (the browser reconnects with
//! `Last-Event-ID` and gets only what it has not seen). Comments keep proxies from
//! closing an idle stream every [`HEARTBEAT`]. A reconnect whose `Last-Event-ID` is the
//! final, terminal state gets 204, which tells `EventSource` to stop.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use job_trace::MessageId;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::etag;
use crate::params;
use crate::routes::{docs, parse_with_id, read, Call, RawId, Rendered};
use crate::state::AppState;
use crate::watch::{StreamSlot, Subscription};

pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Below Cloud Run's default request timeout (300 s).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(270);
/// What the browser waits before reconnecting.
const RETRY: Duration = Duration::from_secs(2);

struct Feed {
    state: AppState,
    principal: Principal,
    message_id: MessageId,
    include_history: bool,
    subscription: Subscription,
    /// The tag the client has: the last one sent, or its `Last-Event-ID`.
    last: Option<String>,
    first: Option<Rendered>,
    done: bool,
    deadline: Instant,
    /// Held while the stream is open, so that `MAX_EVENT_STREAMS` bounds open streams.
    _slot: StreamSlot,
}

fn event(rendered: &Rendered) -> Event {
    Event::default()
        .event("status")
        .id(rendered.etag.clone())
        .retry(RETRY)
        .data(String::from_utf8_lossy(&rendered.body))
}

impl Feed {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Feed)> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            self.last = Some(first.etag.clone());
            self.done = first.terminal;
            return Some((Ok(event(&first)), self));
        }
        loop {
            tokio::time::timeout_at(self.deadline, self.subscription.changed())
                .await
                .ok()?;
            let rendered = match read(
                &self.state,
                &self.principal,
                &self.message_id,
                self.include_history,
            )
            .await
            {
                Ok(Some(rendered)) => rendered,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(?error, "event stream read failed; closing it");
                    return None;
                }
            };
            if self.last.as_deref() == Some(rendered.etag.as_str()) {
                continue;
            }
            self.last = Some(rendered.etag.clone());
            self.done = rendered.terminal;
            return Some((Ok(event(&rendered)), self));
        }
    }
}

/// The trace of one job as server-sent events.
///
/// Sends the current trace (unless `Last-Event-ID` names it), then every change, as
/// `event: status` with `id` = ETag and `data` = the status JSON; closes after a
/// terminal status. Heartbeat comments every 15 s.
#[utoipa::path(
    get,
    path = "/jobs/status/{message_id}/events",
    tag = "jobs",
    operation_id = "stream_job_status",
    params(
        docs::MessageIdInPath,
        docs::EventsQueryDoc,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received, to resume"),
    ),
    responses(
        (status = 200, description = "An event stream of `status` events", content_type = "text/event-stream", body = docs::StatusEvent),
        (status = 204, description = "Last-Event-ID is the trace's final state: nothing more will come"),
        docs::FastApiErrors,
        docs::NoTrace,
    )
)]
pub async fn stream(
    call: Call,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = RawId::in_path("message_id", path);
    let (message_id, include_history) = parse_with_id(
        call.query.as_deref(),
        id,
        params::message_id,
        |checks, query| checks.take(params::include_history(query)),
    )?;
    let Call {
        state, principal, ..
    } = call;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);

    // A stream holds its connection, a subscription and a task for up to STREAM_LIFETIME:
    // past the bound the client is told to come back (job-status.js retries a 503 and then
    // falls back to long-polls).
    let slot = state.watcher.open_stream().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "{} event streams open (MAX_EVENT_STREAMS); refused one more",
            state.watcher.max_streams()
        ))
    })?;
    let subscription = state.watcher.subscribe(message_id.as_str());
    let rendered = read(&state, &principal, &message_id, include_history)
        .await?
        .ok_or_else(|| ApiError::not_found(message_id.as_str()))?;
    let resumed = last_event_id
        .as_deref()
        .is_some_and(|last| etag::same_event(last, &rendered.etag));
    if resumed && rendered.terminal {
        return Ok((
            StatusCode::NO_CONTENT,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        )
            .into_response());
    }
    let feed = Feed {
        last: resumed.then(|| rendered.etag.clone()),
        first: (!resumed).then_some(rendered),
        state,
        principal,
        message_id,
        include_history,
        subscription,
        done: false,
        deadline: Instant::now() + STREAM_LIFETIME,
        _slot: slot,
    };
    let events = futures::stream::unfold(feed, Feed::next);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
