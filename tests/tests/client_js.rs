//! The JavaScript client `clients/js/job-status.js` under Node against a live trace-api on
//! a real SecantusDB: every transition seen once and in order by server-sent events and
//! by long-poll, a failed job, the fallback from a stream a proxy breaks to long-poll, a
//! job recorded only after following began, and every error surfacing clearly.
//!
//! The script (`clients/js/test/follow-live.mjs`) prints a line per update; this side
//! changes the trace only after the script has reported the previous state, so that each
//! change must reach it as a change. Without `node` the tests say NOT RUN (and fail under
//! `CI=true`).

mod api_common;

use std::time::{Duration, Instant};

use api_common::*;
use job_trace::model::{JobStatus, JobType};
use job_trace::rules::Change;
use job_trace_tests::node::{node, NodeScript};
use job_trace_tests::{free_port, project_root};
use trace_api::ApiConfig;

const LINE: Duration = Duration::from_secs(15);

struct Case {
    test: &'static str,
    transport: &'static str,
    /// A proxy that answers the event stream with an HTML page.
    break_sse: bool,
    last: JobStatus,
    /// Record the job only after the script has started following it.
    late: bool,
    /// The first `transport …` line the script must print.
    announced: &'static str,
    /// The transport every update must have come by.
    updates_by: &'static str,
}

fn updates(transcript: &[String]) -> Vec<&str> {
    transcript
        .iter()
        .filter_map(|line| line.strip_prefix("update "))
        .collect()
}

async fn follow(case: Case) {
    let Some(node) = node(case.test) else {
        return;
    };
    let api = Api::start(case.test, ApiConfig::default()).await;
    // Slash, space and non-ASCII: the client must encode the id.
    let id = format!("{} job/1 ü", case.test);
    let user = "Ujsclient";
    let queued_change = queued(&id, user, JobType::PropertyScrape, 0);
    if !case.late {
        apply_all(&api.store, std::slice::from_ref(&queued_change)).await;
    }
    let expected = ["queued", "processing", "processing 3/9", case.last.as_str()];
    let expect = expected.join(",");
    let script = project_root().join("clients/js/test/follow-live.mjs");
    let mut run = NodeScript::spawn(
        &node,
        &script,
        &[
            ("SCENARIO", "follow"),
            ("API_BASE", &api.base),
            ("MESSAGE_ID", &id),
            ("TRANSPORT", case.transport),
            ("EXPECT", &expect),
            ("EXPECT_TRANSPORT", case.updates_by),
            ("BREAK_SSE", if case.break_sse { "1" } else { "0" }),
        ],
    );
    run.expect_line(|line| line == "start", LINE).await;
    if case.late {
        run.expect_line(|line| line == "retry not_recorded", LINE)
            .await;
        apply_all(&api.store, &[queued_change]).await;
    }
    run.expect_line(|line| line == "update queued", LINE).await;

    let progress = Change::progress(mid(&id), 1, at(7), 3, 9, None);
    for (change, update) in [
        (event(&id, JobStatus::Processing, 5), expected[1]),
        (progress, expected[2]),
        (event(&id, case.last, 9), expected[3]),
    ] {
        api.store.apply(&change).await.expect("apply");
        let written = Instant::now();
        let wanted = format!("update {update}");
        run.expect_line(|line| line == wanted, LINE).await;
        // Both transports are woken by the change itself, not by a timer of the client
        // (the script's long-poll waits 20 s).
        let lag = written.elapsed();
        assert!(
            lag < Duration::from_secs(4),
            "{update} reached the client {lag:?} after it was written ({})",
            case.test
        );
    }

    let (status, transcript, stderr) = run.finish(LINE).await;
    assert!(
        status.success(),
        "{}: node failed ({status}):\n{}\n{stderr}",
        case.test,
        transcript.join("\n")
    );
    assert_eq!(updates(&transcript), expected, "{transcript:?}");
    assert_eq!(
        transcript.last().map(String::as_str),
        Some(format!("done {}", case.last).as_str())
    );
    let transports: Vec<&String> = transcript
        .iter()
        .filter(|line| line.starts_with("transport "))
        .collect();
    assert!(
        transports
            .first()
            .is_some_and(|line| line.starts_with(case.announced)),
        "{}: expected {:?} first, got {transports:?}",
        case.test,
        case.announced
    );
    assert_eq!(
        transports.len(),
        1,
        "one transport, never switched back: {transports:?}"
    );
}

#[tokio::test]
async fn server_sent_events_deliver_every_transition_in_order() {
    follow(Case {
        test: "js_sse",
        transport: "sse",
        break_sse: false,
        last: JobStatus::Success,
        late: false,
        announced: "transport sse connected",
        updates_by: "sse",
    })
    .await;
}

#[tokio::test]
async fn long_poll_delivers_every_transition_in_order() {
    follow(Case {
        test: "js_poll",
        transport: "poll",
        break_sse: false,
        last: JobStatus::Success,
        late: false,
        announced: "transport poll requested",
        updates_by: "poll",
    })
    .await;
}

#[tokio::test]
async fn a_failed_job_ends_following_with_its_error_and_history() {
    follow(Case {
        test: "js_failed",
        transport: "auto",
        break_sse: false,
        last: JobStatus::Failed,
        late: false,
        announced: "transport sse connected",
        updates_by: "sse",
    })
    .await;
}

#[tokio::test]
async fn auto_falls_back_to_long_poll_when_a_proxy_breaks_the_stream() {
    follow(Case {
        test: "js_fallback",
        transport: "auto",
        break_sse: true,
        last: JobStatus::Failed,
        late: false,
        announced: "transport poll event stream unavailable (content type \"text/html\")",
        updates_by: "poll",
    })
    .await;
}

#[tokio::test]
async fn a_job_recorded_after_following_began_is_waited_for() {
    for (test, transport, announced) in [
        ("js_late_sse", "sse", "transport sse connected"),
        ("js_late_poll", "poll", "transport poll requested"),
    ] {
        follow(Case {
            test,
            transport,
            break_sse: false,
            last: JobStatus::Success,
            late: true,
            announced,
            updates_by: transport,
        })
        .await;
    }
}

#[tokio::test]
async fn refusals_unknown_jobs_aborts_and_network_errors_surface_clearly() {
    let test = "js_errors";
    let Some(node) = node(test) else {
        return;
    };
    let token = "js-client-token-0123456789";
    let config = ApiConfig::from_vars([("API_AUTH", "token"), ("API_TOKEN", token)])
        .expect("token configuration");
    let api = Api::start(test, config).await;
    let id = "js errors/1";
    let user = "Ujserrors";
    apply_all(&api.store, &[queued(id, user, JobType::PropertyScrape, 0)]).await;
    let closed_port = free_port().to_string();
    let started = Instant::now();
    let run = NodeScript::spawn(
        &node,
        &project_root().join("clients/js/test/follow-live.mjs"),
        &[
            ("SCENARIO", "errors"),
            ("API_BASE", &api.base),
            ("MESSAGE_ID", id),
            ("LINE_USER", user),
            ("TOKEN", token),
            ("CLOSED_PORT", &closed_port),
        ],
    );
    let (status, transcript, stderr) = run.finish(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "node failed ({status}):\n{}\n{stderr}",
        transcript.join("\n")
    );
    let mut expected = Vec::new();
    for transport in ["sse", "poll", "auto"] {
        for check in ["not_recorded", "unauthorized", "abort"] {
            expected.push(format!("checked {check} {transport}"));
        }
    }
    expected.extend(["checked network", "checked helpers", "done errors"].map(String::from));
    assert_eq!(transcript, expected);
    eprintln!("js_errors: {:?}", started.elapsed());
}

#[tokio::test]
async fn the_event_stream_parser_passes_its_unit_tests() {
    let Some(node) = node("js_parser") else {
        return;
    };
    let output = std::process::Command::new(node)
        .arg("--test")
        .arg(project_root().join("clients/js/test/event-parser.test.mjs"))
        .output()
        .expect("run node --test");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let passed = text
        .lines()
        .find_map(|line| line.strip_prefix("# pass "))
        .and_then(|count| count.trim().parse::<u32>().ok());
    assert!(passed.is_some_and(|count| count >= 5), "{text}");
    assert!(text.lines().any(|line| line == "# fail 0"), "{text}");
}
