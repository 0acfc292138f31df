//! `GET /api/v1/jobs/status/{message_id}` and `GET /job/status?message_id=`: one trace,
//! with ETag/304 and long-poll (`?wait=N`).

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;
use job_trace::MessageId;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::etag;
use crate::params;
use crate::routes::{docs, parse_with_id, read, Call, RawId};

/// Status parameters both path styles share.
struct StatusParams {
    include_history: bool,
    wait: Duration,
}

fn parse(query: Option<&str>, id: RawId) -> Result<(MessageId, StatusParams), ApiError> {
    parse_with_id(query, id, params::message_id, |checks, query| {
        let include_history = checks.take(params::include_history(query));
        let wait = checks.take(params::wait(query));
        Some(StatusParams {
            include_history: include_history?,
            wait: wait?,
        })
    })
}

/// Answers at once when the trace differs from `If-None-Match` (or none was sent), or is
/// terminal; otherwise holds the request until the trace changes or `wait` runs out.
async fn respond(call: Call, id: RawId, headers: &HeaderMap) -> Result<Response, ApiError> {
    let (message_id, params) = parse(call.query.as_deref(), id)?;
    let (state, principal, message_id) = (&call.state, &call.principal, &message_id);
    let if_none_match = etag::if_none_match(headers);
    let deadline = Instant::now() + params.wait;
    // Subscribe before reading, so that no change between the read and the wait is lost.
    let mut subscription = (!params.wait.is_zero() && if_none_match.is_some())
        .then(|| state.watcher.subscribe(message_id.as_str()));
    loop {
        let rendered = read(state, principal, message_id, params.include_history)
            .await?
            .ok_or_else(|| ApiError::not_found(message_id.as_str()))?;
        let unchanged = if_none_match
            .as_deref()
            .is_some_and(|tags| etag::none_match(tags, &rendered.etag));
        if !unchanged {
            return Ok(rendered.ok());
        }
        let Some(subscription) = subscription.as_mut().filter(|_| !rendered.terminal) else {
            return Ok(rendered.not_modified());
        };
        if tokio::time::timeout_at(deadline, subscription.changed())
            .await
            .is_err()
        {
            return Ok(rendered.not_modified());
        }
    }
}

/// The status of one job (FastAPI style).
///
/// Answers with the trace and its `ETag`. With `If-None-Match` equal to the current tag
/// it answers 304; with `wait=N` as well it holds the request until the trace changes
/// (then 200) or N seconds pass (then 304). A terminal trace answers at once.
#[utoipa::path(
    get,
    path = "/jobs/status/{message_id}",
    tag = "jobs",
    operation_id = "get_job_status",
    params(docs::MessageIdInPath, docs::StatusQueryDoc, docs::IfNoneMatchDoc),
    responses(docs::StatusAnswers, docs::FastApiErrors, docs::NoTrace)
)]
pub async fn by_path(
    call: Call,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    respond(call, RawId::in_path("message_id", path), &headers).await
}

/// The status of one job (standalone style).
///
/// The same as `/api/v1/jobs/status/{message_id}` with the id as a query parameter and
/// errors as `{"error": ...}` (invalid parameters 400).
#[utoipa::path(
    get,
    path = "/status",
    tag = "jobs (standalone)",
    operation_id = "get_job_status_standalone",
    params(docs::MessageIdInQuery, docs::StatusQueryDoc, docs::IfNoneMatchDoc),
    responses(docs::StatusAnswers, docs::StandaloneErrors, docs::NoTraceStandalone)
)]
pub async fn by_query(call: Call, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = RawId::in_query("message_id", call.query.as_deref());
    respond(call, id, &headers).await
}
