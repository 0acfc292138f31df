//! The transition rules of DESIGN.md as pure data and a pure reducer.
//!
//! [`Change`] is what one message tells us. The store enforces the rules inside the
//! database write ([`crate::store::TraceStore::apply`]); [`apply`] is the same rules in
//! plain Rust, used to reason about convergence and to check the store against.

use std::cmp::Ordering;

use crate::ids::{LineUserId, MessageId};
use crate::model::{HistoryEntry, JobStatus, JobType, StoredProgress, TraceDocument, TraceKey};

/// How many attempts the history keeps (the latest ones).
pub const HISTORY_ATTEMPTS: i64 = 5;
/// Hard cap on history entries, whatever the attempts.
pub const HISTORY_MAX_ENTRIES: usize = 40;
/// `error` texts are cut to this many bytes.
pub const MAX_ERROR_BYTES: usize = 2048;
/// A `result` whose JSON is larger than this is replaced by a marker (Firestore keeps
/// documents under 4 MiB; a trace should stay far below).
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// The highest attempt number accepted from a worker.
pub const MAX_ATTEMPT: u32 = 10_000;
/// The highest `total` (and so `done`) a progress report may carry.
pub const MAX_PROGRESS_TOTAL: i64 = 1_000_000_000;

const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;
const CREATED_TTL_MILLIS: i64 = crate::indexes::CREATED_TTL_SECONDS as i64 * 1000;
const COMPLETED_TTL_MILLIS: i64 = crate::indexes::COMPLETED_TTL_SECONDS as i64 * 1000;
const _: () = assert!(CREATED_TTL_MILLIS == 7 * DAY_MILLIS);

/// What a job message says about its job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDetails {
    pub job_type: JobType,
    pub url: Option<String>,
    pub line_user_id: Option<LineUserId>,
    pub check_only: bool,
}

/// One message's contribution to a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub message_id: MessageId,
    pub key: TraceKey,
    pub status: JobStatus,
    /// The message's time (`occurred_at`, else Pub/Sub's `publishTime`), in milliseconds.
    pub at: bson::DateTime,
    pub job: Option<JobDetails>,
    pub error: Option<String>,
    pub result: Option<bson::Bson>,
    /// A progress report: then `key`, `status`, `error` and `result` mean nothing, since
    /// progress never changes a status ([`apply`] takes its own path).
    pub progress: Option<StoredProgress>,
}

impl Change {
    /// A job message: the job is queued, key `(0, 0)`.
    pub fn queued(message_id: MessageId, at: bson::DateTime, job: JobDetails) -> Self {
        Change {
            message_id,
            key: TraceKey {
                attempt: 0,
                rank: 0,
            },
            status: JobStatus::Queued,
            at,
            job: Some(job),
            error: None,
            result: None,
            progress: None,
        }
    }

    /// A worker's status event for `attempt` (1 when the worker did not say).
    pub fn event(
        message_id: MessageId,
        status: JobStatus,
        attempt: u32,
        at: bson::DateTime,
        error: Option<String>,
        result: Option<bson::Bson>,
    ) -> Self {
        Change {
            message_id,
            key: TraceKey {
                attempt,
                rank: status.rank(),
            },
            status,
            at,
            job: None,
            error: error.map(|text| bound_error(&text)),
            result: result.map(bound_result),
            progress: None,
        }
    }

    /// A worker's progress report for `attempt`; `note` is cut like an error.
    pub fn progress(
        message_id: MessageId,
        attempt: u32,
        at: bson::DateTime,
        done: i64,
        total: i64,
        note: Option<String>,
    ) -> Self {
        Change {
            message_id,
            key: TraceKey {
                attempt,
                rank: JobStatus::Processing.rank(),
            },
            status: JobStatus::Processing,
            at,
            job: None,
            error: None,
            result: None,
            progress: Some(StoredProgress {
                attempt: i64::from(attempt),
                at,
                done,
                total,
                note: note.map(|text| bound_error(&text)),
            }),
        }
    }

    /// A message about this job that can never be processed: `failed` with key `(0, 2)`,
    /// so the frontend stops polling, while any real event of attempt 1 or later still
    /// overrides it. Being an ordinary transition keeps every arrival order convergent.
    pub fn rejected(message_id: MessageId, at: bson::DateTime, reason: &str) -> Self {
        Change {
            message_id,
            key: TraceKey {
                attempt: 0,
                rank: 2,
            },
            status: JobStatus::Failed,
            at,
            job: None,
            error: Some(bound_error(reason)),
            result: None,
            progress: None,
        }
    }

    pub fn history_entry(&self) -> HistoryEntry {
        HistoryEntry {
            attempt: i64::from(self.key.attempt),
            rank: i32::from(self.key.rank),
            status: self.status,
            at: self.at,
            error: self.error.clone(),
        }
    }
}

/// Cuts an error text to [`MAX_ERROR_BYTES`] on a character boundary.
pub fn bound_error(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Replaces a result larger than [`MAX_RESULT_BYTES`], or one the database cannot store
/// (nested deeper than [`MAX_RESULT_DEPTH`], or with an empty, `__…__` or NUL-holding
/// field name), by a marker that says so: such a write would fail on every redelivery.
pub fn bound_result(result: bson::Bson) -> bson::Bson {
    let size = result.clone().into_relaxed_extjson().to_string().len();
    if size <= MAX_RESULT_BYTES && storable(&result, 1) {
        result
    } else {
        bson::bson!({ "truncated": true, "original_bytes": size as i64 })
    }
}

/// Firestore allows 20 levels of nesting in a document; `result` is one of them.
pub const MAX_RESULT_DEPTH: usize = 16;

fn storable(value: &bson::Bson, depth: usize) -> bool {
    let fits = |child: &bson::Bson| storable(child, depth + 1);
    match value {
        bson::Bson::Document(doc) => {
            depth <= MAX_RESULT_DEPTH
                && doc.iter().all(|(name, child)| {
                    // BSON writes field names NUL-terminated, so the driver cannot even
                    // encode one that holds a NUL (found by fuzzing).
                    !(name.is_empty()
                        || name.contains('\0')
                        || (name.len() >= 4 && name.starts_with("__") && name.ends_with("__")))
                        && fits(child)
                })
        }
        bson::Bson::Array(items) => depth <= MAX_RESULT_DEPTH && items.iter().all(fits),
        _ => true,
    }
}

/// History order: `(attempt, rank)`, then time, status and error so that the order is
/// total and the same in the database (`$sortArray`) and here.
pub fn history_order(a: &HistoryEntry, b: &HistoryEntry) -> Ordering {
    (a.attempt, a.rank, a.at)
        .cmp(&(b.attempt, b.rank, b.at))
        .then_with(|| a.status.as_str().cmp(b.status.as_str()))
        .then_with(|| a.error.cmp(&b.error))
}

/// `min(created_at + 7 d, completed_at + 3 d)`: the one absolute expiry Firestore's TTL
/// can use.
pub fn expire_at(
    created_at: bson::DateTime,
    completed_at: Option<bson::DateTime>,
) -> bson::DateTime {
    let by_creation = created_at.timestamp_millis() + CREATED_TTL_MILLIS;
    let by_completion = completed_at.map(|done| done.timestamp_millis() + COMPLETED_TTL_MILLIS);
    bson::DateTime::from_millis(by_completion.map_or(by_creation, |c| c.min(by_creation)))
}

/// The `(attempt, rank)` a stored trace is at; for a trace the original system wrote
/// (no `attempt`), the key its status implies ([`TraceKey::implied_by_legacy`]).
pub fn stored_key(doc: &TraceDocument) -> (i64, i32) {
    let implied = TraceKey::implied_by_legacy(doc.status);
    (
        doc.attempt.unwrap_or(i64::from(implied.attempt)),
        doc.rank.unwrap_or(i32::from(implied.rank)),
    )
}

/// The rules, applied in memory: the trace after `change` reaches `current`.
///
/// The store runs the same steps: `store::pipeline` as one update pipeline whose steps
/// are named after the lines here, `store::cas` by calling this function.
pub fn apply(current: Option<&TraceDocument>, change: &Change) -> TraceDocument {
    if let Some(report) = &change.progress {
        return apply_progress(current, change, report);
    }
    let t = change.at;
    let a = i64::from(change.key.attempt);
    let r = i32::from(change.key.rank);
    // pipeline: step_compare_keys, step_applies.
    let (old_attempt, old_rank) = current.map_or(NO_STATUS_YET, stored_key);
    let applies = a > old_attempt || (a == old_attempt && r > old_rank);

    // pipeline: step_fields.
    let old = |pick: fn(&TraceDocument) -> Option<bson::DateTime>| current.and_then(pick);
    let base_started = if applies && a > old_attempt {
        None
    } else {
        old(|doc| doc.started_at)
    };
    let resulting_attempt = if applies { a } else { old_attempt };
    let started_at = if r == 1 && a == resulting_attempt {
        Some(base_started.map_or(t, |started| started.min(t)))
    } else {
        base_started
    };
    let created_at = old(|doc| doc.created_at).map_or(t, |created| created.min(t));
    let updated_at = old(|doc| doc.updated_at).map_or(t, |updated| updated.max(t));

    let mut history = current.map(|doc| doc.history.clone()).unwrap_or_default();
    let entry = change.history_entry();
    if !history.contains(&entry) {
        history.push(entry);
    }
    history.sort_by(history_order);
    let newest_attempt = history.iter().map(|e| e.attempt).max().unwrap_or(0);
    history.retain(|e| e.attempt > newest_attempt - HISTORY_ATTEMPTS);
    let overflow = history.len().saturating_sub(HISTORY_MAX_ENTRIES);
    history.drain(..overflow);

    let job = change.job.as_ref();
    let known = |pick: fn(&TraceDocument) -> Option<String>, new: Option<String>| {
        current.and_then(pick).or(new)
    };
    let (status, attempt, rank, error, result, completed_at) = match current {
        Some(doc) if !applies => (
            doc.status,
            doc.attempt,
            doc.rank,
            doc.error.clone(),
            doc.result.clone(),
            doc.completed_at,
        ),
        _ => (
            change.status,
            Some(a),
            Some(r),
            change.error.clone(),
            change.result.clone(),
            (r == 2).then_some(t),
        ),
    };

    let mut next = TraceDocument {
        id: current.and_then(|doc| doc.id),
        message_id: change.message_id.as_str().to_owned(),
        job_type: current
            .and_then(|doc| doc.job_type)
            .or(job.map(|j| j.job_type)),
        status,
        url: known(|doc| doc.url.clone(), job.and_then(|j| j.url.clone())),
        line_user_id: known(
            |doc| doc.line_user_id.clone(),
            job.and_then(|j| j.line_user_id.as_ref().map(|u| u.as_str().to_owned())),
        ),
        check_only: current
            .and_then(|doc| doc.check_only)
            .or(job.map(|j| j.check_only)),
        created_at: Some(created_at),
        updated_at: Some(updated_at),
        started_at,
        completed_at,
        error,
        result,
        attempt,
        rank,
        history,
        // pipeline: step_expiry.
        expire_at: Some(expire_at(created_at, completed_at)),
        progress: current.and_then(|doc| doc.progress.clone()),
    };
    // pipeline: step_drop_progress.
    let key = stored_key(&next);
    next.progress = next.progress.take().filter(|p| p.admissible(key));
    next
}

/// The key of a trace that only has progress reports: below every status change, as if
/// absent, so that the order of a report and the first status does not matter.
pub const NO_STATUS_YET: (i64, i32) = (-1, -1);

/// A progress report reaching `current`: only the times and the kept report can change
/// (pipeline: `progress_pipeline`).
fn apply_progress(
    current: Option<&TraceDocument>,
    change: &Change,
    report: &StoredProgress,
) -> TraceDocument {
    let t = change.at;
    let mut next = current.cloned().unwrap_or_else(|| TraceDocument {
        id: None,
        message_id: change.message_id.as_str().to_owned(),
        job_type: None,
        status: JobStatus::Queued,
        url: None,
        line_user_id: None,
        check_only: None,
        created_at: None,
        updated_at: None,
        started_at: None,
        completed_at: None,
        error: None,
        result: None,
        attempt: Some(NO_STATUS_YET.0),
        rank: Some(NO_STATUS_YET.1),
        history: Vec::new(),
        expire_at: None,
        progress: None,
    });
    let created_at = next.created_at.map_or(t, |created| created.min(t));
    next.created_at = Some(created_at);
    next.updated_at = Some(next.updated_at.map_or(t, |updated| updated.max(t)));
    next.expire_at = Some(expire_at(created_at, next.completed_at));
    let key = stored_key(&next);
    next.progress = [next.progress.take(), Some(report.clone())]
        .into_iter()
        .flatten()
        .filter(|p| p.admissible(key))
        .max_by(|a, b| a.order().cmp(&b.order()));
    next
}

/// Applies `changes` in order to an absent trace.
pub fn replay<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Option<TraceDocument> {
    changes
        .into_iter()
        .fold(None, |doc, change| Some(apply(doc.as_ref(), change)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> MessageId {
        MessageId::parse("1234567890").unwrap()
    }

    fn at(seconds: i64) -> bson::DateTime {
        bson::DateTime::from_millis(1_685_622_896_789 + seconds * 1000)
    }

    fn job() -> Change {
        Change::queued(
            id(),
            at(0),
            JobDetails {
                job_type: JobType::PropertyScrape,
                url: Some("https://suumo.jp/ms/chuko/".into()),
                line_user_id: Some(LineUserId::parse("U1").unwrap()),
                check_only: false,
            },
        )
    }

    fn event(status: JobStatus, attempt: u32, seconds: i64) -> Change {
        let error = (status == JobStatus::Failed).then(|| format!("attempt {attempt} broke"));
        Change::event(id(), status, attempt, at(seconds), error, None)
    }

    #[test]
    fn a_redelivered_processing_after_success_leaves_success() {
        let doc = replay(&[
            job(),
            event(JobStatus::Processing, 1, 5),
            event(JobStatus::Success, 1, 40),
            event(JobStatus::Processing, 1, 5),
        ])
        .unwrap();
        assert_eq!(doc.status, JobStatus::Success);
        assert_eq!(doc.started_at, Some(at(5)));
        assert_eq!(doc.completed_at, Some(at(40)));
        assert_eq!(doc.updated_at, Some(at(40)));
    }

    #[test]
    fn a_later_attempt_reopens_a_failed_job_and_an_older_one_never_does() {
        let reopened = replay(&[
            job(),
            event(JobStatus::Failed, 1, 10),
            event(JobStatus::Processing, 2, 20),
        ])
        .unwrap();
        assert_eq!(reopened.status, JobStatus::Processing);
        assert_eq!(reopened.attempt, Some(2));
        assert_eq!(reopened.error, None);
        assert_eq!(reopened.completed_at, None);
        assert_eq!(reopened.started_at, Some(at(20)));

        let done = apply(Some(&reopened), &event(JobStatus::Success, 2, 30));
        let late = apply(Some(&done), &event(JobStatus::Failed, 1, 10));
        assert_eq!(late.status, JobStatus::Success);
        assert_eq!(late.completed_at, Some(at(30)));
        assert_eq!(late.started_at, Some(at(20)));
    }

    #[test]
    fn an_event_before_its_job_message_still_gets_the_job_fields() {
        let doc = replay(&[event(JobStatus::Success, 1, 40), job()]).unwrap();
        assert_eq!(doc.status, JobStatus::Success);
        assert_eq!(doc.url.as_deref(), Some("https://suumo.jp/ms/chuko/"));
        assert_eq!(doc.line_user_id.as_deref(), Some("U1"));
        assert_eq!(doc.job_type, Some(JobType::PropertyScrape));
        assert_eq!(doc.created_at, Some(at(0)));
    }

    #[test]
    fn a_rejection_stops_a_queued_job_but_not_a_running_one() {
        let rejected = Change::rejected(id(), at(3), "unknown status \"done\"");
        let queued_then_rejected = replay(&[job(), rejected.clone()]).unwrap();
        assert_eq!(queued_then_rejected.status, JobStatus::Failed);
        assert_eq!(
            queued_then_rejected.error.as_deref(),
            Some("unknown status \"done\"")
        );
        let running = replay(&[job(), event(JobStatus::Processing, 1, 5), rejected]).unwrap();
        assert_eq!(running.status, JobStatus::Processing);
        assert_eq!(running.history.len(), 3, "the rejection is in the history");
    }

    /// A trace as the original system left it: a status and its times, no key.
    fn legacy(status: JobStatus) -> TraceDocument {
        let mut doc = replay(&[job()]).unwrap();
        doc.status = status;
        doc.attempt = None;
        doc.rank = None;
        doc.history.clear();
        doc.started_at = (status != JobStatus::Queued).then_some(at(5));
        doc.completed_at = status.is_terminal().then_some(at(40));
        doc.error = (status == JobStatus::Failed).then(|| "legacy failure".into());
        doc
    }

    #[test]
    fn a_legacy_trace_is_at_the_key_its_status_implies_for_attempt_one() {
        for terminal in [JobStatus::Success, JobStatus::Failed, JobStatus::NotFound] {
            let old = legacy(terminal);
            for late in [
                event(JobStatus::Processing, 1, 50),
                Change::rejected(id(), at(50), "late"),
                job(),
            ] {
                let after = apply(Some(&old), &late);
                assert_eq!(after.status, terminal, "{late:?} moved a legacy {terminal}");
                assert_eq!(after.completed_at, old.completed_at);
                assert_eq!(after.error, old.error);
                assert_eq!((after.attempt, after.rank), (None, None));
            }
            let reopened = apply(Some(&old), &event(JobStatus::Processing, 2, 60));
            assert_eq!(reopened.status, JobStatus::Processing);
            assert_eq!((reopened.attempt, reopened.rank), (Some(2), Some(1)));
            assert_eq!(reopened.started_at, Some(at(60)));
            assert_eq!((reopened.completed_at, reopened.error), (None, None));
        }
        let running = legacy(JobStatus::Processing);
        let done = apply(Some(&running), &event(JobStatus::Success, 1, 45));
        assert_eq!(done.status, JobStatus::Success);
        assert_eq!(done.started_at, Some(at(5)), "attempt 1 keeps its start");
        let redelivered = apply(Some(&running), &event(JobStatus::Processing, 1, 3));
        assert_eq!(redelivered.status, JobStatus::Processing);
        assert_eq!(
            redelivered.started_at,
            Some(at(3)),
            "the earliest processing"
        );
        let queued = legacy(JobStatus::Queued);
        let started = apply(Some(&queued), &event(JobStatus::Processing, 1, 5));
        assert_eq!(started.status, JobStatus::Processing);
        assert_eq!(
            apply(Some(&queued), &Change::rejected(id(), at(1), "bad")).status,
            JobStatus::Failed,
            "a legacy queued job is stopped by a rejection like any queued one"
        );
    }

    fn progress(attempt: u32, seconds: i64, done: i64) -> Change {
        Change::progress(
            id(),
            attempt,
            at(seconds),
            done,
            10,
            Some(format!("{done} of 10")),
        )
    }

    fn shown(doc: &TraceDocument) -> Option<(i64, Option<String>)> {
        doc.view(false).progress.map(|p| (p.done, p.note))
    }

    #[test]
    fn progress_of_the_running_attempt_shows_and_never_changes_its_status() {
        let running = replay(&[job(), event(JobStatus::Processing, 1, 5)]).unwrap();
        let late_first = replay(&[
            job(),
            event(JobStatus::Processing, 1, 5),
            progress(1, 9, 7),
            progress(1, 8, 3),
        ])
        .unwrap();
        assert_eq!(shown(&late_first), Some((7, Some("7 of 10".into()))));
        assert_eq!(late_first.status, JobStatus::Processing);
        assert_eq!(
            late_first.history, running.history,
            "progress is no history"
        );
        assert_eq!(late_first.updated_at, Some(at(9)));
        assert_eq!(late_first.started_at, running.started_at);
    }

    #[test]
    fn progress_never_reopens_a_finished_attempt() {
        let done = replay(&[
            job(),
            event(JobStatus::Processing, 1, 5),
            progress(1, 6, 4),
            event(JobStatus::Success, 1, 40),
        ])
        .unwrap();
        assert_eq!(done.progress, None, "success drops the attempt's progress");
        let late = apply(Some(&done), &progress(1, 30, 9));
        assert_eq!(late.status, JobStatus::Success);
        assert_eq!(late.progress, None);
        assert_eq!(late.updated_at, Some(at(40)));
        assert_eq!(shown(&late), None);
    }

    #[test]
    fn progress_of_a_later_attempt_waits_until_that_attempt_is_current() {
        let early = replay(&[job(), event(JobStatus::Failed, 1, 10), progress(2, 25, 5)]).unwrap();
        assert_eq!(early.status, JobStatus::Failed);
        assert!(early.progress.is_some(), "kept for attempt 2");
        assert_eq!(shown(&early), None, "not attempt 1's progress");
        let current = apply(Some(&early), &event(JobStatus::Processing, 2, 20));
        assert_eq!(shown(&current), Some((5, Some("5 of 10".into()))));
    }

    #[test]
    fn progress_before_any_status_converges_with_every_order() {
        let changes = [
            job(),
            event(JobStatus::Processing, 1, 5),
            progress(1, 7, 2),
            progress(1, 9, 6),
        ];
        let expected = replay(&changes).unwrap();
        for order in [[3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]] {
            let doc = replay(order.iter().map(|&i| &changes[i])).unwrap();
            assert_eq!(doc, expected, "order {order:?}");
        }
        let only = replay(&[progress(1, 7, 2)]).unwrap();
        assert_eq!(stored_key(&only), NO_STATUS_YET);
        assert_eq!(shown(&only), None);
    }

    #[test]
    fn expiry_is_the_earlier_of_the_two_rules() {
        let created = at(0);
        assert_eq!(
            expire_at(created, None).timestamp_millis(),
            created.timestamp_millis() + 7 * DAY_MILLIS
        );
        assert_eq!(
            expire_at(created, Some(at(60))).timestamp_millis(),
            at(60).timestamp_millis() + 3 * DAY_MILLIS
        );
    }

    #[test]
    fn history_keeps_only_the_latest_attempts() {
        let mut changes = vec![job()];
        for attempt in 1..=8 {
            changes.push(event(JobStatus::Processing, attempt, attempt as i64 * 10));
            changes.push(event(JobStatus::Failed, attempt, attempt as i64 * 10 + 5));
        }
        let doc = replay(&changes).unwrap();
        let attempts: Vec<_> = doc.history.iter().map(|e| e.attempt).collect();
        assert_eq!(attempts, [4, 4, 5, 5, 6, 6, 7, 7, 8, 8]);
        assert_eq!(doc.attempt, Some(8));
    }

    #[test]
    fn long_errors_and_results_are_bounded() {
        let cut = bound_error(&"é".repeat(MAX_ERROR_BYTES));
        assert!(cut.len() <= MAX_ERROR_BYTES + '…'.len_utf8());
        let huge = bson::bson!({ "blob": "x".repeat(MAX_RESULT_BYTES + 1) });
        assert_eq!(
            bound_result(huge)
                .as_document()
                .unwrap()
                .get_bool("truncated"),
            Ok(true)
        );
        let small = bson::bson!({ "status": "success" });
        assert_eq!(bound_result(small.clone()), small);
        let mut deep = bson::bson!("leaf");
        for _ in 0..MAX_RESULT_DEPTH {
            deep = bson::bson!({ "a": [deep] });
        }
        assert!(bound_result(deep)
            .as_document()
            .unwrap()
            .contains_key("truncated"));
        for name in ["", "__name__", "r\0["] {
            let odd = bson::Bson::Document(bson::doc! { name: 1 });
            assert!(bound_result(odd)
                .as_document()
                .unwrap()
                .contains_key("truncated"));
        }
    }
}
