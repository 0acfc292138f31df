//! The sweep with the other rules: it fails a stalled trace, and any real event of the
//! same attempt with a greater key, or of a later attempt, still overrides it.

use proptest::prelude::*;

use super::super::tests::{at, id, job};
use super::super::{apply, apply_to, replay, standing, stored_key, Change};
use crate::model::{JobStatus, TraceDocument};

fn event(status: JobStatus, attempt: u32, seconds: i64) -> Change {
    let error = status.is_terminal() && status != JobStatus::Success;
    let error = error.then(|| format!("attempt {attempt}: {status}"));
    Change::event(id(), status, attempt, at(seconds), error, None)
}

/// The sweep of `doc` at second `seconds` for 30 minutes of silence.
fn sweep(doc: &TraceDocument, seconds: i64) -> Change {
    Change::swept(doc, 1800, at(seconds)).expect("an unfinished trace can be swept")
}

fn running() -> TraceDocument {
    replay(&[job(), event(JobStatus::Processing, 1, 5)]).unwrap()
}

#[test]
fn a_sweep_fails_a_stalled_trace_at_its_key() {
    let doc = running();
    let swept = apply(Some(&doc), &sweep(&doc, 4000));
    assert_eq!(swept.status, JobStatus::Failed);
    assert_eq!(stored_key(&swept), stored_key(&doc), "the key stays");
    assert_eq!(swept.completed_at, Some(at(4000)));
    assert_eq!(swept.updated_at, Some(at(4000)));
    assert_eq!(swept.started_at, doc.started_at);
    let error = swept.error.clone().unwrap();
    assert!(
        error
            .starts_with("swept: nothing recorded for over 30m (last at 2023-06-01T12:35:01.789Z)"),
        "{error}"
    );
    let last = swept.history.last().unwrap();
    assert_eq!(
        (last.status, last.attempt, last.rank, last.error.as_ref()),
        (JobStatus::Failed, 1, 1, Some(&error))
    );
}

#[test]
fn a_late_success_of_the_same_attempt_wins_over_a_sweep() {
    let doc = running();
    let swept = apply(Some(&doc), &sweep(&doc, 4000));
    let done = apply(Some(&swept), &event(JobStatus::Success, 1, 4100));
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(done.error, None);
    assert_eq!(done.completed_at, Some(at(4100)));
    assert_eq!(stored_key(&done), (1, 2));
    // Even when the success happened before the sweep but arrives after it.
    let early = apply(Some(&swept), &event(JobStatus::Success, 1, 3000));
    assert_eq!(early.status, JobStatus::Success);
    assert_eq!(early.completed_at, Some(at(3000)));
}

#[test]
fn a_late_processing_of_the_same_attempt_leaves_the_sweep_and_a_later_attempt_reopens() {
    let doc = running();
    let swept = apply(Some(&doc), &sweep(&doc, 4000));
    let again = apply(Some(&swept), &event(JobStatus::Processing, 1, 5));
    assert_eq!(again, swept, "a redelivered processing is no news");
    let reopened = apply(Some(&swept), &event(JobStatus::Processing, 2, 4200));
    assert_eq!(reopened.status, JobStatus::Processing);
    assert_eq!(reopened.error, None);
    assert_eq!(reopened.completed_at, None);
    assert_eq!(reopened.started_at, Some(at(4200)));
}

#[test]
fn a_swept_queued_job_is_reopened_by_its_first_processing() {
    let queued = replay(&[job()]).unwrap();
    let swept = apply(Some(&queued), &sweep(&queued, 4000));
    assert_eq!(swept.status, JobStatus::Failed);
    let running = apply(Some(&swept), &event(JobStatus::Processing, 1, 4100));
    assert_eq!(running.status, JobStatus::Processing);
}

#[test]
fn a_sweep_applies_only_while_the_trace_is_stalled_at_its_key() {
    let doc = running();
    let change = sweep(&doc, 4000);
    // Something recorded after the threshold began: not stalled any more.
    let progressed = apply(Some(&doc), &Change::progress(id(), 1, at(3000), 1, 2, None));
    assert_eq!(apply(Some(&progressed), &change), progressed);
    // A greater key reached meanwhile: the sweep is of a state that has passed.
    let retried = apply(Some(&doc), &event(JobStatus::Processing, 2, 10));
    assert_eq!(apply(Some(&retried), &change), retried);
    let finished = apply(Some(&doc), &event(JobStatus::Success, 1, 20));
    assert_eq!(apply(Some(&finished), &change), finished);
    assert_eq!(Change::swept(&finished, 1800, at(4000)), None);
    assert_eq!(apply_to(None, &change), None, "a sweep makes no trace");
    // Only progress so far: no status key to hold on to.
    let progress_only = replay(&[Change::progress(id(), 1, at(1), 0, 2, None)]).unwrap();
    assert_eq!(Change::swept(&progress_only, 1800, at(4000)), None);
}

/// One of a small set of real messages, by index.
fn real(kind: u8, attempt: u32, seconds: i64) -> Change {
    match kind % 6 {
        0 => job(),
        1 => event(JobStatus::Processing, attempt, seconds),
        2 => event(JobStatus::Success, attempt, seconds),
        3 => event(JobStatus::Failed, attempt, seconds),
        4 => event(JobStatus::NotFound, attempt, seconds),
        _ => Change::progress(id(), attempt, at(seconds), 1, 3, None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Real messages in any order with sweeps between them: a sweep that applied is
    /// overridden exactly when a real message with a greater key arrives after it, and
    /// then the job stands where it would have stood without any sweep.
    #[test]
    fn real_events_after_a_sweep_override_it(
        messages in proptest::collection::vec((0u8..6, 1u32..=3, 0i64..600), 1..12),
        sweeps in proptest::collection::vec((0usize..12, 0i64..1200), 0..4),
    ) {
        let reals: Vec<Change> = messages
            .iter()
            .map(|&(kind, attempt, seconds)| real(kind, attempt, seconds))
            .collect();
        let mut doc: Option<TraceDocument> = None;
        let mut last_applied_sweep: Option<(i64, i32)> = None;
        for (position, change) in reals.iter().enumerate() {
            for &(_, sweep_at) in sweeps.iter().filter(|(p, _)| *p == position) {
                let Some(current) = doc.as_ref() else { continue };
                let Some(sweep) = Change::swept(current, 600, at(sweep_at + 600)) else { continue };
                let next = apply_to(Some(current), &sweep).unwrap();
                if next != *current {
                    prop_assert_eq!(next.status, JobStatus::Failed);
                    prop_assert_eq!(stored_key(&next), stored_key(current));
                    last_applied_sweep = Some(stored_key(current));
                }
                doc = Some(next);
            }
            doc = apply_to(doc.as_ref(), change);
        }
        let with_sweeps = doc.unwrap();
        let without = replay(&reals).unwrap();
        match last_applied_sweep {
            Some(key) if stored_key(&without) == key => {
                prop_assert_eq!(with_sweeps.status, JobStatus::Failed);
                prop_assert!(with_sweeps.error.as_deref().unwrap_or("").starts_with("swept: "));
            }
            _ => prop_assert_eq!(standing(&with_sweeps), standing(&without)),
        }
        prop_assert_eq!(with_sweeps.created_at, without.created_at);
        prop_assert_eq!(with_sweeps.started_at, without.started_at);
    }
}
