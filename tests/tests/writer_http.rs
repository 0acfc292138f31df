//! trace-writer's HTTP contract on a real database: the fixtures (wrapped pushes, a
//! binary and a structured CloudEvent), the ack rules (204 only once written; a message
//! that can never be recorded is acknowledged and fails its job; 400 for what is not a
//! push; 413 over the bound; 503 without detail when the database is away), health,
//! and one database command per push.

mod writer_common;

use std::time::{Duration, Instant};

use job_trace::config::DatabaseConfig;
use job_trace::model::{render_time, JobStatus, JobType};
use job_trace::push::MAX_PUSH_BODY_BYTES;
use job_trace::TraceStore;
use job_trace_tests::{counted_store, fixture_json, free_port};
use serde_json::{json, Value};
use writer_common::*;

#[tokio::test]
async fn the_seed_example_is_recorded_from_its_fixtures() {
    let writer = Writer::start("writer_seed").await;
    for name in [
        "push-job-message.json",
        "push-status-processing.json",
        "push-status-success.json",
    ] {
        let (status, body) = writer.push(&fixture_json(name)).await;
        assert_eq!(status, 204, "{name}: {body}");
        assert_eq!(body, "", "{name}: a 204 has no body");
    }
    let trace = writer.trace("1234567890").await.expect("the trace exists");
    let view = serde_json::to_value(trace.view(false)).unwrap();
    let mut expected = fixture_json("seed-status-response.json");
    // The id is the database's own; everything else is what the seed shows.
    expected["id"] = view["id"].clone();
    for field in expected.as_object().unwrap().keys() {
        assert_eq!(view[field], expected[field], "field {field}: {view:#}");
    }
    assert_eq!(trace.job_type, Some(JobType::PropertyScrape));
    assert_eq!(trace.history.len(), 3);
}

#[tokio::test]
async fn a_batch_message_and_a_failed_event_with_its_delivery_attempt() {
    let writer = Writer::start("writer_batch").await;
    let (status, _) = writer.push(&fixture_json("push-batch-message.json")).await;
    assert_eq!(status, 204);
    let batch = writer.trace("1234567891").await.expect("batch trace");
    assert_eq!(batch.status, JobStatus::Queued);
    assert_eq!(batch.job_type, Some(JobType::BatchCheck));
    assert_eq!(batch.check_only, Some(true));
    assert_eq!(batch.url, None);
    assert_eq!(
        batch.created_at.map(render_time).as_deref(),
        Some("2023-06-01T12:34:56.789Z"),
        "a job message's time is its publishTime"
    );

    let (status, _) = writer.push(&fixture_json("push-status-failed.json")).await;
    assert_eq!(status, 204);
    let failed = writer.trace("1234567890").await.expect("event-first trace");
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("HTTP 503 from suumo.jp"));
    assert_eq!(
        failed.completed_at.map(render_time).as_deref(),
        Some("2023-06-01T12:35:42.123Z")
    );
    assert_eq!(failed.url, None, "the job message has not arrived yet");
    // The job message arrives late: the status stays, the details are filled in.
    let (status, _) = writer.push(&fixture_json("push-job-message.json")).await;
    assert_eq!(status, 204);
    let late = writer.trace("1234567890").await.unwrap();
    assert_eq!(late.status, JobStatus::Failed);
    assert_eq!(
        late.url.as_deref(),
        Some("https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_98142765/")
    );
    assert_eq!(
        late.created_at.map(render_time).as_deref(),
        Some("2023-06-01T12:34:56.789Z")
    );
}

#[tokio::test]
async fn cloudevents_in_binary_and_structured_mode_are_recorded() {
    let writer = Writer::start("writer_cloudevent").await;
    let fixture = fixture_json("cloudevent-binary-job-message.json");
    let headers: Vec<(String, String)> = fixture["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, body) = writer
        .post_raw(&header_refs, serde_json::to_vec(&fixture["body"]).unwrap())
        .await;
    assert_eq!(status, 204, "{body}");
    let trace = writer.trace("1234567890").await.expect("binary CloudEvent");
    assert_eq!(trace.status, JobStatus::Queued);
    assert_eq!(trace.line_user_id.as_deref(), Some("U1234567890abcdef"));
    assert_eq!(
        trace.created_at.map(render_time).as_deref(),
        Some("2023-06-01T12:34:56.789Z")
    );

    // Structured mode: the whole event is the body, the push is its `data`.
    let (job, push) = job_push(Some("https://suumo.jp/ms/chuko/nc_1/"));
    let mut push = push;
    push["message"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k != "messageId" && k != "message_id");
    let event = json!({
        "specversion": "1.0",
        "id": job,
        "source": "//pubsub.googleapis.com/projects/demo/topics/scrape-jobs",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "time": "2026-05-01T10:00:00.000Z",
        "datacontenttype": "application/json",
        "data": push,
    });
    let (status, body) = writer
        .post_raw(
            &[(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )],
            serde_json::to_vec(&event).unwrap(),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let trace = writer.trace(&job).await.expect("structured CloudEvent");
    assert_eq!(
        trace.url.as_deref(),
        Some("https://suumo.jp/ms/chuko/nc_1/")
    );
}

#[tokio::test]
async fn a_message_that_can_never_be_recorded_is_acknowledged_and_fails_its_job() {
    let writer = Writer::start("writer_reject").await;
    // A job message whose data is not base64: the job fails, saying why.
    let id = new_id();
    let mut body = wrapped(&id, b"{}", json!({}));
    body["message"]["data"] = json!("%%% not base64 %%%");
    let (status, text) = writer.push(&body).await;
    assert_eq!(status, 204, "{text}");
    let trace = writer.trace(&id).await.expect("a failed trace");
    assert_eq!(trace.status, JobStatus::Failed);
    let error = trace.error.unwrap_or_default();
    assert!(error.contains("base64"), "{error}");
    assert_eq!((trace.attempt, trace.rank), (Some(0), Some(2)));

    // An event with an unknown status about a job that exists: the job keeps its
    // status, the rejection goes into its history.
    let (job, push) = job_push(Some("https://suumo.jp/ms/chuko/nc_2/"));
    assert_eq!(writer.push(&push).await.0, 204);
    let (status, _) = writer
        .push(&event_push(
            &job,
            json!({ "status": "processing", "attempt": 1 }),
        ))
        .await;
    assert_eq!(status, 204);
    let (status, _) = writer
        .push(&event_push(&job, json!({ "status": "done", "attempt": 1 })))
        .await;
    assert_eq!(status, 204);
    let trace = writer.trace(&job).await.unwrap();
    assert_eq!(trace.status, JobStatus::Processing);
    assert!(
        trace
            .history
            .iter()
            .any(|h| h.error.as_deref().is_some_and(|e| e.contains("done"))),
        "{:?}",
        trace.history
    );

    // A real event of attempt 1 still overrides a rejection.
    let id = new_id();
    let mut body = wrapped(&id, b"[1, 2]", json!({}));
    body["message"]["publishTime"] = json!("2026-05-01T09:00:00.000Z");
    assert_eq!(writer.push(&body).await.0, 204);
    assert_eq!(writer.trace(&id).await.unwrap().status, JobStatus::Failed);
    let (status, _) = writer
        .push(&event_push(
            &id,
            json!({ "status": "success", "attempt": 1 }),
        ))
        .await;
    assert_eq!(status, 204);
    assert_eq!(writer.trace(&id).await.unwrap().status, JobStatus::Success);

    // A marked event that cannot be read names no job: acknowledged, nothing written.
    let pubsub_id = new_id();
    let body = wrapped(&pubsub_id, b"not json", json!({ "trace_event": "status" }));
    assert_eq!(writer.push(&body).await.0, 204);
    assert!(writer.trace(&pubsub_id).await.is_none());
}

#[tokio::test]
async fn what_is_not_a_push_is_a_400_with_a_json_reason() {
    let writer = Writer::start("writer_envelope").await;
    let cases: [(&str, Vec<u8>); 5] = [
        ("not JSON", b"hello".to_vec()),
        ("empty", Vec::new()),
        ("an array", b"[1,2,3]".to_vec()),
        (
            "no message",
            br#"{"subscription":"projects/demo/subscriptions/x"}"#.to_vec(),
        ),
        ("message not an object", br#"{"message":"hi"}"#.to_vec()),
    ];
    for (what, body) in cases {
        let (status, text) = writer
            .post_raw(&[("content-type", "application/json")], body)
            .await;
        assert_eq!(status, 400, "{what}: {text}");
        let error: Value = serde_json::from_str(&text).expect("a JSON body");
        let reason = error["error"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{what}: {text}");
    }
    let (status, text) = writer
        .post_raw(
            &[("content-type", "application/cloudevents+json")],
            br#"{"specversion":"1.0","id":"1"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("data"), "{text}");

    let response = writer.http.get(writer.url("/")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test]
async fn a_body_over_the_bound_is_a_413_whether_announced_or_streamed() {
    let writer = Writer::start("writer_huge").await;
    let huge = vec![b' '; MAX_PUSH_BODY_BYTES + 1];
    let (status, text) = writer
        .post_raw(&[("content-type", "application/json")], huge)
        .await;
    assert_eq!(status, 413, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert!(error["error"].as_str().unwrap().contains("larger than"));

    // Without a Content-Length (chunked), the bound holds while reading.
    let chunks = (0..15).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024 * 1024]));
    let response = writer
        .http
        .post(writer.url("/"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("a response");
    assert_eq!(response.status().as_u16(), 413);

    // Just under the bound is read (and is not a push: 400, not 413).
    let mut body = b"{\"message\":{},\"pad\":\"".to_vec();
    body.resize(MAX_PUSH_BODY_BYTES - 2, b'x');
    body.extend_from_slice(b"\"}");
    let (status, _) = writer
        .post_raw(&[("content-type", "application/json")], body)
        .await;
    assert_eq!(status, 204, "an empty message is acknowledged as rejected");
}

/// A store whose database does not exist: a real driver on a port nobody listens on.
async fn unreachable_store(timeout_seconds: f64) -> TraceStore {
    let config = DatabaseConfig {
        mongo_uri: format!("mongodb://127.0.0.1:{}/?directConnection=true", free_port()),
        mongo_database: "nowhere".into(),
        collection_job_traces: "job_traces".into(),
        ensure_indexes: false,
        db_timeout_seconds: timeout_seconds,
        store_write: Default::default(),
    };
    TraceStore::connect(&config).await.expect("lazy store")
}

#[tokio::test]
async fn an_unreachable_database_is_a_bounded_503_without_details() {
    let writer = Writer::start_on(unreachable_store(1.0).await).await;
    for body in [
        fixture_json("push-job-message.json"),
        // A rejection must fail its job durably too: not acknowledged without the write.
        wrapped(&new_id(), b"not json", json!({})),
    ] {
        let started = Instant::now();
        let (status, text) = writer.push(&body).await;
        assert_eq!(status, 503, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({ "error": "database unavailable" })
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "bounded by DB_TIMEOUT_SECONDS: {:?}",
            started.elapsed()
        );
    }
    // What is not a push is still the caller's mistake.
    let (status, _) = writer
        .post_raw(&[("content-type", "application/json")], b"nope".to_vec())
        .await;
    assert_eq!(status, 400);
    let health = writer
        .http
        .get(writer.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = writer.http.get(writer.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
}

#[tokio::test]
async fn health_and_readiness_on_a_live_database() {
    let writer = Writer::start("writer_health").await;
    let health = writer
        .http
        .get(writer.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = writer.http.get(writer.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn each_push_costs_one_database_command() {
    let (store, counter) = counted_store("writer_commands").await;
    let writer = Writer::start_on(store).await;
    // Warm the connection (the handshake commands are not the push's).
    assert_eq!(writer.push(&job_push(None).1).await.0, 204);
    counter.take();

    let mut pushes = 0;
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let (job, body) = job_push(Some("https://suumo.jp/ms/chuko/nc_3/"));
        bodies.push(body);
        bodies.push(event_push(&job, json!({ "status": "processing" })));
        bodies.push(event_push(
            &job,
            json!({ "status": "success", "result": { "ok": true } }),
        ));
        bodies.push(event_push(&job, json!({ "status": "processing" })));
    }
    // A rejected job message (its job fails) is one write too.
    bodies.push(wrapped(&new_id(), b"not json", json!({})));
    for body in &bodies {
        let (status, text) = writer.push(body).await;
        assert_eq!(status, 204, "{text}");
        pushes += 1;
    }
    let commands = counter.take();
    let updates = commands.iter().filter(|c| *c == "update").count();
    assert_eq!(
        updates, pushes,
        "one update per push; all commands: {commands:?}"
    );
    assert_eq!(
        commands.len(),
        pushes,
        "nothing but the update per push: {commands:?}"
    );
    println!(
        "database commands per push: {:.2} ({} commands for {pushes} pushes)",
        commands.len() as f64 / pushes as f64,
        commands.len()
    );
}

#[tokio::test]
async fn a_result_the_database_could_not_store_is_replaced_by_a_marker() {
    let writer = Writer::start("writer_result").await;
    let mut deep = json!("leaf");
    for _ in 0..30 {
        deep = json!({ "level": deep });
    }
    for (what, result) in [
        ("nested 30 deep (Firestore allows 20)", deep),
        ("an empty field name", json!({ "": 1 })),
        ("a reserved field name", json!({ "__name__": "x" })),
    ] {
        let (job, push) = job_push(Some("https://suumo.jp/ms/chuko/nc_4/"));
        assert_eq!(writer.push(&push).await.0, 204);
        let (status, text) = writer
            .push(&event_push(
                &job,
                json!({ "status": "success", "result": result }),
            ))
            .await;
        assert_eq!(status, 204, "{what}: {text}");
        let trace = writer.trace(&job).await.unwrap();
        assert_eq!(trace.status, JobStatus::Success, "{what}");
        let stored = trace.result.expect("a result");
        assert_eq!(
            stored
                .as_document()
                .and_then(|d| d.get_bool("truncated").ok()),
            Some(true),
            "{what}: {stored}"
        );
    }
    // An ordinary result is kept as it is.
    let (job, push) = job_push(Some("https://suumo.jp/ms/chuko/nc_5/"));
    assert_eq!(writer.push(&push).await.0, 204);
    let result =
        json!({ "status": "success", "property_info": { "properties": { "name": "物件" } } });
    writer
        .push(&event_push(
            &job,
            json!({ "status": "success", "result": result }),
        ))
        .await;
    let stored = writer.trace(&job).await.unwrap().result.unwrap();
    assert_eq!(stored.into_relaxed_extjson(), result);
}

#[tokio::test]
async fn a_malformed_progress_report_is_acknowledged_and_writes_nothing() {
    let writer = Writer::start("writer_progress").await;
    let (job, push) = job_push(None);
    assert_eq!(writer.push(&push).await.0, 204);
    let (status, _) = writer
        .push(&event_push(
            &job,
            json!({ "status": "processing", "attempt": 1 }),
        ))
        .await;
    assert_eq!(status, 204);
    let before = writer.trace(&job).await.unwrap();
    for bad in [
        json!({ "status": "progress", "done": 5, "total": 4 }),
        json!({ "status": "progress", "done": 1, "total": 1_000_000_001_i64 }),
        json!({ "status": "progress", "done": "1", "total": 4 }),
    ] {
        let (status, text) = writer.push(&event_push(&job, bad.clone())).await;
        assert_eq!(status, 204, "{bad}: {text}");
        assert_eq!(
            writer.trace(&job).await.unwrap(),
            before,
            "{bad} wrote something"
        );
    }
    // Not even a trace for a job nobody has heard of.
    let unknown = new_id();
    let push = event_push(&unknown, json!({ "status": "progress", "done": 2 }));
    assert_eq!(writer.push(&push).await.0, 204);
    assert!(writer.trace(&unknown).await.is_none());

    let (status, _) = writer
        .push(&event_push(
            &job,
            json!({ "status": "progress", "attempt": 1, "done": 2, "total": 4, "note": "half" }),
        ))
        .await;
    assert_eq!(status, 204);
    let after = writer.trace(&job).await.unwrap();
    assert_eq!(after.status, JobStatus::Processing);
    let progress = after.progress.expect("a well-formed report is kept");
    assert_eq!(
        (progress.done, progress.total, progress.note.as_deref()),
        (2, 4, Some("half"))
    );
}
