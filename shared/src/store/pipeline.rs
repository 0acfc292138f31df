//! `STORE_WRITE=pipeline`: [`crate::rules::apply`] as one update pipeline with upsert,
//! run inside the database. Each step below is named after the lines of `apply` it
//! implements, in the same order; the store tests hold the two to the same documents.

use std::sync::LazyLock;

use bson::{doc, Bson, Document};

use mongodb::options::ReturnDocument;

use super::{StoreError, TraceStore, REVISION};
use crate::completions::MAX_PENDING_COMPLETIONS;
use crate::indexes::{COMPLETED_TTL_SECONDS, CREATED_TTL_SECONDS};
use crate::model::{JobStatus, PendingCompletion, StoredProgress, TraceDocument, TraceKey};
use crate::rules::{Change, HISTORY_ATTEMPTS, HISTORY_MAX_ENTRIES, NO_STATUS_YET};

/// Wraps a value so that the pipeline reads it as data, never as a field path or operator
/// (an error text such as `"$status"` must stay text).
pub(super) fn literal(value: impl Into<Bson>) -> Bson {
    Bson::Document(doc! { "$literal": value.into() })
}

pub(super) fn optional_literal<T: Into<Bson>>(value: Option<T>) -> Bson {
    value.map_or(Bson::Null, literal)
}

/// `field`'s stored value, else `value`.
fn stored_or(field: &str, value: impl Into<Bson>) -> Bson {
    Bson::Document(doc! { "$ifNull": [format!("${field}"), value.into()] })
}

/// `rules::stored_key`'s legacy part: the key the stored status implies for a trace
/// without `attempt`/`rank` (the original system's), through
/// [`TraceKey::implied_by_legacy`]; `-1` when there is no trace.
fn implied_by_legacy(pick: fn(TraceKey) -> i64) -> Bson {
    JobStatus::ALL
        .iter()
        .rev()
        .fold(Bson::Int64(-1), |otherwise, &status| {
            Bson::Document(doc! { "$cond": [
                { "$eq": ["$status", status.as_str()] },
                pick(TraceKey::implied_by_legacy(status)),
                otherwise,
            ] })
        })
}

/// The first stage, the only one that depends on the change: its values, as data, in the
/// working field `_change` that the constant stages ([`CONSTANT_STAGES`]) read. Building
/// those once instead of per push is most of what a push's pipeline used to cost.
fn step_change(change: &Change, owed: Option<PendingCompletion>) -> Document {
    let t = change.at;
    let r = i32::from(change.key.rank);
    let job = change.job.as_ref();
    let mut values = doc! {
        "attempt": i64::from(change.key.attempt),
        "rank": r,
        "at": t,
        "status": change.status.as_str(),
        "entry": history_entry(change),
        "job_type": job.map(|j| j.job_type.as_str()),
        "url": job.and_then(|j| j.url.as_deref()),
        "line_user_id": job.and_then(|j| j.line_user_id.as_ref().map(|u| u.as_str())),
        "check_only": job.map(|j| j.check_only),
        // apply: `completed_at: (r == 2).then_some(t)`.
        "completed_at": (r == 2).then_some(t),
        "error": change.error.as_deref(),
        "result": change.result.clone(),
    };
    if let Some(owed) = owed {
        values.insert(
            "owed",
            doc! {
                "dedupe_key": owed.dedupe_key,
                "status": owed.status.as_str(),
                "attempt": owed.attempt,
                "noted_at": owed.noted_at,
            },
        );
    }
    doc! { "$set": { "_change": { "$literal": values } } }
}

/// `change`'s history entry as stored.
fn history_entry(change: &Change) -> Document {
    let entry = change.history_entry();
    doc! {
        "attempt": entry.attempt,
        "rank": entry.rank,
        "status": entry.status.as_str(),
        "at": entry.at,
        "error": entry.error,
    }
}

/// apply: `let (old_attempt, old_rank) = stored_key(..)` and
/// `let applies = (a, r) > (old_attempt, old_rank)`; the history gets the new entry
/// (`if !history.contains(&entry) { history.push(entry) }`, as a set union).
fn step_compare_keys() -> Document {
    doc! { "$set": {
        "_old_attempt": stored_or("attempt", implied_by_legacy(|k| i64::from(k.attempt))),
        "_old_rank": stored_or("rank", implied_by_legacy(|k| i64::from(k.rank))),
        "_history": { "$setUnion": [{ "$ifNull": ["$history", []] }, ["$_change.entry"]] },
    } }
}

/// The stored history with `change`'s entry, as a set union (unsorted: see
/// [`bounded_history`]).
pub(super) fn history_with_entry(change: &Change) -> Bson {
    // As data: an error text such as `"$status"` must stay text (in `step_change` the
    // whole `_change` is one `$literal`).
    let entry = literal(history_entry(change));
    Bson::Document(doc! { "$setUnion": [{ "$ifNull": ["$history", []] }, [entry]] })
}

/// apply: `history.sort_by(history_order)`, `retain` the latest attempts, `drain` the
/// overflow; of the working field `$_history`.
pub(super) fn bounded_history() -> Bson {
    Bson::Document(doc! { "$slice": [
        { "$filter": {
            "input": { "$sortArray": {
                "input": "$_history",
                "sortBy": { "attempt": 1, "rank": 1, "at": 1, "status": 1, "error": 1 },
            } },
            "cond": { "$gt": ["$$this.attempt", { "$subtract": [{ "$max": "$_history.attempt" }, HISTORY_ATTEMPTS] }] },
        } },
        -(HISTORY_MAX_ENTRIES as i32),
    ] })
}

/// The change's attempt and rank, as the constant stages read them.
const A: &str = "$_change.attempt";
const R: &str = "$_change.rank";
const T: &str = "$_change.at";

/// The second half of `step_compare_keys` (a `$set` cannot read what it sets).
fn step_applies() -> Document {
    doc! { "$set": { "_applies": { "$or": [
        { "$gt": [A, "$_old_attempt"] },
        { "$and": [{ "$eq": [A, "$_old_attempt"] }, { "$gt": [R, "$_old_rank"] }] },
    ] } } }
}

/// apply: `base_started`, `resulting_attempt`, `started_at`, `created_at`,
/// `updated_at`, the history's sort and bounds, the job's fields (`known`), and the
/// current status with its key, error, result and `completed_at` when `applies`; with
/// `owes_completion`, the notification the change owes.
fn step_fields(owes_completion: bool) -> Document {
    let if_applies = |field: &str| -> Bson {
        Bson::Document(doc! { "$cond": [
            "$_applies",
            format!("$_change.{field}"),
            { "$ifNull": [format!("${field}"), Bson::Null] },
        ] })
    };
    let known = |field: &str| stored_or(field, format!("$_change.{field}"));
    // apply: `let base_started = if applies && a > old_attempt { None } else { .. }`.
    let base_started = doc! {
        "$cond": [
            { "$and": ["$_applies", { "$gt": [A, "$_old_attempt"] }] },
            Bson::Null,
            { "$ifNull": ["$started_at", Bson::Null] },
        ]
    };
    // apply: `let started_at = if r == 1 && a == resulting_attempt { min(..) } ..`.
    let started_at = doc! { "$cond": [
        { "$and": [
            { "$eq": [R, 1] },
            { "$eq": [A, { "$cond": ["$_applies", A, "$_old_attempt"] }] },
        ] },
        { "$min": [base_started.clone(), T] },
        base_started,
    ] };
    let mut fields = doc! {
        "job_type": known("job_type"),
        "status": if_applies("status"),
        "url": known("url"),
        "line_user_id": known("line_user_id"),
        "check_only": known("check_only"),
        "created_at": { "$min": ["$created_at", T] },
        "updated_at": { "$max": ["$updated_at", T] },
        "started_at": started_at,
        "completed_at": if_applies("completed_at"),
        "error": if_applies("error"),
        "result": if_applies("result"),
        "attempt": { "$cond": ["$_applies", A, "$attempt"] },
        "rank": { "$cond": ["$_applies", R, "$rank"] },
        "history": bounded_history(),
        REVISION: { "$add": [{ "$ifNull": [format!("${REVISION}"), 0_i64] }, 1_i64] },
    };
    // apply: `if let Some(owed) = change.completion().filter(|_| applies)`: push it and
    // keep the latest. Written only by a change that can owe one, so with notifications
    // off no trace ever gets the field.
    if owes_completion {
        let stored = doc! { "$ifNull": ["$pending_completions", []] };
        fields.insert(
            "pending_completions",
            doc! { "$cond": [
                "$_applies",
                { "$slice": [
                    { "$concatArrays": [stored.clone(), ["$_change.owed"]] },
                    -(MAX_PENDING_COMPLETIONS as i32),
                ] },
                stored,
            ] },
        );
    }
    doc! { "$set": fields }
}

/// apply: `expire_at: Some(expire_at(created_at, completed_at))`.
///
/// Date arithmetic through milliseconds ($toLong/$toDate) rather than `$add` of a date
/// and a number: SecantusDB's Rust server refuses the latter.
pub(super) fn step_expiry() -> Document {
    doc! { "$set": {
        "expire_at": { "$min": [
            { "$toDate": { "$add": [{ "$toLong": "$created_at" }, CREATED_TTL_SECONDS as i64 * 1000] } },
            { "$cond": [
                { "$eq": [{ "$type": "$completed_at" }, "date"] },
                { "$toDate": { "$add": [{ "$toLong": "$completed_at" }, COMPLETED_TTL_SECONDS as i64 * 1000] } },
                Bson::Null,
            ] },
        ] },
    } }
}

/// `rules::stored_key` of the trace as it stands at this step.
fn stored_key() -> (Bson, Bson) {
    (
        stored_or("attempt", implied_by_legacy(|k| i64::from(k.attempt))),
        stored_or("rank", implied_by_legacy(|k| i64::from(k.rank))),
    )
}

/// `StoredProgress::admissible`: whether a report of `report_attempt` (an expression) may
/// stay on a trace at `(attempt, rank)`.
fn admissible(report_attempt: Bson, (attempt, rank): &(Bson, Bson)) -> Bson {
    Bson::Document(doc! { "$or": [
        { "$gt": [report_attempt.clone(), attempt.clone()] },
        { "$and": [{ "$eq": [report_attempt, attempt.clone()] }, { "$lt": [rank.clone(), 2] }] },
    ] })
}

/// Whether the stored progress is a report that is still admissible at `key`.
fn stored_progress_admissible(key: &(Bson, Bson)) -> Bson {
    Bson::Document(doc! { "$and": [
        { "$eq": [{ "$type": "$progress" }, "object"] },
        admissible(Bson::String("$progress.attempt".into()), key),
    ] })
}

/// apply: `next.progress = next.progress.take().filter(|p| p.admissible(key))` after a
/// status change, where `key = stored_key(&next)`: the change's key when it applies, else
/// the old one (`next` then keeps the stored status and key).
fn step_drop_progress() -> Document {
    let key = (
        Bson::Document(doc! { "$cond": ["$_applies", A, "$_old_attempt"] }),
        Bson::Document(doc! { "$cond": ["$_applies", R, "$_old_rank"] }),
    );
    doc! { "$set": { "progress": { "$cond": [
        stored_progress_admissible(&key),
        "$progress",
        Bson::Null,
    ] } } }
}

/// The working fields above are not part of the trace.
fn step_cleanup() -> Document {
    doc! { "$unset": ["_change", "_old_attempt", "_old_rank", "_applies", "_history"] }
}

/// `report.order() > stored.order()`, field by field in `StoredProgress::order`'s order
/// (`note` null below any text, as `Option` orders).
fn report_is_greater(report: &StoredProgress) -> Bson {
    let fields: [(&str, Bson); 5] = [
        ("attempt", Bson::Int64(report.attempt)),
        ("at", Bson::DateTime(report.at)),
        ("done", Bson::Int64(report.done)),
        ("total", Bson::Int64(report.total)),
        ("note", optional_literal(report.note.clone())),
    ];
    fields
        .into_iter()
        .rev()
        .fold(Bson::Boolean(false), |otherwise, (field, value)| {
            let stored = format!("$progress.{field}");
            Bson::Document(doc! { "$or": [
                { "$gt": [value.clone(), stored.clone()] },
                { "$and": [{ "$eq": [value, stored] }, otherwise] },
            ] })
        })
}

/// apply_progress: a trace that has none yet starts as `queued` at `NO_STATUS_YET`;
/// the times move; the report replaces the stored one if it is admissible and greater
/// (or the stored one is not admissible).
fn progress_pipeline(report: &StoredProgress, t: bson::DateTime) -> Vec<Document> {
    let new = Bson::Document(doc! { "$literal": bson::to_bson(report).unwrap_or(Bson::Null) });
    let absent = doc! { "$eq": [{ "$type": "$status" }, "missing"] };
    let start = doc! { "$set": {
        "attempt": { "$cond": [absent.clone(), NO_STATUS_YET.0, "$attempt"] },
        "rank": { "$cond": [absent.clone(), NO_STATUS_YET.1, "$rank"] },
        "status": { "$cond": [absent, JobStatus::Queued.as_str(), "$status"] },
    } };
    let key = stored_key();
    let keep = doc! { "$set": {
        "created_at": { "$min": ["$created_at", t] },
        "updated_at": { "$max": ["$updated_at", t] },
        "progress": { "$cond": [
            { "$and": [
                admissible(Bson::Int64(report.attempt), &key),
                { "$or": [{ "$not": [stored_progress_admissible(&key)] }, report_is_greater(report)] },
            ] },
            new,
            { "$cond": [stored_progress_admissible(&key), "$progress", Bson::Null] },
        ] },
        REVISION: { "$add": [{ "$ifNull": [format!("${REVISION}"), 0_i64] }, 1_i64] },
    } };
    vec![start, keep, step_expiry()]
}

/// Every stage after [`step_change`], built once: for a change that owes no completion
/// notification, and for one that does.
static CONSTANT_STAGES: LazyLock<[Vec<Document>; 2]> =
    LazyLock::new(|| [false, true].map(constant_stages));

fn constant_stages(owes_completion: bool) -> Vec<Document> {
    vec![
        step_compare_keys(),
        step_applies(),
        step_fields(owes_completion),
        step_drop_progress(),
        step_expiry(),
        step_cleanup(),
    ]
}

/// The update pipeline for one change: [`crate::rules::apply`], expressed for the server.
pub fn update_pipeline(change: &Change) -> Vec<Document> {
    if let Some(report) = &change.progress {
        return progress_pipeline(report, change.at);
    }
    let owed = change.completion();
    let constant = &CONSTANT_STAGES[usize::from(owed.is_some())];
    let mut stages = Vec::with_capacity(1 + constant.len());
    stages.push(step_change(change, owed));
    stages.extend_from_slice(constant);
    stages
}

impl TraceStore {
    /// One `update` command; a second only when a concurrent first write for the same
    /// `message_id` won the insert (the unique index turns the loser's upsert into a
    /// duplicate key, and the retry then updates the winner's document).
    pub(super) async fn apply_pipeline(&self, change: &Change) -> Result<(), StoreError> {
        self.upsert_retrying(change, || async {
            self.traces
                .update_one(Self::filter_of(&change.message_id), update_pipeline(change))
                .upsert(true)
                .await
                .map(drop)
        })
        .await
    }

    /// [`TraceStore::apply_pipeline`] as one `findAndModify` that returns the trace as
    /// written (what completion notifications need to publish).
    pub(super) async fn apply_pipeline_returning(
        &self,
        change: &Change,
    ) -> Result<TraceDocument, StoreError> {
        let written = self
            .upsert_retrying(change, || async {
                self.traces
                    .find_one_and_update(
                        Self::filter_of(&change.message_id),
                        update_pipeline(change),
                    )
                    .upsert(true)
                    .return_document(ReturnDocument::After)
                    .await
            })
            .await?;
        let written = written
            .ok_or_else(|| mongodb::error::Error::custom("an upsert returned no document"))?;
        Ok(bson::from_document(written)?)
    }

    /// Runs `write` once, and once more after losing a first write's race.
    async fn upsert_retrying<T, F>(
        &self,
        change: &Change,
        write: impl Fn() -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, mongodb::error::Error>>,
    {
        let mut raced = false;
        loop {
            match write().await {
                Ok(written) => return Ok(written),
                // One winner per key: after one lost race the update matches, so a second
                // failure is a real fault.
                Err(error) if !raced => {
                    self.settle_failed_first_write(&change.message_id, error)
                        .await?;
                    raced = true;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}
