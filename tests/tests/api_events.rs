//! Server-sent events against a real SecantusDB: every change in order, closed after a
//! terminal status, resumed with Last-Event-ID, heartbeats.

mod api_common;

use std::time::{Duration, Instant};

use api_common::*;
use futures::StreamExt;
use job_trace::model::{JobStatus, JobType};
use serde_json::Value;
use trace_api::ApiConfig;

#[derive(Debug, Default, Clone)]
struct Sse {
    event: Option<String>,
    id: Option<String>,
    data: String,
    comment: Option<String>,
}

/// Reads one response as a stream of SSE blocks.
struct Reader {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl Reader {
    fn new(response: reqwest::Response) -> Self {
        Reader {
            body: response
                .bytes_stream()
                .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next block, `None` when the server closed the stream; panics after `limit`.
    async fn next(&mut self, limit: Duration) -> Option<Sse> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut sse = Sse::default();
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        sse.comment = Some(comment.trim().to_owned());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "event" => sse.event = Some(value.to_owned()),
                            "id" => sse.id = Some(value.to_owned()),
                            "data" => sse.data.push_str(value),
                            _ => {}
                        }
                    }
                }
                return Some(sse);
            }
            let chunk = tokio::time::timeout_at(deadline.into(), self.body.next())
                .await
                .expect("the stream stalled");
            match chunk {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk.expect("chunk")).unwrap()),
                None => return None,
            }
        }
    }

    /// The next `status` event, skipping heartbeats.
    async fn status(&mut self, limit: Duration) -> Option<(String, Value)> {
        loop {
            let sse = self.next(limit).await?;
            if sse.comment.is_some() && sse.event.is_none() {
                continue;
            }
            assert_eq!(sse.event.as_deref(), Some("status"), "{sse:?}");
            let body: Value = serde_json::from_str(&sse.data).expect("data is JSON");
            return Some((sse.id.expect("every event has an id"), body));
        }
    }
}

async fn open(api: &Api, id: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = api
        .http
        .get(api.url(&format!("/api/v1/jobs/status/{}/events", encode(id))));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_change_arrives_in_order_and_the_stream_closes_after_a_terminal_status() {
    let api = Api::start("api_sse_order", ApiConfig::default()).await;
    let id = "sse/1 job";
    apply_all(&api.store, &[queued(id, "Us", JobType::PropertyScrape, 0)]).await;
    let response = open(&api, id, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let mut reader = Reader::new(response);

    let (tag, body) = reader.status(Duration::from_secs(5)).await.expect("first");
    assert_eq!(body["status"], "queued");
    let (status, current) = api
        .json(&format!("/api/v1/jobs/status/{}", encode(id)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, current, "the same JSON as the status route");
    let current_tag = api
        .get(&format!("/api/v1/jobs/status/{}", encode(id)))
        .await
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(tag, current_tag, "the event id is the ETag");

    let mut seen = vec![tag];
    for (status, at) in [(JobStatus::Processing, 5), (JobStatus::Failed, 9)] {
        let store = api.store.clone();
        let change = event(id, status, at);
        let written = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store.apply(&change).await.unwrap();
            Instant::now()
        });
        let (tag, body) = reader
            .status(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no event for {status}"));
        let lag = written.await.unwrap().elapsed();
        assert!(
            lag < Duration::from_secs(1),
            "{status} arrived {lag:?} late"
        );
        assert_eq!(body["status"], status.as_str());
        assert!(!seen.contains(&tag));
        seen.push(tag);
    }
    // A later attempt could reopen the job, but this stream is done: the server closes.
    assert!(
        reader.next(Duration::from_secs(3)).await.is_none(),
        "the stream closes after a terminal status"
    );
}

#[tokio::test]
async fn last_event_id_resumes_after_what_the_client_has() {
    let api = Api::start("api_sse_resume", ApiConfig::default()).await;
    apply_all(
        &api.store,
        &[
            queued("r1", "Ur", JobType::PropertyScrape, 0),
            event("r1", JobStatus::Processing, 3),
        ],
    )
    .await;
    let tag = api.get("/api/v1/jobs/status/r1").await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();

    // Resuming at the current state: nothing until the next change.
    let mut reader = Reader::new(open(&api, "r1", Some(&tag)).await);
    let store = api.store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        store
            .apply(&event("r1", JobStatus::Success, 8))
            .await
            .unwrap();
    });
    let (final_tag, body) = reader.status(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        body["status"], "success",
        "the processing state was not resent"
    );
    assert!(reader.next(Duration::from_secs(3)).await.is_none());

    // Resuming with an old id: the current state at once, then closed (terminal).
    let mut reader = Reader::new(open(&api, "r1", Some(&tag)).await);
    let (again, body) = reader.status(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (again.as_str(), body["status"].as_str()),
        (final_tag.as_str(), Some("success"))
    );
    assert!(reader.next(Duration::from_secs(3)).await.is_none());

    // Resuming at the final state: 204 tells EventSource to stop reconnecting.
    for last in [final_tag.clone(), final_tag.trim_matches('"').to_owned()] {
        let response = open(&api, "r1", Some(&last)).await;
        assert_eq!(response.status(), 204, "{last}");
    }
}

#[tokio::test]
async fn unknown_or_invalid_ids_are_refused_before_streaming() {
    let api = Api::start("api_sse_errors", ApiConfig::default()).await;
    let response = open(&api, "nope", None).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"], "Job trace not found for message ID: nope");
    let response = api
        .get(&format!("/api/v1/jobs/status/{}/events", "x".repeat(1025)))
        .await;
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn an_idle_stream_sends_a_heartbeat_within_fifteen_seconds() {
    let api = Api::start("api_sse_heartbeat", ApiConfig::default()).await;
    apply_all(&api.store, &[queued("h1", "Uh", JobType::BatchCheck, 0)]).await;
    let mut reader = Reader::new(open(&api, "h1", None).await);
    reader.status(Duration::from_secs(5)).await.unwrap();
    let started = Instant::now();
    let sse = reader
        .next(Duration::from_secs(17))
        .await
        .expect("still open");
    assert_eq!(sse.comment.as_deref(), Some("heartbeat"), "{sse:?}");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(14) && after < Duration::from_secs(16),
        "heartbeat after {after:?}"
    );
}

#[tokio::test]
async fn a_progress_report_of_the_running_attempt_is_an_event() {
    let api = Api::start("api_sse_progress", ApiConfig::default()).await;
    let id = "sse progress";
    apply_all(
        &api.store,
        &[
            queued(id, "Us", JobType::BatchCheck, 0),
            event(id, JobStatus::Processing, 1),
        ],
    )
    .await;
    let mut reader = Reader::new(open(&api, id, None).await);
    let (first, body) = reader.status(Duration::from_secs(5)).await.expect("first");
    assert_eq!(body["status"], "processing");
    assert!(body.get("progress").is_none(), "{body}");

    let store = api.store.clone();
    let report = job_trace::rules::Change::progress(mid(id), 1, at(4), 3, 9, Some("3/9".into()));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.apply(&report).await.unwrap();
    });
    let (tag, body) = reader
        .status(Duration::from_secs(5))
        .await
        .expect("an event for the progress report");
    assert_ne!(tag, first);
    assert_eq!(body["status"], "processing");
    assert_eq!(
        body["progress"],
        serde_json::json!({"done": 3, "total": 9, "note": "3/9", "at": "2023-06-01T12:35:00.789Z"})
    );
}
