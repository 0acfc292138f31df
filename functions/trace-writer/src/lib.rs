//! `trace-writer` as a library, so that tests run the real app on port 0.
//!
//! `POST /` takes one Pub/Sub push (wrapped, or an Eventarc CloudEvent in binary or
//! structured mode), records it with one conditional write, and acknowledges it only
//! once the database has acknowledged the write:
//!
//! | what happened | answer |
//! | --- | --- |
//! | recorded | 204 |
//! | message can never be recorded (logged as WARNING; its job, when named, fails) | 204 |
//! | not a push at all | 400 `{"error": ...}` |
//! | body over [`MAX_PUSH_BODY_BYTES`] | 413 |
//! | missing or bad token / token of another account | 401 / 403, nothing written |
//! | database unavailable or too slow | 503 `{"error": "database unavailable"}` |
//! | with `COMPLETIONS_TOPIC`: a completion notification could not be published | 503 `{"error": "completion notification not published"}` |
//! | the pushes in flight hold `PUSH_MEMORY_MIB` for longer than [`PUSH_MEMORY_WAIT`] | 503 with `Retry-After`, nothing read |
//!
//! Each push holds [`push_memory_bytes`] of its declared size (the largest push's when it
//! declares none) from before its body is read until it is answered, so an instance
//! never holds more than `PUSH_MEMORY_MIB` of pushes, however many arrive at once.
//!
//! With `COMPLETIONS_TOPIC` set, a push whose change ends an attempt records the
//! notification it owes with the change, publishes it, removes it and only then is
//! answered 204 ([`job_trace::completions`]).
//!
//! Every push ends in exactly one JSON log line with its ids, outcome and latency.

pub mod completions;
pub mod config;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use job_trace::http::health_routes;
use job_trace::oidc::{PushAuthError, PushVerifier};
use job_trace::push::{
    decode_push, push_memory_bytes, Outcome, Push, PushMeta, MAX_PUSH_BODY_BYTES,
};
use job_trace::request::with_trace_correlation;
use job_trace::TraceStore;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use completions::Completions;
pub use config::{CompletionsTarget, PushAuth, WriterConfig};
use job_trace::completions::to_publish;
use job_trace::store::StoreError;
use job_trace::Change;

/// How long a push waits for memory before it is answered 503 and redelivered later.
pub const PUSH_MEMORY_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Writer {
    store: TraceStore,
    verifier: Option<Arc<PushVerifier>>,
    memory: PushMemory,
    completions: Option<Arc<Completions>>,
}

/// The memory the pushes in flight may hold together, counted in KiB.
#[derive(Clone)]
struct PushMemory {
    kib: Arc<Semaphore>,
    total_kib: usize,
    wait: Duration,
}

impl PushMemory {
    fn new(bytes: usize, wait: Duration) -> Self {
        let total_kib = bytes.div_ceil(1024).min(Semaphore::MAX_PERMITS);
        PushMemory {
            kib: Arc::new(Semaphore::new(total_kib)),
            total_kib,
            wait,
        }
    }

    /// Holds what a push of `body_bytes` may take (the largest push's when unknown)
    /// until the permit drops; `None` when it could not be had in time.
    async fn reserve(&self, body_bytes: Option<u64>) -> Option<OwnedSemaphorePermit> {
        let body = body_bytes.map_or(MAX_PUSH_BODY_BYTES, |n| {
            usize::try_from(n).map_or(MAX_PUSH_BODY_BYTES, |n| n.min(MAX_PUSH_BODY_BYTES))
        });
        let kib = push_memory_bytes(body).div_ceil(1024).min(self.total_kib);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        let wait = self.kib.clone().acquire_many_owned(kib);
        tokio::time::timeout(self.wait, wait).await.ok()?.ok()
    }
}

/// The whole HTTP surface of the function.
pub fn app(store: TraceStore, config: WriterConfig) -> Router {
    let verifier = match config.auth {
        PushAuth::Oidc(oidc) => Some(Arc::new(PushVerifier::new(oidc))),
        PushAuth::None => None,
    };
    let completions = config
        .completions
        .map(|target| Arc::new(Completions::new(target)));
    writer_app(
        store,
        verifier,
        config.trace_project,
        config.push_memory_bytes,
        completions,
    )
}

/// [`app`] with a verifier the caller keeps (tests count its key fetches); `None`
/// accepts unauthenticated pushes.
pub fn app_with_verifier(
    store: TraceStore,
    verifier: Option<Arc<PushVerifier>>,
    trace_project: Option<String>,
) -> Router {
    let push_memory = WriterConfig::unauthenticated().push_memory_bytes;
    writer_app(store, verifier, trace_project, push_memory, None)
}

fn writer_app(
    store: TraceStore,
    verifier: Option<Arc<PushVerifier>>,
    trace_project: Option<String>,
    push_memory_bytes: usize,
    completions: Option<Arc<Completions>>,
) -> Router {
    let writer = Writer {
        store: store.clone(),
        verifier,
        memory: PushMemory::new(push_memory_bytes, PUSH_MEMORY_WAIT),
        completions,
    };
    let router = Router::new()
        .route("/", post(receive))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BODY_BYTES))
        .with_state(writer)
        .merge(health_routes(store));
    with_trace_correlation(router, trace_project)
}

fn error_body(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn too_large() -> Response {
    error_body(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {MAX_PUSH_BODY_BYTES} bytes"),
    )
}

fn busy() -> Response {
    let mut response = error_body(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many large pushes in flight; retry later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn database_unavailable() -> Response {
    error_body(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
}

/// Why a change was not fully recorded; either way the push is redelivered.
enum Fault {
    Database(StoreError),
    /// The change is written, but a notification it owes is not published (it stays
    /// pending in the trace for the redelivery).
    Unpublished(completions::PublishError),
}

impl Fault {
    fn outcome(&self) -> &'static str {
        match self {
            Fault::Database(_) => "unavailable",
            Fault::Unpublished(_) => "unpublished",
        }
    }

    fn response(&self) -> Response {
        match self {
            Fault::Database(_) => database_unavailable(),
            Fault::Unpublished(_) => error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "completion notification not published",
            ),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Database(error) => error.fmt(f),
            Fault::Unpublished(error) => error.fmt(f),
        }
    }
}

/// Applies `change`; with completion notifications on, also publishes what this push
/// owes and removes it from the trace. Returns how many notifications it published.
async fn write(writer: &Writer, change: &Change) -> Result<usize, Fault> {
    let Some(completions) = &writer.completions else {
        writer.store.apply(change).await.map_err(Fault::Database)?;
        return Ok(0);
    };
    let now = bson::DateTime::now();
    let change = change.clone().notifying(now);
    let trace = writer
        .store
        .apply_returning(&change)
        .await
        .map_err(Fault::Database)?;
    let own = change.completion().map(|owed| owed.dedupe_key);
    let owed = to_publish(&trace, own.as_deref(), now);
    if owed.is_empty() {
        return Ok(0);
    }
    let (published, failure) = completions.publish(&trace, &owed).await;
    writer
        .store
        .settle_completions(&change.message_id, &published)
        .await
        .map_err(Fault::Database)?;
    match failure {
        Some(error) => Err(Fault::Unpublished(error)),
        None => Ok(published.len()),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// What the one log line of a push says.
struct Line<'a> {
    started: Instant,
    meta: Option<&'a PushMeta>,
    job: Option<&'a str>,
    outcome: &'static str,
    http_status: u16,
}

impl Line<'_> {
    fn latency_ms(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
    }
}

macro_rules! push_line {
    ($level:ident, $line:expr, $($extra:tt)*) => {{
        let line = &$line;
        let meta = line.meta;
        tracing::$level!(
            message_id = line.job,
            pubsub_message_id = meta.and_then(|m| m.pubsub_message_id.as_deref()),
            subscription = meta.and_then(|m| m.subscription.as_deref()),
            delivery_attempt = meta.and_then(|m| m.delivery_attempt),
            ordering_key = meta.and_then(|m| m.ordering_key.as_deref()),
            format = meta.map(|m| m.format),
            outcome = line.outcome,
            http_status = line.http_status,
            latency_ms = line.latency_ms(),
            $($extra)*
        )
    }};
}

async fn receive(State(writer): State<Writer>, request: Request) -> Response {
    let started = Instant::now();
    let line = |outcome, http_status| Line {
        started,
        meta: None,
        job: None,
        outcome,
        http_status,
    };
    // Refuse what is too large, and who may not push, before reading the body.
    if content_length(request.headers()).is_some_and(|n| n > MAX_PUSH_BODY_BYTES as u64) {
        push_line!(warn, line("too_large", 413), "push refused: body too large");
        return too_large();
    }
    if let Some(verifier) = &writer.verifier {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if let Err(error) = verifier.verify_header(authorization).await {
            return refuse(error, line);
        }
    }
    let Some(_memory) = writer
        .memory
        .reserve(content_length(request.headers()))
        .await
    else {
        push_line!(
            warn,
            line("busy", 503),
            "push deferred: pushes in flight hold all push memory"
        );
        return busy();
    };
    // The body extractor needs no headers: take them rather than copy them.
    let (mut parts, body) = request.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let request = Request::from_parts(parts, body);
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            push_line!(warn, line("too_large", 413), "push refused: body too large");
            return too_large();
        }
        Err(rejection) => {
            push_line!(warn, line("unreadable", 400), reason = %rejection, "push refused: body unreadable");
            return error_body(StatusCode::BAD_REQUEST, "could not read the request body");
        }
    };
    let push = match decode_push(&headers, &body, bson::DateTime::now()) {
        Ok(push) => push,
        Err(error) => {
            push_line!(warn, line("invalid", 400), reason = %error, "push refused: not a Pub/Sub push");
            return error_body(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    record(&writer, &push, started).await
}

fn refuse(error: PushAuthError, line: impl Fn(&'static str, u16) -> Line<'static>) -> Response {
    let status = error.status();
    match error {
        PushAuthError::Forbidden(_) => {
            push_line!(warn, line("forbidden", status.as_u16()), reason = %error, "push refused: caller may not push");
            error_body(status, "this service account may not push here")
        }
        PushAuthError::KeysUnavailable => {
            push_line!(error, line("keys_unavailable", status.as_u16()), reason = %error, "push not verified: signing keys unavailable");
            error_body(status, "authentication temporarily unavailable")
        }
        _ => {
            push_line!(warn, line("unauthenticated", status.as_u16()), reason = %error, "push refused: not authenticated");
            let mut response = error_body(status, error.to_string());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn record(writer: &Writer, push: &Push, started: Instant) -> Response {
    let job = push.job_message_id().map(|id| id.as_str());
    let line = |outcome, http_status| Line {
        started,
        meta: Some(&push.meta),
        job,
        outcome,
        http_status,
    };
    match &push.outcome {
        Outcome::Record(change) => match write(writer, change).await {
            Ok(notified) => {
                push_line!(
                    info,
                    line("recorded", 204),
                    status = if change.progress.is_some() {
                        job_trace::push::PROGRESS_STATUS
                    } else {
                        change.status.as_str()
                    },
                    attempt = change.key.attempt,
                    notified,
                    "push recorded"
                );
                StatusCode::NO_CONTENT.into_response()
            }
            Err(fault) => {
                push_line!(error, line(fault.outcome(), 503), error = %fault, "push not recorded: database unavailable or notification not published");
                fault.response()
            }
        },
        Outcome::Reject {
            error: reason,
            failed_trace,
        } => {
            if let Some(change) = failed_trace {
                if let Err(fault) = write(writer, change).await {
                    push_line!(error, line(fault.outcome(), 503), reason = %reason, error = %fault, "rejected push not recorded: database unavailable or notification not published");
                    return fault.response();
                }
            }
            push_line!(
                warn,
                line("rejected", 204),
                reason = %reason,
                failed_trace = failed_trace.is_some(),
                "push rejected: the message can never be recorded"
            );
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use job_trace::push::PUSH_MEMORY_BUDGET_BYTES;

    use super::*;

    const WAIT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn worst_case_pushes_wait_for_memory_and_small_ones_pass_beside_them() {
        let memory = PushMemory::new(4 * PUSH_MEMORY_BUDGET_BYTES + 4 * 1024 * 1024, WAIT);
        let largest = Some(MAX_PUSH_BODY_BYTES as u64);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(memory.reserve(largest).await.expect("room for four"));
        }
        assert!(memory.reserve(largest).await.is_none(), "a fifth must wait");
        // A push that does not say its size is taken to be the largest.
        assert!(memory.reserve(None).await.is_none());
        // Ordinary pushes (a few KiB) still pass in what is left.
        let small: Vec<_> = reserve_small(&memory, 3).await;
        assert_eq!(small.len(), 3);
        drop(small);

        let waiting = tokio::spawn({
            let memory = memory.clone();
            async move { memory.reserve(largest).await.is_some() }
        });
        tokio::time::sleep(WAIT / 4).await;
        held.pop();
        assert!(
            waiting.await.unwrap(),
            "a waiting push gets the memory freed"
        );
    }

    async fn reserve_small(memory: &PushMemory, n: usize) -> Vec<OwnedSemaphorePermit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(
                memory
                    .reserve(Some(2_000))
                    .await
                    .expect("room for a small push"),
            );
        }
        permits
    }

    #[tokio::test]
    async fn one_largest_push_passes_even_when_memory_is_smaller() {
        let memory = PushMemory::new(1024 * 1024, WAIT);
        let permit = memory.reserve(Some(MAX_PUSH_BODY_BYTES as u64)).await;
        assert!(
            permit.is_some(),
            "a push is never refused for its size alone"
        );
        assert!(memory.reserve(Some(10)).await.is_none());
    }
}
