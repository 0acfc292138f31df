//! Chaos run (`make chaos`; ignored by `make test`): 10,000 jobs with full lifecycles
//! published to the real Pub/Sub emulator and pushed to the real `trace-writer` binary,
//! while the database is killed with SIGKILL and restarted twice and the writer is
//! stopped with SIGTERM and restarted once, under load. Then every trace must be exactly
//! what its job's history says: none lost, none wrong, none duplicated.
//!
//! `JOBTRACE_CHAOS_JOBS` changes the number of jobs, `JOBTRACE_CHAOS_DRAIN_SECONDS` how
//! long the traces may take to converge once everything is published (default 3,600: the
//! emulator pushes only a few messages at a time, about 65 a second here), and
//! `JOBTRACE_WRITER_BIN` the binary (default `target/debug/trace-writer`; `make chaos`
//! builds and passes the release one, which is what Cloud Run runs).
//! `JOBTRACE_STORE_WRITE` (`pipeline`, the default, or `cas`) is the writer's
//! `STORE_WRITE`: the same checks hold for both strategies.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::doc;
use futures::TryStreamExt;
use google_cloud_pubsub::client::Publisher;
use job_trace::config::StoreWrite;
use job_trace::ids::MessageId;
use job_trace::model::TraceDocument;
use job_trace::TraceStore;
use job_trace_tests::apps::Binary;
use job_trace_tests::histories::{arrival_order, check_published, shifted_history, History};
use job_trace_tests::pubsub::{emulator, event_message, job_message, PushOptions};
use job_trace_tests::{free_port, project_root, unique_name, Database};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|raw| {
            raw.parse()
                .unwrap_or_else(|_| panic!("{name}={raw} is not a number"))
        })
        .unwrap_or(default)
}

/// The write strategy under test, checked as the writer would check it.
fn store_write() -> StoreWrite {
    std::env::var("JOBTRACE_STORE_WRITE").map_or(StoreWrite::Pipeline, |raw| {
        StoreWrite::try_from(raw).unwrap_or_else(|e| panic!("JOBTRACE_STORE_WRITE: {e}"))
    })
}

fn writer_binary() -> PathBuf {
    let path = std::env::var_os("JOBTRACE_WRITER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target/debug/trace-writer"));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p trace-writer` (`make chaos` builds and passes the release one)",
        path.display()
    );
    path
}

/// The writer process, always on one port: while it is down, pushes fail and the
/// emulator redelivers them to the same address, as with a Cloud Run URL.
struct WriterProcess {
    binary: PathBuf,
    port: u16,
    vars: Vec<(String, String)>,
}

impl WriterProcess {
    fn spawn(&self) -> Binary {
        let port = self.port.to_string();
        let mut vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Binary::spawn picks a free port; a later PORT wins.
        vars.push(("PORT", &port));
        Binary::spawn(&self.binary, &vars)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    async fn wait_healthy(&self, binary: &Binary) {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        let start = Instant::now();
        while !client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "trace-writer not healthy within 30 s:\n{}",
                binary.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// HTTP statuses of the pushes a writer process logged (one JSON line per push).
fn push_statuses(binary: &Binary, into: &mut HashMap<u64, u64>) {
    for line in binary.json_lines() {
        if let Some(status) = line["http_status"].as_u64() {
            *into.entry(status).or_default() += 1;
        }
    }
}

struct Job {
    history: History,
    /// When its job message was published (the test's clock around the call), ms.
    published: (i64, i64),
}

impl Job {
    fn id(&self) -> &str {
        self.history.message_id.as_str()
    }

    fn check(&self, doc: &TraceDocument) -> Result<(), String> {
        check_published(&self.history, self.published, doc)
    }
}

/// Publishes the job messages of `histories` at once; their ids become the jobs' ids.
async fn publish_jobs(topic: &Publisher, histories: Vec<History>) -> Vec<Job> {
    let before = chrono::Utc::now().timestamp_millis();
    let pending: Vec<_> = histories
        .iter()
        .map(|h| topic.publish(job_message(h.messages[0].job.as_ref().unwrap())))
        .collect();
    let ids = futures::future::join_all(pending).await;
    let after = chrono::Utc::now().timestamp_millis();
    histories
        .into_iter()
        .zip(ids)
        .map(|(mut history, id)| {
            let id = MessageId::parse(id.expect("publish a job message")).unwrap();
            for message in &mut history.messages {
                message.message_id = id.clone();
            }
            history.message_id = id;
            Job {
                history,
                published: (before, after),
            }
        })
        .collect()
}

/// Publishes every event of `jobs` one to three times, all shuffled together.
async fn publish_events(rng: &mut StdRng, topic: &Publisher, jobs: &[Job]) -> usize {
    let mut messages = Vec::new();
    for job in jobs {
        let mut events = job.history.clone();
        events.messages.remove(0);
        for change in arrival_order(rng, &events, &job.history.message_id) {
            messages.push(event_message(&change, job.id(), false));
        }
    }
    messages.shuffle(rng);
    let count = messages.len();
    let pending: Vec<_> = messages.into_iter().map(|m| topic.publish(m)).collect();
    for outcome in futures::future::join_all(pending).await {
        outcome.expect("publish an event");
    }
    count
}

#[derive(Default, Debug)]
struct Verdict {
    lost: Vec<String>,
    wrong: Vec<String>,
    duplicated: Vec<String>,
    strays: usize,
}

impl Verdict {
    fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.wrong.is_empty()
            && self.duplicated.is_empty()
            && self.strays == 0
    }

    fn summary(&self) -> String {
        format!(
            "lost {}, wrong {}, duplicated {}, stray documents {}; first lost {:?}, first wrong {:?}, first duplicated {:?}",
            self.lost.len(),
            self.wrong.len(),
            self.duplicated.len(),
            self.strays,
            &self.lost[..self.lost.len().min(3)],
            &self.wrong[..self.wrong.len().min(3)],
            &self.duplicated[..self.duplicated.len().min(3)],
        )
    }
}

/// Every document of the collection against every job.
async fn verdict(store: &TraceStore, jobs: &[Job]) -> Result<Verdict, String> {
    let docs: Vec<bson::Document> = store
        .collection()
        .find(doc! {})
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut by_id: HashMap<String, Vec<TraceDocument>> = HashMap::new();
    for doc in docs {
        let trace: TraceDocument = bson::from_document(doc).map_err(|e| e.to_string())?;
        by_id
            .entry(trace.message_id.clone())
            .or_default()
            .push(trace);
    }
    let mut verdict = Verdict::default();
    for job in jobs {
        match by_id.remove(job.id()).as_deref() {
            None | Some([]) => verdict.lost.push(job.id().to_owned()),
            Some([doc]) => {
                if let Err(problem) = job.check(doc) {
                    verdict.wrong.push(format!("{}: {problem}", job.id()));
                }
            }
            Some(many) => {
                verdict
                    .duplicated
                    .push(format!("{}: {} documents", job.id(), many.len()))
            }
        }
    }
    verdict.strays = by_id.values().map(Vec::len).sum();
    Ok(verdict)
}

/// Polls the document count (cheap; fails while the database is down).
async fn traces_written(store: &TraceStore) -> Option<u64> {
    tokio::time::timeout(
        Duration::from_secs(3),
        store.collection().count_documents(doc! {}),
    )
    .await
    .ok()?
    .ok()
}

async fn wait_for_traces(store: &TraceStore, at_least: u64) {
    loop {
        if traces_written(store).await.is_some_and(|n| n >= at_least) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: `make chaos`"]
async fn chaos_ten_thousand_jobs_survive_database_kills_and_a_writer_restart() {
    let emulator = emulator("chaos").expect("the chaos run needs the Pub/Sub emulator");
    let total = env_number("JOBTRACE_CHAOS_JOBS", 10_000) as usize;
    let drain_limit = Duration::from_secs(env_number("JOBTRACE_CHAOS_DRAIN_SECONDS", 3600));
    let strategy = store_write();
    eprintln!("chaos: {total} jobs, STORE_WRITE={}", strategy.as_str());

    let database = Arc::new(Database::start_new());
    let database_name = unique_name("chaos");
    // A SIGKILL'd SecantusDB loses writes acknowledged before its journal was flushed;
    // with j: true an acknowledged write is a durable one, which is what a 204 promises.
    let uri = format!("{}&journal=true", database.uri());
    let mut config = database.config(&database_name);
    config.mongo_uri = uri.clone();
    let store = TraceStore::connect(&config).await.expect("store");

    let writer = WriterProcess {
        binary: writer_binary(),
        port: free_port(),
        vars: vec![
            ("MONGO_URI".into(), uri),
            ("MONGO_DATABASE".into(), database_name),
            ("PUSH_AUTH".into(), "none".into()),
            ("ENSURE_INDEXES".into(), "true".into()),
            ("DB_TIMEOUT_SECONDS".into(), "2".into()),
            ("STORE_WRITE".into(), strategy.as_str().into()),
            ("RUST_LOG".into(), "info".into()),
        ],
    };
    let first = writer.spawn();
    writer.wait_healthy(&first).await;
    let running = Arc::new(Mutex::new(Some(first)));

    let suffix = unique_name("chaos").replace('_', "-");
    let jobs_topic_name = format!("scrape-jobs-{suffix}");
    let events_topic_name = format!("job-trace-events-{suffix}");
    emulator.create_topic(&jobs_topic_name).await;
    emulator.create_topic(&events_topic_name).await;
    // No retry policy: with one the emulator gives up on a message after three failed
    // pushes, and this run fails many pushes on purpose.
    let jobs_subscription = emulator
        .create_push_subscription(
            &format!("{jobs_topic_name}-trace"),
            &jobs_topic_name,
            None,
            PushOptions::default(),
        )
        .await;
    emulator
        .create_push_subscription(
            &format!("{events_topic_name}-push"),
            &events_topic_name,
            Some(&writer.url()),
            PushOptions::default(),
        )
        .await;
    let jobs_topic = emulator.publisher(&jobs_topic_name).await;
    let events_topic = emulator.publisher(&events_topic_name).await;

    let seed = env_number("JOBTRACE_SEED", 0xc4a0_5000);
    println!("chaos: {total} jobs, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let events_from = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let started = Instant::now();

    // The chaos, triggered by how many traces exist, so that it hits while pushes flow.
    let actions = Arc::new(Mutex::new(Vec::<String>::new()));
    let statuses = Arc::new(Mutex::new(HashMap::<u64, u64>::new()));
    let chaos_done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (database, running, actions, statuses, chaos_done, store) = (
            database.clone(),
            running.clone(),
            actions.clone(),
            statuses.clone(),
            chaos_done.clone(),
            store.clone(),
        );
        let writer = WriterProcess {
            binary: writer.binary.clone(),
            port: writer.port,
            vars: writer.vars.clone(),
        };
        let log = move |what: String| {
            let line = format!("{:>6.1} s  {what}", started.elapsed().as_secs_f64());
            println!("chaos: {line}");
            actions.lock().unwrap().push(line);
        };
        tokio::spawn(async move {
            let kill_database = |n: usize| {
                let database = database.clone();
                let log = log.clone();
                async move {
                    database.stop();
                    log(format!("database killed (SIGKILL) #{n}"));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let restarting = database.clone();
                    tokio::task::spawn_blocking(move || restarting.start())
                        .await
                        .expect("restart the database");
                    log(format!("database restarted #{n}"));
                }
            };
            wait_for_traces(&store, total as u64 / 5).await;
            kill_database(1).await;

            wait_for_traces(&store, total as u64 / 2).await;
            let mut stopping = running.lock().unwrap().take().expect("a writer");
            stopping.terminate();
            log("trace-writer sent SIGTERM".into());
            let exit = tokio::task::spawn_blocking(move || {
                let exit = stopping.wait_exit(Duration::from_secs(15));
                (exit, stopping)
            })
            .await
            .unwrap();
            let (exit, stopped) = exit;
            assert!(
                exit.is_some_and(|status| status.success()),
                "trace-writer did not exit cleanly after SIGTERM: {exit:?}\n{}",
                stopped
                    .output()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            push_statuses(&stopped, &mut statuses.lock().unwrap());
            drop(stopped);
            log("trace-writer exited cleanly".into());
            tokio::time::sleep(Duration::from_secs(2)).await;
            let second = writer.spawn();
            writer.wait_healthy(&second).await;
            *running.lock().unwrap() = Some(second);
            log("trace-writer restarted".into());

            wait_for_traces(&store, total as u64 * 3 / 4).await;
            kill_database(2).await;
            chaos_done.store(true, Ordering::SeqCst);
        })
    };

    // Publishing: job messages in batches, then their events, duplicated and shuffled
    // across the batch. The first tenth's job messages are held back, so that their
    // events reach the writer first.
    let batch = 250;
    let held = (total / 10).max(1);
    let mut jobs: Vec<Job> = Vec::with_capacity(total);
    let mut messages = 0;
    while jobs.len() < total {
        let n = batch.min(total - jobs.len());
        let histories: Vec<History> = (0..n)
            .map(|_| shifted_history(&mut rng, events_from))
            .collect();
        let new = publish_jobs(&jobs_topic, histories).await;
        messages += new.len();
        messages += publish_events(&mut rng, &events_topic, &new).await;
        jobs.extend(new);
        if jobs.len() >= held && jobs.len() - n < held {
            tokio::time::sleep(Duration::from_secs(3)).await;
            emulator
                .set_push_endpoint(&jobs_subscription, &writer.url())
                .await;
        }
    }
    let publishing = started.elapsed();
    println!(
        "chaos: {} jobs, {messages} messages published in {:.1} s",
        jobs.len(),
        publishing.as_secs_f64()
    );

    // Drain: until every trace is right, or the limit.
    let mut last = Verdict::default();
    let mut converged_at = None;
    let deadline = Instant::now() + drain_limit;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if !chaos_done.load(Ordering::SeqCst) {
            continue;
        }
        match verdict(&store, &jobs).await {
            Ok(v) if v.clean() => {
                converged_at = Some(started.elapsed());
                last = v;
                break;
            }
            Ok(v) => {
                println!(
                    "chaos: {:.0} s: {}",
                    started.elapsed().as_secs_f64(),
                    v.summary()
                );
                last = v;
            }
            Err(e) => println!("chaos: reading the traces failed: {e}"),
        }
    }
    if chaos.is_finished() {
        chaos.await.expect("the chaos task");
    } else {
        chaos.abort();
        panic!(
            "the chaos did not finish (traces never reached its triggers); done: {:?}",
            actions.lock().unwrap()
        );
    }
    // The traces are checked once more with everything settled: a late redelivery must
    // not have changed a converged trace.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = verdict(&store, &jobs).await.expect("read the traces");
    if let Some(last_writer) = running.lock().unwrap().take() {
        push_statuses(&last_writer, &mut statuses.lock().unwrap());
    }
    let statuses = statuses.lock().unwrap().clone();
    let pushes: u64 = statuses.values().sum();
    println!(
        "chaos: actions:\n  {}",
        actions.lock().unwrap().join("\n  ")
    );
    println!(
        "chaos: {} jobs, {messages} messages published in {:.1} s; {pushes} pushes by HTTP status {statuses:?}",
        jobs.len(),
        publishing.as_secs_f64(),
    );
    match converged_at {
        Some(at) => println!(
            "chaos: every trace right after {:.1} s ({:.1} s after the last publish); settled: {}",
            at.as_secs_f64(),
            (at - publishing).as_secs_f64(),
            settled.summary()
        ),
        None => println!(
            "chaos: NOT converged within {} s of the last publish: {}",
            drain_limit.as_secs(),
            last.summary()
        ),
    }
    assert!(converged_at.is_some(), "not converged: {}", last.summary());
    assert!(settled.clean(), "after settling: {}", settled.summary());
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "the writer never answered 503, so the database outages were not felt"
    );
    assert!(pushes >= messages as u64, "fewer pushes than messages");
    assert_eq!(
        statuses.keys().filter(|s| !matches!(s, 204 | 503)).count(),
        0,
        "only 204 and 503 are expected: {statuses:?}"
    );
}
