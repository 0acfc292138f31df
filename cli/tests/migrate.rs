//! `jobtrace migrate` as an operator runs it: the built binary over a real SecantusDB
//! database holding the original's documents, written as the original's code wrote them.

use std::process::Stdio;
use std::time::Duration;

use bson::{doc, Bson};
use job_trace::model::{HistoryEntry, JobStatus, TraceKey};
use job_trace::rules::{self, Change};
use job_trace_tests::legacy::{self, JST_OFFSET_MILLIS};
use jobtrace::migrate::{self, plan, Plan};
use tokio::io::{AsyncBufReadExt, BufReader};

mod migrate_common;

use migrate_common::*;

#[tokio::test]
async fn a_dry_run_writes_nothing_and_says_what_it_would_do() {
    let m = Migration::new("migrate_dry").await;
    let jobs = one_job_per_status(&m, "Udry").await;
    let before = m.snapshot().await;

    // The database given by flags this time, over an environment that names another.
    let args = [
        "--legacy-offset",
        "9h",
        "--mongo-uri",
        &m.config.mongo_uri,
        "--database",
        &m.config.mongo_database,
        "--collection",
        "job_traces",
    ];
    let mut command = m.command(&args);
    command
        .env("MONGO_URI", "mongodb://127.0.0.1:1")
        .env("MONGO_DATABASE", "not_this_one")
        .env("COLLECTION_JOB_TRACES", "nor_this_one");
    let output = finish(command, &args).await;
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("dry run: nothing was written"), "{stdout}");
    assert_eq!(count(&stdout, "scanned"), 5);
    assert_eq!(count(&stdout, "would migrate"), 5);
    assert_eq!(count(&stdout, "already migrated"), 0);
    assert_eq!(count(&stdout, "skipped"), 0);
    let (_, success) = &jobs[2];
    let shown = |at: bson::DateTime| job_trace::model::render_time(at);
    assert!(
        stdout.contains(&format!(
            "would migrate {success} (success): attempt 1, rank 2, history queued > processing > success, created_at {} -> {}",
            shown(legacy::naive_jst(real(120))),
            shown(real(120)),
        )),
        "{stdout}"
    );
    assert_eq!(m.snapshot().await, before, "a dry run wrote");
}

/// What the migration must have made of the original's document for `status`, created
/// at `real(created)` (processing 5 s and the end 40 s later, as `legacy::job_at` does).
fn expected_history(status: JobStatus, created: i64, error: Option<&str>) -> Vec<HistoryEntry> {
    let entry = |attempt, status: JobStatus, seconds, error: Option<&str>| HistoryEntry {
        attempt,
        rank: i32::from(status.rank()),
        status,
        at: real(created + seconds),
        error: error.map(str::to_owned),
    };
    let mut history = vec![entry(0, JobStatus::Queued, 0, None)];
    if status != JobStatus::Queued {
        history.push(entry(1, JobStatus::Processing, 5, None));
    }
    if status.is_terminal() {
        history.push(entry(1, status, 40, error));
    }
    history
}

#[tokio::test]
async fn apply_migrates_with_the_offset_taken_off_exactly_once_and_a_second_apply_changes_nothing()
{
    let m = Migration::new("migrate_apply").await;
    let jobs = one_job_per_status(&m, "Uapply").await;

    let stdout = m.ok(&["--apply", "--legacy-offset", "9h"]).await;
    assert!(!stdout.contains("dry run"), "{stdout}");
    assert!(
        stdout.contains(
            "legacy offset: 9h taken off created_at, updated_at, started_at, completed_at"
        ),
        "{stdout}"
    );
    assert_eq!(count(&stdout, "scanned"), 5);
    assert_eq!(count(&stdout, "migrated"), 5);
    assert_eq!(count(&stdout, "skipped"), 0);

    for (n, (status, id)) in jobs.iter().enumerate() {
        let created = 60 * n as i64;
        let raw = m.raw(id).await;
        let date = |field: &str| match raw.get(field) {
            Some(Bson::DateTime(at)) => Some(*at),
            _ => None,
        };
        let finished = status.is_terminal().then(|| real(created + 40));
        assert_eq!(date("created_at"), Some(real(created)), "{id}");
        let updated = match status {
            JobStatus::Queued => created,
            JobStatus::Processing => created + 5,
            _ => created + 40,
        };
        assert_eq!(date("updated_at"), Some(real(updated)), "{id}");
        let started = (*status != JobStatus::Queued).then(|| real(created + 5));
        assert_eq!(date("started_at"), started, "{id}");
        assert_eq!(date("completed_at"), finished, "{id}");
        let marker = raw.get_document("migrated").expect("marker");
        assert_eq!(marker.get_str("from"), Ok("original"), "{id}");
        assert_eq!(
            marker.get_i64("legacy_offset_ms"),
            Ok(JST_OFFSET_MILLIS),
            "{id}"
        );

        let doc = m.store.get(&mid(id)).await.unwrap().expect("trace");
        let key = TraceKey::implied_by_legacy(*status);
        assert_eq!(doc.attempt, Some(i64::from(key.attempt)), "{id}");
        assert_eq!(doc.rank, Some(i32::from(key.rank)), "{id}");
        assert_eq!(
            doc.history,
            expected_history(*status, created, legacy::error_for(*status)),
            "{id}"
        );
        let by_creation = real(created).timestamp_millis() + 7 * DAY_MILLIS;
        let expiry = finished.map_or(by_creation, |done| {
            by_creation.min(done.timestamp_millis() + 3 * DAY_MILLIS)
        });
        assert_eq!(
            doc.expire_at.map(|at| at.timestamp_millis()),
            Some(expiry),
            "{id}"
        );
    }

    let migrated = m.snapshot().await;
    let stdout = m.ok(&["--apply", "--legacy-offset", "9h"]).await;
    assert_eq!(count(&stdout, "migrated"), 0, "{stdout}");
    assert_eq!(count(&stdout, "already migrated"), 5, "{stdout}");
    assert_eq!(
        m.snapshot().await,
        migrated,
        "a second --apply changed documents"
    );
}

#[tokio::test]
async fn migrated_traces_move_on_in_the_store_as_the_rules_say() {
    let m = Migration::new("migrate_rules").await;
    let jobs = one_job_per_status(&m, "Urules").await;
    m.ok(&["--apply", "--legacy-offset", "9h"]).await;

    for (status, id) in &jobs {
        // A redelivery of attempt 1 an hour later, then a real attempt 2.
        let events = [
            Change::event(mid(id), JobStatus::Processing, 1, real(3600), None, None),
            Change::event(mid(id), JobStatus::Processing, 2, real(7200), None, None),
        ];
        for event in &events {
            let before = m.store.get(&mid(id)).await.unwrap().expect("trace");
            let expected = rules::apply(Some(&before), event);
            m.store.apply(event).await.expect("apply");
            let after = m.store.get(&mid(id)).await.unwrap().expect("trace");
            assert_eq!(
                after, expected,
                "{id} ({status}) after attempt {}",
                event.key.attempt
            );
        }
        let after = m.store.get(&mid(id)).await.unwrap().unwrap();
        assert_eq!(
            (after.status, after.attempt),
            (JobStatus::Processing, Some(2)),
            "{id}"
        );
        let marker = m.raw(id).await;
        assert!(
            marker.contains_key("migrated"),
            "{id}: the store kept the marker"
        );
    }

    // A finished legacy job stays finished on the redelivery: checked on a fresh copy.
    let m = Migration::new("migrate_rules_redelivered").await;
    let jobs = one_job_per_status(&m, "Uredelivered").await;
    m.ok(&["--apply"]).await;
    for (status, id) in jobs.iter().filter(|(status, _)| status.is_terminal()) {
        let before = m.store.get(&mid(id)).await.unwrap().unwrap();
        let redelivered = Change::event(mid(id), JobStatus::Processing, 1, real(3600), None, None);
        m.store.apply(&redelivered).await.unwrap();
        let after = m.store.get(&mid(id)).await.unwrap().unwrap();
        assert_eq!(after.status, *status, "{id}");
        assert_eq!(
            (after.completed_at, &after.error, &after.result),
            (before.completed_at, &before.error, &before.result),
            "{id}"
        );
    }
}

#[tokio::test]
async fn without_an_offset_the_times_stay_as_they_are() {
    let m = Migration::new("migrate_no_offset").await;
    let jobs = one_job_per_status(&m, "Unooffset").await;
    let before = m.snapshot().await;
    let stdout = m.ok(&["--apply"]).await;
    assert!(!stdout.contains("legacy offset"), "{stdout}");
    assert_eq!(count(&stdout, "migrated"), 5);
    let after = m.snapshot().await;
    for (old, new) in before.iter().zip(&after) {
        for field in ["created_at", "updated_at", "started_at", "completed_at"] {
            assert_eq!(old.get(field), new.get(field), "{field} of {old}");
        }
        assert_eq!(
            new.get_document("migrated")
                .unwrap()
                .get_i64("legacy_offset_ms"),
            Ok(0)
        );
    }
    let (_, success) = &jobs[2];
    let doc = m.store.get(&mid(success)).await.unwrap().unwrap();
    assert_eq!(doc.created_at, Some(legacy::naive_jst(real(120))));
}

#[tokio::test]
async fn an_offset_run_refuses_a_collection_this_system_has_written_to() {
    let m = Migration::new("migrate_refuse").await;
    let jobs = one_job_per_status(&m, "Urefuse").await;
    // trace-writer recorded a redelivery on one of the original's traces.
    let (_, failed) = &jobs[3];
    m.store
        .apply(&Change::event(
            mid(failed),
            JobStatus::Processing,
            2,
            real(3600),
            None,
            None,
        ))
        .await
        .unwrap();
    let before = m.snapshot().await;

    for args in [
        &["--legacy-offset", "9h"][..],
        &["--apply", "--legacy-offset", "9h"][..],
    ] {
        let output = m.run(args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(
                "refusing --legacy-offset: 1 document(s) here were written by this system"
            ) && stderr.contains(failed.as_str()),
            "{stderr}"
        );
        assert_eq!(text(&output.stdout), "", "{args:?}");
        assert_eq!(m.snapshot().await, before, "{args:?} wrote");
    }

    // Without an offset the others are migrated and this system's document is left alone.
    let stdout = m.ok(&["--apply"]).await;
    assert_eq!(count(&stdout, "migrated"), 4, "{stdout}");
    assert_eq!(count(&stdout, "skipped"), 1, "{stdout}");
    assert!(
        stdout.contains("  written by this system (has attempt): 1"),
        "{stdout}"
    );
    let ours = m.raw(failed).await;
    assert!(!ours.contains_key("migrated"), "{ours}");
}

#[tokio::test]
async fn documents_it_cannot_read_are_skipped_with_their_reasons_and_left_alone() {
    let m = Migration::new("migrate_skips").await;
    queued_jobs(&m, "Uskips", 2).await;
    let created = legacy::naive_jst(real(0));
    m.traces
        .insert_many([
            doc! { "message_id": "odd-status", "status": "done", "created_at": created },
            doc! { "status": "queued", "created_at": created },
            doc! { "message_id": "text-time", "status": "queued", "created_at": "2024-03-01T09:00:00" },
        ])
        .await
        .unwrap();
    let stdout = m.ok(&["--apply", "--legacy-offset", "9h"]).await;
    assert_eq!(count(&stdout, "scanned"), 5, "{stdout}");
    assert_eq!(count(&stdout, "migrated"), 2, "{stdout}");
    assert_eq!(count(&stdout, "skipped"), 3, "{stdout}");
    for reason in [
        "  unknown status \"done\": 1",
        "  missing message_id: 1",
        "  created_at is not a date (String): 1",
    ] {
        assert!(
            stdout.lines().any(|line| line == reason),
            "{reason:?} in\n{stdout}"
        );
    }
    let odd = m.raw("odd-status").await;
    assert_eq!(odd.get_datetime("created_at"), Ok(&created), "{odd}");
    assert!(!odd.contains_key("migrated"), "{odd}");
}

#[tokio::test]
async fn a_limited_run_stops_and_the_next_one_finishes_the_rest() {
    let m = Migration::new("migrate_limit").await;
    let ids = queued_jobs(&m, "Ulimit", 12).await;

    let stdout = m
        .ok(&[
            "--apply",
            "--legacy-offset",
            "9h",
            "--batch-size",
            "5",
            "--limit",
            "7",
        ])
        .await;
    assert_eq!(count(&stdout, "migrated"), 7, "{stdout}");
    assert!(stdout.contains("stopped at --limit 7"), "{stdout}");

    let stdout = m
        .ok(&["--apply", "--legacy-offset", "9h", "--batch-size", "5"])
        .await;
    assert_eq!(count(&stdout, "scanned"), 12, "{stdout}");
    assert_eq!(count(&stdout, "migrated"), 5, "{stdout}");
    assert_eq!(count(&stdout, "already migrated"), 7, "{stdout}");
    for (n, id) in ids.iter().enumerate() {
        let raw = m.raw(id).await;
        assert_eq!(raw.get_datetime("created_at"), Ok(&real(n as i64)), "{id}");
    }
}

#[tokio::test]
async fn a_killed_run_resumes_and_shifts_every_document_exactly_once() {
    let m = Migration::new("migrate_killed").await;
    let total = 150;
    let ids = queued_jobs(&m, "Ukilled", total).await;

    let mut child = m
        .command(&["--apply", "--legacy-offset", "9h", "--batch-size", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start migrate");
    let mut progress = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), progress.next_line())
            .await
            .expect("a progress line within 60 s")
            .unwrap()
            .expect("migrate ended before any progress");
        if line.starts_with("migrate: scanned") {
            break;
        }
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let marked = m
        .traces
        .count_documents(doc! { "migrated": { "$exists": true } })
        .await
        .unwrap();
    assert!(
        (1..total as u64).contains(&marked),
        "the run was killed mid-way: {marked} of {total} migrated"
    );

    let stdout = m.ok(&["--apply", "--legacy-offset", "9h"]).await;
    assert_eq!(count(&stdout, "already migrated"), marked, "{stdout}");
    assert_eq!(
        count(&stdout, "migrated"),
        total as u64 - marked,
        "{stdout}"
    );
    for (n, id) in ids.iter().enumerate() {
        let raw = m.raw(id).await;
        assert_eq!(
            raw.get_datetime("created_at"),
            Ok(&real(n as i64)),
            "{id}: shifted once"
        );
    }
}

#[tokio::test]
async fn a_malformed_offset_is_bad_usage() {
    let m = Migration::new("migrate_usage").await;
    let output = m.run(&["--legacy-offset", "9 hours"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("is not a duration"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn a_document_changed_after_it_was_read_is_never_overwritten() {
    let m = Migration::new("migrate_concurrent").await;
    let jobs = one_job_per_status(&m, "Uconcurrent").await;
    let read = m.snapshot().await;
    let migrations: Vec<_> = read
        .iter()
        .map(
            |document| match plan(document, JST_OFFSET_MILLIS, bson::DateTime::now()) {
                Plan::Migrate(migration) => migration,
                other => panic!("{document}: {other:?}"),
            },
        )
        .collect();

    // Between the read and the write: trace-writer records attempt 2 of the failed job,
    // and the original's worker, still running, takes the queued one.
    let (_, queued) = &jobs[0];
    let (_, failed) = &jobs[3];
    let retried = Change::event(
        mid(failed),
        JobStatus::Processing,
        2,
        real(3600),
        None,
        None,
    );
    m.store.apply(&retried).await.unwrap();
    let taken = legacy::update_job_status(
        &m.traces,
        queued,
        JobStatus::Processing,
        None,
        None,
        real(30),
    )
    .await;
    assert!(taken);
    let meanwhile = [m.raw(queued).await, m.raw(failed).await];

    let written = migrate::write(&m.traces, &migrations).await.unwrap();
    assert_eq!(
        written, 3,
        "only the three unchanged documents are migrated"
    );
    assert_eq!(
        [m.raw(queued).await, m.raw(failed).await],
        meanwhile,
        "a concurrent write was overwritten"
    );
    let retried = m.store.get(&mid(failed)).await.unwrap().unwrap();
    assert_eq!(
        (retried.status, retried.attempt),
        (JobStatus::Processing, Some(2))
    );

    // The next run picks the original's change up and leaves this system's alone.
    let stdout = m.ok(&["--apply"]).await;
    assert_eq!(count(&stdout, "migrated"), 1, "{stdout}");
    assert_eq!(count(&stdout, "already migrated"), 3, "{stdout}");
    assert!(
        stdout.contains("  written by this system (has attempt): 1"),
        "{stdout}"
    );
    let taken = m.store.get(&mid(queued)).await.unwrap().unwrap();
    assert_eq!(
        (taken.status, taken.attempt, taken.history.len()),
        (JobStatus::Processing, Some(1), 2)
    );
}
