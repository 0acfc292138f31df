//! The progress rule: a report changes only the times and the report kept.

use super::{expire_at, stored_key, Change};
use crate::model::{JobStatus, StoredProgress, TraceDocument};

/// The key of a trace that only has progress reports: below every status change, as if
/// absent, so that the order of a report and the first status does not matter.
pub const NO_STATUS_YET: (i64, i32) = (-1, -1);

/// A progress report reaching `current`: only the times and the kept report can change
/// (pipeline: `progress_pipeline`).
pub(super) fn apply_progress(
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
        pending_completions: Vec::new(),
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
