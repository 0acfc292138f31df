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
use crate::error::{ApiError, DetailBody, ErrorBody, FieldError, Location};
use crate::params::{self, Checks};
use crate::routes::{docs, path_value};
use crate::state::AppState;

/// A page of a user's jobs: the seed's list body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = JobList)]
pub struct UserJobs {
    jobs: Vec<job_trace::model::TraceView>,
    /// All the user's jobs that match the filters.
    total_count: u64,
    limit: u32,
    skip: u64,
}

fn parse(
    query: Option<&str>,
    user: Result<String, FieldError>,
    location: Location,
) -> Result<(UserQuery, bool), ApiError> {
    Checks::run(query, |checks, query| {
        let user = checks.take(user.and_then(|raw| params::line_user_id(location, Some(&raw))));
        let limit = checks.take(params::limit(query));
        let skip = checks.take(params::skip(query));
        let statuses = checks.take(params::statuses(query));
        let job_type = checks.take(params::job_type(query));
        let include_history = checks.take(params::include_history(query));
        let query = UserQuery {
            line_user_id: user?,
            statuses: statuses?,
            job_type: job_type?,
            limit: limit?,
            skip: skip?,
        };
        Some((query, include_history?))
    })
}

async fn respond(
    state: &AppState,
    principal: &Principal,
    query: UserQuery,
    include_history: bool,
) -> Result<Response, ApiError> {
    if !principal.may_see(Some(query.line_user_id.as_str())) {
        return Err(ApiError::Forbidden(
            "Not allowed to list another user's jobs",
        ));
    }
    let page = state
        .store
        .list_by_user(&query)
        .await
        .map_err(ApiError::store)?;
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
    path = "/jobs/user/{line_user_id}",
    tag = "jobs",
    operation_id = "get_user_jobs",
    params(
        docs::UserIdInPath,
        docs::UserQueryDoc,
    ),
    responses(
        (status = 200, description = "A page of the user's jobs", body = UserJobs),
        docs::FastApiErrors,
        (status = 403, description = "Another user's jobs", body = DetailBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn by_path(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (query, include_history) = parse(
        query.as_deref(),
        path_value("line_user_id", path),
        Location::Path,
    )?;
    respond(&state, &principal, query, include_history).await
}

/// A user's jobs (standalone style): errors as `{"error": ...}`, invalid parameters 400.
#[utoipa::path(
    get,
    path = "/user",
    tag = "jobs (standalone)",
    operation_id = "get_user_jobs_standalone",
    params(
        docs::UserIdInQuery,
        docs::UserQueryDoc,
    ),
    responses(
        (status = 200, description = "A page of the user's jobs", body = UserJobs),
        docs::StandaloneErrors,
        (status = 403, description = "Another user's jobs", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn by_query(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let raw_user = params::required(query.as_deref(), "line_user_id");
    let (query, include_history) = parse(query.as_deref(), raw_user, Location::Query)?;
    respond(&state, &principal, query, include_history).await
}
