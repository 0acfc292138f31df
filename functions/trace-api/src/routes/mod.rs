//! One module per route family; what they share is here: what a request starts from,
//! its id checked with the rest of its query, reading a trace the caller may see, and
//! rendering it with its ETag.

pub mod docs;
pub mod events;
pub mod ops;
pub mod page;
pub mod status;
pub mod user;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, RawQuery};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use job_trace::model::TraceDocument;
use job_trace::MessageId;

use crate::auth::Principal;
use crate::error::{ApiError, FieldError, Location};
use crate::etag;
use crate::params::{self, Checks, Query};
use crate::state::AppState;

/// A trace rendered as the seed's JSON, with its tag.
pub struct Rendered {
    pub body: Vec<u8>,
    pub etag: String,
    pub terminal: bool,
}

impl Rendered {
    pub fn of(doc: &TraceDocument, include_history: bool) -> Result<Rendered, serde_json::Error> {
        let body = serde_json::to_vec(&doc.view(include_history))?;
        Ok(Rendered {
            etag: etag::of(&body),
            body,
            terminal: doc.status.is_terminal(),
        })
    }

    fn tag_header(&self) -> HeaderValue {
        HeaderValue::from_str(&self.etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
    }

    /// 200 with the body, `ETag` and `Cache-Control: no-cache`.
    pub fn ok(self) -> Response {
        let tag = self.tag_header();
        let mut response = Response::new(Body::from(self.body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ETAG, tag);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }

    /// 304 with the tag and no body.
    pub fn not_modified(self) -> Response {
        (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, self.tag_header()),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
        )
            .into_response()
    }
}

/// Reads a trace and renders it; `None` when it does not exist or the caller may not see
/// it (another user's trace is indistinguishable from a missing one).
pub async fn read(
    state: &AppState,
    principal: &Principal,
    message_id: &MessageId,
    include_history: bool,
) -> Result<Option<Rendered>, ApiError> {
    let Some(doc) = state.store.get(message_id).await.map_err(ApiError::store)? else {
        return Ok(None);
    };
    if !principal.may_see(doc.line_user_id.as_deref()) {
        return Ok(None);
    }
    // A stored trace that cannot be shown is our fault, not the database's absence.
    doc.renderable().map_err(|error| {
        ApiError::Internal(format!(
            "stored trace {message_id} cannot be rendered: {error}"
        ))
    })?;
    Rendered::of(&doc, include_history)
        .map(Some)
        .map_err(|error| ApiError::Internal(format!("rendering a trace: {error}")))
}

/// What every job route starts from: the state, who asks, and the raw query string.
pub struct Call {
    pub state: AppState,
    pub principal: Principal,
    pub query: Option<String>,
}

impl FromRequestParts<AppState> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Call, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let Ok(RawQuery(query)) = RawQuery::from_request_parts(parts, state).await;
        Ok(Call {
            state: state.clone(),
            principal,
            query,
        })
    }
}

/// A route's id before it is checked: in the path (FastAPI style) or the query
/// (standalone style); where it stands goes into its error.
pub struct RawId {
    value: Result<String, FieldError>,
    location: Location,
}

impl RawId {
    /// A value axum cannot decode (not UTF-8) is the client's mistake like any other.
    pub fn in_path(name: &'static str, path: Result<Path<String>, PathRejection>) -> RawId {
        let value = path.map(|Path(value)| value).map_err(|rejection| {
            FieldError::new(
                Location::Path,
                name,
                "string_type",
                format!("Input should be a valid string: {}", rejection.body_text()),
                None,
            )
        });
        RawId {
            value,
            location: Location::Path,
        }
    }

    pub fn in_query(name: &'static str, query: Option<&str>) -> RawId {
        RawId {
            value: params::required(query, name),
            location: Location::Query,
        }
    }
}

/// Checks a route's id and the rest of its query together, so that every mistake is
/// reported at once, the id's first.
pub fn parse_with_id<I, T>(
    query: Option<&str>,
    id: RawId,
    check_id: fn(Location, Option<&str>) -> Result<I, FieldError>,
    rest: impl FnOnce(&mut Checks, &Query) -> Option<T>,
) -> Result<(I, T), ApiError> {
    Checks::run(query, |checks, query| {
        let id = checks.take(id.value.and_then(|raw| check_id(id.location, Some(&raw))));
        let rest = rest(checks, query);
        Some((id?, rest?))
    })
}
