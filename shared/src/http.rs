//! The HTTP shell both functions share: start-up, health routes, request bounds and
//! graceful shutdown, in the manner of Google's Functions Framework.

mod limits;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use limits::{CONNECTION_BYTES, MAX_READ_BUFFER_BYTES};

use crate::config::{ConfigError, ConnectionLimits, DatabaseConfig, ServerConfig};
use crate::store::TraceStore;

/// Cloud Run allows 10 s between SIGTERM and SIGKILL; finish in-flight work well inside it.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(8);

/// What every function needs, read once at start-up.
pub struct Startup {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub store: TraceStore,
}

/// Installs logging, reads the shared configuration and builds the (lazy) store. When
/// `ENSURE_INDEXES=true` the index set is created in the background, so start-up never
/// waits for the database.
pub async fn startup(function: &'static str) -> Result<Startup, ConfigError> {
    crate::telemetry::init();
    let server = ServerConfig::from_env()?;
    let database = DatabaseConfig::from_env()?;
    let store = TraceStore::connect(&database)
        .await
        .map_err(|e| ConfigError(format!("MONGO_URI is not a usable connection string: {e}")))?;
    tracing::info!(
        function,
        store_write = database.store_write.as_str(),
        "store configured"
    );
    if database.ensure_indexes {
        let store = store.clone();
        tokio::spawn(async move {
            match store.ensure_indexes().await {
                Ok(()) => tracing::info!(function, "index set ensured"),
                Err(error) => tracing::error!(function, %error, "could not ensure the index set"),
            }
        });
    }
    Ok(Startup {
        server,
        database,
        store,
    })
}

/// Ends the process with one clear line when configuration is unusable.
pub fn exit_on_config_error(function: &str, error: ConfigError) -> ! {
    tracing::error!(function, "{error}");
    eprintln!("{function}: {error}");
    std::process::exit(2)
}

/// `GET /health` (the process is up) and `GET /ready` (the database answers), and the same
/// two as `/healthz` and `/readyz`. Cloud Run's front end answers every path ending in `z`
/// with its own 404, so callers from outside need the first pair; probes run inside the
/// container and may keep the second, as may anything already configured with it.
pub fn health_routes<S: Clone + Send + Sync + 'static>(store: TraceStore) -> Router<S> {
    let health = get(|| async { Json(json!({ "status": "ok" })) });
    let ready = get(readyz).with_state(store);
    Router::new()
        .route("/health", health.clone())
        .route("/healthz", health)
        .route("/ready", ready.clone())
        .route("/readyz", ready)
}

async fn readyz(State(store): State<TraceStore>) -> Response {
    match store.ready().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "database unavailable" })),
            )
                .into_response()
        }
    }
}

/// Resolves on SIGTERM (Cloud Run's stop) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Serves `router` with the default [`ConnectionLimits`]; see [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ConnectionLimits::default(), shutdown).await
}

/// Refusing a connection is cheap but not free (a socket and a few KiB for up to a
/// second): a flood past this many at once is closed without an answer.
const MAX_REFUSALS: usize = 1024;

/// How long accepting pauses after the process ran out of file descriptors or memory, so
/// that the loop does not spin while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` over HTTP/1.1 until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish for at most [`DRAIN_DEADLINE`]. Every connection is held to
/// `limits` (module `limits`); past `limits.max_connections` open connections a new one
/// is answered 503 with `Retry-After` and closed.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let graceful = GracefulShutdown::new();
    let trim = Arc::new(limits::Trim::new());
    let open =
        move |connections: &Semaphore| limits.max_connections - connections.available_permits();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                trim.opened(open(&connections));
                let connection =
                    limits::serve_connection(stream, router.clone(), limits, &graceful);
                let (connections, trim) = (connections.clone(), trim.clone());
                tokio::spawn(async move {
                    connection.await;
                    drop(permit);
                    trim.closed(open(&connections));
                });
            }
            Err(_) => {
                if let Ok(refusing) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        limits::refuse(stream).await;
                        drop(refusing);
                    });
                }
                tracing::debug!(
                    max_connections = limits.max_connections,
                    "connection bound reached; refused a connection"
                );
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline reached; exiting with requests still open");
    }
    Ok(())
}

/// Binds `0.0.0.0:$PORT` and serves until SIGTERM, with the configured limits.
pub async fn serve_on_port(function: &'static str, server: &ServerConfig, router: Router) {
    let port = server.port;
    let limits = server
        .limits()
        .unwrap_or_else(|error| exit_on_config_error(function, error));
    let listener = match TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(function, port, %error, "cannot listen");
            eprintln!("{function}: cannot listen on port {port}: {error}");
            std::process::exit(1);
        }
    };
    tracing::info!(
        function,
        port,
        header_read_timeout_seconds = limits.header_read_timeout.as_secs_f64(),
        body_read_timeout_seconds = limits.body_read_timeout.as_secs_f64(),
        idle_timeout_seconds = limits.idle_timeout.as_secs_f64(),
        max_connections = limits.max_connections,
        "listening"
    );
    if let Err(error) = serve_with(listener, router, limits, shutdown_signal()).await {
        tracing::error!(function, %error, "server failed");
        std::process::exit(1);
    }
    tracing::info!(function, "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both spellings of each route answer alike: `/health` like `/healthz`, and `/ready`
    /// like `/readyz` (here 503, as nothing listens where the database should be).
    #[tokio::test]
    async fn health_and_ready_answer_like_their_z_spellings() {
        let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = nobody.local_addr().unwrap().port();
        drop(nobody);
        let database: DatabaseConfig = crate::config::from_iter([
            (
                "MONGO_URI".to_string(),
                format!("mongodb://127.0.0.1:{dead_port}/?directConnection=true"),
            ),
            ("DB_TIMEOUT_SECONDS".to_string(), "0.3".to_string()),
        ])
        .unwrap();
        let store = TraceStore::connect(&database).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            health_routes(store),
            std::future::pending(),
        ));
        let client = reqwest::Client::new();
        let answer = |path: &'static str| {
            let request = client.get(format!("{base}{path}")).send();
            async move {
                let response = request.await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<serde_json::Value>().await.unwrap())
            }
        };
        let health = answer("/health").await;
        assert_eq!(health, (200, json!({ "status": "ok" })));
        assert_eq!(answer("/healthz").await, health);
        let ready = answer("/ready").await;
        assert_eq!(ready.0, 503, "{ready:?}");
        assert_eq!(ready.1["status"], "unavailable");
        assert_eq!(answer("/readyz").await, ready);
    }
}
