//! What the OpenAPI document needs beyond the model: the bodies come from
//! `job_trace::model` itself (feature `openapi`: `TraceView` is `JobTrace`), the id
//! parameters are built here once, and these types describe the rest (the fuzzing test
//! checks the real responses against this description).

#![allow(dead_code)]

use job_trace::ids::MAX_ID_BYTES;
use job_trace::model::{JobType, TraceView};
use serde_json::json;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{ObjectBuilder, RefOr, Required, Type};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use crate::error::{DetailBody, ErrorBody, ValidationBody};

/// What `job_trace::ids` accepts: not blank, no control characters.
const ID_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";

/// One id parameter, as both path styles take it: in the path (URL-encoded) or the query.
fn id_parameter(name: &str, what: &str, location: ParameterIn, example: &str) -> Parameter {
    let encoded = if location == ParameterIn::Path {
        "URL-encoded; "
    } else {
        ""
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(Required::True)
        .description(Some(format!(
            "{what} ({encoded}at most {MAX_ID_BYTES} bytes of UTF-8, no control characters)"
        )))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_ID_BYTES))
                .pattern(Some(ID_PATTERN)),
        ))
        .example(Some(json!(example)))
        .build()
}

macro_rules! id_parameter {
    ($(#[$doc:meta])* $type:ident, $name:literal, $what:expr, $location:ident, $example:literal) => {
        $(#[$doc])*
        pub struct $type;

        impl IntoParams for $type {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                vec![id_parameter($name, $what, ParameterIn::$location, $example)]
            }
        }
    };
}

const JOB_ID: &str = "The Pub/Sub messageId of the job";
const USER_ID: &str = "The LINE user id";

id_parameter!(
    /// `{message_id}` in the path.
    MessageIdInPath, "message_id", JOB_ID, Path, "1234567890"
);
id_parameter!(
    /// `?message_id=`.
    MessageIdInQuery, "message_id", JOB_ID, Query, "1234567890"
);
id_parameter!(
    /// `{line_user_id}` in the path.
    UserIdInPath, "line_user_id", USER_ID, Path, "U1234567890abcdef"
);
id_parameter!(
    /// `?line_user_id=`.
    UserIdInQuery, "line_user_id", USER_ID, Query, "U1234567890abcdef"
);

/// The answers of both status routes that are not errors.
#[derive(IntoResponses)]
// Never built: it only describes the answers.
#[allow(clippy::large_enum_variant)]
pub enum StatusAnswers {
    /// The trace
    #[response(
        status = 200,
        headers(
            ("ETag" = String, description = "Changes exactly when the trace does"),
            ("Cache-Control" = String, description = "no-cache")
        )
    )]
    Trace(TraceView<'static>),
    /// Unchanged since If-None-Match (after waiting, with wait)
    #[response(status = 304)]
    NotModified,
}

// A trace that does not exist, or another user's, in each path style's error body.

/// No such trace (or another user's)
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct NoTrace(DetailBody);

/// No such trace (or another user's)
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct NoTraceStandalone(ErrorBody);

// Another user's jobs, in each path style's error body.

/// Another user's jobs
#[derive(IntoResponses)]
#[response(status = 403)]
pub struct NotYours(DetailBody);

/// Another user's jobs
#[derive(IntoResponses)]
#[response(status = 403)]
pub struct NotYoursStandalone(ErrorBody);

/// The errors every FastAPI-style (`/api/v1`) route may answer.
#[derive(IntoResponses)]
pub enum FastApiErrors {
    /// Missing or invalid credentials
    #[response(status = 401)]
    Unauthenticated(DetailBody),
    /// Invalid parameters
    #[response(status = 422)]
    Invalid(ValidationBody),
    /// Database unavailable
    #[response(status = 503)]
    Unavailable(DetailBody),
}

/// The errors every standalone-style (`/job`) route may answer.
#[derive(IntoResponses)]
pub enum StandaloneErrors {
    /// Missing or invalid parameters
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// Missing or invalid credentials
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// Database unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// What the model's doc comments do not say of `JobTrace`: an example. Applied to the
/// whole document, since the model's schemas join it only with the routes.
pub struct TraceExample;

impl utoipa::Modify for TraceExample {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let trace = openapi
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("JobTrace"));
        if let Some(RefOr::T(Schema::AllOf(trace))) = trace {
            trace.example = Some(json!({
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
            }));
        }
    }
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
    /// The trace as JSON (a `JobTrace`), exactly as `GET /api/v1/jobs/status/{message_id}`
    /// renders it.
    #[schema(content_media_type = "application/json")]
    pub data: String,
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

/// The conditional request of both status routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfNoneMatchDoc {
    /// An ETag from an earlier answer
    #[param(rename = "If-None-Match")]
    pub if_none_match: Option<String>,
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
    pub job_type: Option<JobType>,
    /// `history` adds job_type, attempt, expire_at and history to each job.
    #[param(pattern = "^history(,history)*$")]
    pub include: Option<String>,
}
