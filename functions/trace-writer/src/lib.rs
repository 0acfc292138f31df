//! `trace-writer` as a library, so that tests run the real app on port 0.

use axum::Router;
use job_trace::http::health_routes;
use job_trace::TraceStore;

/// The whole HTTP surface of the function.
pub fn app(store: TraceStore) -> Router {
    health_routes(store)
}
