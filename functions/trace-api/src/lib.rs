//! `trace-api` as a library, so that tests run the real app on port 0. This file only
//! assembles the app: the two routers of the seed's path styles, each rendering errors in
//! its own style, beside health, the OpenAPI document and the status page.
//!
//! The read API of job traces, in both path styles of the seed:
//!
//! | route | module |
//! | --- | --- |
//! | `GET /api/v1/jobs/status/{message_id}`, `GET /job/status?message_id=` | [`routes::status`] |
//! | `GET /api/v1/jobs/user/{line_user_id}`, `GET /job/user?line_user_id=` | [`routes::user`] |
//! | `GET /api/v1/jobs/status/{message_id}/events` | [`routes::events`] |
//! | `GET /api/v1/jobs?stalled_for=`, `GET /api/v1/jobs/stats` (operators) | [`routes::ops`] |
//! | `GET /openapi.json`, `GET /healthz`, `GET /readyz`, `GET /health`, `GET /ready` | here and `job_trace::http` |
//! | `GET /` (status page), `GET /job-status.js` | [`routes::page`] |

pub mod auth;
pub mod config;
pub mod error;
pub mod etag;
pub mod line_auth;
pub mod params;
pub mod routes;
pub mod state;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, map_response_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use job_trace::http::health_routes;
use job_trace::TraceStore;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::ApiConfig;
pub use state::AppState;

use crate::config::Origins;
use crate::error::{ApiError, Style};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = Object, example = json!({"status": "ok"}))))]
#[allow(dead_code)]
async fn healthz_doc() {}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The database answers", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "The database does not answer", body = Object,
            example = json!({"status": "unavailable", "error": "database unavailable"}))))]
#[allow(dead_code)]
async fn readyz_doc() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI document of this API", body = Object)))]
#[allow(dead_code)]
async fn openapi_doc() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "trace-api",
        description = "Job traces of the Mansion Watch scraper: the seed's two path styles (FastAPI `/api/v1/...` with `{\"detail\"}` errors and 422, standalone `/job/...` with `{\"error\"}` errors and 400), ETag/304, long-poll and server-sent events.",
        license(name = "MIT")
    ),
    paths(healthz_doc, readyz_doc, openapi_doc),
    components(schemas(error::DetailBody, error::ValidationBody, error::ErrorBody)),
    modifiers(&BearerScheme, &HealthAliases)
)]
struct ApiDoc;

/// `/health` and `/ready` answer as `/healthz` and `/readyz` do (Cloud Run reserves paths
/// ending in `z`): the same operations under their own ids.
struct HealthAliases;

impl utoipa::Modify for HealthAliases {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (alias, of) in [("/health", "/healthz"), ("/ready", "/readyz")] {
            let Some(mut item) = openapi.paths.paths.get(of).cloned() else {
                continue;
            };
            if let Some(get) = item.get.as_mut() {
                get.operation_id = Some(format!("{}_doc", alias.trim_start_matches('/')));
            }
            openapi.paths.paths.insert(alias.into(), item);
        }
    }
}

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "API_AUTH=token: the shared API token; API_AUTH=line: a LINE ID token",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, generated from the handlers' annotations and the model.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api_router().split_for_parts().1;
    routes::docs::TraceExample.modify(&mut document);
    document
}

fn api_router() -> OpenApiRouter<AppState> {
    let fastapi = OpenApiRouter::new()
        .routes(routes!(routes::status::by_path))
        .routes(routes!(routes::events::stream))
        .routes(routes!(routes::user::by_path))
        .routes(routes!(routes::ops::jobs))
        .routes(routes!(routes::ops::stats));
    let standalone = OpenApiRouter::new()
        .routes(routes!(routes::status::by_query))
        .routes(routes!(routes::user::by_query));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", styled(fastapi, Style::FastApi))
        .nest("/job", styled(standalone, Style::Standalone))
        // `nest` leaves the prefix with a trailing slash to the router around it; it is
        // the standalone router's root all the same.
        .route(
            "/job/",
            any(route_not_found).layer(map_response_with_state(Style::Standalone, error::render)),
        )
}

/// Everything under `router`, its unknown paths included, answers errors in `style`.
/// Every route in it takes the same credentials: none (`API_AUTH=none`) or the bearer.
fn styled(mut router: OpenApiRouter<AppState>, style: Style) -> OpenApiRouter<AppState> {
    let operations = router.get_openapi_mut().paths.paths.values_mut();
    for operation in operations.filter_map(|item| item.get.as_mut()) {
        operation.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
    router
        .fallback(route_not_found)
        .layer(map_response_with_state(style, error::render))
}

fn cors(origins: &Origins) -> CorsLayer {
    let allow_origin = match origins {
        Origins::Any => AllowOrigin::any(),
        Origins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::IF_NONE_MATCH,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::ETAG])
        .max_age(Duration::from_secs(600))
}

/// Unknown routes: 404, in the style of the router they fell through.
async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// One log line per request (route template, not the ids in it), and `nosniff`. Only
/// server faults log at the default level: what a line needs is kept cheaply (the route
/// template is shared, the method a constant) and formatted only when it is written.
async fn log_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let status = response.status().as_u16();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    // The macros evaluate their fields only when the level is on.
    if status >= 500 {
        let micros = started.elapsed().as_micros() as u64;
        tracing::warn!(%method, route, status, micros, "request");
    } else {
        tracing::debug!(%method, route, status, micros = started.elapsed().as_micros() as u64, "request");
    }
    response
}

/// The whole HTTP surface of the function.
pub fn app(store: TraceStore, config: ApiConfig) -> Router {
    let state = AppState::new(store.clone(), &config);
    let (api, _) = api_router().with_state(state).split_for_parts();
    let document: Arc<[u8]> = serde_json::to_vec(&openapi())
        .expect("the OpenAPI document serializes")
        .into();
    let serve_document = get(move || {
        let document = document.clone();
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                Body::from(document.to_vec()),
            )
                .into_response()
        }
    });
    let router = Router::new()
        .merge(api)
        .merge(health_routes(store))
        .route("/openapi.json", serve_document)
        .merge(routes::page::router())
        .fallback(route_not_found)
        .layer(middleware::from_fn(log_requests))
        .layer(cors(&config.origins));
    job_trace::request::with_trace_correlation(router, job_trace::request::project_from_env())
}
