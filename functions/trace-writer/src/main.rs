//! `trace-writer`: a thin shell over `job-trace`.

use job_trace::http::{exit_on_config_error, serve_on_port, startup};

const FUNCTION: &str = "trace-writer";

#[tokio::main]
async fn main() {
    let startup = startup(FUNCTION)
        .await
        .unwrap_or_else(|error| exit_on_config_error(FUNCTION, error));
    let router = trace_writer::app(startup.store.clone());
    serve_on_port(FUNCTION, startup.server.port, router).await;
}
