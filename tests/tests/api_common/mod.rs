//! What the `api_*` tests share: trace-api served from the library on a free loopback
//! port over a real SecantusDB database of its own, traces built from the fixtures, and a
//! plain HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;

use job_trace::ids::{LineUserId, MessageId};
use job_trace::model::{JobStatus, JobType};
use job_trace::push::{decode_push, Outcome};
use job_trace::rules::{Change, JobDetails};
use job_trace::TraceStore;
use job_trace_tests::apps::serve;
use job_trace_tests::{fixture, fresh_store};
use serde_json::Value;
use trace_api::ApiConfig;

pub struct Api {
    pub base: String,
    pub addr: SocketAddr,
    pub store: TraceStore,
    pub http: reqwest::Client,
}

impl Api {
    /// trace-api with `config` on a fresh database.
    pub async fn start(prefix: &str, config: ApiConfig) -> Api {
        Api::start_on(fresh_store(prefix).await, config).await
    }

    /// trace-api with `config` over `store`.
    pub async fn start_on(store: TraceStore, config: ApiConfig) -> Api {
        let served = serve(trace_api::app(store.clone(), config)).await;
        Api {
            base: served.base,
            addr: served.addr,
            store,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.http
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("request")
    }

    /// GET and parse the JSON body; returns the status and the body.
    pub async fn json(&self, path_and_query: &str) -> (u16, Value) {
        let response = self.get(path_and_query).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path_and_query}: body is not JSON ({e}): {text:?}"));
        (status, body)
    }
}

/// The change a fixture push records.
pub fn fixture_change(name: &str) -> Change {
    let push = decode_push(&Default::default(), &fixture(name), bson::DateTime::now())
        .expect("fixture decodes");
    match push.outcome {
        Outcome::Record(change) => change,
        other => panic!("{name} does not record a change: {other:?}"),
    }
}

/// The seed's example job: job message, processing, success (message_id `1234567890`).
pub fn seed_example_changes() -> Vec<Change> {
    [
        "push-job-message.json",
        "push-status-processing.json",
        "push-status-success.json",
    ]
    .into_iter()
    .map(fixture_change)
    .collect()
}

pub async fn apply_all(store: &TraceStore, changes: &[Change]) {
    for change in changes {
        store.apply(change).await.expect("apply");
    }
}

pub fn mid(raw: &str) -> MessageId {
    MessageId::parse(raw).unwrap()
}

/// `2023-06-01T12:34:56.789Z` plus `seconds`.
pub fn at(seconds: i64) -> bson::DateTime {
    bson::DateTime::from_millis(1_685_622_896_789 + seconds * 1000)
}

/// A job message for `user`, created at `at(seconds)`.
pub fn queued(message_id: &str, user: &str, job_type: JobType, seconds: i64) -> Change {
    Change::queued(
        mid(message_id),
        at(seconds),
        JobDetails {
            job_type,
            url: (job_type == JobType::PropertyScrape)
                .then(|| format!("https://suumo.jp/ms/chuko/tokyo/{message_id}/")),
            line_user_id: Some(LineUserId::parse(user).unwrap()),
            check_only: job_type == JobType::BatchCheck,
        },
    )
}

pub fn event(message_id: &str, status: JobStatus, seconds: i64) -> Change {
    let error = (status == JobStatus::Failed).then(|| "scrape failed".to_owned());
    let result = (status == JobStatus::Success).then(|| bson::bson!({ "status": "success" }));
    Change::event(mid(message_id), status, 1, at(seconds), error, result)
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
