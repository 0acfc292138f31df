//! What the `writer_*` tests share: trace-writer served from the library on a free
//! loopback port over a real SecantusDB database of its own, push bodies built like
//! Pub/Sub builds them, and a plain HTTP client.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use job_trace::ids::MessageId;
use job_trace::model::TraceDocument;
use job_trace::oidc::PushVerifier;
use job_trace::push::encode::PushMessage;
use job_trace::TraceStore;
use job_trace_tests::apps::{serve, Served};
use job_trace_tests::fresh_store;
use serde_json::{json, Value};
use trace_writer::WriterConfig;

/// How many requests reached `POST /`, and how they were answered.
#[derive(Default)]
pub struct Tally {
    pub pushes: AtomicU64,
    pub acknowledged: AtomicU64,
    pub unavailable: AtomicU64,
    pub other: AtomicU64,
    /// Milliseconds since the tally began, of the first and the latest push.
    pub first_ms: AtomicU64,
    pub last_ms: AtomicU64,
    pub began: std::sync::OnceLock<Instant>,
}

impl Tally {
    fn stamp(&self) {
        let began = *self.began.get_or_init(Instant::now);
        let now = began.elapsed().as_millis() as u64 + 1;
        let _ = self
            .first_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Seconds between the first and the latest push.
    pub fn span_seconds(&self) -> f64 {
        let first = self.first_ms.load(Ordering::Relaxed);
        let last = self.last_ms.load(Ordering::Relaxed);
        last.saturating_sub(first) as f64 / 1000.0
    }
}

pub struct Writer {
    pub served: Served,
    pub store: TraceStore,
    pub http: reqwest::Client,
    pub tally: Arc<Tally>,
}

fn counted(router: axum::Router, tally: Arc<Tally>) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let tally = tally.clone();
            async move {
                let push =
                    request.uri().path() == "/" && request.method() == axum::http::Method::POST;
                let response = next.run(request).await;
                if push {
                    tally.stamp();
                    tally.pushes.fetch_add(1, Ordering::Relaxed);
                    match response.status().as_u16() {
                        200..=299 => &tally.acknowledged,
                        503 => &tally.unavailable,
                        _ => &tally.other,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                }
                response
            }
        },
    ))
}

impl Writer {
    /// trace-writer without push authentication on a fresh database.
    pub async fn start(prefix: &str) -> Writer {
        Writer::start_on(fresh_store(prefix).await).await
    }

    /// trace-writer without push authentication over `store`.
    pub async fn start_on(store: TraceStore) -> Writer {
        let router = trace_writer::app(store.clone(), WriterConfig::unauthenticated());
        Writer::serve_router(router, store).await
    }

    /// trace-writer verifying tokens with `verifier` over `store`.
    pub async fn start_verified(store: TraceStore, verifier: Arc<PushVerifier>) -> Writer {
        let router = trace_writer::app_with_verifier(store.clone(), Some(verifier), None);
        Writer::serve_router(router, store).await
    }

    pub async fn serve_router(router: axum::Router, store: TraceStore) -> Writer {
        let tally = Arc::new(Tally::default());
        let served = serve(counted(router, tally.clone())).await;
        Writer {
            served,
            store,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            tally,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.served.url(path)
    }

    /// POSTs `body` to `/` with `headers`; returns the status and the body text.
    pub async fn post_raw(&self, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
        let mut request = self.http.post(self.url("/")).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST /");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// POSTs a JSON push body as Pub/Sub does.
    pub async fn push(&self, body: &Value) -> (u16, String) {
        self.post_raw(
            &[("content-type", "application/json")],
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn trace(&self, message_id: &str) -> Option<TraceDocument> {
        self.store
            .get(&MessageId::parse(message_id).unwrap())
            .await
            .expect("read a trace")
    }
}

/// The wrapped push fixtures (not the CloudEvent, which has headers of its own).
pub const PUSH_FIXTURES: [&str; 5] = [
    "push-job-message.json",
    "push-batch-message.json",
    "push-status-processing.json",
    "push-status-success.json",
    "push-status-failed.json",
];

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A Pub/Sub message id nobody else uses (digits, like Pub/Sub's).
pub fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{}{:04}",
        nanos / 1000 % 100_000_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed) % 10_000
    )
}

/// When the test pushes were published.
pub const PUBLISHED: &str = "2026-05-01T10:00:00.000Z";
const SUBSCRIPTION: &str = "projects/demo/subscriptions/writer-tests";

/// A message of `data` (raw bytes) published at [`PUBLISHED`].
pub fn message(message_id: &str, data: &[u8]) -> PushMessage {
    PushMessage::new(message_id, data, PUBLISHED.parse().expect("RFC 3339"))
}

/// A wrapped push of `data` (raw bytes, base64-encoded by the encoder) as Pub/Sub sends it.
pub fn wrapped(message_id: &str, data: &[u8], attributes: Value) -> Value {
    let mut message = message(message_id, data);
    message.attributes = serde_json::from_value(attributes).expect("string attributes");
    message.wrapped(SUBSCRIPTION)
}

/// A job message push for a new job; returns the job's id and the body.
pub fn job_push(url: Option<&str>) -> (String, Value) {
    let id = new_id();
    let mut data = json!({
        "timestamp": PUBLISHED,
        "line_user_id": "U1234567890abcdef",
        "check_only": url.is_none(),
    });
    if let Some(url) = url {
        data["url"] = json!(url);
    }
    let body = wrapped(&id, data.to_string().as_bytes(), json!({}));
    (id, body)
}

/// A status event push about `job`.
pub fn event_push(job: &str, event: Value) -> Value {
    event_push_at(job, event, PUBLISHED.parse().expect("RFC 3339"))
}

/// [`event_push`] published at `published`: a push whose `occurred_at` is now must be
/// published about now too, or the writer takes `occurred_at` for implausible and records
/// the publish time instead.
pub fn event_push_at(job: &str, event: Value, published: chrono::DateTime<chrono::Utc>) -> Value {
    let mut data = event;
    data["message_id"] = json!(job);
    PushMessage::new(new_id(), data.to_string(), published)
        .status_event(job)
        .wrapped(SUBSCRIPTION)
}

/// Polls `check` until it returns `Ok`, at most `limit`; returns the last error otherwise.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let outcome = check().await;
        if outcome.is_ok() || start.elapsed() > limit {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
