//! `trace-writer`: a thin shell over `job-trace`.

use job_trace::http::{exit_on_config_error, serve_on_port, startup};
use trace_writer::{PushAuth, WriterConfig};

const FUNCTION: &str = "trace-writer";

// One thread: a request here is mostly a wait for the database, and with a second worker
// every wake-up crossed threads (futex, context switch); README "Performance" measures it.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    job_trace::telemetry::init();
    let config =
        WriterConfig::from_env().unwrap_or_else(|error| exit_on_config_error(FUNCTION, error));
    let startup = startup(FUNCTION)
        .await
        .unwrap_or_else(|error| exit_on_config_error(FUNCTION, error));
    match &config.auth {
        PushAuth::None => tracing::warn!(
            function = FUNCTION,
            "PUSH_AUTH=none: pushes are accepted WITHOUT authentication; for local runs and \
             the Pub/Sub emulator only, never in production"
        ),
        PushAuth::Oidc(oidc) => tracing::info!(
            function = FUNCTION,
            audience = %oidc.audience,
            accounts = oidc.service_accounts.len(),
            "pushes must carry a Google-signed OIDC token"
        ),
    }
    let router = trace_writer::app(startup.store.clone(), config);
    serve_on_port(FUNCTION, &startup.server, router).await;
}
