//! The operators' views: `GET /api/v1/jobs` (jobs across users: the stalled ones oldest
//! first with `stalled_for`, else the most recently changed) and `GET /api/v1/jobs/stats`.
//!
//! Both cross every user's traces, so only an operator may read them
//! ([`Principal::is_operator`]): with `API_AUTH=token` the token's holder, with
//! `API_AUTH=line` nobody (every LINE user gets 403), with `API_AUTH=none` anyone.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use job_trace::model::{JobStatus, JobType};
use job_trace::store::ops::{JobsQuery, Stats, STALLED_STATUSES};
use job_trace::store::UserPage;
use serde::Serialize;
use utoipa::{IntoParams, IntoResponses};

use crate::auth::Principal;
use crate::error::{ApiError, DetailBody, FieldError};
use crate::params::{self, Checks, Query};
use crate::routes::docs;
use crate::routes::user::UserJobs;
use crate::routes::Call;

/// The longest threshold and window, in seconds: traces expire within 7 days.
pub const MAX_SECONDS: u64 = 7 * 24 * 60 * 60;
/// The statistics' window when none is given: a day.
pub const DEFAULT_WINDOW_SECONDS: u64 = 24 * 60 * 60;

fn seconds(query: &Query, name: &'static str) -> Result<Option<u64>, FieldError> {
    query
        .last(name)
        .map(|raw| params::integer(name, raw, 1, MAX_SECONDS))
        .transpose()
}

/// The query, whether to include history, and whether it can match no job at all.
fn parse_jobs(raw: Option<&str>, now: bson::DateTime) -> Result<(JobsQuery, bool, bool), ApiError> {
    Checks::run(raw, |checks, query| {
        let stalled_for = checks.take(seconds(query, "stalled_for"));
        let statuses = checks.take(params::statuses(query));
        let job_type = checks.take(params::job_type(query));
        let limit = checks.take(params::limit(query));
        let skip = checks.take(params::skip(query));
        let include_history = checks.take(params::include_history(query));
        let stalled_for = stalled_for?;
        // A finished job is never stalled: with `stalled_for`, only queued and processing
        // of the statuses asked for can match (`status=failed` matches nothing).
        let asked = statuses?;
        let matches_nothing = stalled_for.is_some()
            && !asked.is_empty()
            && !asked.iter().any(|status| STALLED_STATUSES.contains(status));
        let statuses: Vec<JobStatus> = match stalled_for {
            Some(_) => asked
                .into_iter()
                .filter(|status| STALLED_STATUSES.contains(status))
                .collect(),
            None => asked,
        };
        let stalled_before = stalled_for
            .map(|secs| bson::DateTime::from_millis(now.timestamp_millis() - secs as i64 * 1000));
        let query = JobsQuery {
            stalled_before,
            statuses,
            job_type: job_type?,
            limit: limit?,
            skip: skip?,
        };
        Some((query, include_history?, matches_nothing))
    })
}

fn operator_only(principal: &Principal) -> Result<(), ApiError> {
    if principal.is_operator() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Operator views need the API token: a LINE user sees only their own jobs",
        ))
    }
}

fn no_cache(body: impl Serialize) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Json(body),
    )
        .into_response()
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQueryDoc {
    /// Only stalled jobs: queued or processing with nothing recorded (no status, no
    /// progress) for more than this many seconds, oldest first. Without it, jobs of every
    /// user, the most recently changed first.
    #[param(minimum = 1, maximum = 604800)]
    pub stalled_for: Option<u64>,
    /// Page size.
    #[param(minimum = 1, maximum = 100, default = 50)]
    pub limit: Option<u32>,
    /// Jobs to skip.
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    pub skip: Option<u64>,
    /// One or several statuses, comma-separated (with stalled_for only queued and
    /// processing can match: a finished job is never stalled).
    #[param(
        pattern = "^(queued|processing|success|failed|not_found)(,(queued|processing|success|failed|not_found))*$"
    )]
    pub status: Option<String>,
    /// property_scrape or batch_check.
    pub job_type: Option<JobType>,
    /// `history` adds job_type, attempt, expire_at and history to each job.
    #[param(pattern = "^history(,history)*$")]
    pub include: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQueryDoc {
    /// The window, in seconds back from now, of the jobs counted (by `created_at`).
    #[param(minimum = 1, maximum = 604800, default = 86400)]
    pub window: Option<u64>,
}

/// A LINE user (API_AUTH=line): operator views cross every user's jobs
#[derive(IntoResponses)]
#[response(status = 403)]
// Never built: it only describes the answer.
#[allow(dead_code)]
pub struct OperatorsOnly(DetailBody);

/// Jobs across users (operators): the stalled ones, oldest first, with `stalled_for`.
///
/// An operator view: with API_AUTH=token it needs the API token, with API_AUTH=line it is
/// refused (403) to every LINE user, with API_AUTH=none it is open. "Nothing recorded"
/// is the job's `updated_at`, the latest time of any message about it.
#[utoipa::path(
    get,
    path = "/jobs",
    tag = "operations",
    operation_id = "list_jobs",
    params(JobsQueryDoc),
    responses(
        (status = 200, description = "A page of jobs across users", body = UserJobs),
        docs::FastApiErrors,
        OperatorsOnly,
    )
)]
pub async fn jobs(call: Call) -> Result<Response, ApiError> {
    let (query, include_history, matches_nothing) =
        parse_jobs(call.query.as_deref(), bson::DateTime::now())?;
    operator_only(&call.principal)?;
    let page = if matches_nothing {
        UserPage {
            jobs: Vec::new(),
            total_count: 0,
            omitted_count: 0,
        }
    } else {
        call.state
            .store
            .list_jobs(&query)
            .await
            .map_err(ApiError::store)?
    };
    Ok(no_cache(UserJobs::of(
        &page,
        query.limit,
        query.skip,
        include_history,
    )))
}

/// The statistics of a window.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = JobStatsWindow)]
pub struct StatsBody {
    /// The window in seconds, and where it starts (RFC 3339, UTC).
    window: u64,
    since: String,
    #[serde(flatten)]
    stats: Stats,
}

/// Counts of the jobs created in the window (operators): by status and job type, the
/// most frequent errors, and the median and 95th percentile of `completed_at -
/// created_at` of those finished. One aggregate query.
///
/// An operator view: with API_AUTH=token it needs the API token, with API_AUTH=line it is
/// refused (403) to every LINE user, with API_AUTH=none it is open.
#[utoipa::path(
    get,
    path = "/jobs/stats",
    tag = "operations",
    operation_id = "job_stats",
    params(StatsQueryDoc),
    responses(
        (status = 200, description = "The window's statistics", body = StatsBody),
        docs::FastApiErrors,
        OperatorsOnly,
    )
)]
pub async fn stats(call: Call) -> Result<Response, ApiError> {
    let window = Checks::run(call.query.as_deref(), |checks, query| {
        checks.take(seconds(query, "window"))
    })?
    .unwrap_or(DEFAULT_WINDOW_SECONDS);
    operator_only(&call.principal)?;
    let now = bson::DateTime::now().timestamp_millis();
    let since = bson::DateTime::from_millis(now - window as i64 * 1000);
    let stats = call
        .state
        .store
        .stats(since)
        .await
        .map_err(ApiError::store)?;
    Ok(no_cache(StatsBody {
        window,
        since: job_trace::model::render_time(since),
        stats,
    }))
}
