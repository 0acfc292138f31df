//! The original system's `job_traces` documents, written as its code wrote them, for the
//! cut-over tests.
//!
//! The original (Python, pymongo, pydantic) did this, and so does this module:
//!
//! * `create_job_trace` (called by the API when it queued a job, so the API set
//!   `job_type`) inserted `JobTraceModel(...).model_dump(by_alias=True)` without `_id`: the
//!   server made an ObjectId, and every model field is present in the model's order,
//!   `started_at`, `completed_at`, `error` and `result` as explicit nulls. It did nothing
//!   when a trace for the message_id already existed.
//! * `update_job_status` (called by the worker) `$set` `status` and `updated_at`, plus
//!   `started_at` for `processing` or `completed_at` for a terminal status, plus `result`
//!   and `error` only when given. It cleared nothing: a redelivered job's `processing` after
//!   a `failed` kept the old `completed_at` and `error`.
//! * Times came from `get_current_time()`: Tokyo wall-clock time as a naive datetime,
//!   which pymongo stores as if it were UTC (so 9 hours ahead), to the millisecond.
//! * No `attempt`, `rank`, `history` or `expire_at`.
//! * `get_db()` created its indexes with pymongo's default names and `background=True`.

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use job_trace::config::DatabaseConfig;
use job_trace::model::{JobStatus, JobType};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};

/// How far ahead of UTC the original's timestamps are (Asia/Tokyo, no daylight saving).
pub const JST_OFFSET_MILLIS: i64 = 9 * 60 * 60 * 1000;

/// What the original stored for the real instant `utc`: the Tokyo wall clock, labelled UTC.
pub fn naive_jst(utc: bson::DateTime) -> bson::DateTime {
    bson::DateTime::from_millis(utc.timestamp_millis() + JST_OFFSET_MILLIS)
}

/// The traces collection of `config`, through a client of its own: the original's
/// documents are written with the plain driver, never through this system's store.
pub async fn collection(config: &DatabaseConfig) -> Collection<Document> {
    let options = ClientOptions::parse(&config.mongo_uri)
        .await
        .expect("connection string");
    Client::with_options(options)
        .expect("client")
        .database(&config.mongo_database)
        .collection(&config.collection_job_traces)
}

/// What the original's API knew of a job when it queued it.
#[derive(Debug, Clone)]
pub struct LegacyJob {
    pub message_id: String,
    pub job_type: JobType,
    pub url: Option<String>,
    pub line_user_id: Option<String>,
    pub check_only: bool,
}

impl LegacyJob {
    /// A property scrape of `line_user_id`.
    pub fn scrape(message_id: &str, line_user_id: &str) -> LegacyJob {
        LegacyJob {
            message_id: message_id.into(),
            job_type: JobType::PropertyScrape,
            url: Some(format!(
                "https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_{message_id}/"
            )),
            line_user_id: Some(line_user_id.into()),
            check_only: false,
        }
    }
}

/// `create_job_trace(message_id, job_type, url, line_user_id, check_only)` at the real
/// instant `now`. Returns the trace's `_id` (the existing one when there was a trace).
pub async fn create_job_trace(
    traces: &Collection<Document>,
    job: &LegacyJob,
    now: bson::DateTime,
) -> ObjectId {
    if let Some(existing) = traces
        .find_one(doc! { "message_id": &job.message_id })
        .await
        .expect("find_one")
    {
        return existing.get_object_id("_id").expect("_id");
    }
    let now = naive_jst(now);
    let document = doc! {
        "message_id": &job.message_id,
        "job_type": job.job_type.as_str(),
        "status": JobStatus::Queued.as_str(),
        "url": job.url.clone(),
        "line_user_id": job.line_user_id.clone(),
        "check_only": job.check_only,
        "created_at": now,
        "updated_at": now,
        "started_at": Bson::Null,
        "completed_at": Bson::Null,
        "error": Bson::Null,
        "result": Bson::Null,
    };
    traces
        .insert_one(document)
        .await
        .expect("insert_one")
        .inserted_id
        .as_object_id()
        .expect("the server makes an ObjectId")
}

/// `update_job_status(message_id, status, result, error)` at the real instant `now`.
/// Returns whether a trace matched, as the original did.
pub async fn update_job_status(
    traces: &Collection<Document>,
    message_id: &str,
    status: JobStatus,
    result: Option<Document>,
    error: Option<&str>,
    now: bson::DateTime,
) -> bool {
    let now = naive_jst(now);
    let mut update = doc! { "status": status.as_str(), "updated_at": now };
    match status {
        JobStatus::Processing => {
            update.insert("started_at", now);
        }
        status if status.is_terminal() => {
            update.insert("completed_at", now);
        }
        _ => {}
    }
    if let Some(result) = result {
        update.insert("result", result);
    }
    if let Some(error) = error {
        update.insert("error", error);
    }
    traces
        .update_one(doc! { "message_id": message_id }, doc! { "$set": update })
        .await
        .expect("update_one")
        .matched_count
        > 0
}

/// The result the original's worker stored for a successful scrape.
pub fn scrape_result() -> Document {
    doc! {
        "status": "success",
        "property_info": { "properties": { "name": "Example Property" } },
    }
}

/// The error the original's worker stored with `status` (none for the others).
pub fn error_for(status: JobStatus) -> Option<&'static str> {
    match status {
        JobStatus::Failed => Some("HTTP 503 from suumo.jp"),
        JobStatus::NotFound => Some("Property not found"),
        _ => None,
    }
}

/// The original's calls for one job left at `status`: queued at `created`, processing 5 s
/// later, the terminal status 40 s after creation (with the worker's result or error).
pub async fn job_at(
    traces: &Collection<Document>,
    job: &LegacyJob,
    status: JobStatus,
    created: bson::DateTime,
) -> ObjectId {
    let later =
        |seconds: i64| bson::DateTime::from_millis(created.timestamp_millis() + seconds * 1000);
    let id = create_job_trace(traces, job, created).await;
    if status != JobStatus::Queued {
        update_job_status(
            traces,
            &job.message_id,
            JobStatus::Processing,
            None,
            None,
            later(5),
        )
        .await;
    }
    if status.is_terminal() {
        let result = (status == JobStatus::Success).then(scrape_result);
        update_job_status(
            traces,
            &job.message_id,
            status,
            result,
            error_for(status),
            later(40),
        )
        .await;
    }
    id
}

/// The real instants of the seed's example job (`fixtures/seed-status-response.json`
/// shows them as the original stored them, 9 hours ahead).
pub fn seed_example_instants() -> [bson::DateTime; 3] {
    let stored = |millis: i64| bson::DateTime::from_millis(millis - JST_OFFSET_MILLIS);
    [
        stored(1_685_622_896_789), // 2023-06-01T12:34:56.789Z: created
        stored(1_685_622_901_456), // 2023-06-01T12:35:01.456Z: processing
        stored(1_685_622_942_123), // 2023-06-01T12:35:42.123Z: success
    ]
}

/// The seed's example job as the original recorded it: message_id `1234567890` of user
/// `U1234567890abcdef`, queued, processing, success with the example's result.
pub async fn seed_example(traces: &Collection<Document>) -> ObjectId {
    let [created, started, completed] = seed_example_instants();
    let job = LegacyJob {
        message_id: "1234567890".into(),
        job_type: JobType::PropertyScrape,
        url: Some("https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_98142765/".into()),
        line_user_id: Some("U1234567890abcdef".into()),
        check_only: false,
    };
    let id = create_job_trace(traces, &job, created).await;
    update_job_status(
        traces,
        "1234567890",
        JobStatus::Processing,
        None,
        None,
        started,
    )
    .await;
    update_job_status(
        traces,
        "1234567890",
        JobStatus::Success,
        Some(scrape_result()),
        None,
        completed,
    )
    .await;
    id
}

/// The index set the original's `get_db()` created, as pymongo sent it: default names,
/// then the keyword arguments in the order of the calls (`background=True` on each).
pub fn original_indexes() -> Vec<Document> {
    let index = |key: Document, name: &str, options: Document| {
        let mut index = doc! { "key": key, "name": name };
        index.extend(options);
        index
    };
    let ttl = |seconds: i32| doc! { "expireAfterSeconds": seconds, "background": true };
    let mut completed_ttl = ttl(3 * 24 * 60 * 60);
    completed_ttl.insert(
        "partialFilterExpression",
        doc! { "completed_at": { "$exists": true } },
    );
    let background = || doc! { "background": true };
    vec![
        index(
            doc! { "message_id": 1 },
            "message_id_1",
            doc! { "unique": true, "background": true },
        ),
        index(doc! { "line_user_id": 1 }, "line_user_id_1", background()),
        index(doc! { "status": 1 }, "status_1", background()),
        index(doc! { "created_at": -1 }, "created_at_-1", background()),
        index(doc! { "updated_at": -1 }, "updated_at_-1", background()),
        index(
            doc! { "created_at": 1 },
            "created_at_1",
            ttl(7 * 24 * 60 * 60),
        ),
        index(doc! { "completed_at": 1 }, "completed_at_1", completed_ttl),
    ]
}

/// Creates [`original_indexes`] one `createIndexes` at a time, as `get_db()` did.
pub async fn create_original_indexes(traces: &Collection<Document>) {
    let namespace = traces.namespace();
    let database = traces.client().database(&namespace.db);
    for index in original_indexes() {
        database
            .run_command(doc! { "createIndexes": &namespace.coll, "indexes": [index] })
            .await
            .expect("the original's createIndexes");
    }
}
