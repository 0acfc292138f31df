//! The cut-over from the original: its documents, written as its code wrote them into a
//! real SecantusDB, read through trace-api on both path styles, moved on by this system's
//! events through the store, and its index set accepted by `ENSURE_INDEXES`.

mod api_common;

use std::collections::BTreeMap;

use api_common::{mid, Api};
use bson::{doc, Bson, Document};
use job_trace::config::DatabaseConfig;
use job_trace::indexes::seed_index_set;
use job_trace::model::{render_time, JobStatus, TraceDocument};
use job_trace::rules::Change;
use job_trace::TraceStore;
use job_trace_tests::fixture_json;
use job_trace_tests::legacy::{self, LegacyJob};
use job_trace_tests::{unique_name, Database};
use mongodb::Collection;
use serde_json::{json, Value};
use trace_api::ApiConfig;

struct Legacy {
    config: DatabaseConfig,
    traces: Collection<Document>,
    store: TraceStore,
}

async fn legacy_database(prefix: &str) -> Legacy {
    let config = Database::shared().config(&unique_name(prefix));
    Legacy {
        traces: legacy::collection(&config).await,
        store: TraceStore::connect(&config).await.expect("store"),
        config,
    }
}

/// A real instant of the test's jobs: 2024-03-01T00:00:00Z plus `seconds`.
fn real(seconds: i64) -> bson::DateTime {
    bson::DateTime::from_millis(1_709_251_200_000 + seconds * 1000)
}

#[tokio::test]
async fn the_originals_seed_job_reads_exactly_as_the_seed_on_both_path_styles() {
    let db = legacy_database("legacy_seed").await;
    let id = legacy::seed_example(&db.traces).await;
    let stored = db
        .traces
        .find_one(doc! { "_id": id })
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.contains_key("attempt") && !stored.contains_key("history"),
        "the original wrote none of this system's fields: {stored}"
    );
    let api = Api::start_on(db.store.clone(), ApiConfig::default()).await;
    let mut expected = fixture_json("seed-status-response.json");
    expected["id"] = json!(id.to_hex());

    for path in [
        "/api/v1/jobs/status/1234567890",
        "/job/status?message_id=1234567890",
    ] {
        let (status, body) = api.json(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, expected, "{path}");
    }
    for path in [
        "/api/v1/jobs/user/U1234567890abcdef",
        "/job/user?line_user_id=U1234567890abcdef",
    ] {
        let (status, body) = api.json(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            body,
            json!({ "jobs": [expected.clone()], "total_count": 1, "limit": 50, "skip": 0 }),
            "{path}"
        );
    }
}

/// One job of `user` per status, created a minute apart in `JobStatus::ALL` order.
async fn one_job_per_status(traces: &Collection<Document>, user: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, status) in JobStatus::ALL.into_iter().enumerate() {
        let job = LegacyJob::scrape(&format!("{user}-{status}"), user);
        legacy::job_at(traces, &job, status, real(60 * n as i64)).await;
        ids.push(job.message_id);
    }
    ids
}

#[tokio::test]
async fn every_status_the_original_wrote_reads_on_both_path_styles_and_in_user_lists() {
    let db = legacy_database("legacy_statuses").await;
    let user = "Ulegacy";
    let ids = one_job_per_status(&db.traces, user).await;
    let api = Api::start_on(db.store.clone(), ApiConfig::default()).await;

    let mut singles = Vec::new();
    for (n, (status, id)) in JobStatus::ALL.into_iter().zip(&ids).enumerate() {
        let (code, body) = api.json(&format!("/api/v1/jobs/status/{id}")).await;
        assert_eq!(code, 200, "{id}: {body}");
        let (code, standalone) = api.json(&format!("/job/status?message_id={id}")).await;
        assert_eq!(code, 200, "{id}: {standalone}");
        assert_eq!(standalone, body, "{id}: both styles give the same trace");

        // As the original showed them: its stored times, 9 hours ahead of the real ones.
        let shown = |seconds: i64| json!(render_time(legacy::naive_jst(real(seconds))));
        let created = 60 * n as i64;
        assert_eq!(body["status"], status.as_str(), "{id}");
        assert_eq!(body["created_at"], shown(created), "{id}");
        let started = if status == JobStatus::Queued {
            Value::Null
        } else {
            shown(created + 5)
        };
        assert_eq!(body["started_at"], started, "{id}");
        let completed = if status.is_terminal() {
            shown(created + 40)
        } else {
            Value::Null
        };
        assert_eq!(body["completed_at"], completed, "{id}");
        assert_eq!(body["error"], json!(legacy::error_for(status)), "{id}");
        let result = if status == JobStatus::Success {
            serde_json::to_value(legacy::scrape_result()).unwrap()
        } else {
            Value::Null
        };
        assert_eq!(body["result"], result, "{id}");
        assert_eq!(body["check_only"], false, "{id}");
        singles.push(body);
    }

    singles.reverse(); // newest first
    for path in [
        format!("/api/v1/jobs/user/{user}"),
        format!("/job/user?line_user_id={user}"),
    ] {
        let (code, body) = api.json(&path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(
            body,
            json!({ "jobs": singles, "total_count": 5, "limit": 50, "skip": 0 }),
            "{path}"
        );
        let (code, page) = api
            .json(&format!(
                "{path}{}limit=2&skip=1",
                if path.contains('?') { "&" } else { "?" }
            ))
            .await;
        assert_eq!(code, 200, "{path}: {page}");
        assert_eq!(page["jobs"], json!(&singles[1..3]), "{path}");
        assert_eq!(page["total_count"], 5, "{path}");
    }
}

fn processing(message_id: &str, attempt: u32, at: bson::DateTime) -> Change {
    Change::event(
        mid(message_id),
        JobStatus::Processing,
        attempt,
        at,
        None,
        None,
    )
}

async fn trace(store: &TraceStore, message_id: &str) -> TraceDocument {
    store.get(&mid(message_id)).await.unwrap().expect("trace")
}

/// Needs the store's legacy rule (`TraceKey::implied_by_legacy`): without it a trace
/// without `attempt` is at no key at all, and any event moves it.
#[tokio::test]
async fn a_redelivered_first_attempt_never_moves_a_finished_legacy_trace_back() {
    let db = legacy_database("legacy_redelivered").await;
    let ids = one_job_per_status(&db.traces, "Uredelivered").await;
    for (status, id) in JobStatus::ALL.into_iter().zip(&ids) {
        if !status.is_terminal() {
            continue;
        }
        let before = trace(&db.store, id).await;
        // The job's message redelivered to the new worker a while after the original
        // finished it, and its processing event recorded through this system.
        db.store
            .apply(&processing(id, 1, real(3600)))
            .await
            .expect("apply");
        let after = trace(&db.store, id).await;
        assert_eq!(
            (
                after.status,
                after.completed_at,
                &after.error,
                &after.result
            ),
            (
                before.status,
                before.completed_at,
                &before.error,
                &before.result
            ),
            "{id}: the legacy {status} moved back by a redelivered attempt-1 processing"
        );
    }
}

#[tokio::test]
async fn a_real_second_attempt_reopens_a_finished_legacy_trace() {
    let db = legacy_database("legacy_reopened").await;
    let ids = one_job_per_status(&db.traces, "Ureopened").await;
    for (status, id) in JobStatus::ALL.into_iter().zip(&ids) {
        if !status.is_terminal() {
            continue;
        }
        let at = real(7200);
        db.store.apply(&processing(id, 2, at)).await.expect("apply");
        let after = trace(&db.store, id).await;
        assert_eq!(after.status, JobStatus::Processing, "{id} ({status})");
        assert_eq!(after.attempt, Some(2), "{id} ({status})");
        assert_eq!(after.started_at, Some(at), "{id} ({status})");
        assert_eq!(
            (after.completed_at, &after.error, &after.result),
            (None, &None, &None),
            "{id} ({status}): a reopened trace describes its new attempt only"
        );
    }
}

#[tokio::test]
async fn a_legacy_queued_or_processing_trace_moves_on_with_the_first_attempt() {
    let db = legacy_database("legacy_open").await;
    let ids = one_job_per_status(&db.traces, "Uopen").await;
    let (queued, running) = (&ids[0], &ids[1]);

    db.store
        .apply(&processing(queued, 1, real(600)))
        .await
        .unwrap();
    let after = trace(&db.store, queued).await;
    assert_eq!(
        (after.status, after.attempt),
        (JobStatus::Processing, Some(1))
    );

    let result = bson::bson!({ "status": "success" });
    let success = Change::event(
        mid(running),
        JobStatus::Success,
        1,
        real(600),
        None,
        Some(result.clone()),
    );
    db.store.apply(&success).await.unwrap();
    let after = trace(&db.store, running).await;
    assert_eq!(after.status, JobStatus::Success, "{running}");
    assert_eq!(after.completed_at, Some(real(600)), "{running}");
    assert_eq!(after.result, Some(result), "{running}");
}

/// `name -> (key, unique, expireAfterSeconds, partialFilterExpression)` of a listing.
type IndexShape = BTreeMap<String, (Document, bool, Option<i64>, Option<Document>)>;

async fn index_shape(traces: &Collection<Document>) -> IndexShape {
    let namespace = traces.namespace();
    let reply = traces
        .client()
        .database(&namespace.db)
        .run_command(doc! { "listIndexes": &namespace.coll })
        .await
        .unwrap();
    let mut shape = BTreeMap::new();
    for index in reply
        .get_document("cursor")
        .and_then(|cursor| cursor.get_array("firstBatch"))
        .unwrap()
    {
        let index = index.as_document().unwrap();
        let ttl = index.get("expireAfterSeconds").and_then(|s| match s {
            Bson::Int32(n) => Some(i64::from(*n)),
            Bson::Int64(n) => Some(*n),
            Bson::Double(n) => Some(*n as i64),
            _ => None,
        });
        shape.insert(
            index.get_str("name").unwrap().to_owned(),
            (
                index.get_document("key").unwrap().clone(),
                index.get_bool("unique").unwrap_or(false),
                ttl,
                index.get_document("partialFilterExpression").ok().cloned(),
            ),
        );
    }
    shape.remove("_id_");
    shape
}

/// The original passed `background: true` on every index. mongod leaves that option out
/// when it compares an index with an existing one ("a creation time option only");
/// SecantusDB 0.7.0b3 counts it and answers IndexKeySpecsConflict (86), so the store must
/// not lean on the server's comparison to meet indexes that are already there.
#[tokio::test]
async fn ensure_indexes_accepts_the_originals_index_set() {
    let db = legacy_database("legacy_indexes").await;
    legacy::seed_example(&db.traces).await;
    legacy::create_original_indexes(&db.traces).await;
    let original = index_shape(&db.traces).await;

    let config = DatabaseConfig {
        ensure_indexes: true,
        ..db.config.clone()
    };
    let store = TraceStore::connect(&config).await.unwrap();
    store
        .ensure_indexes()
        .await
        .expect("ENSURE_INDEXES over the original's indexes");
    let after = index_shape(&db.traces).await;
    // Every index of the original's stays as it was; the one this system adds beyond the
    // seed (the operators' listings) is created beside them.
    let added: Vec<_> = after
        .keys()
        .filter(|name| !original.contains_key(*name))
        .collect();
    assert_eq!(
        added,
        ["status_1_updated_at_1"],
        "ensure_indexes added only ours"
    );
    for (name, shape) in &original {
        assert_eq!(
            after.get(name),
            Some(shape),
            "{name} kept as the original made it"
        );
    }
    let ours: BTreeMap<_, _> = seed_index_set()
        .into_iter()
        .map(|spec| {
            let shape = (
                spec.keys(),
                spec.unique,
                spec.ttl_seconds.map(|s| s as i64),
                spec.partial_filter.clone(),
            );
            (spec.name, shape)
        })
        .collect();
    assert_eq!(
        after, ours,
        "the original's set and the added index are this system's"
    );

    // And the unique index still holds the original's traces to one per message_id.
    let duplicate = db
        .traces
        .insert_one(doc! { "message_id": "1234567890", "status": "queued" })
        .await;
    assert!(
        duplicate.is_err(),
        "a second trace of 1234567890 was accepted"
    );
}
