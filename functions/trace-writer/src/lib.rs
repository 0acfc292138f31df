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
//!
//! Every push ends in exactly one JSON log line with its ids, outcome and latency.

pub mod config;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use job_trace::http::health_routes;
use job_trace::oidc::{PushAuthError, PushVerifier};
use job_trace::push::{decode_push, Outcome, Push, PushMeta, MAX_PUSH_BODY_BYTES};
use job_trace::request::with_trace_correlation;
use job_trace::TraceStore;
use serde_json::json;

pub use config::{PushAuth, WriterConfig};

#[derive(Clone)]
struct Writer {
    store: TraceStore,
    verifier: Option<Arc<PushVerifier>>,
}

/// The whole HTTP surface of the function.
pub fn app(store: TraceStore, config: WriterConfig) -> Router {
    let verifier = match config.auth {
        PushAuth::Oidc(oidc) => Some(Arc::new(PushVerifier::new(oidc))),
        PushAuth::None => None,
    };
    app_with_verifier(store, verifier, config.trace_project)
}

/// [`app`] with a verifier the caller keeps (tests count its key fetches); `None`
/// accepts unauthenticated pushes.
pub fn app_with_verifier(
    store: TraceStore,
    verifier: Option<Arc<PushVerifier>>,
    trace_project: Option<String>,
) -> Router {
    let writer = Writer {
        store: store.clone(),
        verifier,
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

fn database_unavailable() -> Response {
    error_body(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
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
    let headers = request.headers().clone();
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
    record(&writer.store, &push, started).await
}

fn refuse(error: PushAuthError, line: impl Fn(&'static str, u16) -> Line<'static>) -> Response {
    let status = error.status();
    match status {
        403 => {
            push_line!(warn, line("forbidden", 403), reason = %error, "push refused: caller may not push");
            error_body(
                StatusCode::FORBIDDEN,
                "this service account may not push here",
            )
        }
        503 => {
            push_line!(error, line("keys_unavailable", 503), reason = %error, "push not verified: signing keys unavailable");
            error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "authentication temporarily unavailable",
            )
        }
        _ => {
            push_line!(warn, line("unauthenticated", 401), reason = %error, "push refused: not authenticated");
            let mut response = error_body(StatusCode::UNAUTHORIZED, error.to_string());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn record(store: &TraceStore, push: &Push, started: Instant) -> Response {
    let job = push.job_message_id().map(|id| id.as_str());
    let line = |outcome, http_status| Line {
        started,
        meta: Some(&push.meta),
        job,
        outcome,
        http_status,
    };
    match &push.outcome {
        Outcome::Record(change) => match store.apply(change).await {
            Ok(()) => {
                push_line!(
                    info,
                    line("recorded", 204),
                    status = if change.progress.is_some() {
                        job_trace::push::PROGRESS_STATUS
                    } else {
                        change.status.as_str()
                    },
                    attempt = change.key.attempt,
                    "push recorded"
                );
                StatusCode::NO_CONTENT.into_response()
            }
            Err(error) => {
                push_line!(error, line("unavailable", 503), error = %error, "push not recorded: database unavailable");
                database_unavailable()
            }
        },
        Outcome::Reject {
            error: reason,
            failed_trace,
        } => {
            if let Some(change) = failed_trace {
                if let Err(error) = store.apply(change).await {
                    push_line!(error, line("unavailable", 503), reason = %reason, error = %error, "rejected push not recorded: database unavailable");
                    return database_unavailable();
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
