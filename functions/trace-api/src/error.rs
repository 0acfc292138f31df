//! The one error type of the API and its two renderings: FastAPI's `{"detail": ...}`
//! (invalid parameters 422 with a list of `{loc, msg, type, input}`) for `/api/v1/...`,
//! and the standalone server's `{"error": ...}` (invalid parameters 400) for `/job/...`.
//!
//! A handler only says what went wrong ([`ApiError`]); the router a route is nested in
//! renders it in its style ([`render`], set once per router in `lib.rs`), so no handler,
//! extractor or fallback needs to know which of the seed's servers it imitates.
//!
//! A client's mistake is always 4xx with a message that says what to fix. A fault on our
//! side is 5xx with a fixed text; the cause is logged, never sent.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use job_trace::store::StoreError;
use serde::Serialize;
use serde_json::{json, Value};

/// Which of the seed's two servers a router imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `/api/v1/...`: FastAPI.
    FastApi,
    /// `/job/...`: the standalone HTTP handler.
    Standalone,
}

/// Where an invalid value was: `("query", "limit")`, `("path", "message_id")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Query,
    Path,
    Header,
}

impl Location {
    fn as_str(self) -> &'static str {
        match self {
            Location::Query => "query",
            Location::Path => "path",
            Location::Header => "header",
        }
    }
}

/// One invalid parameter, in FastAPI's (pydantic's) terms.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub location: Location,
    pub name: &'static str,
    /// pydantic's error type, e.g. `int_parsing`, `greater_than_equal`, `missing`.
    pub kind: &'static str,
    pub message: String,
    /// The offending value, cut short; `None` when it was missing.
    pub input: Option<String>,
}

/// Values echoed back in error bodies are cut to this many characters.
const ECHO_CHARS: usize = 64;

pub fn echo(value: &str) -> String {
    let mut cut: String = value.chars().take(ECHO_CHARS).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    cut
}

impl FieldError {
    pub fn new(
        location: Location,
        name: &'static str,
        kind: &'static str,
        message: impl Into<String>,
        input: Option<&str>,
    ) -> Self {
        FieldError {
            location,
            name,
            kind,
            message: message.into(),
            input: input.map(echo),
        }
    }

    pub fn missing(location: Location, name: &'static str) -> Self {
        FieldError::new(location, name, "missing", "Field required", None)
    }

    fn fastapi(&self) -> Value {
        json!({
            "type": self.kind,
            "loc": [self.location.as_str(), self.name],
            "msg": self.message,
            "input": self.input,
        })
    }

    fn standalone(&self) -> String {
        if self.kind == "missing" {
            format!("Missing required parameter: {}", self.name)
        } else {
            format!("Invalid parameter {}: {}", self.name, self.message)
        }
    }
}

/// What went wrong, in no particular style.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// One or more parameters are invalid or missing: 422 / 400.
    Invalid(Vec<FieldError>),
    /// No trace with this id (or none the caller may see): 404.
    TraceNotFound(String),
    /// No such route: 404.
    RouteNotFound,
    /// No or unusable credentials: 401.
    Unauthenticated(&'static str),
    /// Credentials fine, but not for this: 403.
    Forbidden(&'static str),
    /// The database did not answer in time or at all: 503 (logged).
    Unavailable(String),
    /// The key set that signs LINE ID tokens could not be fetched: 503 (the key cache
    /// logs why), never the token's fault.
    KeysUnavailable,
    /// The query string is longer than `params::MAX_QUERY_BYTES`: 414 in both styles,
    /// since its parameters were not read at all.
    QueryTooLong { bytes: usize },
    /// Anything else on our side: 500 (logged).
    Internal(String),
}

impl ApiError {
    pub fn not_found(message_id: &str) -> Self {
        ApiError::TraceNotFound(message_id.to_owned())
    }

    pub fn store(error: StoreError) -> Self {
        match error {
            StoreError::Timeout(_) | StoreError::Database(_) => {
                ApiError::Unavailable(error.to_string())
            }
            StoreError::Corrupt(_) => ApiError::Internal(error.to_string()),
        }
    }

    pub fn status(&self, style: Style) -> StatusCode {
        match (self, style) {
            (ApiError::Invalid(_), Style::FastApi) => StatusCode::UNPROCESSABLE_ENTITY,
            (ApiError::Invalid(_), Style::Standalone) => StatusCode::BAD_REQUEST,
            (ApiError::TraceNotFound(_) | ApiError::RouteNotFound, _) => StatusCode::NOT_FOUND,
            (ApiError::Unauthenticated(_), _) => StatusCode::UNAUTHORIZED,
            (ApiError::Forbidden(_), _) => StatusCode::FORBIDDEN,
            (ApiError::Unavailable(_) | ApiError::KeysUnavailable, _) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            (ApiError::QueryTooLong { .. }, _) => StatusCode::URI_TOO_LONG,
            (ApiError::Internal(_), _) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response in `style`. Causes of faults are not in it (they are logged where
    /// the error becomes a response).
    pub fn render(&self, style: Style) -> Response {
        let detail: Value = match self {
            ApiError::Invalid(errors) => match style {
                Style::FastApi => Value::Array(errors.iter().map(FieldError::fastapi).collect()),
                Style::Standalone => Value::String(
                    errors
                        .iter()
                        .map(FieldError::standalone)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            },
            ApiError::TraceNotFound(id) => {
                Value::String(format!("Job trace not found for message ID: {id}"))
            }
            ApiError::RouteNotFound => Value::String("Not Found".into()),
            ApiError::Unauthenticated(why) | ApiError::Forbidden(why) => {
                Value::String((*why).into())
            }
            ApiError::Unavailable(_) | ApiError::KeysUnavailable => {
                Value::String("Service temporarily unavailable; try again".into())
            }
            ApiError::QueryTooLong { bytes } => Value::String(format!(
                "The query string is too long: {bytes} bytes, the limit is {}",
                crate::params::MAX_QUERY_BYTES
            )),
            ApiError::Internal(_) => Value::String("Internal server error".into()),
        };
        let body = match style {
            Style::FastApi => json!({ "detail": detail }),
            Style::Standalone => json!({ "error": detail }),
        };
        let mut response = (self.status(style), Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if matches!(self, ApiError::Unauthenticated(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, ApiError::Unavailable(_) | ApiError::KeysUnavailable) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// FastAPI's error body: `{"detail": "..."}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = HTTPError)]
pub struct DetailBody {
    pub detail: String,
}

/// FastAPI's body for invalid parameters (422): `{"detail": [{type, loc, msg, input}]}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = HTTPValidationError)]
pub struct ValidationBody {
    pub detail: Vec<ValidationErrorDoc>,
}

/// One invalid parameter.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ValidationError)]
pub struct ValidationErrorDoc {
    /// pydantic's error type, e.g. `int_parsing`, `greater_than_equal`, `missing`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where: `["query", "limit"]`, `["path", "message_id"]`.
    pub loc: Vec<String>,
    pub msg: String,
    /// The offending value (cut to 64 characters), `null` when missing.
    pub input: Option<String>,
}

/// `{"error": "..."}`: the standalone server's error body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// Logs a fault's cause and hands the error on to the router's [`render`] layer in the
/// response's extensions; the FastAPI rendering stands until then, so an error outside any
/// styled router is still a complete answer.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Unavailable(cause) => tracing::warn!(error = %cause, "database unavailable"),
            // The key cache logs why the fetch failed; this line ties the 503 to it.
            ApiError::KeysUnavailable => {
                tracing::warn!("LINE token signing keys unavailable; token not verified")
            }
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            _ => {}
        }
        let mut response = self.render(Style::FastApi);
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware (`map_response_with_state`) that renders every [`ApiError`] of the routes
/// under it in `style`.
pub async fn render(State(style): State<Style>, mut response: Response) -> Response {
    match response.extensions_mut().remove::<ApiError>() {
        Some(error) => error.render(style),
        None => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(error: ApiError, style: Style) -> (StatusCode, Value) {
        let response = render(State(style), error.into_response()).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn invalid_parameters_in_both_styles() {
        let errors = vec![FieldError::new(
            Location::Query,
            "limit",
            "greater_than_equal",
            "Input should be greater than or equal to 1",
            Some("0"),
        )];
        let (status, value) = body(ApiError::Invalid(errors.clone()), Style::FastApi).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            value,
            json!({"detail": [{
                "type": "greater_than_equal",
                "loc": ["query", "limit"],
                "msg": "Input should be greater than or equal to 1",
                "input": "0",
            }]})
        );
        let (status, value) = body(ApiError::Invalid(errors), Style::Standalone).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            value,
            json!({"error": "Invalid parameter limit: Input should be greater than or equal to 1"})
        );
    }

    #[tokio::test]
    async fn faults_say_nothing_of_their_cause() {
        for (error, style, expected, secret) in [
            (
                ApiError::Internal("secret detail at 10.0.0.1".into()),
                Style::FastApi,
                StatusCode::INTERNAL_SERVER_ERROR,
                "secret",
            ),
            (
                ApiError::Unavailable("mongodb://user:pw@host".into()),
                Style::Standalone,
                StatusCode::SERVICE_UNAVAILABLE,
                "pw",
            ),
        ] {
            let (status, value) = body(error, style).await;
            assert_eq!(status, expected);
            assert!(!value.to_string().contains(secret), "{value}");
        }
    }

    #[tokio::test]
    async fn an_overlong_query_is_414_in_both_styles() {
        for (style, field) in [(Style::FastApi, "detail"), (Style::Standalone, "error")] {
            let (status, value) = body(ApiError::QueryTooLong { bytes: 9000 }, style).await;
            assert_eq!(status, StatusCode::URI_TOO_LONG);
            let text = value[field].as_str().unwrap();
            assert!(
                text.contains("too long") && text.contains("9000"),
                "{value}"
            );
        }
    }

    /// A sink for one test's log lines.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What answering `error` logs.
    fn logged(error: ApiError) -> String {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || drop(error.into_response()));
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn each_fault_is_logged_as_what_it_is() {
        let keys = logged(ApiError::KeysUnavailable);
        assert!(keys.contains("signing keys unavailable"), "{keys}");
        assert!(!keys.contains("database"), "{keys}");
        let database = logged(ApiError::Unavailable("timed out".into()));
        assert!(database.contains("database unavailable"), "{database}");
    }

    #[test]
    fn echoed_values_are_cut() {
        assert_eq!(echo("abc"), "abc");
        assert_eq!(echo(&"x".repeat(1000)).chars().count(), ECHO_CHARS + 1);
    }
}
