//! Request correlation: every request runs in a `request` span whose field `trace` is
//! `projects/$GOOGLE_CLOUD_PROJECT/traces/TRACE_ID`, taken from `X-Cloud-Trace-Context`
//! (what Cloud Run's front end sets) or W3C `traceparent`. The logger turns that field
//! into `logging.googleapis.com/trace`, so a request's lines group under its trace.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tracing::Instrument;

/// The project that traces belong to: `GOOGLE_CLOUD_PROJECT`, else `GCP_PROJECT`.
pub fn project_from_env() -> Option<String> {
    ["GOOGLE_CLOUD_PROJECT", "GCP_PROJECT"]
        .iter()
        .find_map(|name| std::env::var(name).ok())
        .and_then(|project| checked_project(&project))
}

/// A project id fit to go into a trace name, or `None`.
pub fn checked_project(raw: &str) -> Option<String> {
    let project = raw.trim();
    ((1..=100).contains(&project.len())
        && project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_')))
    .then(|| project.to_owned())
}

fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0')
}

/// The trace id of a request (32 lowercase hex digits), when a header names a valid one.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    let cloud = headers
        .get("x-cloud-trace-context")
        .and_then(|value| value.to_str().ok())
        .filter(|value| value.len() <= 256)
        .and_then(|value| value.split(['/', ';']).next())
        .map(str::trim)
        .filter(|id| is_trace_id(id));
    let w3c = || {
        let value = headers.get("traceparent")?.to_str().ok()?;
        if value.len() > 256 {
            return None;
        }
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let id = parts.next()?;
        (version.len() == 2 && version != "ff" && is_trace_id(id)).then_some(id)
    };
    cloud.or_else(w3c).map(str::to_ascii_lowercase)
}

/// The value of the `trace` field for a request, when both the project and an id are known.
pub fn trace_field(project: Option<&str>, headers: &HeaderMap) -> Option<String> {
    Some(format!(
        "projects/{}/traces/{}",
        project?,
        trace_id(headers)?
    ))
}

async fn correlate(
    State(project): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    // A span costs a registry slot and an enter/exit on every poll of the request; one
    // without its `trace` would add nothing to a log line, so only a traced request has one.
    match trace_field(project.as_deref(), request.headers()) {
        Some(trace) => {
            let span = tracing::info_span!("request", trace);
            next.run(request).instrument(span).await
        }
        None => next.run(request).await,
    }
}

/// Runs every request of `router` in a correlated `request` span.
pub fn with_trace_correlation(router: Router, project: Option<String>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(project),
        correlate,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn cloud_trace_context_and_traceparent_name_the_trace() {
        let id = "105445aa7843bc8bf206b12000100000";
        assert_eq!(
            trace_id(&headers(&[(
                "x-cloud-trace-context",
                &format!("{id}/1;o=1")
            )])),
            Some(id.into())
        );
        assert_eq!(
            trace_id(&headers(&[(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
            )])),
            Some("4bf92f3577b34da6a3ce929d0e0e4736".into())
        );
        assert_eq!(
            trace_field(
                Some("demo"),
                &headers(&[("x-cloud-trace-context", &format!("{id}/1"))])
            ),
            Some(format!("projects/demo/traces/{id}"))
        );
        assert_eq!(
            trace_field(None, &headers(&[("x-cloud-trace-context", id)])),
            None
        );
    }

    #[test]
    fn junk_is_no_trace() {
        for value in [
            "",
            "xyz/1",
            "00000000000000000000000000000000/1",
            "105445aa7843bc8bf206b1200010000/1",
        ] {
            assert_eq!(
                trace_id(&headers(&[("x-cloud-trace-context", value)])),
                None,
                "{value:?}"
            );
        }
        for value in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-zzz-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(
                trace_id(&headers(&[("traceparent", value)])),
                None,
                "{value:?}"
            );
        }
    }
}
