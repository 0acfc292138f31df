//! The transition rules of DESIGN.md as pure data and a pure reducer.
//!
//! [`Change`] is what one message tells us. The store enforces the rules inside the
//! database write ([`crate::store::TraceStore::apply`]); [`apply`] is the same rules in
//! plain Rust, used to reason about convergence and to check the store against.

use std::cmp::Ordering;

use crate::completions::{dedupe_key, MAX_PENDING_COMPLETIONS};
use crate::ids::{LineUserId, MessageId};
use crate::model::{
    HistoryEntry, JobStatus, JobType, PendingCompletion, StoredProgress, TraceDocument, TraceKey,
};

mod bounds;
mod progress;
mod sweep;

pub use bounds::{
    bound_error, bound_result, storable_field_name, MAX_FIELD_NAME_BYTES, MAX_FIELD_PATH_BYTES,
    MAX_RESULT_DEPTH,
};
pub(crate) use bounds::{cut_at_char, truncation_marker};
use progress::apply_progress;
pub use progress::NO_STATUS_YET;
#[cfg(any(test, feature = "test-support"))]
pub use sweep::standing;
pub use sweep::{describe_seconds, still_stalled, Sweep};

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
    /// An operator's sweep of a stalled trace ([`Change::swept`]): it applies only to a
    /// trace still at `key` and stalled, and [`apply`] takes its own path.
    pub sweep: Option<Sweep>,
    /// With completion notifications on, when trace-writer records this change: a
    /// terminal transition that applies then also leaves a [`PendingCompletion`] noted at
    /// this time. `None` (notifications off) writes nothing of the kind.
    pub notify: Option<bson::DateTime>,
    /// Why `at` is not the time the message gave (an implausible `occurred_at` or
    /// `publishTime` was replaced): shown in the history entry, never as the trace's error.
    pub time_note: Option<String>,
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
            sweep: None,
            notify: None,
            time_note: None,
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
            sweep: None,
            notify: None,
            time_note: None,
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
            sweep: None,
            notify: None,
            time_note: None,
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
            sweep: None,
            notify: None,
            time_note: None,
        }
    }

    /// The same change, owing a completion notification noted at `now` if it ends an
    /// attempt.
    pub fn notifying(mut self, now: bson::DateTime) -> Self {
        self.notify = Some(now);
        self
    }

    /// The notification this change owes when it applies: a terminal status with
    /// notifications on.
    pub fn completion(&self) -> Option<PendingCompletion> {
        let noted_at = self.notify?;
        (self.progress.is_none() && self.status.is_terminal()).then(|| PendingCompletion {
            dedupe_key: dedupe_key(&self.message_id, self.key.attempt, self.status),
            status: self.status,
            attempt: i64::from(self.key.attempt),
            noted_at,
        })
    }

    /// The change as its history records it: the error, followed by the time note when
    /// the message's own time was replaced.
    pub fn history_entry(&self) -> HistoryEntry {
        let error = match (&self.error, &self.time_note) {
            (Some(error), Some(note)) => Some(bound_error(&format!("{error} ({note})"))),
            (error, note) => error.clone().or_else(|| note.as_deref().map(bound_error)),
        };
        HistoryEntry {
            attempt: i64::from(self.key.attempt),
            rank: i32::from(self.key.rank),
            status: self.status,
            at: self.at,
            error,
        }
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
    if let (Some(sweep), Some(doc)) = (&change.sweep, current) {
        return sweep::apply_sweep(doc, change, sweep);
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

    let history = with_entry(
        current.map(|doc| doc.history.clone()).unwrap_or_default(),
        change.history_entry(),
    );

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
        pending_completions: current
            .map(|doc| doc.pending_completions.clone())
            .unwrap_or_default(),
    };
    // pipeline: step_fields' `pending_completions`. Applied terminal keys only grow, so
    // the list is in attempt order and the overflow is the oldest.
    if let Some(owed) = change.completion().filter(|_| applies) {
        next.pending_completions.push(owed);
        let overflow = next
            .pending_completions
            .len()
            .saturating_sub(MAX_PENDING_COMPLETIONS);
        next.pending_completions.drain(..overflow);
    }
    // pipeline: step_drop_progress.
    let key = stored_key(&next);
    next.progress = next.progress.take().filter(|p| p.admissible(key));
    next
}

/// `history` with `entry` added once, in [`history_order`], bounded to the latest
/// attempts and entries.
fn with_entry(mut history: Vec<HistoryEntry>, entry: HistoryEntry) -> Vec<HistoryEntry> {
    if !history.contains(&entry) {
        history.push(entry);
    }
    history.sort_by(history_order);
    let newest_attempt = history.iter().map(|e| e.attempt).max().unwrap_or(0);
    history.retain(|e| e.attempt > newest_attempt - HISTORY_ATTEMPTS);
    let overflow = history.len().saturating_sub(HISTORY_MAX_ENTRIES);
    history.drain(..overflow);
    history
}

/// The trace after `change`, or none: a sweep never makes a trace of nothing (the store
/// writes it only to an existing trace), everything else does.
pub fn apply_to(current: Option<&TraceDocument>, change: &Change) -> Option<TraceDocument> {
    if change.sweep.is_some() && current.is_none() {
        return None;
    }
    Some(apply(current, change))
}

/// Applies `changes` in order to an absent trace.
pub fn replay<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Option<TraceDocument> {
    changes
        .into_iter()
        .fold(None, |doc, change| apply_to(doc.as_ref(), change))
}

#[cfg(test)]
mod tests;
