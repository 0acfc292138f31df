//! The operators' side of the store: jobs across users (the stalled ones oldest first,
//! else the most recently changed), the statistics of a window in one aggregate, and the
//! sweep's conditional write.
//!
//! "Nothing recorded" is read from `updated_at`: the latest time any message about the
//! job carries, which the pipeline, `cas` and [`crate::rules::apply`] all maintain (a
//! progress report moves it too). The index `{status: 1, updated_at: 1}`
//! ([`crate::indexes`]) serves both listings.

use std::collections::BTreeMap;

use bson::{doc, Bson, Document, RawBsonRef, RawDocumentBuf};
use futures::TryStreamExt;
use serde::Serialize;

use super::pipeline::{bounded_history, history_with_entry, literal, step_expiry};
use super::{readable_traces, StoreError, StoreWrite, TraceStore, UserPage, REVISION};
use crate::model::{JobStatus, JobType, TraceKey};
use crate::rules::Change;

/// The statuses a stalled job can have.
pub const STALLED_STATUSES: [JobStatus; 2] = [JobStatus::Queued, JobStatus::Processing];
/// The statistics read at most this many traces (the newest of the window), so that one
/// answer stays small whatever the traffic; [`Stats::truncated`] says when it did.
pub const MAX_STATS_TRACES: i64 = 20_000;
/// How many error texts the statistics name.
pub const TOP_ERRORS: usize = 10;

/// Jobs across users: with `stalled_before`, those queued or processing with nothing
/// recorded since then, oldest first; without, the most recently changed first.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsQuery {
    pub stalled_before: Option<bson::DateTime>,
    /// Empty: every status (with `stalled_before`: queued and processing).
    pub statuses: Vec<JobStatus>,
    pub job_type: Option<JobType>,
    pub limit: u32,
    pub skip: u64,
}

/// How often an error text occurs in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorCount {
    pub error: String,
    pub count: u64,
}

/// `completed_at - created_at` of the window's finished jobs, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Durations {
    /// How many finished jobs the figures are of.
    pub count: u64,
    pub median_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

/// The jobs created in a window, counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = JobStats))]
pub struct Stats {
    /// How many traces the figures are of.
    pub jobs: u64,
    /// Whether the window held more than 20,000 jobs: then the figures are of the newest
    /// 20,001 (one more is read to know).
    pub truncated: bool,
    /// Every status, 0 when none.
    pub by_status: BTreeMap<String, u64>,
    /// Every job type, 0 when none; `unknown` for traces without one.
    pub by_job_type: BTreeMap<String, u64>,
    /// The most frequent error texts, most frequent first.
    pub top_errors: Vec<ErrorCount>,
    pub durations: Durations,
}

/// The `p`-th percentile of `sorted` by nearest rank: the smallest value with at least
/// `p` percent of the values at or below it.
pub fn nearest_rank(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1);
    sorted.get(rank as usize - 1).copied()
}

fn count_of(value: Option<&Bson>) -> u64 {
    match value {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
        _ => 0,
    }
}

fn millis_of(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(n) if n.is_finite() => Some(*n as i64),
        _ => None,
    }
}

/// The statistics of the `$group` answer: one document per (status, job type, error)
/// with its count and the durations of its finished jobs.
pub fn stats_of(groups: &[Document]) -> Stats {
    let mut by_status: BTreeMap<String, u64> = JobStatus::ALL
        .iter()
        .map(|status| (status.as_str().to_owned(), 0))
        .collect();
    let mut by_job_type: BTreeMap<String, u64> = [JobType::PropertyScrape, JobType::BatchCheck]
        .iter()
        .map(|job_type| (job_type.as_str().to_owned(), 0))
        .collect();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut durations = Vec::new();
    let mut jobs = 0;
    for group in groups {
        let key = group.get_document("_id").cloned().unwrap_or_default();
        let n = count_of(group.get("n"));
        jobs += n;
        let status = key.get_str("status").unwrap_or("unknown").to_owned();
        *by_status.entry(status).or_default() += n;
        let job_type = key.get_str("job_type").unwrap_or("unknown").to_owned();
        *by_job_type.entry(job_type).or_default() += n;
        if let Ok(error) = key.get_str("error") {
            *errors.entry(error.to_owned()).or_default() += n;
        }
        if let Ok(array) = group.get_array("durations") {
            durations.extend(array.iter().filter_map(millis_of));
        }
    }
    let mut top_errors: Vec<ErrorCount> = errors
        .into_iter()
        .map(|(error, count)| ErrorCount { error, count })
        .collect();
    top_errors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error.cmp(&b.error)));
    top_errors.truncate(TOP_ERRORS);
    durations.sort_unstable();
    Stats {
        jobs,
        truncated: false,
        by_status,
        by_job_type,
        top_errors,
        durations: Durations {
            count: durations.len() as u64,
            median_ms: nearest_rank(&durations, 50),
            p95_ms: nearest_rank(&durations, 95),
        },
    }
}

/// The one aggregate of [`TraceStore::stats`]. Only stages and operators that Firestore
/// with MongoDB compatibility lists as supported
/// (https://cloud.google.com/firestore/mongodb-compatibility/docs/supported-features):
/// `$match`, `$sort`, `$limit`, `$group` with `$sum` and `$push`, and `$subtract`. Not
/// `$facet` (several answers in one) nor `$percentile` (MongoDB 7): the counts come from
/// one `$group` by (status, job type, error) and the percentiles are taken here, from
/// the durations the groups carry, which `$limit` bounds.
pub fn stats_pipeline(since: bson::DateTime) -> Vec<Document> {
    vec![
        doc! { "$match": { "created_at": { "$gte": since } } },
        doc! { "$sort": { "created_at": -1 } },
        // One more than is read: whether the window held more.
        doc! { "$limit": MAX_STATS_TRACES + 1 },
        doc! { "$group": {
            "_id": { "status": "$status", "job_type": "$job_type", "error": "$error" },
            "n": { "$sum": 1 },
            "durations": { "$push": { "$subtract": ["$completed_at", "$created_at"] } },
        } },
    ]
}

fn stalled_filter(query: &JobsQuery) -> Document {
    let statuses: Vec<&str> = if query.statuses.is_empty() && query.stalled_before.is_some() {
        STALLED_STATUSES.iter().map(|s| s.as_str()).collect()
    } else {
        query.statuses.iter().map(|s| s.as_str()).collect()
    };
    let mut filter = Document::new();
    if !statuses.is_empty() {
        filter.insert("status", doc! { "$in": statuses });
    }
    if let Some(before) = query.stalled_before {
        filter.insert("updated_at", doc! { "$lte": before });
    }
    if let Some(job_type) = query.job_type {
        filter.insert("job_type", job_type.as_str());
    }
    filter
}

/// The condition of a sweep's write: the trace is still at the sweep's key (also as a
/// trace of the original system, whose key its status implies), unfinished, and stalled.
fn sweep_filter(change: &Change, stalled_since: bson::DateTime) -> Document {
    let (a, r) = (i64::from(change.key.attempt), i32::from(change.key.rank));
    let mut at_key = vec![Bson::Document(doc! { "attempt": a, "rank": r })];
    for status in STALLED_STATUSES {
        if TraceKey::implied_by_legacy(status) == change.key {
            at_key.push(Bson::Document(
                doc! { "attempt": Bson::Null, "rank": Bson::Null, "status": status.as_str() },
            ));
        }
    }
    let statuses: Vec<&str> = STALLED_STATUSES.iter().map(|s| s.as_str()).collect();
    doc! {
        "message_id": change.message_id.as_str(),
        "status": { "$in": statuses },
        "updated_at": { "$lte": stalled_since },
        "$or": at_key,
    }
}

/// rules::sweep::apply_sweep as an update pipeline, for the write [`sweep_filter`] holds.
fn sweep_pipeline(change: &Change) -> Vec<Document> {
    let t = change.at;
    vec![
        doc! { "$set": { "_history": history_with_entry(change) } },
        doc! { "$set": {
            "status": JobStatus::Failed.as_str(),
            "attempt": i64::from(change.key.attempt),
            "rank": i32::from(change.key.rank),
            "error": change.error.clone().map_or(Bson::Null, literal),
            "result": Bson::Null,
            "created_at": { "$min": ["$created_at", t] },
            "updated_at": { "$max": ["$updated_at", t] },
            "completed_at": t,
            "history": bounded_history(),
            REVISION: { "$add": [{ "$ifNull": [format!("${REVISION}"), 0_i64] }, 1_i64] },
        } },
        step_expiry(),
        doc! { "$unset": ["_history"] },
    ]
}

impl TraceStore {
    /// Jobs across users ([`JobsQuery`]): a `find` for the page and a `count` for the
    /// total, together, within the store's timeout.
    pub async fn list_jobs(&self, query: &JobsQuery) -> Result<UserPage, StoreError> {
        let filter = stalled_filter(query);
        let order = if query.stalled_before.is_some() {
            1
        } else {
            -1
        };
        let skip = query.skip;
        let page = async {
            let docs: Vec<RawDocumentBuf> = self
                .traces
                .clone_with_type::<RawDocumentBuf>()
                .find(filter.clone())
                .sort(doc! { "updated_at": order, "_id": order })
                .skip(skip)
                .limit(i64::from(query.limit))
                .await?
                .try_collect()
                .await?;
            Ok::<_, StoreError>(readable_traces(
                docs.iter().map(|doc| Ok(RawBsonRef::Document(doc))),
            ))
        };
        let total =
            async { Ok::<_, StoreError>(self.traces.count_documents(filter.clone()).await?) };
        self.bounded(async {
            let ((jobs, omitted_count), total_count) = futures::try_join!(page, total)?;
            Ok(UserPage {
                jobs,
                total_count,
                omitted_count,
            })
        })
        .await
    }

    /// The jobs created since `since`, counted ([`stats_pipeline`], one `aggregate`).
    pub async fn stats(&self, since: bson::DateTime) -> Result<Stats, StoreError> {
        self.bounded(async {
            let groups: Vec<Document> = self
                .traces
                .aggregate(stats_pipeline(since))
                .await?
                .try_collect()
                .await?;
            let mut stats = stats_of(&groups);
            if stats.jobs > MAX_STATS_TRACES as u64 {
                stats.truncated = true;
            }
            Ok(stats)
        })
        .await
    }

    /// Writes a sweep ([`Change::swept`]) only if the trace is still as it was listed:
    /// at the same key and with nothing recorded since. Whether it wrote: a real event
    /// that landed in between wins, and the sweep changes nothing.
    pub async fn sweep(&self, change: &Change) -> Result<bool, StoreError> {
        let Some(sweep) = &change.sweep else {
            return Ok(false);
        };
        match self.write {
            StoreWrite::Pipeline => {
                self.bounded(async {
                    let outcome = self
                        .traces
                        .update_one(
                            sweep_filter(change, sweep.stalled_since),
                            sweep_pipeline(change),
                        )
                        .await?;
                    Ok(outcome.matched_count == 1)
                })
                .await
            }
            // The read, the rules (which test the same condition) and a write
            // conditioned on the revision read.
            StoreWrite::Cas => self
                .bounded(self.apply_cas(change))
                .await
                .map(|outcome| outcome.wrote),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[7], 95), Some(7));
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(nearest_rank(&values, 50), Some(50));
        assert_eq!(nearest_rank(&values, 95), Some(95));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 95), Some(4));
    }

    #[test]
    fn groups_add_up_by_status_type_and_error() {
        let groups = vec![
            doc! { "_id": { "status": "failed", "job_type": "batch_check", "error": "HTTP 503" }, "n": 2, "durations": [10_i64, 30_i64] },
            doc! { "_id": { "status": "not_found", "job_type": "property_scrape", "error": "HTTP 503" }, "n": 1_i64, "durations": [20_i64] },
            doc! { "_id": { "status": "queued", "job_type": Bson::Null, "error": Bson::Null }, "n": 3, "durations": [Bson::Null, Bson::Null, Bson::Null] },
        ];
        let stats = stats_of(&groups);
        assert_eq!(stats.jobs, 6);
        assert_eq!(stats.by_status["failed"], 2);
        assert_eq!(stats.by_status["success"], 0);
        assert_eq!(stats.by_job_type["unknown"], 3);
        assert_eq!(stats.by_job_type["property_scrape"], 1);
        assert_eq!(
            stats.top_errors,
            [ErrorCount {
                error: "HTTP 503".into(),
                count: 3
            }]
        );
        assert_eq!(
            stats.durations,
            Durations {
                count: 3,
                median_ms: Some(20),
                p95_ms: Some(30)
            }
        );
    }
}
