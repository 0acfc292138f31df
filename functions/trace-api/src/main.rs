//! `trace-api`: a thin shell over `job-trace`.

use job_trace::http::{exit_on_config_error, serve_on_port, startup};
use trace_api::ApiConfig;

const FUNCTION: &str = "trace-api";

// One thread: a request here is mostly a wait for the database, and with a second worker
// every wake-up crossed threads (futex, context switch); README "Performance" measures it.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let startup = startup(FUNCTION)
        .await
        .unwrap_or_else(|error| exit_on_config_error(FUNCTION, error));
    let config =
        ApiConfig::from_env().unwrap_or_else(|error| exit_on_config_error(FUNCTION, error));
    tracing::info!(function = FUNCTION, ?config, "configured");
    let router = trace_api::app(startup.store.clone(), config);
    serve_on_port(FUNCTION, &startup.server, router).await;
}
