//! `GET /`: a status page for people, and `GET /job-status.js`: the JavaScript client it
//! is built on, which frontends copy (the same file, `clients/js/job-status.js`).
//!
//! Everything is compiled into the binary: no build step, no external assets, so the
//! page works wherever trace-api runs. The Content-Security-Policy allows only this
//! origin's own files (hence no inline script or style), and the API is fetched from the
//! same origin. Assets are revalidated on every load (`no-cache` with an ETag), so a new
//! deployment is picked up at once while an unchanged file costs a 304.
//!
//! These routes are not part of the OpenAPI document: they are not API.

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;

use crate::etag;

/// The page's policy: only its own files and its own API; no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Asset {
        Asset {
            etag: etag::of(body.as_bytes()),
            body,
            content_type,
        }
    }

    fn respond(&self, headers: &HeaderMap) -> Response {
        let tag =
            HeaderValue::from_str(&self.etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        let common = [
            (header::ETAG, tag),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ];
        let unchanged =
            etag::if_none_match(headers).is_some_and(|tags| etag::none_match(&tags, &self.etag));
        if unchanged {
            return (StatusCode::NOT_MODIFIED, common).into_response();
        }
        (
            common,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            )],
            self.body,
        )
            .into_response()
    }
}

/// An asset compiled in from `path` (relative to this file).
macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        LazyLock::new(|| Asset::new(include_str!($path), $content_type))
    };
}

static INDEX: LazyLock<Asset> = asset!("../../static/index.html", "text/html; charset=utf-8");
static STYLE: LazyLock<Asset> = asset!("../../static/status-page.css", "text/css; charset=utf-8");
static SCRIPT: LazyLock<Asset> = asset!(
    "../../static/status-page.js",
    "text/javascript; charset=utf-8"
);
/// One file serves frontends that copy it and this page that imports it.
static CLIENT: LazyLock<Asset> = asset!(
    "../../../../clients/js/job-status.js",
    "text/javascript; charset=utf-8"
);

fn serve<S: Clone + Send + Sync + 'static>(asset: &'static LazyLock<Asset>) -> MethodRouter<S> {
    get(move |headers: HeaderMap| async move { asset.respond(&headers) })
}

/// The page and its assets.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", serve(&INDEX))
        .route("/status-page.css", serve(&STYLE))
        .route("/status-page.js", serve(&SCRIPT))
        .route("/job-status.js", serve(&CLIENT))
}
