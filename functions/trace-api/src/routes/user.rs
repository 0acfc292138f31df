//! `GET /api/v1/jobs/user/{line_user_id}` and `GET /job/user?line_user_id=`: a user's
//! jobs, newest first, paged, optionally filtered by status and job type.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use job_trace::store::{UserPage, UserQuery};
use serde::Serialize;

use crate::error::ApiError;
use crate::params;
use crate::routes::{docs, parse_with_id, Call, RawId};

/// A page of a user's jobs: the seed's list body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = JobList)]
pub struct UserJobs {
    jobs: Vec<job_trace::model::TraceView>,
    /// All the jobs that match the filters.
    total_count: u64,
    limit: u32,
    skip: u64,
    /// Jobs of this page left out because their stored trace cannot be read (each is
    /// logged as a server fault). Only when some were: a whole page keeps the seed's body
    /// exactly.
    #[serde(skip_serializing_if = "is_zero")]
    #[schema(required = false, minimum = 1)]
    omitted_count: u64,
}

impl UserJobs {
    /// The body of one page of `page`'s traces.
    pub(crate) fn of(page: &UserPage, limit: u32, skip: u64, include_history: bool) -> Self {
        UserJobs {
            jobs: page
                .jobs
                .iter()
                .map(|doc| doc.view(include_history))
                .collect(),
            total_count: page.total_count,
            limit,
            skip,
            omitted_count: page.omitted_count,
        }
    }
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

fn parse(query: Option<&str>, id: RawId) -> Result<(UserQuery, bool), ApiError> {
    let (line_user_id, (limit, skip, statuses, job_type, include_history)) =
        parse_with_id(query, id, params::line_user_id, |checks, query| {
            let limit = checks.take(params::limit(query));
            let skip = checks.take(params::skip(query));
            let statuses = checks.take(params::statuses(query));
            let job_type = checks.take(params::job_type(query));
            let include_history = checks.take(params::include_history(query));
            Some((limit?, skip?, statuses?, job_type?, include_history?))
        })?;
    let query = UserQuery {
        line_user_id,
        statuses,
        job_type,
        limit,
        skip,
    };
    Ok((query, include_history))
}

async fn respond(call: Call, id: RawId) -> Result<Response, ApiError> {
    let (query, include_history) = parse(call.query.as_deref(), id)?;
    if !call.principal.may_see(Some(query.line_user_id.as_str())) {
        return Err(ApiError::Forbidden(
            "Not allowed to list another user's jobs",
        ));
    }
    let page = call
        .state
        .store
        .list_by_user(&query)
        .await
        .map_err(ApiError::store)?;
    let body = UserJobs::of(&page, query.limit, query.skip, include_history);
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
    params(docs::UserIdInPath, docs::UserQueryDoc),
    responses(
        (status = 200, description = "A page of the user's jobs", body = UserJobs),
        docs::FastApiErrors,
        docs::NotYours,
    )
)]
pub async fn by_path(
    call: Call,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    respond(call, RawId::in_path("line_user_id", path)).await
}

/// A user's jobs (standalone style): errors as `{"error": ...}`, invalid parameters 400.
#[utoipa::path(
    get,
    path = "/user",
    tag = "jobs (standalone)",
    operation_id = "get_user_jobs_standalone",
    params(docs::UserIdInQuery, docs::UserQueryDoc),
    responses(
        (status = 200, description = "A page of the user's jobs", body = UserJobs),
        docs::StandaloneErrors,
        docs::NotYoursStandalone,
    )
)]
pub async fn by_query(call: Call) -> Result<Response, ApiError> {
    let id = RawId::in_query("line_user_id", call.query.as_deref());
    respond(call, id).await
}
