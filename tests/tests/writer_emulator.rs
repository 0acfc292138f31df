//! trace-writer end to end through the real Pub/Sub emulator: topics `scrape-jobs` and
//! `job-trace-events`, push subscriptions to the writer (served in-process on a free
//! port), job messages and status events published with the `google-cloud-pubsub` crate,
//! and every stored trace checked against what its job's history says it must be.
//!
//! Also: a database outage while messages flow (the writer answers 503, the emulator
//! redelivers, nothing is lost), and the emulator's exact push body.

mod writer_common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bson::doc;
use futures::TryStreamExt;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use job_trace::ids::MessageId;
use job_trace::model::{render_time, JobStatus, TraceDocument};
use job_trace::TraceStore;
use job_trace_tests::histories::{arrival_order, check_published, shifted_history, History};
use job_trace_tests::pubsub::{emulator, event_message, job_message, PushOptions};
use job_trace_tests::{unique_name, Database};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use writer_common::*;

/// A job under test: its history (ids set once published) and when its job message was
/// published.
struct Job {
    history: History,
    published: Option<(i64, i64)>,
}

impl Job {
    fn id(&self) -> &str {
        self.history.message_id.as_str()
    }

    /// The rules' verdict on `doc`, the job message's time being what Pub/Sub stamped.
    fn check(&self, doc: &TraceDocument) -> Result<(), String> {
        check_published(&self.history, self.published.expect("published"), doc)
    }
}

async fn publish_job(jobs: &Publisher, job: &mut Job) {
    let details = job.history.messages[0].job.clone().expect("a job message");
    let before = chrono::Utc::now().timestamp_millis();
    let id = jobs
        .publish(job_message(&details))
        .await
        .expect("publish a job message");
    let after = chrono::Utc::now().timestamp_millis();
    let id = MessageId::parse(id).expect("Pub/Sub ids are ids");
    for message in &mut job.history.messages {
        message.message_id = id.clone();
    }
    job.history.message_id = id;
    job.published = Some((before, after));
}

/// Publishes every event of `job` one to three times, shuffled; ordered by the job's id
/// when `ordered`.
fn publish_events(
    rng: &mut StdRng,
    events: &Publisher,
    job: &Job,
    ordered: bool,
) -> Vec<google_cloud_pubsub::publisher::PublishFuture> {
    let id = job.history.message_id.clone();
    let mut only_events = job.history.clone();
    only_events.messages.remove(0);
    arrival_order(rng, &only_events, &id)
        .iter()
        .map(|change| events.publish(event_message(change, id.as_str(), ordered)))
        .collect()
}

async fn await_published(futures: Vec<google_cloud_pubsub::publisher::PublishFuture>) -> usize {
    let count = futures.len();
    for outcome in futures::future::join_all(futures).await {
        outcome.expect("publish an event");
    }
    count
}

/// Reads the traces of `jobs` in one query; `Ok` once every one passes `check`.
async fn all_converged(
    store: &TraceStore,
    jobs: &[Job],
    check: impl Fn(&Job, Option<&TraceDocument>) -> Result<(), String>,
) -> Result<(), String> {
    let ids: Vec<&str> = jobs.iter().map(Job::id).collect();
    let docs: Vec<bson::Document> = store
        .collection()
        .find(doc! { "message_id": { "$in": ids } })
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let by_id: HashMap<String, TraceDocument> = docs
        .into_iter()
        .map(|d| bson::from_document::<TraceDocument>(d).expect("a trace"))
        .map(|t| (t.message_id.clone(), t))
        .collect();
    let problems: Vec<String> = jobs
        .iter()
        .filter_map(|job| {
            check(job, by_id.get(job.id()))
                .err()
                .map(|e| format!("{}: {e}", job.id()))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} jobs not converged; first: {:?}",
            problems.len(),
            jobs.len(),
            &problems[..problems.len().min(5)]
        ))
    }
}

fn final_check(job: &Job, doc: Option<&TraceDocument>) -> Result<(), String> {
    job.check(doc.ok_or("no trace")?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_hundred_jobs_flow_through_the_emulator_and_every_trace_converges() {
    let Some(emulator) = emulator("a_few_hundred_jobs_flow_through_the_emulator") else {
        return;
    };
    let writer = Writer::start("writer_e2e").await;
    let endpoint = writer.url("/");
    emulator.create_topic("scrape-jobs").await;
    emulator.create_topic("job-trace-events").await;
    // The jobs subscription holds its messages at first: the status events of the first
    // jobs reach the writer before their job messages do.
    let jobs_subscription = emulator
        .create_push_subscription(
            "scrape-jobs-trace",
            "scrape-jobs",
            None,
            PushOptions::default(),
        )
        .await;
    emulator
        .create_push_subscription(
            "job-trace-events-push",
            "job-trace-events",
            Some(&endpoint),
            PushOptions {
                ordering: true,
                ..PushOptions::default()
            },
        )
        .await;
    let jobs_topic = emulator.publisher("scrape-jobs").await;
    let events_topic = emulator.publisher("job-trace-events").await;

    let total: usize = std::env::var("JOBTRACE_EMULATOR_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let early = total / 3;
    let mut rng = StdRng::seed_from_u64(0x7ace_0003);
    let events_from = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let mut jobs: Vec<Job> = (0..total)
        .map(|_| Job {
            history: shifted_history(&mut rng, events_from),
            published: None,
        })
        .collect();
    let started = Instant::now();
    let mut published = 0;

    // Phase 1: job messages published and held; their events delivered first.
    for job in &mut jobs[..early] {
        publish_job(&jobs_topic, job).await;
        published += 1;
    }
    let mut pending = Vec::new();
    for (n, job) in jobs[..early].iter().enumerate() {
        pending.extend(publish_events(&mut rng, &events_topic, job, n % 2 == 0));
    }
    published += await_published(pending).await;
    eventually(Duration::from_secs(180), || {
        all_converged(&writer.store, &jobs[..early], |job, doc| {
            let events = &job.history.messages[1..];
            // Progress reports never set a status; alone they make a trace still queued.
            let reported = events.iter().any(|m| m.progress.is_some());
            let statuses = events.iter().filter(|m| m.progress.is_none());
            match (statuses.max_by_key(|m| m.key), doc) {
                (None, None) if !reported => Ok(()),
                (None, Some(doc)) if reported && doc.status == JobStatus::Queued => Ok(()),
                (None, None) => Err("progress reports not recorded yet".into()),
                (None, Some(_)) => Err("a trace before any of its messages arrived".into()),
                (Some(_), None) => Err("events not recorded yet".into()),
                (Some(last), Some(doc))
                    if doc.status == last.status
                        && doc.url.is_none()
                        && doc.check_only.is_none() =>
                {
                    Ok(())
                }
                (Some(last), Some(doc)) => Err(format!(
                    "status {:?}, want {:?}, before the job message (check_only {:?})",
                    doc.status, last.status, doc.check_only
                )),
            }
        })
    })
    .await
    .expect("the events of the held jobs are recorded first");
    eprintln!(
        "phase 1: {early} jobs' events recorded before their job messages after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    emulator
        .set_push_endpoint(&jobs_subscription, &endpoint)
        .await;

    // Phase 2: job messages and their events together; the subscriptions race.
    let mut pending = Vec::new();
    for (n, job) in jobs[early..].iter_mut().enumerate() {
        publish_job(&jobs_topic, job).await;
        published += 1;
        pending.extend(publish_events(&mut rng, &events_topic, job, n % 2 == 0));
        if pending.len() > 200 {
            published += await_published(std::mem::take(&mut pending)).await;
        }
    }
    published += await_published(pending).await;
    let publishing = started.elapsed();

    eventually(Duration::from_secs(300), || {
        all_converged(&writer.store, &jobs, final_check)
    })
    .await
    .expect("every trace converges");
    let elapsed = started.elapsed();
    // A late progress report or a duplicate changes nothing, so the traces can be right
    // while the emulator still holds one of them: wait for the last push as well.
    eventually(Duration::from_secs(60), || async {
        let pushes = writer.tally.pushes.load(Ordering::Relaxed);
        if pushes >= published as u64 {
            Ok(())
        } else {
            Err(format!("{pushes} pushes of {published} published"))
        }
    })
    .await
    .expect("every published message was pushed at least once");
    let pushes = writer.tally.pushes.load(Ordering::Relaxed);
    println!(
        "emulator end to end: {total} jobs, {published} messages published in {:.1} s, \
         {pushes} pushes received ({} acknowledged, {} 503, {} other), all converged after \
         {:.1} s; pushes arrived over {:.1} s: {:.0} pushes/s",
        publishing.as_secs_f64(),
        writer.tally.acknowledged.load(Ordering::Relaxed),
        writer.tally.unavailable.load(Ordering::Relaxed),
        writer.tally.other.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        writer.tally.span_seconds(),
        pushes as f64 / writer.tally.span_seconds().max(0.001)
    );
    assert!(
        pushes >= published as u64,
        "every published message was pushed at least once"
    );
    assert_eq!(
        writer.tally.other.load(Ordering::Relaxed),
        0,
        "no push was refused"
    );
}

async fn publish_range(jobs: &mut [Job], topics: (&Publisher, &Publisher), rng: &mut StdRng) {
    let mut pending = Vec::new();
    for job in jobs {
        publish_job(topics.0, job).await;
        pending.extend(publish_events(rng, topics.1, job, false));
    }
    await_published(pending).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_nothing_the_emulator_redelivers() {
    let Some(emulator) = emulator("a_database_outage_loses_nothing") else {
        return;
    };
    if std::env::var("JOBTRACE_WRITER_LOGS").is_ok() {
        job_trace::telemetry::init();
    }
    let database = Database::start_new();
    let mut config = database.config(&unique_name("writer_outage"));
    config.db_timeout_seconds = 2.0;
    // The database is killed as in a crash. With the default write concern a single node
    // acknowledges a write before its journal is flushed, and SecantusDB then loses the
    // last few acknowledged writes (seen: 5 of ~250); `journal=true` (j: true) makes an
    // acknowledged write a durable one, which is what a 204 promises.
    config.mongo_uri.push_str("&journal=true");
    let store = TraceStore::connect(&config).await.expect("store");
    let writer = Writer::start_on(store).await;
    let endpoint = writer.url("/");
    let suffix = unique_name("outage").replace('_', "-");
    let jobs_name = format!("scrape-jobs-{suffix}");
    let events_name = format!("job-trace-events-{suffix}");
    emulator.create_topic(&jobs_name).await;
    emulator.create_topic(&events_name).await;
    for (subscription, topic) in [
        (format!("{jobs_name}-trace"), &jobs_name),
        (format!("{events_name}-push"), &events_name),
    ] {
        emulator
            .create_push_subscription(
                &subscription,
                topic,
                Some(&endpoint),
                PushOptions::default(),
            )
            .await;
    }
    let jobs_topic = emulator.publisher(&jobs_name).await;
    let events_topic = emulator.publisher(&events_name).await;

    let mut rng = StdRng::seed_from_u64(0x07a6e);
    let events_from = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let mut jobs: Vec<Job> = (0..60)
        .map(|_| Job {
            history: shifted_history(&mut rng, events_from),
            published: None,
        })
        .collect();
    let started = Instant::now();
    let topics = (&jobs_topic, &events_topic);
    publish_range(&mut jobs[0..20], topics, &mut rng).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    database.stop();
    eprintln!(
        "database stopped at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    publish_range(&mut jobs[20..40], topics, &mut rng).await;
    // Let the emulator push (and the writer refuse) for a while.
    let outage = Instant::now();
    while writer.tally.unavailable.load(Ordering::Relaxed) < 10
        && outage.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    database.start();
    eprintln!(
        "database started at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    publish_range(&mut jobs[40..60], topics, &mut rng).await;

    let unavailable = writer.tally.unavailable.load(Ordering::Relaxed);
    assert!(
        unavailable > 0,
        "the writer answered 503 while the database was away"
    );
    eventually(Duration::from_secs(240), || {
        all_converged(&writer.store, &jobs, final_check)
    })
    .await
    .expect("every job reaches its final state after the outage");
    println!(
        "outage: 60 jobs converged after {:.1} s; {} pushes, {} answered 503 and redelivered",
        started.elapsed().as_secs_f64(),
        writer.tally.pushes.load(Ordering::Relaxed),
        writer.tally.unavailable.load(Ordering::Relaxed),
    );
}

/// The emulator's own push body (no token, no deliveryAttempt), captured by a loopback
/// endpoint and then posted to the writer as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulators_exact_push_body_is_recorded() {
    let Some(emulator) = emulator("the_emulators_exact_push_body_is_recorded") else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<(String, String)>, Vec<u8>)>();
    let capture = axum::Router::new().route(
        "/",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    let _ = tx.send((headers, body.to_vec()));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let captured = job_trace_tests::apps::serve(capture).await;
    let suffix = unique_name("exact").replace('_', "-");
    let topic = format!("scrape-jobs-{suffix}");
    emulator.create_topic(&topic).await;
    emulator
        .create_push_subscription(
            &format!("{topic}-capture"),
            &topic,
            Some(&captured.url("/")),
            PushOptions::default(),
        )
        .await;
    let publisher = emulator.publisher(&topic).await;
    let id = publisher
        .publish(
            Message::new().set_data(
                json!({
                    "timestamp": "2026-05-01T10:00:00Z",
                    "url": "https://suumo.jp/ms/chuko/nc_exact/",
                    "line_user_id": "U1234567890abcdef",
                    "check_only": false,
                })
                .to_string(),
            ),
        )
        .await
        .expect("publish");
    let (headers, body) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the emulator pushes within a minute")
        .expect("a push");
    let push: Value = serde_json::from_slice(&body).expect("the push body is JSON");
    assert_eq!(push["message"]["messageId"], json!(id), "{push:#}");
    assert!(push["subscription"].as_str().unwrap().ends_with("-capture"));
    assert!(
        !headers.iter().any(|(k, _)| k == "authorization"),
        "the emulator sends no token: {headers:?}"
    );

    let writer = Writer::start("writer_exact").await;
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k != "content-length" && k != "host")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, text) = writer.post_raw(&header_refs, body).await;
    assert_eq!(status, 204, "{text}");
    let trace = writer.trace(&id).await.expect("recorded");
    assert_eq!(
        trace.url.as_deref(),
        Some("https://suumo.jp/ms/chuko/nc_exact/")
    );
    assert_eq!(
        trace.created_at.map(render_time),
        push["message"]["publishTime"].as_str().map(|t| {
            render_time(bson::DateTime::from_chrono(
                chrono::DateTime::parse_from_rfc3339(t)
                    .unwrap()
                    .with_timezone(&chrono::Utc),
            ))
        }),
        "created_at is the push's publishTime"
    );
}
