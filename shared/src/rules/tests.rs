use super::*;

pub(super) fn id() -> MessageId {
    MessageId::parse("1234567890").unwrap()
}

pub(super) fn at(seconds: i64) -> bson::DateTime {
    bson::DateTime::from_millis(1_685_622_896_789 + seconds * 1000)
}

pub(super) fn job() -> Change {
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
