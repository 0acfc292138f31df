//! Schemas for the OpenAPI document. The bodies themselves are rendered by
//! `job_trace::model::TraceView`; these types describe them (the fuzzing test checks the
//! real responses against this description).

#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::{IntoParams, ToSchema};

/// A job's status.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Processing,
    Success,
    Failed,
    NotFound,
}

/// What kind of scrape a job is.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum JobTypeDoc {
    PropertyScrape,
    BatchCheck,
}

/// One status change a trace knows of (`include=history` only).
#[derive(ToSchema)]
pub struct HistoryEntry {
    pub attempt: i64,
    pub status: Status,
    /// RFC 3339 UTC with milliseconds.
    #[schema(example = "2023-06-01T12:35:01.456Z")]
    pub at: String,
    pub error: Option<String>,
}

/// The trace of one job: the seed's status object, every field present (`null` when
/// unknown), times in RFC 3339 UTC with milliseconds and `Z`.
#[derive(ToSchema)]
#[schema(example = json!({
    "id": "64a5b2e1a2b3c4d5e6f7a8b9",
    "message_id": "1234567890",
    "status": "success",
    "url": "https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_98142765/",
    "line_user_id": "U1234567890abcdef",
    "check_only": false,
    "created_at": "2023-06-01T12:34:56.789Z",
    "updated_at": "2023-06-01T12:35:42.123Z",
    "started_at": "2023-06-01T12:35:01.456Z",
    "completed_at": "2023-06-01T12:35:42.123Z",
    "error": null,
    "result": {"status": "success"}
}))]
pub struct JobTrace {
    /// The document's ObjectId as hex.
    pub id: Option<String>,
    pub message_id: String,
    pub status: Status,
    pub url: Option<String>,
    pub line_user_id: Option<String>,
    pub check_only: Option<bool>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub error: Option<String>,
    /// What the worker reported on success.
    #[schema(value_type = Option<Object>)]
    pub result: Option<BTreeMap<String, String>>,
    /// `include=history` only.
    #[schema(nullable)]
    pub job_type: Option<Option<JobTypeDoc>>,
    /// `include=history` only: the attempt of the current status.
    #[schema(nullable)]
    pub attempt: Option<Option<i64>>,
    /// `include=history` only: when the database deletes the trace.
    #[schema(nullable)]
    pub expire_at: Option<Option<String>>,
    /// `include=history` only.
    pub history: Option<Vec<HistoryEntry>>,
}

/// One server-sent event of the events route: `event: status`, `id` = the trace's ETag,
/// `data` = the status JSON (a `JobTrace`).
#[derive(ToSchema)]
pub struct StatusEvent {
    #[schema(pattern = "^status$")]
    pub event: String,
    /// The ETag of the trace this event carries; send it back as `Last-Event-ID`.
    pub id: String,
    /// Reconnection delay in milliseconds.
    pub retry: Option<u64>,
    /// The trace as JSON, exactly as `GET /api/v1/jobs/status/{message_id}` renders it.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// A page of a user's jobs.
#[derive(ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobTrace>,
    /// All the user's jobs that match the filters.
    pub total_count: u64,
    pub limit: u32,
    pub skip: u64,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQueryDoc {
    /// Long-poll: with `If-None-Match`, hold the request up to this many seconds until
    /// the trace changes.
    #[param(minimum = 0, maximum = 30)]
    pub wait: Option<u32>,
    /// `history` adds job_type, attempt, expire_at and history to the body.
    #[param(pattern = "^history(,history)*$")]
    pub include: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQueryDoc {
    /// `history` adds job_type, attempt, expire_at and history to each event.
    #[param(pattern = "^history(,history)*$")]
    pub include: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQueryDoc {
    /// Page size.
    #[param(minimum = 1, maximum = 100, default = 50)]
    pub limit: Option<u32>,
    /// Jobs to skip.
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    pub skip: Option<u64>,
    /// One or several of queued, processing, success, failed, not_found, comma-separated.
    #[param(
        pattern = "^(queued|processing|success|failed|not_found)(,(queued|processing|success|failed|not_found))*$"
    )]
    pub status: Option<String>,
    /// property_scrape or batch_check.
    pub job_type: Option<JobTypeDoc>,
    /// `history` adds job_type, attempt, expire_at and history to each job.
    #[param(pattern = "^history(,history)*$")]
    pub include: Option<String>,
}
