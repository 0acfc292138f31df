//! The CPU one push costs trace-writer in its own code, part by part, without a database
//! or a network: decoding the push, building the update pipeline and encoding it as the
//! driver does (then dropping it), and writing the push's log line.
//!
//! `cargo run --release -p job-trace --example push_cpu [N]`: prints CPU µs per push of
//! each part, the thread's own CPU time (Linux `schedstat`), so other load on the machine
//! does not count.

use std::io::Write;
use std::time::Duration;

use axum::http::HeaderMap;
use job_trace::push::{decode_push, Outcome, Push};
use job_trace::store::update_pipeline;
use job_trace::telemetry::CloudLoggingLayer;
use job_trace::Change;
use tracing_subscriber::layer::SubscriberExt;

/// The push bodies of one job's life: its job message, a status event, a success.
const FIXTURES: [&str; 3] = [
    "push-job-message.json",
    "push-status-processing.json",
    "push-status-success.json",
];

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (Linux)");
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat starts with the CPU time in ns");
    Duration::from_nanos(nanos)
}

/// CPU µs per round of `round`, run `n` times (after a warm-up).
fn per_round(n: u32, mut round: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        round();
    }
    let start = thread_cpu();
    for _ in 0..n {
        round();
    }
    (thread_cpu() - start).as_secs_f64() * 1e6 / f64::from(n)
}

fn change(push: &Push) -> &Change {
    match &push.outcome {
        Outcome::Record(change) => change,
        Outcome::Reject { error, .. } => panic!("fixture rejected: {error}"),
    }
}

/// A writer that keeps nothing, as a pipe whose reader keeps up.
#[derive(Clone, Copy)]
struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::hint::black_box(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(20_000, |n| n.parse().expect("N: a count"));
    let bodies: Vec<Vec<u8>> = FIXTURES
        .iter()
        .map(|name| {
            let path = format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&path).expect(&path)
        })
        .collect();
    let headers = HeaderMap::new();
    let now = bson::DateTime::from_millis(1_700_000_000_000);
    let decode = |body: &[u8]| decode_push(&headers, body, now).expect("a push");
    let pushes: Vec<Push> = bodies.iter().map(|body| decode(body)).collect();
    let mut notifying: Vec<Change> = pushes.iter().map(|p| change(p).clone()).collect();
    for change in &mut notifying {
        *change = change.clone().notifying(now);
    }
    let rounds = bodies.len() as f64;

    let decoding = per_round(n, || {
        for body in &bodies {
            std::hint::black_box(decode(body));
        }
    }) / rounds;
    let pipeline = |changes: &mut dyn Iterator<Item = &Change>| {
        for change in changes {
            let stages = update_pipeline(change);
            // What the driver does with it: each stage into raw BSON.
            for stage in &stages {
                std::hint::black_box(bson::RawDocumentBuf::from_document(stage).unwrap());
            }
        }
    };
    let building_only = per_round(n, || {
        for push in &pushes {
            std::hint::black_box(update_pipeline(change(push)));
        }
    }) / rounds;
    let building = per_round(n, || pipeline(&mut pushes.iter().map(change))) / rounds;
    let building_notifying = per_round(n, || pipeline(&mut notifying.iter())) / rounds;

    let subscriber = tracing_subscriber::registry().with(CloudLoggingLayer::new(|| Discard));
    let logging = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(
            "request",
            trace = "projects/demo/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let _entered = span.enter();
        per_round(n, || {
            // trace-writer's `push recorded` line, with the fields it always carries.
            tracing::info!(
                message_id = "1234567890",
                pubsub_message_id = "9000000002",
                subscription = "projects/demo/subscriptions/job-trace-events-push",
                delivery_attempt = 1_u32,
                ordering_key = "1234567890",
                format = "wrapped",
                outcome = "recorded",
                http_status = 204_u16,
                latency_ms = 2.345_f64,
                status = "success",
                attempt = 1_u32,
                notified = 0_usize,
                "push recorded"
            );
        })
    });

    println!("CPU µs per push (mean of {n} rounds of {rounds} pushes; log: per line)");
    println!("decode_push                      {decoding:8.2}");
    println!("update_pipeline + drop           {building_only:8.2}");
    println!("update_pipeline + encode + drop  {building:8.2}");
    println!("  with completions on            {building_notifying:8.2}");
    println!("log line                         {logging:8.2}");
}
