//! `jobtrace` as a user runs it: the built binary against trace-writer and trace-api
//! served on a real SecantusDB database, through the real Pub/Sub emulator (each test in
//! a project of its own, so that their topics do not meet) or straight to trace-writer.

use std::process::{Output, Stdio};
use std::time::Duration;

use job_trace::ids::LineUserId;
use job_trace::model::JobStatus;
use job_trace::store::UserQuery;
use job_trace::TraceStore;
use job_trace_tests::apps::{serve, Served};
use job_trace_tests::pubsub::{emulator, Emulator};
use job_trace_tests::{free_port, fresh_store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use trace_api::ApiConfig;
use trace_writer::WriterConfig;

const BINARY: &str = env!("CARGO_BIN_EXE_jobtrace");

struct Stack {
    store: TraceStore,
    writer: Served,
    api: Served,
}

impl Stack {
    async fn start(prefix: &str) -> Stack {
        Stack::start_with(prefix, WriterConfig::unauthenticated()).await
    }

    async fn start_with(prefix: &str, writer: WriterConfig) -> Stack {
        let store = fresh_store(prefix).await;
        let writer = serve(trace_writer::app(store.clone(), writer)).await;
        let api = serve(trace_api::app(store.clone(), ApiConfig::default())).await;
        Stack { store, writer, api }
    }

    /// `jobtrace` with only `args` telling it where things are (nothing from our
    /// environment, where a PUBSUB_EMULATOR_HOST might be set).
    fn jobtrace(&self, target: &[String], args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        if !args.contains(&"--api") {
            command.args(["--api", &self.api.base]);
        }
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(target)
            .args(args)
            .kill_on_drop(true);
        command
    }

    async fn run(&self, target: &[String], args: &[&str]) -> Output {
        let output = tokio::time::timeout(
            Duration::from_secs(120),
            self.jobtrace(target, args).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("jobtrace {args:?} did not finish in 120 s"))
        .expect("run jobtrace");
        output
    }

    fn direct(&self) -> Vec<String> {
        vec!["--writer".into(), self.writer.base.clone()]
    }
}

fn via_emulator(emulator: &Emulator, project: &str) -> Vec<String> {
    vec![
        "--emulator".into(),
        format!("127.0.0.1:{}", emulator.port),
        "--project".into(),
        project.into(),
    ]
}

/// A stack whose emulator project (its own) is provisioned to push into its trace-writer.
async fn provisioned(emulator: &Emulator, prefix: &str, project: &str) -> (Stack, Vec<String>) {
    let stack = Stack::start(prefix).await;
    let target = via_emulator(emulator, project);
    let push_to = stack.writer.base.clone();
    assert_ok(
        &stack
            .run(&target, &["provision", "--push-to", &push_to])
            .await,
        "provision",
    );
    (stack, target)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Enqueues a job and returns its message_id.
async fn enqueue(stack: &Stack, target: &[String], user: &str) -> String {
    let output = stack
        .run(
            target,
            &["enqueue", "--url", "https://suumo.jp/ms/1/", "--user", user],
        )
        .await;
    let id = assert_ok(&output, "enqueue").trim().to_owned();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "enqueue prints the message_id alone: {id:?}"
    );
    id
}

/// What `watch` did: its exit code and what it printed.
struct Watched {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Starts `watch`, then reports each of `steps` once watch has shown the previous state,
/// so that every transition is seen (a watcher shows states, not every message).
async fn watch_while_reporting(
    stack: &Stack,
    target: &[String],
    id: &str,
    steps: &[&[&str]],
) -> Watched {
    let mut child = stack
        .jobtrace(target, &["watch", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watch");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut shown = String::new();
    let mut expect_line = async |status: &str, shown: &mut String| {
        let wanted = format!(" {status} ");
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("watch's stdout") {
                shown.push_str(&line);
                shown.push('\n');
                if line.contains(&wanted) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            found == Ok(true),
            "watch did not show {status}; it showed:\n{shown}"
        );
    };
    expect_line("queued", &mut shown).await;
    for step in steps {
        let mut args = vec!["report", id];
        args.extend_from_slice(step);
        assert_ok(&stack.run(target, &args).await, "report");
        expect_line(step[0], &mut shown).await;
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("watch ends after a terminal status")
        .expect("watch");
    shown.push_str(&String::from_utf8_lossy(&output.stdout));
    Watched {
        code: output.status.code().expect("exited, not killed"),
        stdout: shown,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn exit_code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

async fn stored_status(stack: &Stack, id: &str) -> Option<JobStatus> {
    let id = job_trace::ids::MessageId::parse(id).unwrap();
    stack
        .store
        .get(&id)
        .await
        .unwrap()
        .map(|trace| trace.status)
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_creates_terraforms_topology_once_and_points_it_at_trace_writer() {
    let Some(emulator) = emulator("cli provision") else {
        return;
    };
    let stack = Stack::start("cli_provision").await;
    let target = via_emulator(emulator, "cli-provision");
    let push_to = stack.writer.base.clone();
    let first = assert_ok(
        &stack
            .run(&target, &["provision", "--push-to", &push_to])
            .await,
        "provision",
    );
    for name in [
        "topic scrape-jobs (created)",
        "topic job-trace-events (created)",
        "topic job-trace-completions (created)",
        "topic job-trace-dead-letter (created)",
        "subscription job-trace-dead-letter-hold (created)",
        "subscription jobtrace-completions (created)",
        "subscription trace-writer-scrape-jobs (created)",
        "subscription trace-writer-job-trace-events (created)",
    ] {
        assert!(first.contains(name), "{name} missing from:\n{first}");
    }
    assert!(first.contains(&format!("-> {push_to}/")), "{first}");

    // Again, as at every `make run`, over a database whose traces reach id 2500.
    let again = assert_ok(
        &stack
            .run(
                &target,
                &["provision", "--push-to", &push_to, "--ids-past", "2500"],
            )
            .await,
        "provision again",
    );
    assert_eq!(again.matches("(existed)").count(), 8, "{again}");
    assert!(again.contains("message ids moved past 2500"), "{again}");

    // What it made carries messages: a job published with `enqueue` is recorded, under
    // an id no stored trace has.
    let id = enqueue(&stack, &target, "Uprovision").await;
    assert!(id.parse::<u64>().unwrap() > 2500, "{id}");
    let mut status = None;
    for _ in 0..100 {
        status = stored_status(&stack, &id).await;
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(JobStatus::Queued));
}

/// `jobtrace completions` prints the notification trace-writer publishes when a job
/// reported with `jobtrace report` ends, from the subscription `provision` made.
#[tokio::test(flavor = "multi_thread")]
async fn completions_prints_each_notification_as_it_arrives() {
    let Some(emulator) = emulator("cli completions") else {
        return;
    };
    let project = "cli-completions";
    let config = WriterConfig {
        completions: Some(
            trace_writer::CompletionsTarget::new(
                &format!(
                    "projects/{project}/topics/{}",
                    jobtrace::topology::COMPLETIONS_TOPIC
                ),
                Some(format!("127.0.0.1:{}", emulator.port)),
            )
            .unwrap(),
        ),
        ..WriterConfig::unauthenticated()
    };
    let stack = Stack::start_with("cli_completions", config).await;
    let target = via_emulator(emulator, project);
    let push_to = stack.writer.base.clone();
    assert_ok(
        &stack
            .run(&target, &["provision", "--push-to", &push_to])
            .await,
        "provision",
    );
    let id = enqueue(&stack, &target, "Ucompletions").await;
    // The job recorded first, so that the notification's trace names its user.
    for _ in 0..100 {
        if stored_status(&stack, &id).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for step in [&["processing"][..], &["failed", "--error", "HTTP 500"]] {
        let mut args = vec!["report", &id];
        args.extend_from_slice(step);
        assert_ok(&stack.run(&target, &args).await, "report");
    }
    let output = stack.run(&target, &["completions", "--count", "1"]).await;
    let line = assert_ok(&output, "completions");
    let printed: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(printed["message_id"], id.as_str());
    assert_eq!(printed["status"], "failed");
    assert_eq!(printed["attempt"], "1");
    assert_eq!(printed["dedupe_key"], format!("{id}:1:failed"));
    assert_eq!(printed["trace"]["status"], "failed");
    assert_eq!(printed["trace"]["error"], "HTTP 500");
    assert_eq!(printed["trace"]["line_user_id"], "Ucompletions");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_exits_with_the_jobs_outcome_through_the_emulator() {
    let Some(emulator) = emulator("cli watch") else {
        return;
    };
    let (stack, target) = provisioned(emulator, "cli_watch", "cli-watch").await;

    let success = enqueue(&stack, &target, "Uwatch").await;
    let output = watch_while_reporting(
        &stack,
        &target,
        &success,
        &[
            &["processing"],
            &["success", "--result", r#"{"properties_found": 3}"#],
        ],
    )
    .await;
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);
    let lines = &output.stdout;
    let queued = lines.find(" queued ").expect("queued shown");
    let processing = lines.find(" processing ").expect("processing shown");
    let done = lines.find(" success ").expect("success shown");
    assert!(
        queued < processing && processing < done,
        "in order:\n{lines}"
    );
    let trace = stack
        .store
        .get(&job_trace::ids::MessageId::parse(success.as_str()).unwrap())
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(trace.url.as_deref(), Some("https://suumo.jp/ms/1/"));
    assert_eq!(trace.line_user_id.as_deref(), Some("Uwatch"));

    let failed = enqueue(&stack, &target, "Uwatch").await;
    let output = watch_while_reporting(
        &stack,
        &target,
        &failed,
        &[
            &["processing"],
            &["failed", "--error", "HTTP 503 from suumo.jp"],
        ],
    )
    .await;
    assert_eq!(output.code, 3, "{}{}", output.stdout, output.stderr);
    assert!(output.stdout.contains("error: HTTP 503 from suumo.jp"));

    let gone = enqueue(&stack, &target, "Uwatch").await;
    let output = watch_while_reporting(&stack, &target, &gone, &[&["not_found"]]).await;
    assert_eq!(output.code, 4, "{}{}", output.stdout, output.stderr);

    // A failed first attempt reopened by the second: watch waits for the final word.
    let retried = enqueue(&stack, &target, "Uwatch").await;
    let output = watch_while_reporting(
        &stack,
        &target,
        &retried,
        &[
            &["processing"],
            &["processing", "--attempt", "2"],
            &["success", "--attempt", "2"],
        ],
    )
    .await;
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);
    assert!(
        output.stdout.contains("success    attempt 2"),
        "{}",
        output.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_drives_every_job_to_its_final_state() {
    let Some(emulator) = emulator("cli demo") else {
        return;
    };
    let (stack, target) = provisioned(emulator, "cli_demo", "cli-demo").await;
    let output = stack
        .run(&target, &["demo", "--user", "Udemo", "--pace-ms", "150"])
        .await;
    let shown = assert_ok(&output, "demo");
    assert_eq!(shown.matches("\nok ").count(), 4, "{shown}");
    assert!(shown.contains(&format!("{}/?q=Udemo", stack.api.base)));

    let page = stack
        .store
        .list_by_user(&UserQuery {
            line_user_id: LineUserId::parse("Udemo").unwrap(),
            statuses: Vec::new(),
            job_type: None,
            limit: 50,
            skip: 0,
        })
        .await
        .unwrap();
    let mut statuses: Vec<&str> = page.jobs.iter().map(|t| t.status.as_str()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["failed", "not_found", "success", "success"]);
    let retried = page
        .jobs
        .iter()
        .find(|t| t.url.is_none())
        .expect("the batch check");
    assert_eq!(
        (retried.status, retried.attempt),
        (JobStatus::Success, Some(2))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_pubsub_messages_are_posted_to_trace_writer() {
    let stack = Stack::start("cli_direct").await;
    let target = stack.direct();
    let id = enqueue(&stack, &target, "Udirect").await;
    assert_eq!(stored_status(&stack, &id).await, Some(JobStatus::Queued));
    let output =
        watch_while_reporting(&stack, &target, &id, &[&["processing"], &["success"]]).await;
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);
    assert_eq!(stored_status(&stack, &id).await, Some(JobStatus::Success));
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_be_reached_or_parsed_is_said_plainly() {
    let stack = Stack::start("cli_errors").await;
    let closed = format!("127.0.0.1:{}", free_port());

    let output = stack
        .run(&[], &["--api", &format!("http://{closed}"), "watch", "123"])
        .await;
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("cannot reach trace-api"),
        "{}",
        stderr(&output)
    );

    let output = stack
        .run(
            &["--emulator".into(), closed.clone()],
            &["enqueue", "--user", "U1"],
        )
        .await;
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("does not answer"),
        "{}",
        stderr(&output)
    );

    let output = stack.run(&stack.direct(), &["provision"]).await;
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("terraform apply"),
        "{}",
        stderr(&output)
    );

    let output = stack
        .run(&stack.direct(), &["watch", "999", "--patience", "1"])
        .await;
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("no trace of 999"),
        "{}",
        stderr(&output)
    );

    let output = stack.run(&stack.direct(), &["report", "1", "done"]).await;
    assert_eq!(exit_code(&output), 2, "a usage error");
    assert!(
        stderr(&output).contains("possible values"),
        "{}",
        stderr(&output)
    );

    let output = stack
        .run(
            &stack.direct(),
            &["report", "1", "success", "--result", "{"],
        )
        .await;
    assert_eq!(exit_code(&output), 2);
    assert!(stderr(&output).contains("not JSON"), "{}", stderr(&output));

    let long_id = "9".repeat(1025);
    let output = stack
        .run(&stack.direct(), &["report", &long_id, "success"])
        .await;
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("bad message_id"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn help_tells_a_newcomer_where_to_start() {
    let output = Command::new(BINARY).arg("--help").output().await.unwrap();
    let help = assert_ok(&output, "--help");
    for needle in [
        "make run",
        "enqueue",
        "report",
        "watch",
        "provision",
        "demo",
        "PUBSUB_EMULATOR_HOST",
        "Exit codes",
    ] {
        assert!(
            help.contains(needle),
            "{needle} missing from --help:\n{help}"
        );
    }
}
