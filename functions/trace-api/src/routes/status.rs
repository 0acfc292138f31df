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
use crate::error::{ApiError, Location, Style};
use crate::params::{self, Checks, Query};
use crate::routes::{path_value, read};
use crate::{etag, AppState};

/// Status parameters both path styles share.
struct StatusParams {
    include_history: bool,
    wait: Duration,
}

fn parse(
    style: Style,
    query: Option<&str>,
    message_id: Result<String, crate::error::FieldError>,
    location: Location,
) -> Result<(MessageId, StatusParams), ApiError> {
    let mut checks = Checks::default();
    let query = checks.take(Query::parse(query)).unwrap_or_default();
    let message_id =
        checks.take(message_id.and_then(|raw| params::message_id(location, Some(&raw))));
    let include_history = checks.take(params::include_history(&query));
    let wait = checks.take(params::wait(&query));
    checks
        .finish()
        .map_err(|errors| ApiError::invalid(style, errors))?;
    match (message_id, include_history, wait) {
        (Some(message_id), Some(include_history), Some(wait)) => Ok((
            message_id,
            StatusParams {
                include_history,
                wait,
            },
        )),
        _ => Err(ApiError::invalid(style, Vec::new())),
    }
}

/// Answers at once when the trace differs from `If-None-Match` (or none was sent), or is
/// terminal; otherwise holds the request until the trace changes or `wait` runs out.
async fn respond(
    state: &AppState,
    style: Style,
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
        let rendered = read(state, style, principal, message_id, params.include_history)
            .await?
            .ok_or_else(|| ApiError::not_found(style, message_id.as_str()))?;
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
    path = "/api/v1/jobs/status/{message_id}",
    tag = "jobs",
    operation_id = "get_job_status",
    params(
        ("message_id" = String, Path, description = "The Pub/Sub messageId of the job (URL-encoded; at most 1024 bytes of UTF-8, no control characters)", pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$", min_length = 1, max_length = 1024, example = "1234567890"),
        crate::routes::docs::StatusQueryDoc,
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The trace", body = crate::routes::docs::JobTrace,
            headers(("ETag" = String, description = "Changes exactly when the trace does"),
                    ("Cache-Control" = String, description = "no-cache"))),
        (status = 304, description = "Unchanged since If-None-Match (after waiting, with wait)"),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::DetailBody),
        (status = 404, description = "No such trace (or another user's)", body = crate::error::DetailBody),
        (status = 422, description = "Invalid parameters", body = crate::error::ValidationBody),
        (status = 503, description = "Database unavailable", body = crate::error::DetailBody),
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
    let style = Style::FastApi;
    let (message_id, params) = parse(
        style,
        query.as_deref(),
        path_value("message_id", path),
        Location::Path,
    )?;
    respond(&state, style, &principal, &message_id, params, &headers).await
}

/// The status of one job (standalone style).
///
/// The same as `/api/v1/jobs/status/{message_id}` with the id as a query parameter and
/// errors as `{"error": ...}` (invalid parameters 400).
#[utoipa::path(
    get,
    path = "/job/status",
    tag = "jobs (standalone)",
    operation_id = "get_job_status_standalone",
    params(
        ("message_id" = String, Query, description = "The Pub/Sub messageId of the job (at most 1024 bytes of UTF-8, no control characters)", pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$", min_length = 1, max_length = 1024, example = "1234567890"),
        crate::routes::docs::StatusQueryDoc,
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The trace", body = crate::routes::docs::JobTrace,
            headers(("ETag" = String, description = "Changes exactly when the trace does"),
                    ("Cache-Control" = String, description = "no-cache"))),
        (status = 304, description = "Unchanged since If-None-Match (after waiting, with wait)"),
        (status = 400, description = "Missing or invalid parameters", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorBody),
        (status = 404, description = "No such trace (or another user's)", body = crate::error::ErrorBody),
        (status = 503, description = "Database unavailable", body = crate::error::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn by_query(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let style = Style::Standalone;
    let raw_id = Query::parse(query.as_deref())
        .ok()
        .and_then(|q| q.last("message_id").map(str::to_owned))
        .ok_or_else(|| crate::error::FieldError::missing(Location::Query, "message_id"));
    let (message_id, params) = parse(style, query.as_deref(), raw_id, Location::Query)?;
    respond(&state, style, &principal, &message_id, params, &headers).await
}
