//! `GET /api/v1/jobs/user/{line_user_id}` and `GET /job/user?line_user_id=`: a user's
//! jobs, newest first, paged, optionally filtered by status and job type.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use job_trace::store::UserQuery;
use serde::Serialize;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorKind, FieldError, Location, Style};
use crate::params::{self, Checks, Query};
use crate::routes::path_value;
use crate::AppState;

/// The seed's list body.
#[derive(Serialize)]
struct UserJobs {
    jobs: Vec<job_trace::model::TraceView>,
    total_count: u64,
    limit: u32,
    skip: u64,
}

fn parse(
    style: Style,
    query: Option<&str>,
    user: Result<String, FieldError>,
    location: Location,
) -> Result<(UserQuery, bool), ApiError> {
    let mut checks = Checks::default();
    let query = checks.take(Query::parse(query)).unwrap_or_default();
    let user = checks.take(user.and_then(|raw| params::line_user_id(location, Some(&raw))));
    let limit = checks.take(params::limit(&query));
    let skip = checks.take(params::skip(&query));
    let statuses = checks.take(params::statuses(&query));
    let job_type = checks.take(params::job_type(&query));
    let include_history = checks.take(params::include_history(&query));
    checks
        .finish()
        .map_err(|errors| ApiError::invalid(style, errors))?;
    match (user, limit, skip, statuses, job_type, include_history) {
        (Some(line_user_id), Some(limit), Some(skip), Some(statuses), Some(job_type), Some(h)) => {
            Ok((
                UserQuery {
                    line_user_id,
                    statuses,
                    job_type,
                    limit,
                    skip,
                },
                h,
            ))
        }
        _ => Err(ApiError::invalid(style, Vec::new())),
    }
}

async fn respond(
    state: &AppState,
    style: Style,
    principal: &Principal,
    query: UserQuery,
    include_history: bool,
) -> Result<Response, ApiError> {
    if !principal.may_see(Some(query.line_user_id.as_str())) {
        return Err(ApiError::new(
            style,
            ErrorKind::Forbidden("Not allowed to list another user's jobs"),
        ));
    }
    let page = state
        .store
        .list_by_user(&query)
        .await
        .map_err(|error| ApiError::store(style, error))?;
    let body = UserJobs {
        jobs: page
            .jobs
            .iter()
            .map(|doc| doc.view(include_history))
            .collect(),
        total_count: page.total_count,
        limit: query.limit,
        skip: query.skip,
    };
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Json(body),
    )
        .into_response())
}

/// A user's jobs (FastAPI style), newest first by `created_at`.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/user/{line_user_id}",
    tag = "jobs",
    operation_id = "get_user_jobs",
    params(
        ("line_user_id" = String, Path, description = "The LINE user id (URL-encoded; at most 1024 bytes of UTF-8, no control characters)", pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$", min_length = 1, max_length = 1024, example = "U1234567890abcdef"),
        crate::routes::docs::UserQueryDoc,
    ),
    responses(
        (status = 200, description = "A page of the user's jobs", body = crate::routes::docs::JobList),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::DetailBody),
        (status = 403, description = "Another user's jobs", body = crate::error::DetailBody),
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
) -> Result<Response, ApiError> {
    let style = Style::FastApi;
    let (query, include_history) = parse(
        style,
        query.as_deref(),
        path_value("line_user_id", path),
        Location::Path,
    )?;
    respond(&state, style, &principal, query, include_history).await
}

/// A user's jobs (standalone style): errors as `{"error": ...}`, invalid parameters 400.
#[utoipa::path(
    get,
    path = "/job/user",
    tag = "jobs (standalone)",
    operation_id = "get_user_jobs_standalone",
    params(
        ("line_user_id" = String, Query, description = "The LINE user id (at most 1024 bytes of UTF-8, no control characters)", pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$", min_length = 1, max_length = 1024, example = "U1234567890abcdef"),
        crate::routes::docs::UserQueryDoc,
    ),
    responses(
        (status = 200, description = "A page of the user's jobs", body = crate::routes::docs::JobList),
        (status = 400, description = "Missing or invalid parameters", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorBody),
        (status = 403, description = "Another user's jobs", body = crate::error::ErrorBody),
        (status = 503, description = "Database unavailable", body = crate::error::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn by_query(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let style = Style::Standalone;
    let raw_user = Query::parse(query.as_deref())
        .ok()
        .and_then(|q| q.last("line_user_id").map(str::to_owned))
        .ok_or_else(|| FieldError::missing(Location::Query, "line_user_id"));
    let (query, include_history) = parse(style, query.as_deref(), raw_user, Location::Query)?;
    respond(&state, style, &principal, query, include_history).await
}
