//! Completion notifications through the real Pub/Sub emulator and the real database:
//! trace-writer (served in-process, `COMPLETIONS_TOPIC` on the emulator) takes shuffled
//! job lifecycles with duplicates, and `jobtrace completions`' receiver counts what
//! arrives on a subscription of the topic, by dedupe key, against the terminal
//! transitions the rules apply in the same order.
//!
//! Also: a publish that fails (the topic deleted mid-run) leaves the notification pending
//! in the trace and the push unacknowledged, and the redelivery after the topic is back
//! publishes it once; with notifications off nothing of the kind is written; and both
//! store strategies keep the pending notifications exactly as the reducer does.

mod writer_common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use futures::StreamExt;
use job_trace::config::StoreWrite;
use job_trace::ids::MessageId;
use job_trace::model::TraceDocument;
use job_trace::push::{decode_push, Outcome};
use job_trace::rules::{self, Change};
use job_trace::TraceStore;
use job_trace_tests::histories::{arrival_order, random_history};
use job_trace_tests::pubsub::{emulator, event_message, job_message, Emulator, PROJECT};
use job_trace_tests::{fresh_store_writing, unique_name};
use jobtrace::completions::{follow, Received};
use jobtrace::transport::Target;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use trace_writer::{CompletionsTarget, WriterConfig};
use writer_common::*;

/// A job's arrivals as the push bodies Pub/Sub would deliver, with the changes trace-writer
/// decodes from them (what the expected notifications are computed from).
struct Lifecycle {
    id: MessageId,
    pushes: Vec<(serde_json::Value, Change)>,
}

/// The wrapped push of `change`, a message of job `id`: the job message under the job's
/// own id, a status event (or, for a rejection, an event no worker may send) under a new
/// one. Decoded back, so that the test expects what the writer will apply.
fn push_of(id: &MessageId, change: &Change) -> (serde_json::Value, Change) {
    let published = change.at.to_chrono();
    let (pubsub_id, message) = if let Some(job) = &change.job {
        (id.as_str().to_owned(), job_message(job))
    } else if change.key.attempt == 0 {
        let data = json!({ "message_id": id.as_str(), "status": "done",
                           "occurred_at": job_trace::model::render_time(change.at) });
        (
            new_id(),
            event_message(change, id.as_str(), true).set_data(data.to_string()),
        )
    } else {
        (new_id(), event_message(change, id.as_str(), true))
    };
    let mut push = writer_common::message(&pubsub_id, &message.data);
    push.publish_time = Some(job_trace::model::render_time(bson::DateTime::from_chrono(
        published,
    )));
    push.attributes = message.attributes.into_iter().collect();
    if !message.ordering_key.is_empty() {
        push.ordering_key = Some(message.ordering_key);
    }
    let body = push.wrapped("projects/demo/subscriptions/trace-writer-job-trace-events");
    let bytes = serde_json::to_vec(&body).unwrap();
    let decoded = decode_push(&HeaderMap::new(), &bytes, bson::DateTime::now()).expect("decodes");
    let change = match decoded.outcome {
        Outcome::Record(change) => change,
        Outcome::Reject {
            failed_trace: Some(change),
            ..
        } => change,
        other => panic!("{change:?} gives no change: {other:?}"),
    };
    (body, change)
}

fn lifecycles(rng: &mut StdRng, n: usize) -> Vec<Lifecycle> {
    (0..n)
        .map(|_| {
            let id = MessageId::parse(new_id()).unwrap();
            let history = random_history(rng, id.clone());
            let pushes = arrival_order(rng, &history, &id)
                .iter()
                .map(|change| push_of(&id, change))
                .collect();
            Lifecycle { id, pushes }
        })
        .collect()
}

/// The dedupe keys of the terminal transitions the rules apply to `changes` in this order:
/// one notification each is what must arrive.
fn owed(changes: impl IntoIterator<Item = Change>) -> Vec<String> {
    let mut trace: Option<TraceDocument> = None;
    let mut keys = Vec::new();
    for change in changes {
        let change = change.notifying(bson::DateTime::now());
        let next = rules::apply(trace.as_ref(), &change);
        let before = trace.map(|t| t.pending_completions).unwrap_or_default();
        keys.extend(
            next.pending_completions
                .iter()
                .filter(|owed| !before.contains(owed))
                .map(|owed| owed.dedupe_key.clone()),
        );
        trace = Some(next);
    }
    keys
}

/// A topic of its own on the emulator, with a subscription that collects what arrives
/// through `jobtrace completions`' receiver.
struct Collector {
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start(emulator: &Emulator, topic: &str) -> Collector {
        let name = unique_name("completions_sub");
        let path = emulator
            .create_push_subscription(&name, topic, None, Default::default())
            .await;
        let target = Target::Emulator {
            host: format!("127.0.0.1:{}", emulator.port),
            project: PROJECT.into(),
        };
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let received = received.clone();
            async move {
                follow(&target, &path, |notification| {
                    received.lock().unwrap().push(notification);
                    true
                })
                .await
                .expect("receive completion notifications");
            }
        });
        Collector { received, task }
    }

    /// How many times each dedupe key arrived, once `expected` notifications have and a
    /// little longer, so that a duplicate would be seen too.
    async fn counts(&self, expected: usize) -> BTreeMap<String, usize> {
        let arrived = eventually(Duration::from_secs(60), || async {
            let n = self.received.lock().unwrap().len();
            (n >= expected)
                .then_some(())
                .ok_or(format!("{n} of {expected} notifications arrived"))
        })
        .await;
        arrived.expect("every notification arrives");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut counts = BTreeMap::new();
        for notification in self.received.lock().unwrap().iter() {
            *counts.entry(notification.dedupe_key.clone()).or_default() += 1;
        }
        counts
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(topic: &str, emulator: &Emulator) -> WriterConfig {
    WriterConfig {
        completions: Some(
            CompletionsTarget::new(topic, Some(format!("127.0.0.1:{}", emulator.port)))
                .expect("a topic path"),
        ),
        ..WriterConfig::unauthenticated()
    }
}

async fn notifying_writer(store: TraceStore, topic: &str, emulator: &Emulator) -> Writer {
    let router = trace_writer::app(store.clone(), config(topic, emulator));
    Writer::serve_router(router, store).await
}

fn seed() -> u64 {
    std::env::var("JOBTRACE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

/// Each job's pushes one after another (as an ordered subscription delivers them), the
/// jobs side by side; every push must be acknowledged.
async fn deliver(writer: &Writer, jobs: &[Lifecycle]) {
    futures::stream::iter(jobs)
        .for_each_concurrent(8, |job| async move {
            for (body, change) in &job.pushes {
                let (status, text) = writer.push(body).await;
                assert_eq!(status, 204, "{}: {change:?} answered {text}", job.id);
            }
        })
        .await;
}

async fn exactly_one_notification_per_applied_terminal_transition(write: StoreWrite) {
    let Some(emulator) = emulator("completions: exactly one per transition") else {
        return;
    };
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let topic = emulator.create_topic(&unique_name("completions")).await;
    let name = topic.rsplit('/').next().unwrap();
    let collector = Collector::start(emulator, name).await;
    let store = fresh_store_writing("completions", write).await;
    let writer = notifying_writer(store.clone(), &topic, emulator).await;

    let jobs = lifecycles(&mut rng, 40);
    let expected: Vec<String> = jobs
        .iter()
        .flat_map(|job| owed(job.pushes.iter().map(|(_, change)| change.clone())))
        .collect();
    let pushes: usize = jobs.iter().map(|job| job.pushes.len()).sum();
    deliver(&writer, &jobs).await;

    let counts = collector.counts(expected.len()).await;
    let received = collector.received();
    eprintln!(
        "completions ({}, JOBTRACE_SEED={seed}): {} jobs, {pushes} pushes (duplicates \
         included), {} terminal transitions applied, {} notifications received, {} distinct",
        write.as_str(),
        jobs.len(),
        expected.len(),
        received.len(),
        counts.len()
    );
    let mut expected_counts = BTreeMap::new();
    for key in &expected {
        *expected_counts.entry(key.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        expected_counts.values().max(),
        Some(&1),
        "the rules apply each terminal transition once"
    );
    assert_eq!(counts, expected_counts, "one notification per transition");

    for notification in &received {
        let trace = &notification.trace;
        assert_eq!(trace["message_id"], notification.message_id.as_str());
        assert_eq!(
            notification.dedupe_key,
            format!(
                "{}:{}:{}",
                notification.message_id, notification.attempt, notification.status
            )
        );
        assert!(trace.get("pending_completions").is_none(), "{trace}");
        assert!(trace["status"].is_string() && trace["created_at"].is_string());
    }
    for job in &jobs {
        let trace = writer.trace(job.id.as_str()).await.expect("a trace");
        assert!(
            trace.pending_completions.is_empty(),
            "{}: left pending: {:?}",
            job.id,
            trace.pending_completions
        );
    }
}

async fn a_failed_publish_is_published_once_on_redelivery(write: StoreWrite) {
    let Some(emulator) = emulator("completions: a failed publish") else {
        return;
    };
    let name = unique_name("completions_outage");
    let topic = emulator.create_topic(&name).await;
    let before = Collector::start(emulator, &name).await;
    let store = fresh_store_writing("completions_outage", write).await;
    let writer = notifying_writer(store.clone(), &topic, emulator).await;

    // A job that completes while the topic is there.
    let (first, body) = job_push(Some("https://suumo.jp/ms/chuko/nc_1/"));
    assert_eq!(writer.push(&body).await.0, 204);
    let done = event_push(&first, json!({"status": "success", "attempt": 1}));
    assert_eq!(writer.push(&done).await.0, 204);
    assert_eq!(
        before.counts(1).await.get(&format!("{first}:1:success")),
        Some(&1)
    );

    // The topic goes away: terminal pushes are recorded but not acknowledged, and the
    // trace remembers what it owes; other pushes pass.
    emulator
        .topic_admin()
        .await
        .delete_topic()
        .set_topic(&topic)
        .send()
        .await
        .expect("delete the topic");
    let mut unacknowledged = Vec::new();
    let mut owed_keys = Vec::new();
    for n in 0..3 {
        let (id, body) = job_push(None);
        assert_eq!(writer.push(&body).await.0, 204, "no notification owed");
        let processing = event_push(&id, json!({"status": "processing", "attempt": 1}));
        assert_eq!(writer.push(&processing).await.0, 204);
        let status = ["failed", "not_found", "success"][n];
        let end = event_push(&id, json!({"status": status, "attempt": 1, "error": "x"}));
        let (code, text) = writer.push(&end).await;
        assert_eq!(code, 503, "{text}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json!({"error": "completion notification not published"})
        );
        let trace = writer.trace(&id).await.expect("recorded all the same");
        assert_eq!(trace.status.as_str(), status);
        let key = format!("{id}:1:{status}");
        let pending: Vec<_> = trace
            .pending_completions
            .iter()
            .map(|owed| owed.dedupe_key.clone())
            .collect();
        assert_eq!(
            pending,
            std::slice::from_ref(&key),
            "the obligation is in the trace"
        );
        // A duplicate of an event that applies nothing now and owes nothing publishes
        // nothing: it is acknowledged although the topic is still gone.
        assert_eq!(writer.push(&processing).await.0, 204);
        unacknowledged.push(end);
        owed_keys.push(key);
    }

    // The topic is back (with a new subscription: the old one stays detached from the
    // deleted topic, as in Pub/Sub); the redeliveries publish what is owed, once.
    emulator.create_topic(&name).await;
    let after = Collector::start(emulator, &name).await;
    for end in &unacknowledged {
        assert_eq!(
            writer.push(end).await.0,
            204,
            "the redelivery is acknowledged"
        );
    }
    // A second redelivery (Pub/Sub may deliver twice) finds nothing owed any more.
    assert_eq!(writer.push(&unacknowledged[0]).await.0, 204);
    let counts = after.counts(owed_keys.len()).await;
    let expected: BTreeMap<String, usize> = owed_keys.iter().map(|k| (k.clone(), 1)).collect();
    eprintln!(
        "completions after an outage ({}): {} owed, received {counts:?}",
        write.as_str(),
        owed_keys.len()
    );
    assert_eq!(counts, expected, "none lost, none repeated");
    for key in &owed_keys {
        let id = key.split(':').next().unwrap();
        let trace = writer.trace(id).await.unwrap();
        assert!(trace.pending_completions.is_empty(), "{key} still pending");
    }
}

/// Without `COMPLETIONS_TOPIC` no trace gets the field: the feature costs nothing off.
async fn with_notifications_off_nothing_is_owed(write: StoreWrite) {
    let store = fresh_store_writing("completions_off", write).await;
    let writer = Writer::start_on(store.clone()).await;
    let (id, body) = job_push(Some("https://suumo.jp/ms/chuko/nc_2/"));
    assert_eq!(writer.push(&body).await.0, 204);
    let done = event_push(&id, json!({"status": "failed", "attempt": 1, "error": "x"}));
    assert_eq!(writer.push(&done).await.0, 204);
    let raw = store
        .collection()
        .find_one(bson::doc! { "message_id": &id })
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(raw.get_str("status"), Ok("failed"));
    assert!(!raw.contains_key("pending_completions"), "{raw}");
}

/// The store keeps pending notifications exactly as the reducer does, for every arrival
/// order, in both strategies (the reducer is what the convergence tests hold it to).
async fn the_store_owes_what_the_rules_owe(write: StoreWrite) {
    let store = fresh_store_writing("completions_rules", write).await;
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    for n in 0..60 {
        let history = random_history(&mut rng, MessageId::parse(format!("c{n}")).unwrap());
        let order: Vec<Change> = arrival_order(&mut rng, &history, &history.message_id)
            .into_iter()
            .enumerate()
            .map(|(k, change)| change.notifying(bson::DateTime::from_millis(k as i64)))
            .collect();
        let mut expected = None;
        for change in &order {
            let written = store.apply_returning(change).await.expect("apply");
            expected = Some(rules::apply(expected.as_ref(), change));
            let mut expected_now = expected.clone().unwrap();
            expected_now.id = written.id;
            assert_eq!(
                written, expected_now,
                "{} (JOBTRACE_SEED={seed}) after {change:?}",
                history.message_id
            );
        }
    }
}

macro_rules! both_strategies {
    ($($test:ident),* $(,)?) => {
        mod pipeline {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(job_trace::config::StoreWrite::Pipeline).await;
            })*
        }
        mod cas {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(job_trace::config::StoreWrite::Cas).await;
            })*
        }
    };
}

both_strategies!(
    exactly_one_notification_per_applied_terminal_transition,
    a_failed_publish_is_published_once_on_redelivery,
    with_notifications_off_nothing_is_owed,
    the_store_owes_what_the_rules_owe,
);
