//! Key-set (JWKS) endpoints on loopback for both token verifiers' tests: one whose body
//! can change, that can fail and counts its hits, and one that never stops sending.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;

use crate::apps::serve;

/// A JWKS endpoint: its body can change, it can fail (500), and it counts hits.
pub struct Jwks {
    pub url: String,
    pub keys: Arc<Mutex<Value>>,
    pub hits: Arc<AtomicUsize>,
    pub failing: Arc<AtomicBool>,
}

impl Jwks {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

/// Serves `keys` (a `{"keys": [...]}` set) with `Cache-Control: max-age=21600`.
pub async fn serve_jwks(keys: Value) -> Jwks {
    let body = Arc::new(Mutex::new(keys));
    let hits = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (b, h, f) = (body.clone(), hits.clone(), failing.clone());
    let router = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let (b, h, f) = (b.clone(), h.clone(), f.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
                }
                (
                    [("cache-control", "public, max-age=21600")],
                    axum::Json(b.lock().unwrap().clone()),
                )
                    .into_response()
            }
        }),
    );
    let served = serve(router).await;
    Jwks {
        url: served.url("/certs"),
        keys: body,
        hits,
        failing,
    }
}

/// A key set that never ends (chunked, no length): what a hostile or broken endpoint
/// sends. Returns its URL and how many bytes the server has handed to the connection.
pub async fn serve_endless_jwks() -> (String, Arc<AtomicU64>) {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let router = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                let chunk = Bytes::from(vec![b' '; 64 * 1024]);
                let head = futures::stream::once(async { Bytes::from_static(b"{\"keys\": [") });
                let padding = futures::stream::repeat(chunk);
                let body = futures::StreamExt::map(
                    futures::StreamExt::chain(head, padding),
                    move |bytes| {
                        counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        Ok::<_, std::io::Error>(bytes)
                    },
                );
                (
                    [("content-type", "application/json")],
                    Body::from_stream(body),
                )
            }
        }),
    );
    let served = serve(router).await;
    (served.url("/certs"), sent)
}
