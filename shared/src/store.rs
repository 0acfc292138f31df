//! The MongoDB store. Every push is one conditional upsert whose update pipeline applies
//! the transition rules inside the database, so writers on different instances cannot
//! break them and a push costs one round trip.

use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};

use crate::config::DatabaseConfig;
use crate::ids::{LineUserId, MessageId};
use crate::indexes::{seed_index_set, IndexSpec, COMPLETED_TTL_SECONDS, CREATED_TTL_SECONDS};
use crate::model::{JobStatus, JobType, TraceDocument};
use crate::rules::{Change, HISTORY_ATTEMPTS, HISTORY_MAX_ENTRIES};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("database error: {0}")]
    Database(#[from] mongodb::error::Error),
    #[error("stored document is unreadable: {0}")]
    Corrupt(#[from] bson::de::Error),
}

/// Filters and page of a user's job list.
#[derive(Debug, Clone, PartialEq)]
pub struct UserQuery {
    pub line_user_id: LineUserId,
    pub statuses: Vec<JobStatus>,
    pub job_type: Option<JobType>,
    pub limit: u32,
    pub skip: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserPage {
    pub jobs: Vec<TraceDocument>,
    pub total_count: u64,
}

#[derive(Clone)]
pub struct TraceStore {
    client: Client,
    traces: Collection<Document>,
    timeout: Duration,
}

/// Wraps a value so that the pipeline reads it as data, never as a field path or operator
/// (an error text such as `"$status"` must stay text).
fn literal(value: impl Into<Bson>) -> Bson {
    Bson::Document(doc! { "$literal": value.into() })
}

fn optional_literal<T: Into<Bson>>(value: Option<T>) -> Bson {
    value.map_or(Bson::Null, literal)
}

/// The update pipeline for one change: [`crate::rules::apply`], expressed for the server.
pub fn update_pipeline(change: &Change) -> Vec<Document> {
    let a = i64::from(change.key.attempt);
    let r = i32::from(change.key.rank);
    let t = change.at;
    let job = change.job.as_ref();
    let fill = |field: &str, value: Bson| -> Bson {
        Bson::Document(doc! { "$ifNull": [format!("${field}"), value] })
    };
    let if_applies = |new: Bson, field: &str| -> Bson {
        Bson::Document(
            doc! { "$cond": ["$_applies", new, { "$ifNull": [format!("${field}"), Bson::Null] }] },
        )
    };
    let base_started = doc! {
        "$cond": [
            { "$and": ["$_applies", { "$gt": [a, "$_old_attempt"] }] },
            Bson::Null,
            { "$ifNull": ["$started_at", Bson::Null] },
        ]
    };
    let started_at = if r == 1 {
        doc! { "$cond": [
            { "$eq": [a, { "$cond": ["$_applies", a, "$_old_attempt"] }] },
            { "$min": [base_started.clone(), t] },
            base_started,
        ] }
    } else {
        base_started
    };
    let completed = if r == 2 {
        Bson::DateTime(t)
    } else {
        Bson::Null
    };
    let entry = change.history_entry();
    let entry = doc! {
        "attempt": entry.attempt,
        "rank": entry.rank,
        "status": entry.status.as_str(),
        "at": entry.at,
        "error": optional_literal(entry.error),
    };

    vec![
        doc! { "$set": {
            "_old_attempt": { "$ifNull": ["$attempt", -1_i64] },
            "_applies": { "$or": [
                { "$gt": [a, { "$ifNull": ["$attempt", -1_i64] }] },
                { "$and": [
                    { "$eq": [a, { "$ifNull": ["$attempt", -1_i64] }] },
                    { "$gt": [r, { "$ifNull": ["$rank", -1_i32] }] },
                ] },
            ] },
            "_history": { "$setUnion": [{ "$ifNull": ["$history", []] }, [entry]] },
        } },
        doc! { "$set": {
            "job_type": fill("job_type", optional_literal(job.map(|j| j.job_type.as_str()))),
            "status": if_applies(literal(change.status.as_str()), "status"),
            "url": fill("url", optional_literal(job.and_then(|j| j.url.clone()))),
            "line_user_id": fill(
                "line_user_id",
                optional_literal(job.and_then(|j| j.line_user_id.as_ref().map(|u| u.as_str().to_owned()))),
            ),
            "check_only": fill("check_only", optional_literal(job.map(|j| j.check_only))),
            "created_at": { "$min": ["$created_at", t] },
            "updated_at": { "$max": ["$updated_at", t] },
            "started_at": started_at,
            "completed_at": if_applies(completed, "completed_at"),
            "error": if_applies(optional_literal(change.error.clone()), "error"),
            "result": if_applies(optional_literal(change.result.clone()), "result"),
            "attempt": { "$cond": ["$_applies", a, "$attempt"] },
            "rank": { "$cond": ["$_applies", r, "$rank"] },
            "history": { "$slice": [
                { "$filter": {
                    "input": { "$sortArray": {
                        "input": "$_history",
                        "sortBy": { "attempt": 1, "rank": 1, "at": 1, "status": 1, "error": 1 },
                    } },
                    "cond": { "$gt": ["$$this.attempt", { "$subtract": [{ "$max": "$_history.attempt" }, HISTORY_ATTEMPTS] }] },
                } },
                -(HISTORY_MAX_ENTRIES as i32),
            ] },
        } },
        // Date arithmetic through milliseconds ($toLong/$toDate) rather than `$add` of a
        // date and a number: SecantusDB's Rust server refuses the latter.
        doc! { "$set": {
            "expire_at": { "$min": [
                { "$toDate": { "$add": [{ "$toLong": "$created_at" }, CREATED_TTL_SECONDS as i64 * 1000] } },
                { "$cond": [
                    { "$eq": [{ "$type": "$completed_at" }, "date"] },
                    { "$toDate": { "$add": [{ "$toLong": "$completed_at" }, COMPLETED_TTL_SECONDS as i64 * 1000] } },
                    Bson::Null,
                ] },
            ] },
        } },
        doc! { "$unset": ["_old_attempt", "_applies", "_history"] },
    ]
}

/// MongoDB's duplicate-key code, which the driver does not expose as a kind.
const DUPLICATE_KEY: i32 = 11000;

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|e| e.code == DUPLICATE_KEY)),
        _ => false,
    }
}

impl TraceStore {
    /// Builds the client without touching the network: the driver connects lazily, so
    /// a function starts in milliseconds whatever the database is doing.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(&config.mongo_uri).await?;
        let timeout = config.timeout();
        options.app_name.get_or_insert_with(|| "job-trace".into());
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout.get_or_insert(timeout);
        Self::with_client(Client::with_options(options)?, config)
    }

    pub fn with_client(client: Client, config: &DatabaseConfig) -> Result<Self, StoreError> {
        let traces = client
            .database(&config.mongo_database)
            .collection(&config.collection_job_traces);
        Ok(TraceStore {
            client,
            traces,
            timeout: config.timeout(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn collection(&self) -> &Collection<Document> {
        &self.traces
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    /// Applies one change. One `update` command; a second only when a concurrent first
    /// write for the same `message_id` won the insert (the unique index turns the loser's
    /// upsert into a duplicate key, and the retry then updates the winner's document).
    pub async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        let filter = doc! { "message_id": change.message_id.as_str() };
        self.bounded(async {
            let mut tries = 0;
            loop {
                tries += 1;
                let outcome = self
                    .traces
                    .update_one(filter.clone(), update_pipeline(change))
                    .upsert(true)
                    .await;
                match outcome {
                    // One winner per key: a second duplicate key would be a real fault.
                    Err(error) if is_duplicate_key(&error) && tries < 2 => continue,
                    outcome => return outcome.map(|_| ()).map_err(StoreError::from),
                }
            }
        })
        .await
    }

    pub async fn get(&self, message_id: &MessageId) -> Result<Option<TraceDocument>, StoreError> {
        self.bounded(async {
            let found = self
                .traces
                .find_one(doc! { "message_id": message_id.as_str() })
                .await?;
            Ok(found.map(bson::from_document).transpose()?)
        })
        .await
    }

    /// One `aggregate` with `$facet`: the page and the total in one round trip.
    pub async fn list_by_user(&self, query: &UserQuery) -> Result<UserPage, StoreError> {
        let mut filter = doc! { "line_user_id": query.line_user_id.as_str() };
        match query.statuses.as_slice() {
            [] => {}
            [one] => {
                filter.insert("status", one.as_str());
            }
            many => {
                let names: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                filter.insert("status", doc! { "$in": names });
            }
        }
        if let Some(job_type) = query.job_type {
            filter.insert("job_type", job_type.as_str());
        }
        let skip = i64::try_from(query.skip).unwrap_or(i64::MAX);
        let pipeline = vec![
            doc! { "$match": filter },
            doc! { "$facet": {
                "jobs": [
                    { "$sort": { "created_at": -1, "_id": -1 } },
                    { "$skip": skip },
                    { "$limit": i64::from(query.limit) },
                ],
                "total": [{ "$count": "n" }],
            } },
        ];
        self.bounded(async {
            let mut cursor = self.traces.aggregate(pipeline).await?;
            let Some(facets) = cursor.try_next().await? else {
                return Ok(UserPage {
                    jobs: Vec::new(),
                    total_count: 0,
                });
            };
            let jobs = facets
                .get_array("jobs")
                .map(|jobs| jobs.to_vec())
                .unwrap_or_default()
                .into_iter()
                .map(bson::from_bson)
                .collect::<Result<Vec<TraceDocument>, _>>()?;
            let total_count = facets
                .get_array("total")
                .ok()
                .and_then(|total| total.first())
                .and_then(Bson::as_document)
                .and_then(|total| match total.get("n") {
                    Some(Bson::Int32(n)) => Some(*n as u64),
                    Some(Bson::Int64(n)) => Some(*n as u64),
                    _ => None,
                })
                .unwrap_or(0);
            Ok(UserPage { jobs, total_count })
        })
        .await
    }

    /// Creates the seed's index set; idempotent (an existing identical index is a no-op).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.create_indexes(seed_index_set()).await
    }

    /// Creates `specs`; idempotent like [`TraceStore::ensure_indexes`].
    pub async fn create_indexes(
        &self,
        specs: impl IntoIterator<Item = IndexSpec>,
    ) -> Result<(), StoreError> {
        let models = specs
            .into_iter()
            .map(|spec| {
                let options = IndexOptions::builder()
                    .name(spec.name.clone())
                    .unique(spec.unique.then_some(true))
                    .expire_after(spec.ttl_seconds.map(Duration::from_secs))
                    .partial_filter_expression(spec.partial_filter.clone())
                    .build();
                IndexModel::builder()
                    .keys(spec.keys())
                    .options(options)
                    .build()
            })
            .collect::<Vec<_>>();
        self.bounded(async {
            self.traces.create_indexes(models).await?;
            Ok(())
        })
        .await
    }

    /// Whether the database answers a `ping` now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            self.client
                .database("admin")
                .run_command(doc! { "ping": 1 })
                .await?;
            Ok(())
        })
        .await
    }
}
