use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use serde_json::{json, Value};

use super::*;

mod results;
mod times;

fn fixture(name: &str) -> Value {
    let path = format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap()
}

fn now() -> bson::DateTime {
    bson::DateTime::from_millis(1_900_000_000_000)
}

fn time(raw: &str) -> bson::DateTime {
    parse_time(raw).unwrap()
}

fn decode(body: &Value) -> Push {
    decode_push(&HeaderMap::new(), body.to_string().as_bytes(), now()).unwrap()
}

fn recorded(push: &Push) -> &Change {
    match &push.outcome {
        Outcome::Record(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn rejection(push: &Push) -> (&MessageError, Option<&Change>) {
    match &push.outcome {
        Outcome::Reject {
            error,
            failed_trace,
        } => (error, failed_trace.as_ref()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn with_data(data: &str, attributes: Value) -> Value {
    json!({
        "message": {
            "attributes": attributes,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "messageId": "555",
            "publishTime": "2023-06-01T12:00:00.000Z",
        },
        "subscription": "projects/demo/subscriptions/s",
    })
}

/// The key a change must carry.
fn key(attempt: u32, rank: u8) -> crate::model::TraceKey {
    crate::model::TraceKey { attempt, rank }
}

/// A fixture decoded and recorded as a change of `message_id` to `status`.
fn recorded_fixture(name: &str, message_id: &str, status: JobStatus) -> Push {
    let push = decode(&fixture(name));
    let change = recorded(&push);
    assert_eq!(change.message_id.as_str(), message_id);
    assert_eq!(change.status, status);
    push
}

#[test]
fn job_message_fixture_is_a_queued_property_scrape() {
    let push = recorded_fixture("push-job-message.json", "1234567890", JobStatus::Queued);
    let change = recorded(&push);
    assert_eq!(change.at, time("2023-06-01T12:34:56.789Z"));
    let job = change.job.as_ref().unwrap();
    assert_eq!(job.job_type, JobType::PropertyScrape);
    assert_eq!(
        job.url.as_deref(),
        Some("https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_98142765/")
    );
    assert_eq!(
        job.line_user_id.as_ref().unwrap().as_str(),
        "U1234567890abcdef"
    );
    assert!(!job.check_only);
    assert_eq!(push.meta.format, "wrapped");
    assert_eq!(push.meta.delivery_attempt, None);
    assert_eq!(
        push.meta.subscription.as_deref(),
        Some("projects/demo/subscriptions/scrape-jobs-trace")
    );
}

#[test]
fn batch_fixture_is_a_check_only_batch() {
    let change = recorded(&decode(&fixture("push-batch-message.json"))).clone();
    assert_eq!(change.message_id.as_str(), "1234567891");
    let job = change.job.unwrap();
    assert_eq!(job.job_type, JobType::BatchCheck);
    assert_eq!(job.url, None);
    assert!(job.check_only);
}

#[test]
fn status_fixtures_are_events_with_their_own_times_and_keys() {
    let processing = recorded_fixture(
        "push-status-processing.json",
        "1234567890",
        JobStatus::Processing,
    );
    let change = recorded(&processing);
    assert_eq!(change.key, key(1, 1));
    assert_eq!(change.at, time("2023-06-01T12:35:01.456Z"));
    assert_eq!(
        processing.meta.pubsub_message_id.as_deref(),
        Some("9000000001")
    );
    assert_eq!(processing.meta.ordering_key.as_deref(), Some("1234567890"));
    assert_eq!(processing.meta.delivery_attempt, Some(1));

    let success = decode(&fixture("push-status-success.json"));
    let change = recorded(&success);
    assert_eq!(change.status, JobStatus::Success);
    assert_eq!(change.at, time("2023-06-01T12:35:42.123Z"));
    assert_eq!(
        change.result.clone().unwrap().into_relaxed_extjson(),
        json!({"status": "success", "property_info": {"properties": {"name": "Example Property"}}})
    );

    let failed = decode(&fixture("push-status-failed.json"));
    let change = recorded(&failed);
    assert_eq!(change.status, JobStatus::Failed);
    assert_eq!(change.error.as_deref(), Some("HTTP 503 from suumo.jp"));
    assert_eq!(failed.meta.delivery_attempt, Some(3));
}

#[test]
fn binary_cloudevent_fixture_is_a_job_message() {
    let fixture = fixture("cloudevent-binary-job-message.json");
    let mut headers = HeaderMap::new();
    for (name, value) in fixture["headers"].as_object().unwrap() {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value.as_str().unwrap()).unwrap(),
        );
    }
    let push = decode_push(&headers, fixture["body"].to_string().as_bytes(), now()).unwrap();
    assert_eq!(push.meta.format, "cloudevent-binary");
    let change = recorded(&push);
    assert_eq!(change.message_id.as_str(), "1234567890");
    assert_eq!(change.status, JobStatus::Queued);
}

#[test]
fn binary_cloudevent_falls_back_to_ce_id_and_ce_time() {
    let mut body = fixture("push-job-message.json");
    let message = body["message"].as_object_mut().unwrap();
    for key in ["messageId", "message_id", "publishTime", "publish_time"] {
        message.remove(key);
    }
    let mut headers = HeaderMap::new();
    headers.insert("ce-id", HeaderValue::from_static("777"));
    headers.insert(
        "ce-time",
        HeaderValue::from_static("2023-06-01T01:02:03.004Z"),
    );
    let push = decode_push(&headers, body.to_string().as_bytes(), now()).unwrap();
    let change = recorded(&push);
    assert_eq!(change.message_id.as_str(), "777");
    assert_eq!(change.at, time("2023-06-01T01:02:03.004Z"));
}

#[test]
fn structured_cloudevent_carries_the_push_in_data() {
    let event = json!({
        "specversion": "1.0",
        "id": "4242",
        "source": "//pubsub.googleapis.com/projects/demo/topics/scrape-jobs",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "time": "2023-06-01T12:34:56.789Z",
        "datacontenttype": "application/json",
        "data": fixture("push-job-message.json"),
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/cloudevents+json; charset=utf-8"),
    );
    let push = decode_push(&headers, event.to_string().as_bytes(), now()).unwrap();
    assert_eq!(push.meta.format, "cloudevent-structured");
    assert_eq!(recorded(&push).message_id.as_str(), "1234567890");

    let no_data = json!({"specversion": "1.0", "id": "1"});
    assert_eq!(
        decode_push(&headers, no_data.to_string().as_bytes(), now()),
        Err(EnvelopeError::MissingCloudEventData)
    );
}

#[test]
fn snake_case_spellings_alone_are_enough() {
    let mut body = fixture("push-job-message.json");
    let message = body["message"].as_object_mut().unwrap();
    message.remove("messageId");
    message.remove("publishTime");
    message.insert("publish_time".into(), json!("2024-01-01T00:00:00Z"));
    let change = recorded(&decode(&body)).clone();
    assert_eq!(change.message_id.as_str(), "1234567890");
    assert_eq!(change.at, time("2024-01-01T00:00:00Z"));
}

#[test]
fn envelopes_that_are_not_pushes_are_envelope_errors() {
    let decode_raw = |raw: &[u8]| decode_push(&HeaderMap::new(), raw, now());
    assert!(matches!(
        decode_raw(b"{not json"),
        Err(EnvelopeError::NotJson(_))
    ));
    assert_eq!(decode_raw(b"[1,2]"), Err(EnvelopeError::NotObject));
    assert_eq!(
        decode_raw(br#"{"subscription":"x"}"#),
        Err(EnvelopeError::MissingMessage)
    );
    assert_eq!(
        decode_raw(br#"{"message":"x"}"#),
        Err(EnvelopeError::MissingMessage)
    );
    let huge = vec![b' '; MAX_PUSH_BODY_BYTES + 1];
    assert_eq!(
        decode_raw(&huge),
        Err(EnvelopeError::TooLarge {
            size: MAX_PUSH_BODY_BYTES + 1
        })
    );
}

#[test]
fn unreadable_job_messages_fail_their_own_job() {
    type Expectation = fn(&MessageError) -> bool;
    let cases: Vec<(Value, Expectation)> = vec![
        (
            {
                let mut body = with_data("{}", json!({}));
                body["message"]["data"] = json!("%%%not base64");
                body
            },
            |e| matches!(e, MessageError::BadBase64(_)),
        ),
        (with_data("not json", json!({})), |e| {
            matches!(e, MessageError::DataNotJson(_))
        }),
        (with_data("[1]", json!({})), |e| {
            matches!(e, MessageError::DataNotObject)
        }),
        (with_data(r#"{"url": 5}"#, json!({})), |e| {
            matches!(e, MessageError::BadField { field: "url", .. })
        }),
        (with_data(r#"{"check_only": "yes"}"#, json!({})), |e| {
            matches!(
                e,
                MessageError::BadField {
                    field: "check_only",
                    ..
                }
            )
        }),
        (
            with_data(
                &json!({"line_user_id": "u".repeat(2000)}).to_string(),
                json!({}),
            ),
            |e| {
                matches!(
                    e,
                    MessageError::BadField {
                        field: "line_user_id",
                        ..
                    }
                )
            },
        ),
    ];
    for (body, expected) in cases {
        let push = decode(&body);
        let (error, failed) = rejection(&push);
        assert!(expected(error), "unexpected error {error:?}");
        let failed = failed.expect("the job message's own id names the job");
        assert_eq!(failed.message_id.as_str(), "555");
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(failed.key, key(0, 2));
        assert!(failed
            .error
            .as_deref()
            .unwrap()
            .contains(&error.to_string()));
        assert_eq!(failed.at, time("2023-06-01T12:00:00.000Z"));
    }
}

#[test]
fn bad_events_fail_the_job_they_name_and_never_their_own_id() {
    let status = json!({"trace_event": "status"});
    let cases: Vec<(&str, Option<&str>)> = vec![
        (r#"{"message_id": "42", "status": "done"}"#, Some("42")),
        (r#"{"message_id": "42", "status": "queued"}"#, Some("42")),
        (r#"{"message_id": "42", "status": 3}"#, Some("42")),
        (
            r#"{"message_id": "42", "status": "failed", "attempt": 0}"#,
            Some("42"),
        ),
        (
            r#"{"message_id": "42", "status": "failed", "attempt": "2"}"#,
            Some("42"),
        ),
        (
            r#"{"message_id": "42", "status": "success", "occurred_at": "yesterday"}"#,
            Some("42"),
        ),
        (r#"{"message_id": 42, "status": "success"}"#, None),
        (r#"{"status": "success"}"#, None),
        ("not json at all", None),
    ];
    for (data, job) in cases {
        let push = decode(&with_data(data, status.clone()));
        let (_, failed) = rejection(&push);
        assert_eq!(
            failed.map(|c| c.message_id.as_str()),
            job,
            "for data {data}"
        );
    }
}

#[test]
fn a_push_without_any_message_id_fails_no_job() {
    let mut body = with_data(r#"{"url": "https://x"}"#, json!({}));
    body["message"].as_object_mut().unwrap().remove("messageId");
    let push = decode(&body);
    assert_eq!(rejection(&push), (&MessageError::MissingMessageId, None));
}

#[test]
fn unmarked_payloads_with_message_id_and_status_are_events() {
    let push = decode(&with_data(
        r#"{"message_id": "42", "status": "not_found", "attempt": 2}"#,
        json!({}),
    ));
    let change = recorded(&push);
    assert_eq!(change.message_id.as_str(), "42");
    assert_eq!(change.status, JobStatus::NotFound);
    assert_eq!(change.key.attempt, 2);
    assert_eq!(
        change.at,
        time("2023-06-01T12:00:00.000Z"),
        "publishTime without occurred_at"
    );
}

#[test]
fn missing_publish_time_falls_back_to_now() {
    let mut body = with_data("{}", json!({}));
    body["message"]
        .as_object_mut()
        .unwrap()
        .remove("publishTime");
    assert_eq!(recorded(&decode(&body)).at, now());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = decode_push(&HeaderMap::new(), &body, now());
    }

    #[test]
    fn arbitrary_data_never_panics(data in ".{0,256}", marked in proptest::prelude::any::<bool>()) {
        let attributes = if marked { json!({"trace_event": "status"}) } else { json!({}) };
        let push = decode(&with_data(&data, attributes));
        if let Outcome::Reject { failed_trace: Some(change), .. } = &push.outcome {
            proptest::prop_assert_eq!(change.status, JobStatus::Failed);
        }
    }
}

/// Replays the pushes that fuzzing found trouble with (`fuzz/regressions/push/*.json`:
/// headers and body as sent): each decodes without panicking, and whatever it records
/// or fails gives a trace the database can encode and the API can render.
#[test]
fn fuzz_regressions_decode_to_storable_traces() {
    let dir = format!("{}/../fuzz/regressions/push", env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect(&dir) {
        let path = entry.unwrap().path();
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut headers = HeaderMap::new();
        for (name, value) in case["headers"].as_object().unwrap() {
            headers.insert(
                HeaderName::try_from(name.as_str()).unwrap(),
                HeaderValue::from_str(value.as_str().unwrap()).unwrap(),
            );
        }
        let body = case["body"].as_str().unwrap().as_bytes();
        let Ok(push) = decode_push(&headers, body, now()) else {
            replayed += 1;
            continue;
        };
        let change = match push.outcome {
            Outcome::Record(change) => Some(change),
            Outcome::Reject { failed_trace, .. } => failed_trace,
        };
        if let Some(change) = change {
            let trace = crate::rules::replay([&change]).unwrap();
            bson::to_document(&trace)
                .unwrap_or_else(|e| panic!("{}: the trace cannot be stored: {e}", path.display()));
            trace
                .renderable()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                (EARLIEST_TIME..=LATEST_TIME).contains(&change.at),
                "{}: recorded at {}",
                path.display(),
                change.at
            );
            if let Some(result) = &trace.result {
                assert!(
                    !result.to_string().contains("\"$"),
                    "{}: a `$` field name kept: {result}",
                    path.display()
                );
            }
            serde_json::to_string(&trace.view(true)).unwrap();
        }
        replayed += 1;
    }
    assert!(replayed > 0, "no regression cases in {dir}");
}

#[test]
fn data_whose_base64_is_escaped_still_decodes() {
    let body = with_data(
        r#"{"message_id":"42","status":"processing","note":"???"}"#,
        json!({"trace_event": "status"}),
    );
    let data = body["message"]["data"].as_str().unwrap().to_owned();
    assert!(data.contains('/'), "{data}");
    // JSON may write `/` as `\/`: the data is then read into a copy, not borrowed.
    let escaped = body.to_string().replace(&data, &data.replace('/', "\\/"));
    let push = decode_push(&HeaderMap::new(), escaped.as_bytes(), now()).unwrap();
    assert_eq!(recorded(&push).status, JobStatus::Processing);
}

#[test]
fn progress_reports_decode_to_progress_changes() {
    let report = json!({"message_id": "1234567890", "status": "progress", "attempt": 2,
        "done": 3, "total": 7, "note": "é".repeat(crate::rules::MAX_ERROR_BYTES),
        "occurred_at": "2023-06-01T12:35:00.000Z"});
    let push = decode(&with_data(
        &report.to_string(),
        json!({"trace_event": "status"}),
    ));
    let change = recorded(&push);
    assert_eq!(change.message_id.as_str(), "1234567890");
    let progress = change.progress.as_ref().expect("a progress change");
    assert_eq!((progress.attempt, progress.done, progress.total), (2, 3, 7));
    assert_eq!(progress.at, time("2023-06-01T12:35:00.000Z"));
    assert!(
        progress.note.as_ref().unwrap().ends_with('…'),
        "cut like an error"
    );

    let bare = json!({"message_id": "1234567890", "status": "progress", "done": 0, "total": 0});
    let push = decode(&with_data(
        &bare.to_string(),
        json!({"trace_event": "status"}),
    ));
    let progress = recorded(&push).progress.clone().unwrap();
    assert_eq!((progress.attempt, progress.note), (1, None));
    assert_eq!(progress.at, time("2023-06-01T12:00:00.000Z"), "publishTime");
}

#[test]
fn malformed_progress_reports_are_rejected_without_failing_the_job() {
    for (report, field) in [
        (json!({"done": 4, "total": 3}), "done"),
        (json!({"done": -1, "total": 3}), "done"),
        (json!({"done": 1.5, "total": 3}), "done"),
        (json!({"total": 3}), "done"),
        (json!({"done": 1}), "total"),
        (json!({"done": 1, "total": 1_000_000_001_i64}), "total"),
        (json!({"done": 1, "total": "3"}), "total"),
        (json!({"done": 1, "total": 3, "attempt": 0}), "attempt"),
        (json!({"done": 1, "total": 3, "note": 5}), "note"),
        (
            json!({"done": 1, "total": 3, "occurred_at": "soon"}),
            "occurred_at",
        ),
    ] {
        let mut body = report.as_object().unwrap().clone();
        body.insert("message_id".into(), json!("1234567890"));
        body.insert("status".into(), json!("progress"));
        let push = decode(&with_data(
            &Value::Object(body).to_string(),
            json!({"trace_event": "status"}),
        ));
        let (error, failed) = rejection(&push);
        assert!(
            matches!(error, MessageError::BadField { field: f, .. } if *f == field),
            "{report}: {error}"
        );
        assert!(failed.is_none(), "{report} failed its job");
    }
}
