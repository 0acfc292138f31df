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
pub struct UserJobs<'a> {
    jobs: Vec<job_trace::model::TraceView<'a>>,
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

impl<'a> UserJobs<'a> {
    /// The body of one page of `page`'s traces.
    pub(crate) fn of(page: &'a UserPage, limit: u32, skip: u64, include_history: bool) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId, Bson, DateTime, RawDocumentBuf};

    /// A page of `n` traces as the store's pipeline leaves them after a full lifecycle
    /// (the bench's mix: mostly successes with a scraped result, some failures, some
    /// still running with progress), in the `$facet` reply's bytes.
    fn facet_reply(n: usize, total: i32) -> Vec<u8> {
        let base = 1_780_000_000_000_i64;
        let jobs: Vec<Bson> = (0..n)
            .map(|i| {
                let at = |offset: i64| DateTime::from_millis(base - i as i64 * 61_000 + offset);
                let mut id = [0u8; 12];
                id[4..].copy_from_slice(&(i as u64).to_be_bytes());
                let entry = |attempt: i64, rank: i32, status: &str, offset| {
                    doc! { "attempt": attempt, "rank": rank, "status": status,
                    "at": at(offset), "error": Bson::Null }
                };
                let mut trace = doc! {
                    "_id": ObjectId::from_bytes(id),
                    "message_id": format!("{}", 4_000_000_000_000_000_u64 + i as u64),
                    "job_type": "property_scrape",
                    "url": format!("https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_{}/", 10_000_000 + i * 7919),
                    "line_user_id": "U01000000000000000000000000000007",
                    "check_only": false,
                    "created_at": at(0),
                    "updated_at": at(41_000),
                    "started_at": at(2_500),
                };
                let mut history = vec![entry(0, 0, "queued", 0), entry(1, 1, "processing", 2_500)];
                match i % 10 {
                    0 => {
                        let error = "scraper timed out after 30 s while loading the listing page";
                        let mut failed = entry(1, 2, "failed", 41_000);
                        failed.insert("error", error);
                        history.push(failed);
                        trace.extend(doc! { "status": "failed", "error": error,
                        "result": Bson::Null, "attempt": 1_i64, "rank": 2, "completed_at": at(41_000) });
                    }
                    1 => {
                        trace.extend(doc! { "status": "processing", "error": Bson::Null,
                        "result": Bson::Null, "attempt": 1_i64, "rank": 1,
                        "progress": { "attempt": 1_i64, "at": at(30_000), "done": 3_i64,
                        "total": 10_i64, "note": "pages" } });
                    }
                    _ => {
                        history.push(entry(1, 2, "success", 41_000));
                        trace.extend(doc! { "status": "success", "error": Bson::Null,
                        "result": { "status": "success", "property_info": { "properties": {
                            "name": format!("Example Property {}", 10_000_000 + i * 7919),
                            "price": format!("{}万円", 1_000 + i * 37),
                            "address": "東京都新宿区",
                        } } },
                        "attempt": 1_i64, "rank": 2, "completed_at": at(41_000) });
                    }
                }
                trace.insert("history", history);
                trace.insert("expire_at", at(90 * 86_400_000));
                trace.insert("revision", 3_i64);
                Bson::Document(trace)
            })
            .collect();
        let reply = doc! { "jobs": jobs, "total": [{ "n": total }] };
        bson::to_vec(&reply).unwrap()
    }

    /// The driver's reply bytes to the page, as the store does it (the copy is what
    /// the driver's cursor makes of its batch).
    fn decode(reply: &[u8]) -> UserPage {
        let facets = RawDocumentBuf::from_bytes(reply.to_vec()).unwrap();
        UserPage::of_facets(&facets)
    }

    /// The page to the body axum sends, as the handler does it.
    fn render(page: &UserPage) -> Vec<u8> {
        serde_json::to_vec(&UserJobs::of(page, 50, 0, false)).unwrap()
    }

    /// This thread's CPU time so far (the scheduler's own count, in ns): on a shared
    /// machine, wall time would also count other processes' turns.
    fn thread_cpu_ns() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        stat.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// CPU µs per call of `work`, min and median of 9 rounds of `calls`.
    fn cpu_per_call<T>(calls: u32, mut work: impl FnMut() -> T) -> (f64, f64) {
        let mut rounds: Vec<f64> = (0..9)
            .map(|_| {
                let start = thread_cpu_ns();
                for _ in 0..calls {
                    std::hint::black_box(work());
                }
                (thread_cpu_ns() - start) as f64 / f64::from(calls) / 1000.0
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        (rounds[0], rounds[4])
    }

    /// `cargo test --release -p trace-api --lib -- --ignored --nocapture list_page_cpu`:
    /// the CPU one page of 50 costs to decode and render, per page (min and median).
    #[test]
    #[ignore = "a measurement, not a check: run in release"]
    fn list_page_cpu() {
        let reply = facet_reply(50, 1234);
        let page = decode(&reply);
        assert_eq!((page.jobs.len(), page.total_count), (50, 1234));
        let body = render(&page);
        // FNV-1a of the body: the same before and after a change that keeps its bytes.
        let fnv = body.iter().fold(0xcbf29ce484222325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
        println!("body: {} bytes, fnv {fnv:016x}", body.len());
        let calls = 500;
        for (what, (min, median)) in [
            (
                "decode",
                cpu_per_call(calls, || decode(std::hint::black_box(&reply))),
            ),
            (
                "render",
                cpu_per_call(calls, || render(std::hint::black_box(&page))),
            ),
            (
                "both",
                cpu_per_call(calls, || render(&decode(std::hint::black_box(&reply)))),
            ),
        ] {
            println!("{what}: CPU per page of 50: min {min:.1} µs, median {median:.1} µs");
        }
    }
}
