//! The HTTP shell both functions share: start-up, health routes, request bounds and
//! graceful shutdown, in the manner of Google's Functions Framework.

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{ConfigError, DatabaseConfig, ServerConfig};
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
    let server: ServerConfig = crate::config::from_env()?;
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

/// `GET /healthz` (the process is up) and `GET /readyz` (the database answers).
pub fn health_routes<S: Clone + Send + Sync + 'static>(store: TraceStore) -> Router<S> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz).with_state(store))
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

/// Serves `router` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for at most [`DRAIN_DEADLINE`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _ = stopping_tx.send(());
    });
    let deadline = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(DRAIN_DEADLINE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        _ = deadline => {
            tracing::warn!("drain deadline reached; exiting with requests still open");
            Ok(())
        }
    }
}

/// Binds `0.0.0.0:$PORT` and serves until SIGTERM.
pub async fn serve_on_port(function: &'static str, port: u16, router: Router) {
    let listener = match TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(function, port, %error, "cannot listen");
            eprintln!("{function}: cannot listen on port {port}: {error}");
            std::process::exit(1);
        }
    };
    tracing::info!(function, port, "listening");
    if let Err(error) = serve(listener, router, shutdown_signal()).await {
        tracing::error!(function, %error, "server failed");
        std::process::exit(1);
    }
    tracing::info!(function, "stopped");
}
