//! The built `trace-writer` binary as Cloud Run runs it: start-up in milliseconds without
//! waiting for the database, configuration refused with one clear line, one JSON log
//! line per push with trace correlation, the index set at start, and SIGTERM draining
//! in-flight requests before a clean exit.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use job_trace_tests::apps::Binary;
use job_trace_tests::{fixture, free_port, unique_name, Database};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_trace-writer");

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Asks `check` every `every` until it answers; fails with its last reason and the
/// binary's output once `limit` has passed.
async fn poll<T, F, Fut>(binary: &Binary, limit: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(why) => assert!(
                start.elapsed() < limit,
                "{why} within {limit:?}; output:\n{}",
                binary.output()
            ),
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `/healthz` until it answers 200; returns the time since exec.
async fn first_healthz(binary: &Binary) -> Duration {
    let client = http();
    poll(
        binary,
        Duration::from_secs(30),
        Duration::from_millis(2),
        || async {
            match client.get(binary.url("/healthz")).send().await {
                Ok(response) if response.status().as_u16() == 200 => Ok(binary.started.elapsed()),
                _ => Err("no 200 from /healthz".to_owned()),
            }
        },
    )
    .await
}

/// The binary on a database of its own in the shared server, pushes unauthenticated, plus
/// `vars`; returns once it answers `/healthz`, with the database's URI and name.
async fn on_database(prefix: &str, vars: &[(&str, &str)]) -> (Binary, String, String) {
    let uri = Database::shared().uri();
    let name = unique_name(prefix);
    let mut all = vec![
        ("PUSH_AUTH", "none"),
        ("MONGO_URI", uri.as_str()),
        ("MONGO_DATABASE", name.as_str()),
    ];
    all.extend_from_slice(vars);
    let binary = Binary::spawn(BINARY.as_ref(), &all);
    first_healthz(&binary).await;
    (binary, uri, name)
}

/// Waits until the output has a JSON line that `matches`.
async fn log_line(binary: &Binary, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    poll(
        binary,
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            binary
                .json_lines()
                .into_iter()
                .find(|l| matches(l))
                .ok_or_else(|| format!("no log line {what}"))
        },
    )
    .await
}

/// Sends `push`, which Pub/Sub must see acknowledged (204) whether or not it could be
/// recorded, and returns its log line, whose `outcome` must be `outcome`.
async fn acknowledged(binary: &Binary, push: reqwest::RequestBuilder, outcome: &str) -> Value {
    let response = push.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 204);
    log_line(binary, &format!("with outcome {outcome}"), |l| {
        l["outcome"] == outcome
    })
    .await
}

#[tokio::test]
async fn it_starts_in_milliseconds_even_without_a_database_and_warns_about_push_auth_none() {
    // Nothing listens at MONGO_URI: start-up must not wait for it.
    let nowhere = format!("mongodb://127.0.0.1:{}/", free_port());
    let binary = Binary::spawn(
        BINARY.as_ref(),
        &[("PUSH_AUTH", "none"), ("MONGO_URI", &nowhere)],
    );
    let ready = first_healthz(&binary).await;
    println!(
        "exec to first 200 /healthz: {:.1} ms (debug build)",
        ready.as_secs_f64() * 1000.0
    );
    assert!(ready < Duration::from_secs(5), "{ready:?}");
    let warning = log_line(&binary, "warning about PUSH_AUTH=none", |l| {
        l["severity"] == "WARNING"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("PUSH_AUTH=none"))
    })
    .await;
    assert_eq!(warning["function"], "trace-writer");
    let ready = http().get(binary.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503, "no database: not ready");
}

#[tokio::test]
async fn oidc_without_audience_or_accounts_stops_start_up_with_one_clear_line() {
    for (vars, variable) in [
        (vec![], "PUSH_AUDIENCE"),
        (vec![("PUSH_AUTH", "oidc")], "PUSH_AUDIENCE"),
        (
            vec![("PUSH_AUDIENCE", "trace-writer")],
            "PUSH_SERVICE_ACCOUNTS",
        ),
        (vec![("PUSH_AUTH", "sometimes")], "PUSH_AUTH"),
    ] {
        let mut binary = Binary::spawn(BINARY.as_ref(), &vars);
        let status = binary
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{vars:?}: still running"));
        assert_eq!(status.code(), Some(2), "{vars:?}");
        let output = binary.output();
        let plain: Vec<&str> = output.lines().filter(|l| !l.starts_with('{')).collect();
        assert_eq!(plain.len(), 1, "{vars:?}: one plain line: {output}");
        assert!(
            plain[0].starts_with("trace-writer: configuration error:")
                && plain[0].contains(variable),
            "{vars:?}: {output}"
        );
    }
    // With both, it starts.
    let binary = Binary::spawn(
        BINARY.as_ref(),
        &[
            ("PUSH_AUDIENCE", "trace-writer"),
            (
                "PUSH_SERVICE_ACCOUNTS",
                "pubsub-push@demo.iam.gserviceaccount.com",
            ),
        ],
    );
    first_healthz(&binary).await;
    // A push without a token is refused.
    let response = http()
        .post(binary.url("/"))
        .body(fixture("push-job-message.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn one_json_line_per_push_with_ids_outcome_latency_and_trace() {
    let (binary, _, _) = on_database(
        "writer_bin_logs",
        &[("GOOGLE_CLOUD_PROJECT", "demo-project")],
    )
    .await;
    let trace_id = "105445aa7843bc8bf206b12000100000";
    let push = http()
        .post(binary.url("/"))
        .header("content-type", "application/json")
        .header("x-cloud-trace-context", format!("{trace_id}/1;o=1"))
        .body(fixture("push-status-failed.json"));
    let line = acknowledged(&binary, push, "recorded").await;
    assert_eq!(line["severity"], "INFO");
    assert_eq!(line["message_id"], "1234567890");
    assert_eq!(line["pubsub_message_id"], "9000000003");
    assert_eq!(
        line["subscription"],
        "projects/demo/subscriptions/job-trace-events-push"
    );
    assert_eq!(line["delivery_attempt"], 3);
    assert_eq!(line["status"], "failed");
    assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    assert_eq!(
        line["logging.googleapis.com/trace"],
        format!("projects/demo-project/traces/{trace_id}")
    );

    // A message that can never be recorded: one WARNING line with the reason.
    let mut body: Value = serde_json::from_slice(&fixture("push-job-message.json")).unwrap();
    body["message"]["data"] = Value::from("%%%");
    body["message"]["messageId"] = Value::from("5550001");
    let push = http()
        .post(binary.url("/"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&body);
    let line = acknowledged(&binary, push, "rejected").await;
    assert_eq!(line["severity"], "WARNING");
    assert_eq!(line["message_id"], "5550001");
    assert!(
        line["reason"].as_str().unwrap().contains("base64"),
        "{line}"
    );
    assert_eq!(
        line["logging.googleapis.com/trace"],
        "projects/demo-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let pushes = binary
        .json_lines()
        .into_iter()
        .filter(|l| l.get("outcome").is_some())
        .count();
    assert_eq!(pushes, 2, "one line per push:\n{}", binary.output());
}

#[tokio::test]
async fn ensure_indexes_creates_the_index_set_at_start() {
    let (binary, uri, name) =
        on_database("writer_bin_indexes", &[("ENSURE_INDEXES", "true")]).await;
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let collection = client
        .database(&name)
        .collection::<bson::Document>("job_traces");
    let expected: Vec<String> = job_trace::indexes::seed_index_set()
        .into_iter()
        .map(|spec| spec.name)
        .collect();
    poll(
        &binary,
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let names: Vec<String> = match collection.list_indexes().await {
                Ok(cursor) => cursor
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|model| model.options.and_then(|o| o.name))
                    .collect(),
                Err(_) => Vec::new(),
            };
            if expected.iter().all(|name| names.contains(name)) {
                Ok(())
            } else {
                Err(format!("indexes {names:?}, want {expected:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits_cleanly() {
    // A database that never answers keeps a push in flight for DB_TIMEOUT_SECONDS.
    let nowhere = format!("mongodb://127.0.0.1:{}/", free_port());
    let mut binary = Binary::spawn(
        BINARY.as_ref(),
        &[
            ("PUSH_AUTH", "none"),
            ("MONGO_URI", &nowhere),
            ("DB_TIMEOUT_SECONDS", "3"),
        ],
    );
    first_healthz(&binary).await;
    let client = http();
    let in_flight = tokio::spawn(
        client
            .post(binary.url("/"))
            .header("content-type", "application/json")
            .body(fixture("push-job-message.json"))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let terminated = Instant::now();
    binary.terminate();
    // New connections are refused soon after SIGTERM…
    let refused = async {
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", binary.port)).is_err() {
                return terminated.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let refused_after = tokio::time::timeout(Duration::from_secs(2), refused)
        .await
        .expect("the listener closes after SIGTERM");
    // …while the request in flight still gets its answer (503: the database is away).
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered, not cut");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        serde_json::json!({ "error": "database unavailable" })
    );
    let status = binary
        .wait_exit(Duration::from_secs(10))
        .expect("exits within Cloud Run's 10 s");
    assert!(status.success(), "{status:?}\n{}", binary.output());
    println!(
        "SIGTERM: listener closed after {:.0} ms, exit after {:.1} s",
        refused_after.as_secs_f64() * 1000.0,
        terminated.elapsed().as_secs_f64()
    );
}
