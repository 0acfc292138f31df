//! `jobtrace sweep` end to end: jobs pushed to trace-writer, one left to stall, found by
//! trace-api's listing, swept by the built binary, failed for the frontend, and then
//! overridden by the worker's late success.

use std::process::Output;
use std::time::Duration;

use job_trace::TraceStore;
use job_trace_tests::apps::{serve, Served};
use job_trace_tests::{unique_name, Database};
use serde_json::Value;
use tokio::process::Command;
use trace_api::ApiConfig;
use trace_writer::WriterConfig;

const BINARY: &str = env!("CARGO_BIN_EXE_jobtrace");

struct Stack {
    database: String,
    uri: String,
    writer: Served,
    api: Served,
}

impl Stack {
    async fn start() -> Stack {
        let config = Database::shared().config(&unique_name("sweep"));
        let store = TraceStore::connect(&config).await.expect("store");
        let writer = serve(trace_writer::app(
            store.clone(),
            WriterConfig::unauthenticated(),
        ))
        .await;
        let api = serve(trace_api::app(store, ApiConfig::default())).await;
        Stack {
            database: config.mongo_database,
            uri: config.mongo_uri,
            writer,
            api,
        }
    }

    /// `jobtrace ARGS`, posting to this stack's trace-writer and reading its database.
    async fn jobtrace(&self, args: &[&str]) -> Output {
        let mut command = Command::new(BINARY);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MONGO_URI", &self.uri)
            .env("MONGO_DATABASE", &self.database)
            .args(["--writer", &self.writer.base, "--api", &self.api.base])
            .args(args)
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .unwrap_or_else(|_| panic!("jobtrace {args:?} did not finish in 120 s"))
            .expect("run jobtrace");
        assert!(
            output.status.success(),
            "jobtrace {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    async fn enqueue(&self, user: &str) -> String {
        let output = self
            .jobtrace(&[
                "enqueue",
                "--url",
                "https://suumo.jp/ms/chuko/nc_1/",
                "--user",
                user,
            ])
            .await;
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    async fn get(&self, path: &str) -> Value {
        let response = reqwest::get(self.api.url(path)).await.expect("trace-api");
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("JSON")
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_stalled_job_is_found_swept_and_then_overridden_by_a_late_success() {
    let stack = Stack::start().await;
    let stalled = stack.enqueue("Ualice").await;
    stack.jobtrace(&["report", &stalled, "processing"]).await;
    let finished = stack.enqueue("Ubob").await;
    stack.jobtrace(&["report", &finished, "processing"]).await;
    stack.jobtrace(&["report", &finished, "success"]).await;
    let fresh = stack.enqueue("Ubob").await;
    // Three seconds of silence for the first job; the last one reports meanwhile.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    stack.jobtrace(&["report", &fresh, "processing"]).await;

    let listed = stack.get("/api/v1/jobs?stalled_for=2").await;
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [stalled.as_str()], "{listed}");
    eprintln!("listed: {listed}");

    let dry = stdout(&stack.jobtrace(&["sweep", "--stalled-for", "2s"]).await);
    eprintln!("jobtrace sweep --stalled-for 2s\n{dry}");
    assert!(
        dry.contains(&format!(
            "would sweep {stalled} (processing, attempt 1, user Ualice"
        )),
        "{dry}"
    );
    assert!(dry.contains("dry run: nothing was written"), "{dry}");
    assert!(dry.contains("would sweep: 1"), "{dry}");
    let status = stack.get(&format!("/api/v1/jobs/status/{stalled}")).await;
    assert_eq!(status["status"], "processing", "a dry run writes nothing");

    let applied = stdout(
        &stack
            .jobtrace(&["sweep", "--stalled-for", "2s", "--apply"])
            .await,
    );
    eprintln!("jobtrace sweep --stalled-for 2s --apply\n{applied}");
    assert!(
        applied.contains(&format!("swept {stalled} (processing")),
        "{applied}"
    );
    assert!(applied.contains("swept: 1"), "{applied}");
    let swept = stack
        .get(&format!("/api/v1/jobs/status/{stalled}?include=history"))
        .await;
    assert_eq!(swept["status"], "failed");
    let error = swept["error"].as_str().unwrap();
    assert!(
        error.starts_with("swept: nothing recorded for over 2s (last at "),
        "{error}"
    );
    assert_eq!(
        swept["history"].as_array().unwrap().last().unwrap()["error"],
        error
    );
    for other in [&finished, &fresh] {
        let trace = stack.get(&format!("/api/v1/jobs/status/{other}")).await;
        assert_ne!(trace["status"], "failed", "{other} was not stalled");
    }
    let again = stdout(
        &stack
            .jobtrace(&["sweep", "--stalled-for", "2s", "--apply"])
            .await,
    );
    assert!(
        !again.contains(&stalled),
        "nothing stalled any more: {again}"
    );

    // The worker was alive after all: its success wins over the sweep.
    stack
        .jobtrace(&["report", &stalled, "success", "--result", r#"{"rooms": 3}"#])
        .await;
    let done = stack.get(&format!("/api/v1/jobs/status/{stalled}")).await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["error"], Value::Null);
    assert_eq!(done["result"], serde_json::json!({"rooms": 3}));
}
