//! The sweep rule: an operator marks a stalled trace `failed` (`jobtrace sweep`).
//!
//! A sweep does not take a key of its own: it changes the status of a trace that is
//! still at the key it was listed at, and leaves that key as it is. So every rule about
//! keys stays as it was: any real event with a greater key (the same attempt's
//! `success`, `failed` or `not_found`, or any event of a later attempt) applies over the
//! sweep, and an event with the same key (a redelivered `processing` of the attempt that
//! went quiet) changes nothing, as it would have changed nothing without the sweep.

use super::{bound_error, expire_at, stored_key, with_entry, Change};
use crate::ids::MessageId;
use crate::model::{render_time, JobStatus, TraceDocument, TraceKey};

/// What makes a change a sweep: the trace must still be stalled, i.e. nothing recorded
/// after `stalled_since` (its `updated_at` at or before it).
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub stalled_since: bson::DateTime,
}

/// `1h 30m`, `45s`: the threshold as an operator wrote it, roughly.
pub fn describe_seconds(seconds: u64) -> String {
    let (hours, minutes, secs) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let parts: Vec<String> = [(hours, "h"), (minutes, "m"), (secs, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

impl Change {
    /// The sweep of `trace` at `at` for having recorded nothing for `threshold_seconds`:
    /// `None` when the trace is finished, or has had only progress reports (no status
    /// whose key a sweep could hold on to).
    pub fn swept(
        trace: &TraceDocument,
        threshold_seconds: u64,
        at: bson::DateTime,
    ) -> Option<Change> {
        if trace.status.is_terminal() {
            return None;
        }
        let (attempt, rank) = stored_key(trace);
        let key = TraceKey {
            attempt: u32::try_from(attempt).ok()?,
            rank: u8::try_from(rank).ok()?,
        };
        let message_id = MessageId::parse(trace.message_id.clone()).ok()?;
        let threshold_millis = i64::try_from(threshold_seconds.saturating_mul(1000)).ok()?;
        let stalled_since =
            bson::DateTime::from_millis(at.timestamp_millis().saturating_sub(threshold_millis));
        let last = trace
            .updated_at
            .map_or_else(|| "never".to_owned(), render_time);
        let error = format!(
            "swept: nothing recorded for over {} (last at {last}); marked failed at {} by jobtrace sweep",
            describe_seconds(threshold_seconds),
            render_time(at),
        );
        Some(Change {
            message_id,
            key,
            status: JobStatus::Failed,
            at,
            job: None,
            error: Some(bound_error(&error)),
            result: None,
            progress: None,
            sweep: Some(Sweep { stalled_since }),
            notify: None,
            time_note: None,
        })
    }
}

/// Whether `sweep` still applies to `doc`: not finished, at the sweep's key, and nothing
/// recorded after `stalled_since`. The store's conditional write tests the same.
pub fn still_stalled(doc: &TraceDocument, change: &Change, sweep: &Sweep) -> bool {
    let key = (i64::from(change.key.attempt), i32::from(change.key.rank));
    !doc.status.is_terminal()
        && stored_key(doc) == key
        && doc
            .updated_at
            .is_some_and(|updated| updated <= sweep.stalled_since)
}

/// A sweep reaching `doc` (pipeline: `store::ops::sweep_pipeline`).
pub(super) fn apply_sweep(doc: &TraceDocument, change: &Change, sweep: &Sweep) -> TraceDocument {
    if !still_stalled(doc, change, sweep) {
        return doc.clone();
    }
    let t = change.at;
    let created_at = doc.created_at.map_or(t, |created| created.min(t));
    let completed_at = Some(t);
    TraceDocument {
        status: JobStatus::Failed,
        attempt: Some(i64::from(change.key.attempt)),
        rank: Some(i32::from(change.key.rank)),
        error: change.error.clone(),
        result: None,
        created_at: Some(created_at),
        updated_at: Some(doc.updated_at.map_or(t, |updated| updated.max(t))),
        completed_at,
        history: with_entry(doc.history.clone(), change.history_entry()),
        expire_at: Some(expire_at(created_at, completed_at)),
        ..doc.clone()
    }
}

/// Where a job stands: what a sweep changes and a later real event restores (status,
/// key, error, completion). For the tests that compare histories with and without sweeps.
#[cfg(any(test, feature = "test-support"))]
pub fn standing(
    doc: &TraceDocument,
) -> (
    JobStatus,
    (i64, i32),
    Option<String>,
    Option<bson::DateTime>,
) {
    (
        doc.status,
        stored_key(doc),
        doc.error.clone(),
        doc.completed_at,
    )
}

#[cfg(test)]
mod tests;
