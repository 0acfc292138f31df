//! The worker's Python reporter (`clients/python`) end to end: the real
//! `google-cloud-pubsub` Python client publishes through the Pub/Sub emulator, ordered push
//! subscriptions deliver to trace-writer, and pytest reads the traces back from trace-api
//! over the same SecantusDB database. This test starts those and runs
//! `.venv/bin/python -m pytest clients/python/tests` against them; pytest's own tests
//! say what is checked.

mod api_common;
mod writer_common;

use std::process::Command;

use job_trace_tests::pubsub::{emulator, Emulator, PushOptions, PROJECT};
use job_trace_tests::{ensure_venv, fresh_store, project_root};
use trace_api::ApiConfig;

const EVENTS_TOPIC: &str = "job-trace-events";
const JOBS_TOPIC: &str = "scrape-jobs";

/// `N passed` from pytest's closing line, when nothing failed, errored or was skipped
/// (warnings may stand beside it).
fn all_passed(summary: &str) -> Option<u64> {
    let last = summary.lines().rev().find(|line| !line.trim().is_empty())?;
    let counts = last.trim().trim_matches('=').trim().split(" in ").next()?;
    let mut passed = None;
    for part in counts.split(", ") {
        let (count, word) = part.split_once(' ')?;
        let count: u64 = count.parse().ok()?;
        match word {
            "passed" => passed = Some(count),
            "warning" | "warnings" => {}
            _ => return None,
        }
    }
    passed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_reporter_reports_every_step_through_the_emulator() {
    let Some(emulator) = emulator("the_python_reporter_reports_every_step_through_the_emulator")
    else {
        return;
    };
    let python = ensure_venv().parent().expect(".venv/bin").join("python");
    let store = fresh_store("python_reporter").await;
    let writer = writer_common::Writer::start_on(store.clone()).await;
    let api = api_common::Api::start_on(store, ApiConfig::default()).await;

    let endpoint = writer.url("/");
    emulator.create_topic(JOBS_TOPIC).await;
    emulator.create_topic(EVENTS_TOPIC).await;
    emulator
        .create_push_subscription(
            "scrape-jobs-trace",
            JOBS_TOPIC,
            Some(&endpoint),
            PushOptions::default(),
        )
        .await;
    emulator
        .create_push_subscription(
            "job-trace-events-push",
            EVENTS_TOPIC,
            Some(&endpoint),
            PushOptions {
                ordering: true,
                ..PushOptions::default()
            },
        )
        .await;

    let mut command = Command::new(python);
    command
        .current_dir(project_root())
        .args(["-m", "pytest", "clients/python/tests", "-q", "-rA"])
        // No .pytest_cache or __pycache__ left in the source tree by `make test`.
        .args(["-p", "no:cacheprovider"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env(
            "PUBSUB_EMULATOR_HOST",
            format!("127.0.0.1:{}", emulator.port),
        )
        .env("JOBTRACE_PROJECT", PROJECT)
        .env("JOBTRACE_EVENTS_TOPIC", EVENTS_TOPIC)
        .env("JOBTRACE_JOBS_TOPIC", JOBS_TOPIC)
        .env("JOBTRACE_API", &api.base);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("pytest's thread")
        .expect("run pytest in .venv");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let pushes = writer
        .tally
        .pushes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        output.status.success(),
        "pytest failed ({}); trace-writer received {pushes} pushes; emulator topic {}",
        output.status,
        Emulator::topic_path(EVENTS_TOPIC)
    );
    let passed = all_passed(&stdout)
        .unwrap_or_else(|| panic!("pytest's closing line is not `N passed` alone: {stdout}"));
    assert!(passed > 0 && pushes > 0, "{passed} tests, {pushes} pushes");
}

#[test]
fn only_a_clean_pytest_summary_counts_as_passed() {
    assert_eq!(all_passed("...\n12 passed in 3.20s\n"), Some(12));
    assert_eq!(all_passed("1 failed, 11 passed in 3.20s"), None);
    assert_eq!(all_passed("11 passed, 1 skipped in 3.20s"), None);
    assert_eq!(all_passed("12 passed, 3 warnings in 3.20s"), Some(12));
    assert_eq!(all_passed("===== 12 passed in 3.20s ====="), Some(12));
    assert_eq!(all_passed("12 passed, 1 error in 3.20s"), None);
    assert_eq!(all_passed("no tests ran in 0.01s"), None);
    assert_eq!(all_passed(""), None);
}
