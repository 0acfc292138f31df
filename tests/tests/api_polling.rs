//! Cheap polling against a real SecantusDB: ETag/304, long-poll answered within a second
//! of a write made by the store in another task (over the change stream, and over the
//! polling fallback), 304 after `wait`, and what a request costs the database.

mod api_common;

use std::time::{Duration, Instant};

use api_common::*;
use job_trace::model::{JobStatus, JobType};
use job_trace_tests::counted_store;
use trace_api::config::ChangeStreams;
use trace_api::ApiConfig;

async fn etag_of(api: &Api, path: &str) -> String {
    let response = api.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.headers()["etag"].to_str().unwrap().to_owned()
}

async fn get_with_tag(api: &Api, path: &str, tag: &str) -> reqwest::Response {
    api.http
        .get(api.url(path))
        .header("if-none-match", tag)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_etag_changes_exactly_when_the_trace_does_and_304_answers_a_match() {
    let api = Api::start("api_etag", ApiConfig::default()).await;
    apply_all(
        &api.store,
        &[queued("e1", "Ue", JobType::PropertyScrape, 0)],
    )
    .await;
    let path = "/api/v1/jobs/status/e1";
    let first = etag_of(&api, path).await;
    assert!(first.starts_with('"') && first.ends_with('"'), "{first}");
    assert_eq!(etag_of(&api, path).await, first, "stable while unchanged");
    assert_eq!(
        etag_of(&api, "/job/status?message_id=e1").await,
        first,
        "same body, same tag, whichever style"
    );
    // Another instance over the same database computes the same tag.
    let other = Api::start_on(api.store.clone(), ApiConfig::default()).await;
    assert_eq!(etag_of(&other, path).await, first);

    for tag in [
        first.clone(),
        format!("W/{first}"),
        format!("\"x\", {first}"),
        "*".into(),
    ] {
        let response = get_with_tag(&api, path, &tag).await;
        assert_eq!(response.status(), 304, "{tag}");
        assert_eq!(response.headers()["etag"], first.as_str());
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let response = get_with_tag(&api, path, "\"something-else\"").await;
    assert_eq!(response.status(), 200);

    // A duplicate of a message already applied changes nothing: same tag.
    apply_all(
        &api.store,
        &[queued("e1", "Ue", JobType::PropertyScrape, 0)],
    )
    .await;
    assert_eq!(etag_of(&api, path).await, first);

    apply_all(&api.store, &[event("e1", JobStatus::Processing, 5)]).await;
    let second = etag_of(&api, path).await;
    assert_ne!(second, first);
    let response = get_with_tag(&api, path, &first).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], second.as_str());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "processing");

    // The history view is another representation, with a tag of its own.
    let with_history = etag_of(&api, "/api/v1/jobs/status/e1?include=history").await;
    assert_ne!(with_history, second);
}

/// Holds a long-poll on `path` while another task writes; the answer must come within a
/// second of the write.
async fn long_poll_sees_a_write(api: &Api, path: &str, id: &str) {
    let tag = etag_of(api, path).await;
    let store = api.store.clone();
    let writer_id = id.to_owned();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        store
            .apply(&event(&writer_id, JobStatus::Processing, 5))
            .await
            .expect("write");
        Instant::now()
    });
    let asked = Instant::now();
    let response = get_with_tag(
        api,
        &format!(
            "{path}{}wait=20",
            if path.contains('?') { "&" } else { "?" }
        ),
        &tag,
    )
    .await;
    let answered = Instant::now();
    let written = writer.await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    assert_ne!(response.headers()["etag"], tag.as_str());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "processing");
    assert!(
        answered.duration_since(asked) >= Duration::from_millis(1400),
        "{path}: answered before the write ({:?})",
        answered.duration_since(asked)
    );
    let lag = answered.saturating_duration_since(written);
    assert!(
        lag < Duration::from_secs(1),
        "{path}: answered {lag:?} after the write"
    );
}

#[tokio::test]
async fn a_long_poll_answers_within_a_second_of_a_write_over_the_change_stream() {
    let api = Api::start("api_longpoll_stream", ApiConfig::default()).await;
    apply_all(
        &api.store,
        &[queued("lp1", "Ul", JobType::PropertyScrape, 0)],
    )
    .await;
    apply_all(
        &api.store,
        &[queued("lp2", "Ul", JobType::PropertyScrape, 0)],
    )
    .await;
    long_poll_sees_a_write(&api, "/api/v1/jobs/status/lp1", "lp1").await;
    long_poll_sees_a_write(&api, "/job/status?message_id=lp2", "lp2").await;
}

#[tokio::test]
async fn a_long_poll_answers_within_a_second_of_a_write_when_polling() {
    let config = ApiConfig {
        change_streams: ChangeStreams::Off,
        ..ApiConfig::default()
    };
    let api = Api::start("api_longpoll_polling", config).await;
    apply_all(
        &api.store,
        &[queued("lq1", "Ul", JobType::PropertyScrape, 0)],
    )
    .await;
    long_poll_sees_a_write(&api, "/api/v1/jobs/status/lq1", "lq1").await;
}

#[tokio::test]
async fn a_long_poll_without_a_change_answers_304_when_wait_runs_out() {
    let api = Api::start("api_longpoll_timeout", ApiConfig::default()).await;
    apply_all(
        &api.store,
        &[queued("t1", "Ut", JobType::PropertyScrape, 0)],
    )
    .await;
    let path = "/api/v1/jobs/status/t1";
    let tag = etag_of(&api, path).await;
    // Unrelated writes wake nobody up for good.
    let store = api.store.clone();
    let noise = tokio::spawn(async move {
        for n in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let id = format!("noise{n}");
            store
                .apply(&queued(&id, "Ut", JobType::BatchCheck, n))
                .await
                .unwrap();
        }
    });
    let asked = Instant::now();
    let response = get_with_tag(&api, &format!("{path}?wait=2"), &tag).await;
    let took = asked.elapsed();
    noise.await.unwrap();
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"], tag.as_str());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_long_poll_answers_at_once_when_it_has_nothing_to_wait_for() {
    let api = Api::start("api_longpoll_at_once", ApiConfig::default()).await;
    apply_all(
        &api.store,
        &[
            queued("done", "Ua", JobType::PropertyScrape, 0),
            event("done", JobStatus::Success, 9),
            queued("open", "Ua", JobType::PropertyScrape, 0),
        ],
    )
    .await;
    let done_tag = etag_of(&api, "/api/v1/jobs/status/done").await;
    let cases = [
        // A terminal trace will not change: 304 at once.
        (
            "/api/v1/jobs/status/done?wait=30",
            Some(done_tag.as_str()),
            304,
        ),
        // No ETag sent: the current trace at once.
        ("/api/v1/jobs/status/open?wait=30", None, 200),
        // An ETag that is not current: the current trace at once.
        ("/api/v1/jobs/status/open?wait=30", Some("\"old\""), 200),
        // Unknown job: 404 at once.
        ("/api/v1/jobs/status/missing?wait=30", Some("\"old\""), 404),
        ("/job/status?message_id=missing&wait=30", None, 404),
    ];
    for (path, tag, expected) in cases {
        let asked = Instant::now();
        let mut request = api.http.get(api.url(path));
        if let Some(tag) = tag {
            request = request.header("if-none-match", tag);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), expected, "{path} {tag:?}");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{path} {tag:?} waited"
        );
    }
}

#[tokio::test]
async fn requests_cost_one_command_and_waiting_requests_share_one_change_stream() {
    let (store, counter) = counted_store("api_commands").await;
    let api = Api::start_on(store, ApiConfig::default()).await;
    let ids: Vec<String> = (0..40).map(|n| format!("c{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        apply_all(
            &api.store,
            &[queued(id, "Uc", JobType::PropertyScrape, n as i64)],
        )
        .await;
    }
    counter.take();

    api.json("/api/v1/jobs/status/c1").await;
    assert_eq!(counter.take(), ["find"], "status by id");
    api.json("/job/status?message_id=c1").await;
    assert_eq!(counter.take(), ["find"], "status by id (standalone)");
    api.json("/api/v1/jobs/user/Uc?limit=50").await;
    assert_eq!(
        counter.take(),
        ["aggregate"],
        "user list: page and total in one"
    );
    let response = get_with_tag(&api, "/api/v1/jobs/status/c1", "*").await;
    assert_eq!(response.status(), 304);
    assert_eq!(counter.take(), ["find"], "a 304 costs the same read");

    // The first long-poll opens the process's change stream (it stays open while
    // requests wait, and 30 s after).
    let tag = etag_of(&api, "/api/v1/jobs/status/c0").await;
    let response = get_with_tag(&api, "/api/v1/jobs/status/c0?wait=1", &tag).await;
    assert_eq!(response.status(), 304);
    let opened = counter.take();
    assert_eq!(
        opened.iter().filter(|c| c.as_str() == "aggregate").count(),
        1,
        "{opened:?}"
    );

    // 40 long-polls at once: one read each, and no command of their own while they wait.
    let mut tags = Vec::new();
    for id in &ids {
        tags.push(etag_of(&api, &format!("/api/v1/jobs/status/{id}")).await);
    }
    counter.take();
    let waits: Vec<_> = ids
        .iter()
        .zip(&tags)
        .map(|(id, tag)| {
            let request = api
                .http
                .get(api.url(&format!("/api/v1/jobs/status/{id}?wait=3")))
                .header("if-none-match", tag.as_str())
                .send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.store
        .apply(&event("c7", JobStatus::Processing, 99))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for wait in waits {
        statuses.push(wait.await.unwrap().unwrap().status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 304).count(),
        39,
        "{statuses:?}"
    );
    let commands = counter.take();
    let count = |name: &str| commands.iter().filter(|c| c.as_str() == name).count();
    // The open change stream serves everyone: the 40 initial reads, the write, and one
    // re-read of the changed trace; the stream itself only issues getMore.
    assert_eq!(count("aggregate"), 0, "{commands:?}");
    assert_eq!(count("find"), 41, "{commands:?}");
    assert_eq!(
        commands.len(),
        count("find") + count("update") + count("getMore"),
        "{commands:?}"
    );
    assert_eq!(count("update"), 1, "{commands:?}");
}
