//! The operators' views against a real SecantusDB: stalled jobs across users, oldest
//! first, with filters, a total and checked parameters; the statistics of a window from
//! one aggregate; recent failures with their history.

mod api_common;

use api_common::*;
use job_trace::ids::LineUserId;
use job_trace::model::{JobStatus, JobType};
use job_trace::rules::{Change, JobDetails};
use job_trace_tests::counted_store;
use serde_json::{json, Value};
use trace_api::ApiConfig;

/// One "now" for the whole test process, so that the times of one test's jobs are
/// exact distances apart.
fn now_millis() -> i64 {
    static NOW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *NOW.get_or_init(|| bson::DateTime::now().timestamp_millis())
}

/// `seconds` ago.
fn ago(seconds: i64) -> bson::DateTime {
    bson::DateTime::from_millis(now_millis() - seconds * 1000)
}

fn job(id: &str, user: &str, job_type: JobType, seconds_ago: i64) -> Change {
    Change::queued(
        mid(id),
        ago(seconds_ago),
        JobDetails {
            job_type,
            url: (job_type == JobType::PropertyScrape)
                .then(|| format!("https://suumo.jp/ms/chuko/{id}/")),
            line_user_id: Some(LineUserId::parse(user).unwrap()),
            check_only: false,
        },
    )
}

fn step(id: &str, status: JobStatus, seconds_ago: i64, error: Option<&str>) -> Change {
    Change::event(
        mid(id),
        status,
        1,
        ago(seconds_ago),
        error.map(str::to_owned),
        None,
    )
}

fn ids(body: &Value) -> Vec<&str> {
    body["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs in {body}"))
        .iter()
        .map(|job| job["message_id"].as_str().unwrap())
        .collect()
}

/// Two users' jobs: two stalled (an hour and three hours of silence), one running but
/// recent, one failed long ago, one done.
async fn some_jobs(api: &Api) {
    apply_all(
        &api.store,
        &[
            job("old-queued", "Ualice", JobType::PropertyScrape, 3 * 3600),
            job("quiet-run", "Ubob", JobType::BatchCheck, 2 * 3600),
            step("quiet-run", JobStatus::Processing, 3600, None),
            job("busy-run", "Ubob", JobType::PropertyScrape, 2 * 3600),
            step("busy-run", JobStatus::Processing, 60, None),
            job("broke", "Ualice", JobType::PropertyScrape, 5 * 3600),
            step("broke", JobStatus::Processing, 5 * 3600 - 10, None),
            step("broke", JobStatus::Failed, 5 * 3600 - 20, Some("HTTP 503")),
            job("done", "Ucarol", JobType::PropertyScrape, 600),
            step("done", JobStatus::Success, 500, None),
        ],
    )
    .await;
}

#[tokio::test]
async fn stalled_jobs_come_oldest_first_across_users() {
    let api = Api::start("ops_stalled", ApiConfig::default()).await;
    some_jobs(&api).await;

    let (status, body) = api.json("/api/v1/jobs?stalled_for=1800").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["old-queued", "quiet-run"]);
    assert_eq!(
        (&body["total_count"], &body["limit"], &body["skip"]),
        (&json!(2), &json!(50), &json!(0))
    );
    assert_eq!(body["jobs"][0]["status"], "queued");
    assert_eq!(body["jobs"][0]["line_user_id"], "Ualice");
    assert_eq!(body["jobs"][1]["line_user_id"], "Ubob");

    // A longer threshold leaves the job silent for an hour out.
    let (_, body) = api.json("/api/v1/jobs?stalled_for=7200").await;
    assert_eq!(ids(&body), ["old-queued"]);
    // Filters, and a page of the total.
    let (_, body) = api
        .json("/api/v1/jobs?stalled_for=1800&status=processing")
        .await;
    assert_eq!(ids(&body), ["quiet-run"]);
    let (_, body) = api
        .json("/api/v1/jobs?stalled_for=1800&job_type=batch_check")
        .await;
    assert_eq!(ids(&body), ["quiet-run"]);
    let (_, body) = api
        .json("/api/v1/jobs?stalled_for=1800&limit=1&skip=1")
        .await;
    assert_eq!(ids(&body), ["quiet-run"]);
    assert_eq!(body["total_count"], 2);
    let (_, body) = api.json("/api/v1/jobs?stalled_for=30").await;
    assert_eq!(ids(&body), ["old-queued", "quiet-run", "busy-run"]);
    // The seed's body unless history is asked for.
    assert!(body["jobs"][0].get("history").is_none());
    let (_, body) = api
        .json("/api/v1/jobs?stalled_for=1800&include=history")
        .await;
    assert_eq!(body["jobs"][1]["history"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn recent_failures_come_newest_first_with_their_history() {
    let api = Api::start("ops_recent", ApiConfig::default()).await;
    some_jobs(&api).await;
    apply_all(
        &api.store,
        &[
            job("gone", "Ucarol", JobType::PropertyScrape, 300),
            step("gone", JobStatus::NotFound, 200, Some("listing removed")),
        ],
    )
    .await;
    let (status, body) = api
        .json("/api/v1/jobs?status=failed,not_found&include=history")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["gone", "broke"]);
    assert_eq!(body["jobs"][1]["error"], "HTTP 503");
    let history: Vec<&str> = body["jobs"][1]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["queued", "processing", "failed"]);
    let (_, body) = api.json("/api/v1/jobs").await;
    assert_eq!(body["total_count"], 6, "every job of every user");
    assert_eq!(
        ids(&body)[..2],
        ["busy-run", "gone"],
        "the latest changed first"
    );
}

#[tokio::test]
async fn the_listings_parameters_are_checked() {
    let api = Api::start("ops_params", ApiConfig::default()).await;
    for (query, name, kind) in [
        ("stalled_for=0", "stalled_for", "greater_than_equal"),
        ("stalled_for=604801", "stalled_for", "less_than_equal"),
        ("stalled_for=soon", "stalled_for", "int_parsing"),
        ("stalled_for=60&limit=101", "limit", "less_than_equal"),
        ("status=done", "status", "enum"),
        ("job_type=scrape", "job_type", "enum"),
    ] {
        let (status, body) = api.json(&format!("/api/v1/jobs?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["query", name]), "{query}");
        assert_eq!(body["detail"][0]["type"], kind, "{query}");
    }
    for query in ["window=0", "window=604801", "window=day"] {
        let (status, body) = api.json(&format!("/api/v1/jobs/stats?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["query", "window"]));
    }
}

#[tokio::test]
async fn stats_count_the_window_in_one_aggregate() {
    let (store, commands) = counted_store("ops_stats").await;
    let api = Api::start_on(store.clone(), ApiConfig::default()).await;
    let mut changes = Vec::new();
    // Five finished jobs taking 10 to 50 seconds, one queued, one from two days ago.
    for (n, (status, error)) in [
        (JobStatus::Success, None),
        (JobStatus::Success, None),
        (JobStatus::Failed, Some("HTTP 503")),
        (JobStatus::Failed, Some("HTTP 503")),
        (JobStatus::NotFound, Some("listing removed")),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("j{n}");
        let job_type = if n == 0 {
            JobType::BatchCheck
        } else {
            JobType::PropertyScrape
        };
        changes.push(job(&id, "Ualice", job_type, 1000));
        changes.push(step(&id, status, 1000 - 10 * (n as i64 + 1), error));
    }
    changes.push(job("waiting", "Ubob", JobType::PropertyScrape, 100));
    changes.push(job("ancient", "Ubob", JobType::PropertyScrape, 2 * 86400));
    changes.push(step(
        "ancient",
        JobStatus::Failed,
        2 * 86400 - 5,
        Some("old"),
    ));
    apply_all(&store, &changes).await;

    commands.take();
    let (status, body) = api.json("/api/v1/jobs/stats?window=3600").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(commands.take(), ["aggregate"], "one query");
    assert_eq!(body["window"], 3600);
    assert_eq!(body["jobs"], 6);
    assert_eq!(body["truncated"], false);
    assert_eq!(
        body["by_status"],
        json!({"queued": 1, "processing": 0, "success": 2, "failed": 2, "not_found": 1})
    );
    assert_eq!(
        body["by_job_type"],
        json!({"property_scrape": 5, "batch_check": 1})
    );
    assert_eq!(
        body["top_errors"],
        json!([{"error": "HTTP 503", "count": 2}, {"error": "listing removed", "count": 1}])
    );
    assert_eq!(
        body["durations"],
        json!({"count": 5, "median_ms": 30000, "p95_ms": 50000})
    );
    // The default window is a day; two days take in the old failure.
    let (_, body) = api.json("/api/v1/jobs/stats").await;
    assert_eq!(body["window"], 86400);
    assert_eq!(body["jobs"], 6);
    let (_, body) = api.json("/api/v1/jobs/stats?window=259200").await;
    assert_eq!(body["jobs"], 7);
    assert_eq!(body["top_errors"][2], json!({"error": "old", "count": 1}));
}
