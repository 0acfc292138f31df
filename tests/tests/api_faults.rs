//! Faults on our side: a database that does not answer is a 503 with a fixed text in
//! the route's style (the cause goes to the log), never a 500 and never the internals.

mod api_common;

use std::time::{Duration, Instant};

use api_common::*;
use job_trace::config::DatabaseConfig;
use job_trace::TraceStore;
use job_trace_tests::free_port;
use serde_json::json;
use trace_api::ApiConfig;

#[tokio::test]
async fn an_unreachable_database_is_a_503_without_details_in_both_styles() {
    let config = DatabaseConfig {
        mongo_uri: format!("mongodb://127.0.0.1:{}/?directConnection=true", free_port()),
        mongo_database: "nowhere".into(),
        collection_job_traces: "job_traces".into(),
        ensure_indexes: false,
        db_timeout_seconds: 1.0,
        store_write: Default::default(),
    };
    let store = TraceStore::connect(&config).await.unwrap();
    let api = Api::start_on(store, ApiConfig::default()).await;
    let cases = [
        ("/api/v1/jobs/status/m1", "detail"),
        ("/api/v1/jobs/user/U1", "detail"),
        ("/api/v1/jobs/status/m1/events", "detail"),
        ("/job/status?message_id=m1", "error"),
        ("/job/user?line_user_id=U1", "error"),
    ];
    for (path, key) in cases {
        let asked = Instant::now();
        let response = api.get(path).await;
        assert!(asked.elapsed() < Duration::from_secs(5), "{path}: bounded");
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()["retry-after"], "1");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({ key: "Service temporarily unavailable; try again" }),
            "{path}"
        );
    }
    assert_eq!(api.get("/readyz").await.status(), 503);
    assert_eq!(api.get("/healthz").await.status(), 200);
    // A client's mistake is still the client's: checked before the database is asked.
    let (status, _) = api.json("/api/v1/jobs/user/U1?limit=0").await;
    assert_eq!(status, 422);
}
