//! One module per route family; what they share is here: reading a trace the caller
//! may see, and rendering it with its ETag.

pub mod docs;
pub mod events;
pub mod page;
pub mod status;
pub mod user;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use job_trace::model::TraceDocument;
use job_trace::MessageId;

use crate::auth::Principal;
use crate::error::{ApiError, FieldError, Location};
use crate::etag;
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
    Rendered::of(&doc, include_history)
        .map(Some)
        .map_err(|error| ApiError::Internal(format!("rendering a trace: {error}")))
}

/// A path parameter, decoded; a value axum cannot decode (not UTF-8) is the client's
/// mistake like any other.
pub fn path_value(
    name: &'static str,
    path: Result<Path<String>, PathRejection>,
) -> Result<String, FieldError> {
    path.map(|Path(value)| value).map_err(|rejection| {
        FieldError::new(
            Location::Path,
            name,
            "string_type",
            format!("Input should be a valid string: {}", rejection.body_text()),
            None,
        )
    })
}
