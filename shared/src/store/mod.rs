//! The MongoDB store. A push is one conditional write that enforces the transition rules
//! of [`crate::rules::apply`], in one of two ways (`STORE_WRITE`, [`StoreWrite`]):
//!
//! * [`pipeline`]: one upsert whose update pipeline applies the rules inside the
//!   database, so writers on different instances cannot break them and a push costs one
//!   round trip;
//! * [`cas`]: read the trace, apply the rules in Rust, write it back only if nobody wrote
//!   in between (a `revision` field), retrying a lost race. Only plain `find`, `insert`
//!   and `update` with `$set`, for services that may not run update pipelines.
//!
//! Both give the same document for every history (the tests hold them to
//! [`crate::rules::replay`]); only `revision` may differ, since it counts writes.

pub mod cas;
pub mod check;
pub mod ops;
pub mod pipeline;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use bson::{doc, Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf};
use futures::{StreamExt, TryStreamExt};
use mongodb::change_stream::ChangeStream;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, FullDocumentType, IndexOptions};
use mongodb::{Client, Collection, IndexModel};

use crate::config::DatabaseConfig;
pub use crate::config::StoreWrite;
use crate::ids::{LineUserId, MessageId};
use crate::indexes::{seed_index_set, IndexSpec};
use crate::model::{JobStatus, JobType, TraceDocument};
use crate::rules::Change;
pub use pipeline::update_pipeline;

/// The field both strategies bump on every write. `cas` conditions its write on it; the
/// pipeline maintains it too, so that instances of both strategies may write the same
/// traces during a switch without one overwriting the other's change. Never rendered.
pub const REVISION: &str = "revision";

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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserPage {
    pub jobs: Vec<TraceDocument>,
    /// Every stored trace that matches, readable or not.
    pub total_count: u64,
    /// Traces of this page left out because they cannot be read or rendered (each is
    /// logged): one bad document must not take the whole list down.
    pub omitted_count: u64,
}

impl UserPage {
    /// The page of [`TraceStore::list_by_user`]'s one `$facet` reply, read from its bytes:
    /// the `jobs` facet's readable traces, and the `total` facet's count.
    pub fn of_facets(facets: &RawDocument) -> UserPage {
        let (jobs, omitted_count) = match facets.get_array("jobs") {
            Ok(jobs) => readable_traces(jobs),
            Err(_) => (Vec::new(), 0),
        };
        let total_count = facets
            .get_array("total")
            .ok()
            .and_then(|total| total.get_document(0).ok())
            .and_then(|total| match total.get("n") {
                Ok(Some(RawBsonRef::Int32(n))) => Some(n as u64),
                Ok(Some(RawBsonRef::Int64(n))) => Some(n as u64),
                _ => None,
            })
            .unwrap_or(0);
        UserPage {
            jobs,
            total_count,
            omitted_count,
        }
    }
}

/// The page's documents that can be read and rendered, and how many could not. Each is
/// decoded once, straight from the reply's bytes. A trace left out is logged with its id
/// and why, as the server fault it is.
pub(super) fn readable_traces<'a>(
    page: impl IntoIterator<Item = bson::raw::Result<RawBsonRef<'a>>>,
) -> (Vec<TraceDocument>, u64) {
    let mut omitted = 0;
    let mut jobs = Vec::new();
    for stored in page {
        let read = match stored {
            Ok(RawBsonRef::Document(stored)) => {
                read_trace(stored).map_err(|error| (message_id_for_log(stored), error))
            }
            Ok(other) => Err((
                None,
                format!("a {:?}, not a document", other.element_type()),
            )),
            // Malformed bytes: the elements after it cannot be found either.
            Err(error) => Err((None, error.to_string())),
        };
        match read {
            Ok(doc) => jobs.push(doc),
            Err((message_id, error)) => {
                omitted += 1;
                tracing::error!(message_id, %error, "stored trace cannot be read; left out of the list");
            }
        }
    }
    (jobs, omitted)
}

fn read_trace(stored: &RawDocument) -> Result<TraceDocument, String> {
    let doc: TraceDocument = bson::from_slice(stored.as_bytes()).map_err(|e| e.to_string())?;
    doc.renderable()?;
    Ok(doc)
}

/// A stored trace's `message_id` as the log shows it (whatever its type), cut.
fn message_id_for_log(stored: &RawDocument) -> Option<String> {
    let id = Bson::try_from(stored.get("message_id").ok()??).ok()?;
    Some(crate::push::cut_for_log(&id.to_string()))
}

#[derive(Clone)]
pub struct TraceStore {
    traces: Collection<Document>,
    timeout: Duration,
    write: StoreWrite,
}

/// MongoDB's duplicate-key codes (11001 and 12582 are older servers' forms).
const DUPLICATE_KEY_CODES: [i32; 3] = [11000, 11001, 12582];

/// Whether a write error says "duplicate key" by code, code name or text. Services that
/// speak the protocol may answer a unique-index violation with another code (Firestore
/// says codes "may differ"), so the text counts too; and a failed first write that still
/// says nothing recognisable is settled by reading again ([`TraceStore::exists`]).
pub fn names_a_duplicate(code: i32, code_name: &str, message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    DUPLICATE_KEY_CODES.contains(&code)
        || code_name.eq_ignore_ascii_case("DuplicateKey")
        || message.contains("duplicate key")
        || message.contains("e11000")
        || message.contains("already exists")
}

/// The code, code name and text of a server-side write or command error.
fn server_error_parts(error: &mongodb::error::Error) -> Option<(i32, &str, &str)> {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some((
            e.code,
            e.code_name.as_deref().unwrap_or(""),
            e.message.as_str(),
        )),
        ErrorKind::Command(e) => Some((e.code, e.code_name.as_str(), e.message.as_str())),
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|e| {
                (
                    e.code,
                    e.code_name.as_deref().unwrap_or(""),
                    e.message.as_str(),
                )
            }),
        _ => None,
    }
}

pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    server_error_parts(error)
        .is_some_and(|(code, name, message)| names_a_duplicate(code, name, message))
}

/// A hash of a stored document's bytes: equal while the document is unchanged.
pub type Fingerprint = u64;

/// The collection's changes as a stream of the `message_id`s that changed.
pub struct ChangeFeed {
    stream: ChangeStream<Document>,
}

impl ChangeFeed {
    /// The next change: `Some(Ok(Some(id)))` when trace `id` changed, `Some(Ok(None))`
    /// when something changed that cannot be named (a delete, e.g. by TTL), `None` when
    /// the feed ended. Wait for it under a timeout of your own: the cursor keeps an
    /// interrupted wait and resumes it on the next call.
    pub async fn next(&mut self) -> Option<Result<Option<String>, StoreError>> {
        let event = self.stream.next().await?;
        Some(
            event
                .map(|event| {
                    event
                        .get_document("fullDocument")
                        .ok()
                        .and_then(|full| full.get_str("message_id").ok())
                        .map(str::to_owned)
                })
                .map_err(StoreError::from),
        )
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
            traces,
            timeout: config.timeout(),
            write: config.store_write,
        })
    }

    /// The write strategy in use.
    pub fn write_strategy(&self) -> StoreWrite {
        self.write
    }

    /// The same store writing with `write` instead.
    pub fn with_strategy(&self, write: StoreWrite) -> Self {
        TraceStore {
            write,
            ..self.clone()
        }
    }

    /// The bound on every call, `DB_TIMEOUT_SECONDS`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The raw client, for tests only: everything else goes through the store's
    /// operations and their timeout.
    #[cfg(any(test, feature = "test-support"))]
    pub fn client(&self) -> &Client {
        self.traces.client()
    }

    /// The raw collection, for tests only (see [`TraceStore::client`]).
    #[cfg(any(test, feature = "test-support"))]
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

    /// Applies one change with the configured strategy, within the store's timeout.
    pub async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        if change.sweep.is_some() {
            return self.sweep(change).await.map(drop);
        }
        match self.write {
            StoreWrite::Pipeline => self.bounded(self.apply_pipeline(change)).await,
            StoreWrite::Cas => self.bounded(self.apply_cas(change)).await.map(drop),
        }
    }

    /// [`TraceStore::apply`], returning the trace as written: one `findAndModify`
    /// instead of an `update` with `pipeline`, the write `cas` makes anyway with it.
    pub async fn apply_returning(&self, change: &Change) -> Result<TraceDocument, StoreError> {
        match self.write {
            StoreWrite::Pipeline => self.bounded(self.apply_pipeline_returning(change)).await,
            StoreWrite::Cas => self
                .bounded(self.apply_cas(change))
                .await?
                .trace
                .ok_or_else(|| mongodb::error::Error::custom("a cas write left no trace").into()),
        }
    }

    /// Removes the pending completion notifications `dedupe_keys` of trace `message_id`,
    /// once published. Bumps [`REVISION`] like any write, so that a `cas` writer that
    /// read them before cannot write them back.
    pub async fn settle_completions(
        &self,
        message_id: &MessageId,
        dedupe_keys: &[String],
    ) -> Result<(), StoreError> {
        if dedupe_keys.is_empty() {
            return Ok(());
        }
        self.bounded(async {
            self.traces
                .update_one(
                    Self::filter_of(message_id),
                    doc! {
                        "$pull": { "pending_completions": { "dedupe_key": { "$in": dedupe_keys } } },
                        "$inc": { REVISION: 1_i64 },
                    },
                )
                .await?;
            Ok(())
        })
        .await
    }

    fn filter_of(message_id: &MessageId) -> Document {
        doc! { "message_id": message_id.as_str() }
    }

    /// Whether trace `message_id` exists: what settles a failed first write whose error
    /// does not say why (unbounded; callers are inside [`TraceStore::bounded`]).
    async fn exists(&self, message_id: &MessageId) -> Result<bool, StoreError> {
        let found = self
            .traces
            .find_one(Self::filter_of(message_id))
            .projection(doc! { "_id": 1 })
            .await?;
        Ok(found.is_some())
    }

    /// After a first write failed with `error`: `Ok(())` when it lost a race to a
    /// concurrent first write (a duplicate key, by meaning or because the trace exists
    /// now), so the caller retries as an update; else the error.
    async fn settle_failed_first_write(
        &self,
        message_id: &MessageId,
        error: mongodb::error::Error,
    ) -> Result<(), StoreError> {
        if is_duplicate_key(&error) {
            return Ok(());
        }
        match self.exists(message_id).await {
            Ok(true) => {
                tracing::warn!(%error, "a first write failed but the trace exists now: retrying it as an update");
                Ok(())
            }
            Ok(false) | Err(_) => Err(error.into()),
        }
    }

    /// Decoded straight from the reply's bytes into the trace: going through a `Document`
    /// first cost a second allocation of every field and a second decode.
    pub async fn get(&self, message_id: &MessageId) -> Result<Option<TraceDocument>, StoreError> {
        self.bounded(async {
            self.traces
                .clone_with_type::<TraceDocument>()
                .find_one(Self::filter_of(message_id))
                .await
                .map_err(|error| match error.kind.as_ref() {
                    // Decoded by the driver now, but the same fault as before: the
                    // document, not the database.
                    mongodb::error::ErrorKind::BsonDeserialization(bad) => {
                        StoreError::Corrupt(bad.clone())
                    }
                    _ => StoreError::Database(error),
                })
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
            // The reply's bytes as they came: the traces are decoded once, from them.
            if !cursor.advance().await? {
                return Ok(UserPage::default());
            }
            Ok(UserPage::of_facets(cursor.current()))
        })
        .await
    }

    /// Opens the change feed (what long-polls and event streams wait on), within the
    /// store's timeout. `max_await` bounds each of the server's waits for a change.
    pub async fn change_feed(&self, max_await: Duration) -> Result<ChangeFeed, StoreError> {
        let pipeline = [
            doc! { "$match": { "operationType": { "$in": ["insert", "update", "replace", "delete"] } } },
            doc! { "$project": { "operationType": 1, "fullDocument.message_id": 1 } },
        ];
        self.bounded(async {
            let stream = self
                .traces
                .watch()
                .pipeline(pipeline)
                .full_document(FullDocumentType::UpdateLookup)
                .max_await_time(max_await)
                .await?;
            Ok(ChangeFeed {
                stream: stream.with_type::<Document>(),
            })
        })
        .await
    }

    /// A fingerprint of each stored trace among `ids` (absent ones are left out), in one
    /// query within the store's timeout: what polling compares to notice a change.
    pub async fn fingerprints(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Fingerprint>, StoreError> {
        self.bounded(async {
            let docs: Vec<RawDocumentBuf> = self
                .traces
                .clone_with_type::<RawDocumentBuf>()
                .find(doc! { "message_id": { "$in": ids } })
                .await?
                .try_collect()
                .await?;
            Ok(docs
                .iter()
                .filter_map(|doc| {
                    let id = doc.get_str("message_id").ok()?;
                    let mut hasher = std::hash::DefaultHasher::new();
                    doc.as_bytes().hash(&mut hasher);
                    Some((id.to_owned(), hasher.finish()))
                })
                .collect())
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
        let existing = self.existing_indexes().await?;
        let models = specs
            .into_iter()
            // An index already there under the same name and key is left alone: the
            // original created ours with `background: true`, a creation-time option
            // some servers (SecantusDB) still count as a difference, so asking again
            // would be refused as a conflicting spec although nothing differs.
            .filter(|spec| {
                !existing
                    .iter()
                    .any(|(name, keys)| *name == spec.name && same_keys(keys, &spec.keys()))
            })
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
        if models.is_empty() {
            return Ok(());
        }
        self.bounded(async {
            self.traces.create_indexes(models).await?;
            Ok(())
        })
        .await
    }

    /// Name and key of every index of the traces collection; none when it does not exist
    /// yet.
    async fn existing_indexes(&self) -> Result<Vec<(String, Document)>, StoreError> {
        self.bounded(async {
            let cursor = match self.traces.list_indexes().await {
                Ok(cursor) => cursor,
                Err(error) if is_namespace_not_found(&error) => return Ok(Vec::new()),
                Err(error) => return Err(error.into()),
            };
            let indexes: Vec<IndexModel> = cursor.try_collect().await?;
            Ok(indexes
                .into_iter()
                .filter_map(|index| {
                    let name = index.options.and_then(|options| options.name)?;
                    Some((name, index.keys))
                })
                .collect())
        })
        .await
    }

    /// Whether the traces collection answers a query now. A `find` on the unique
    /// `message_id` index for an id no job has, projected to `_id`: cheap everywhere, and
    /// unlike `ping` on `admin` a command every MongoDB-compatible service runs.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.bounded(async {
            self.traces
                .find_one(doc! { "message_id": "" })
                .projection(doc! { "_id": 1 })
                .await?;
            Ok(())
        })
        .await
    }
}

/// MongoDB's answer to listing the indexes of a collection that does not exist.
const NAMESPACE_NOT_FOUND: i32 = 26;

fn is_namespace_not_found(error: &mongodb::error::Error) -> bool {
    matches!(error.kind.as_ref(), ErrorKind::Command(e) if e.code == NAMESPACE_NOT_FOUND)
}

/// Index keys compared field by field and by value, whatever number type each server
/// stores the direction as (`1`, `1i64`, `1.0`).
fn same_keys(a: &Document, b: &Document) -> bool {
    let direction = |value: &Bson| match value {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(n) => Some(*n),
        _ => None,
    };
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((name_a, value_a), (name_b, value_b))| {
                name_a == name_b
                    && match (direction(value_a), direction(value_b)) {
                        (Some(x), Some(y)) => x == y,
                        _ => value_a == value_b,
                    }
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::error::{Error, WriteError};

    fn write_error(code: i32, code_name: Option<&str>, message: &str) -> Error {
        let mut fields = doc! { "code": code, "errmsg": message };
        if let Some(name) = code_name {
            fields.insert("codeName", name);
        }
        let error: WriteError = bson::from_document(fields).unwrap();
        Error::from(ErrorKind::Write(WriteFailure::WriteError(error)))
    }

    #[test]
    fn a_duplicate_key_is_known_by_its_meaning_not_only_its_code() {
        let mongodb = write_error(
            11000,
            Some("DuplicateKey"),
            "E11000 duplicate key error collection: db.job_traces index: message_id_1",
        );
        assert!(is_duplicate_key(&mongodb));
        let other_code = write_error(
            3,
            None,
            "Duplicate key error: a document with message_id \"m1\" already exists",
        );
        assert!(is_duplicate_key(&other_code));
        let other_code_and_text = write_error(6, Some("ALREADY_EXISTS"), "entity already exists");
        assert!(is_duplicate_key(&other_code_and_text));
        let by_name_only = write_error(42, Some("DuplicateKey"), "unique index violated");
        assert!(is_duplicate_key(&by_name_only));
        let too_large = write_error(
            10334,
            Some("BSONObjectTooLarge"),
            "object to insert too large",
        );
        assert!(!is_duplicate_key(&too_large));
        let not_a_server_error = Error::custom("duplicate key");
        assert!(
            !is_duplicate_key(&not_a_server_error),
            "only the server's answer about the write counts"
        );
    }

    #[test]
    fn a_page_keeps_what_it_can_read_and_counts_what_it_cannot() {
        let trace = |id: &str| doc! { "message_id": id, "status": "queued", "revision": 1_i64 };
        for total in [Bson::Int32(7), Bson::Int64(7)] {
            let facets = doc! {
                "jobs": [
                    trace("m1"),
                    { "message_id": "m2", "status": 42 },
                    "not a trace",
                    { "message_id": "m3", "status": "queued", "created_at": bson::DateTime::MAX },
                    trace("m4"),
                ],
                "total": [{ "n": total }],
            };
            let page = UserPage::of_facets(&RawDocumentBuf::from_document(&facets).unwrap());
            let ids: Vec<&str> = page.jobs.iter().map(|t| t.message_id.as_str()).collect();
            assert_eq!(ids, ["m1", "m4"]);
            assert_eq!((page.total_count, page.omitted_count), (7, 3));
        }
        let nothing = RawDocumentBuf::from_document(&doc! { "jobs": [], "total": [] }).unwrap();
        assert_eq!(UserPage::of_facets(&nothing), UserPage::default());
    }
}
