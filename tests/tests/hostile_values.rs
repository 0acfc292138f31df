//! Issue 16 items 1, 2, 3 and 7, each attack as it was made, against trace-writer and
//! trace-api over one real SecantusDB database: times the database cannot hold, field
//! names Firestore refuses, stored documents the API cannot render, and odd queries.

mod api_common;
mod writer_common;

use api_common::Api;
use bson::doc;
use job_trace_tests::fresh_store;
use serde_json::{json, Value};
use trace_api::ApiConfig;
use writer_common::{event_push, job_push, new_id, Writer, PUBLISHED};

const USER: &str = "U1234567890abcdef";

/// trace-writer and trace-api over one fresh database.
async fn both(prefix: &str) -> (Writer, Api) {
    let store = fresh_store(prefix).await;
    let writer = Writer::start_on(store.clone()).await;
    let api = Api::start_on(store, ApiConfig::default()).await;
    (writer, api)
}

/// Every time a readable trace carries, rendered.
fn times(trace: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for field in [
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "expire_at",
    ] {
        if let Some(time) = trace[field].as_str() {
            found.push(time.to_owned());
        }
    }
    for entry in trace["history"].as_array().into_iter().flatten() {
        found.push(entry["at"].as_str().unwrap_or_default().to_owned());
    }
    found
}

/// The job's trace through both API styles and the user's list: all 200, every time an
/// RFC 3339 time of years 0001..9999.
async fn readable(api: &Api, job: &str) -> Value {
    let (status, trace) = api
        .json(&format!("/api/v1/jobs/status/{job}?include=history"))
        .await;
    assert_eq!(status, 200, "{job}: {trace}");
    let (status, body) = api.json(&format!("/job/status?message_id={job}")).await;
    assert_eq!(status, 200, "{job}: {body}");
    let (status, list) = api.json(&format!("/api/v1/jobs/user/{USER}")).await;
    assert_eq!(status, 200, "the user's list: {list}");
    for time in times(&trace) {
        let parsed = chrono::DateTime::parse_from_rfc3339(&time)
            .unwrap_or_else(|e| panic!("{job}: {time:?} is not RFC 3339: {e}"));
        assert!(
            (1..=9999).contains(&chrono::Datelike::year(&parsed)),
            "{time}"
        );
    }
    trace
}

fn entry<'a>(trace: &'a Value, status: &str) -> &'a Value {
    trace["history"]
        .as_array()
        .and_then(|history| history.iter().find(|e| e["status"] == json!(status)))
        .unwrap_or_else(|| panic!("no {status} in the history: {trace}"))
}

#[tokio::test]
async fn an_event_dated_year_0_is_recorded_at_its_publish_time_with_the_reason() {
    let (writer, api) = both("hostile_year0").await;
    let (job, body) = job_push(Some("https://suumo.jp/ms/chuko/nc_1/"));
    assert_eq!(writer.push(&body).await.0, 204);
    let (status, answer) = writer
        .push(&event_push(
            &job,
            json!({"status": "processing", "attempt": 1, "occurred_at": "0000-01-01T00:00:00Z"}),
        ))
        .await;
    assert_eq!(status, 204, "{answer}");
    let trace = readable(&api, &job).await;
    assert_eq!(trace["status"], "processing");
    assert_eq!(trace["started_at"], json!(PUBLISHED));
    let processing = entry(&trace, "processing");
    assert_eq!(processing["at"], json!(PUBLISHED));
    let note = processing["error"].as_str().unwrap_or_default();
    assert!(
        note.contains("occurred_at") && note.contains("0000-01-01T00:00:00Z"),
        "the history says why the time was replaced: {processing}"
    );
}

#[tokio::test]
async fn a_job_message_published_in_year_0_is_recorded_at_its_receive_time() {
    let (writer, api) = both("hostile_publish0").await;
    let (job, mut body) = job_push(Some("https://suumo.jp/ms/chuko/nc_2/"));
    for name in ["publishTime", "publish_time"] {
        body["message"][name] = json!("0000-01-01T00:00:00Z");
    }
    let before = chrono::Utc::now();
    let (status, answer) = writer.push(&body).await;
    assert_eq!(status, 204, "{answer}");
    let after = chrono::Utc::now();
    let trace = readable(&api, &job).await;
    let created: chrono::DateTime<chrono::Utc> =
        trace["created_at"].as_str().unwrap().parse().unwrap();
    assert!(
        before - chrono::Duration::milliseconds(1) <= created
            && created <= after + chrono::Duration::milliseconds(1),
        "created_at {created} is the receive time"
    );
    let queued = entry(&trace, "queued");
    assert!(
        queued["error"]
            .as_str()
            .is_some_and(|note| note.contains("publishTime")),
        "{queued}"
    );
}

#[tokio::test]
async fn a_success_dated_9999_neither_hides_its_trace_nor_the_users_list() {
    let (writer, api) = both("hostile_year9999").await;
    let (job, body) = job_push(Some("https://suumo.jp/ms/chuko/nc_3/"));
    assert_eq!(writer.push(&body).await.0, 204);
    let (status, _) = writer
        .push(&event_push(
            &job,
            json!({"status": "success", "attempt": 1, "occurred_at": "9999-12-31T23:59:59.999Z",
                   "result": {"status": "success"}}),
        ))
        .await;
    assert_eq!(status, 204);
    let trace = readable(&api, &job).await;
    assert_eq!(trace["status"], "success");
    assert_eq!(trace["completed_at"], json!(PUBLISHED));

    // A job whose first message is such an event.
    let first = new_id();
    let (status, answer) = writer
        .push(&event_push(
            &first,
            json!({"status": "failed", "attempt": 1, "occurred_at": "9999-12-31T23:59:59+14:00",
                   "error": "boom"}),
        ))
        .await;
    assert_eq!(status, 204, "{answer}");
    let (status, trace) = api
        .json(&format!("/api/v1/jobs/status/{first}?include=history"))
        .await;
    assert_eq!(status, 200, "{trace}");
    assert_eq!(trace["status"], "failed");
    assert_eq!(
        trace["error"], "boom",
        "the worker's error stays the trace's"
    );
}

#[tokio::test]
async fn a_result_with_dollar_field_names_is_not_stored_as_it_came() {
    let (writer, api) = both("hostile_dollar").await;
    let (job, body) = job_push(Some("https://suumo.jp/ms/chuko/nc_4/"));
    assert_eq!(writer.push(&body).await.0, 204);
    let (status, _) = writer
        .push(&event_push(
            &job,
            json!({"status": "success", "attempt": 1,
                   "result": {"ok": true, "nested": [{"$set": {"status": "queued"}}]}}),
        ))
        .await;
    assert_eq!(status, 204);
    let raw = writer
        .store
        .collection()
        .find_one(doc! { "message_id": &job })
        .await
        .unwrap()
        .expect("stored");
    let result = raw.get_document("result").expect("a result document");
    assert_eq!(result.get_bool("truncated"), Ok(true), "{result}");
    let trace = readable(&api, &job).await;
    assert_eq!(trace["result"]["truncated"], json!(true));
}

/// Stored documents the API cannot render, inserted with the driver as anything might
/// have written them.
fn hostile_documents(user: &str) -> Vec<(&'static str, bson::Document)> {
    vec![
        (
            "status of the wrong type",
            doc! { "message_id": "bad-status", "line_user_id": user, "status": 42,
            "created_at": bson::DateTime::now() },
        ),
        (
            "an unknown status",
            doc! { "message_id": "bad-unknown", "line_user_id": user, "status": "exploded",
            "created_at": bson::DateTime::now() },
        ),
        (
            "no status and no message_id",
            doc! { "line_user_id": user, "created_at": bson::DateTime::now() },
        ),
        (
            "attempt as text",
            doc! { "message_id": "bad-attempt", "line_user_id": user, "status": "success",
            "created_at": bson::DateTime::now(), "attempt": "one" },
        ),
        (
            "a history that is not a list",
            doc! { "message_id": "bad-history", "line_user_id": user, "status": "queued",
            "created_at": bson::DateTime::now(), "history": "yes" },
        ),
        (
            "created_at as text",
            doc! { "message_id": "bad-created", "line_user_id": user, "status": "queued",
            "created_at": "yesterday" },
        ),
    ]
}

#[tokio::test]
async fn one_bad_document_does_not_take_the_list_down() {
    let (writer, api) = both("hostile_list").await;
    let mut good = Vec::new();
    for n in 0..3 {
        let (job, body) = job_push(Some(&format!("https://suumo.jp/ms/chuko/nc_1{n}/")));
        assert_eq!(writer.push(&body).await.0, 204);
        good.push(job);
    }
    let bad = hostile_documents(USER);
    let collection = writer.store.collection();
    for (what, document) in &bad {
        collection
            .insert_one(document.clone())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    for path in [
        format!("/api/v1/jobs/user/{USER}?limit=100"),
        format!("/job/user?line_user_id={USER}&limit=100"),
    ] {
        let (status, list) = api.json(&path).await;
        assert_eq!(status, 200, "{path}: {list}");
        let listed: Vec<&str> = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|job| job["message_id"].as_str())
            .collect();
        for job in &good {
            assert!(listed.contains(&job.as_str()), "{job} missing: {list}");
        }
        assert_eq!(listed.len(), good.len(), "{list}");
        assert_eq!(list["omitted_count"], json!(bad.len()), "{list}");
        assert_eq!(list["total_count"], json!(good.len() + bad.len()));
    }
    // A whole page keeps the seed's body exactly; the field is documented.
    let (status, list) = api.json("/api/v1/jobs/user/Unobody").await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({ "jobs": [], "total_count": 0, "limit": 50, "skip": 0 })
    );
    let (_, openapi) = api.json("/openapi.json").await;
    let job_list = &openapi["components"]["schemas"]["JobList"];
    assert_eq!(
        job_list["properties"]["omitted_count"]["type"], "integer",
        "{job_list}"
    );

    // One bad trace read by id: a server fault without detail, never "unavailable".
    for id in ["bad-status", "bad-attempt", "bad-history", "bad-created"] {
        let response = api.get(&format!("/api/v1/jobs/status/{id}")).await;
        assert_eq!(response.status().as_u16(), 500, "{id}");
        assert!(response.headers().get("retry-after").is_none(), "{id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"detail": "Internal server error"}), "{id}");
    }
}

#[tokio::test]
async fn invalid_utf8_in_a_query_value_is_an_invalid_parameter() {
    let api = Api::start("hostile_query", ApiConfig::default()).await;
    let (status, body) = api.json("/job/status?message_id=%FF%FE").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("UTF-8"), "{body}");
    let (status, body) = api.json("/api/v1/jobs/status/x?include=%FF").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["query", "include"]),
        "{body}"
    );
    let (status, body) = api.json("/api/v1/jobs/status/%FF%FE").await;
    assert_eq!(status, 422, "the path form, as before: {body}");
}

#[tokio::test]
async fn an_overlong_query_is_414_saying_so() {
    let api = Api::start("hostile_long_query", ApiConfig::default()).await;
    let long = format!("/job/status?message_id=m1&pad={}", "x".repeat(8 * 1024));
    let (status, body) = api.json(&long).await;
    assert_eq!(status, 414, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("too long"),
        "{body}"
    );
    let long = format!("/api/v1/jobs/user/{USER}?pad={}", "x".repeat(8 * 1024));
    let (status, body) = api.json(&long).await;
    assert_eq!(status, 414, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("too long"),
        "{body}"
    );
}
