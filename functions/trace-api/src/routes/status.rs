//! `GET /api/v1/jobs/status/{message_id}` and `GET /job/status?message_id=`: one trace,
//! with ETag/304 and long-poll (`?wait=N`).

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use job_trace::MessageId;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::error::{ApiError, DetailBody, ErrorBody, FieldError, Location};
use crate::etag;
use crate::params::{self, Checks};
use crate::routes::{docs, path_value, read};
use crate::state::AppState;

/// Status parameters both path styles share.
struct StatusParams {
    include_history: bool,
    wait: Duration,
}

fn parse(
    query: Option<&str>,
    message_id: Result<String, FieldError>,
    location: Location,
) -> Result<(MessageId, StatusParams), ApiError> {
    Checks::run(query, |checks, query| {
        let message_id =
            checks.take(message_id.and_then(|raw| params::message_id(location, Some(&raw))));
        let include_history = checks.take(params::include_history(query));
        let wait = checks.take(params::wait(query));
        Some((
            message_id?,
            StatusParams {
                include_history: include_history?,
                wait: wait?,
            },
        ))
    })
}

/// Answers at once when the trace differs from `If-None-Match` (or none was sent), or is
/// terminal; otherwise holds the request until the trace changes or `wait` runs out.
async fn respond(
    state: &AppState,
    principal: &Principal,
    message_id: &MessageId,
    params: StatusParams,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
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
    params(
        docs::MessageIdInPath,
        docs::StatusQueryDoc,
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        docs::StatusAnswers,
        docs::FastApiErrors,
        (status = 404, description = "No such trace (or another user's)", body = DetailBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn by_path(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (message_id, params) = parse(
        query.as_deref(),
        path_value("message_id", path),
        Location::Path,
    )?;
    respond(&state, &principal, &message_id, params, &headers).await
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
    params(
        docs::MessageIdInQuery,
        docs::StatusQueryDoc,
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        docs::StatusAnswers,
        docs::StandaloneErrors,
        (status = 404, description = "No such trace (or another user's)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn by_query(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw_id = params::required(query.as_deref(), "message_id");
    let (message_id, params) = parse(query.as_deref(), raw_id, Location::Query)?;
    respond(&state, &principal, &message_id, params, &headers).await
}
