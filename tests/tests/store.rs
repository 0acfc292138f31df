//! The store against a real SecantusDB server: the transition rules inside the write,
//! convergence under any arrival order, racing first writes, the index set, and the
//! cost of a write in database commands.

use std::collections::BTreeMap;

use bson::{doc, Document};
use futures::StreamExt;
use job_trace::ids::{LineUserId, MessageId};
use job_trace::indexes::seed_index_set;
use job_trace::model::{JobStatus, JobType, TraceDocument};
use job_trace::rules::{self, Change, JobDetails};
use job_trace::store::UserQuery;
use job_trace::TraceStore;
use job_trace_tests::histories::{arrival_order, check_semantics, random_history};
use job_trace_tests::{counted_store, fresh_store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn id(raw: &str) -> MessageId {
    MessageId::parse(raw).unwrap()
}

fn at(seconds: i64) -> bson::DateTime {
    bson::DateTime::from_millis(1_685_622_896_789 + seconds * 1000)
}

fn job(message_id: &str) -> Change {
    Change::queued(
        id(message_id),
        at(0),
        JobDetails {
            job_type: JobType::PropertyScrape,
            url: Some("https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_98142765/".into()),
            line_user_id: Some(LineUserId::parse("U1234567890abcdef").unwrap()),
            check_only: false,
        },
    )
}

fn event(message_id: &str, status: JobStatus, attempt: u32, seconds: i64) -> Change {
    let error = (status == JobStatus::Failed).then(|| format!("attempt {attempt} failed"));
    Change::event(id(message_id), status, attempt, at(seconds), error, None)
}

async fn apply_all(store: &TraceStore, changes: &[Change]) -> TraceDocument {
    for change in changes {
        store.apply(change).await.expect("apply");
    }
    store
        .get(&changes[0].message_id)
        .await
        .expect("get")
        .expect("a trace exists")
}

fn without_id(mut doc: TraceDocument) -> TraceDocument {
    doc.id = None;
    doc
}

#[tokio::test]
async fn a_redelivered_processing_after_success_leaves_success() {
    let store = fresh_store("redelivery").await;
    let doc = apply_all(
        &store,
        &[
            job("m1"),
            event("m1", JobStatus::Processing, 1, 5),
            event("m1", JobStatus::Success, 1, 46),
            event("m1", JobStatus::Processing, 1, 5),
        ],
    )
    .await;
    assert_eq!(doc.status, JobStatus::Success);
    assert_eq!(doc.started_at, Some(at(5)));
    assert_eq!(doc.completed_at, Some(at(46)));
}

#[tokio::test]
async fn a_failed_attempt_is_reopened_by_the_next_attempt() {
    let store = fresh_store("reopen").await;
    let doc = apply_all(
        &store,
        &[
            job("m2"),
            event("m2", JobStatus::Processing, 1, 5),
            event("m2", JobStatus::Failed, 1, 10),
            event("m2", JobStatus::Processing, 2, 20),
        ],
    )
    .await;
    assert_eq!(doc.status, JobStatus::Processing);
    assert_eq!(doc.attempt, Some(2));
    assert_eq!(doc.started_at, Some(at(20)));
    assert_eq!(doc.completed_at, None);
    assert_eq!(doc.error, None);
    assert_eq!(doc.history.len(), 4);
}

#[tokio::test]
async fn a_late_event_of_an_older_attempt_changes_nothing() {
    let store = fresh_store("late").await;
    let done = apply_all(
        &store,
        &[
            job("m3"),
            event("m3", JobStatus::Failed, 1, 10),
            event("m3", JobStatus::Processing, 2, 20),
            event("m3", JobStatus::Success, 2, 30),
        ],
    )
    .await;
    let after = apply_all(
        &store,
        &[
            event("m3", JobStatus::Processing, 1, 5),
            event("m3", JobStatus::Failed, 1, 10),
        ],
    )
    .await;
    assert_eq!(after.status, JobStatus::Success);
    assert_eq!(after.attempt, Some(2));
    assert_eq!(after.started_at, done.started_at);
    assert_eq!(after.completed_at, Some(at(30)));
    assert_eq!(after.error, None);
    assert_eq!(
        after.history.len(),
        done.history.len() + 1,
        "only the unseen processing@1 is new"
    );
}

#[tokio::test]
async fn an_event_before_its_job_message_still_gets_the_job_fields() {
    let store = fresh_store("early").await;
    let doc = apply_all(
        &store,
        &[
            event("m4", JobStatus::Processing, 1, 5),
            event("m4", JobStatus::Success, 1, 46),
            job("m4"),
        ],
    )
    .await;
    assert_eq!(doc.status, JobStatus::Success);
    assert_eq!(
        doc.url.as_deref(),
        Some("https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_98142765/")
    );
    assert_eq!(doc.line_user_id.as_deref(), Some("U1234567890abcdef"));
    assert_eq!(doc.job_type, Some(JobType::PropertyScrape));
    assert_eq!(doc.check_only, Some(false));
    assert_eq!(doc.created_at, Some(at(0)));
}

#[tokio::test]
async fn values_are_stored_as_data_never_as_expressions() {
    let store = fresh_store("literal").await;
    let change = Change::event(
        id("m5"),
        JobStatus::Failed,
        1,
        at(1),
        Some("$status".into()),
        Some(bson::bson!({ "$set": "x", "a.b": "$$ROOT" })),
    );
    let doc = apply_all(&store, &[change]).await;
    assert_eq!(doc.error.as_deref(), Some("$status"));
    assert_eq!(
        doc.result.unwrap().into_relaxed_extjson(),
        serde_json::json!({ "$set": "x", "a.b": "$$ROOT" })
    );
}

#[tokio::test]
async fn the_store_agrees_with_the_rules_for_every_arrival_order() {
    let histories: usize = std::env::var("JOBTRACE_HISTORIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("JOBTRACE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("convergence: {histories} histories, JOBTRACE_SEED={seed}");
    // With the seed's indexes, as in production: a long run makes 2 x JOBTRACE_HISTORIES
    // documents, and without the unique index each write would scan them all. All but the
    // TTL indexes: the histories are dated months ago, and a TTL sweep would delete a
    // trace between two of its writes.
    let store = fresh_store("converge").await;
    store
        .create_indexes(seed_index_set().into_iter().filter(|index| !index.is_ttl()))
        .await
        .expect("indexes");
    let mut rng = StdRng::seed_from_u64(seed);
    // Made as they are applied: `make convergence-long` runs 100,000 of them.
    let cases = (0..histories).map(move |n| {
        let history = random_history(&mut rng, id(&format!("h{n}")));
        let orders: Vec<_> = (0..2)
            .map(|k| arrival_order(&mut rng, &history, &id(&format!("h{n}-{k}"))))
            .collect();
        (n, history, orders)
    });
    let started = std::time::Instant::now();
    let failures: Vec<String> = futures::stream::iter(cases)
        .map(|(n, history, orders)| {
            let store = store.clone();
            if n > 0 && n % 10_000 == 0 {
                eprintln!(
                    "convergence: {n} histories in {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
            async move {
                let natural: Vec<_> = history.messages.iter().collect();
                let mut expected = rules::replay(natural).unwrap();
                if let Err(problem) = check_semantics(&history, &expected) {
                    return Some(format!("{}: rules: {problem}", history.message_id));
                }
                for order in orders {
                    let job = order[0].message_id.clone();
                    expected.message_id = job.to_string();
                    if rules::replay(&order).as_ref() != Some(&expected) {
                        return Some(format!("{job}: the rules diverge for {order:#?}"));
                    }
                    let stored = without_id(apply_all(&store, &order).await);
                    if stored != expected {
                        return Some(format!(
                            "{job}: stored {stored:#?}\nexpected {expected:#?}\narrivals {order:#?}"
                        ));
                    }
                }
                None
            }
        })
        .buffer_unordered(8)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    eprintln!(
        "convergence: {histories} histories x 2 arrival orders through the store in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {histories} histories failed (JOBTRACE_SEED={seed}); first: {}",
        failures.len(),
        failures[0]
    );
}

#[tokio::test]
async fn fifty_concurrent_first_writes_make_one_document() {
    let store = fresh_store("race").await;
    let writers: Vec<_> = (0..50)
        .map(|n| {
            let store = store.clone();
            let change = if n % 2 == 0 {
                job("raced")
            } else {
                event("raced", JobStatus::Processing, 1, n)
            };
            tokio::spawn(async move { store.apply(&change).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().expect("every racing write succeeds");
    }
    let count = store
        .collection()
        .count_documents(doc! { "message_id": "raced" })
        .await
        .unwrap();
    assert_eq!(count, 1);
    let doc = store.get(&id("raced")).await.unwrap().unwrap();
    assert_eq!(doc.status, JobStatus::Processing);
    assert_eq!(
        doc.started_at,
        Some(at(1)),
        "the earliest processing time of attempt 1"
    );
    assert_eq!(
        doc.history.len(),
        26,
        "one queued entry and 25 distinct processing entries"
    );
}

#[tokio::test]
async fn the_index_set_is_the_seeds() {
    let store = fresh_store("indexes").await;
    store.ensure_indexes().await.unwrap();
    store
        .ensure_indexes()
        .await
        .expect("ensuring twice is harmless");
    let namespace = store.collection().namespace();
    let reply = store
        .client()
        .database(&namespace.db)
        .run_command(doc! { "listIndexes": &namespace.coll })
        .await
        .unwrap();
    let listed: Vec<Document> = reply
        .get_document("cursor")
        .and_then(|cursor| cursor.get_array("firstBatch"))
        .unwrap()
        .iter()
        .map(|index| index.as_document().unwrap().clone())
        .collect();
    let mut actual = BTreeMap::new();
    for index in &listed {
        actual.insert(
            index.get_str("name").unwrap().to_owned(),
            (
                index.get_document("key").unwrap().clone(),
                index.get_bool("unique").unwrap_or(false),
                index
                    .get("expireAfterSeconds")
                    .and_then(|s| s.as_i64().or(s.as_i32().map(i64::from))),
                index.get_document("partialFilterExpression").ok().cloned(),
            ),
        );
    }
    actual.remove("_id_");
    let expected: BTreeMap<_, _> = seed_index_set()
        .into_iter()
        .map(|spec| {
            (
                spec.name.clone(),
                (
                    spec.keys(),
                    spec.unique,
                    spec.ttl_seconds.map(|s| s as i64),
                    spec.partial_filter.clone(),
                ),
            )
        })
        .collect();
    assert_eq!(actual, expected, "listIndexes: {listed:#?}");
    assert_eq!(expected["created_at_1"].2, Some(604_800));
    assert_eq!(expected["completed_at_1"].2, Some(259_200));
}

#[tokio::test]
async fn one_status_event_costs_one_database_command() {
    let (store, counter) = counted_store("commands").await;
    store.apply(&job("c1")).await.unwrap();
    store.ping().await.unwrap();
    counter.take();
    store
        .apply(&event("c1", JobStatus::Processing, 1, 5))
        .await
        .unwrap();
    assert_eq!(counter.take(), ["update"]);
    store
        .apply(&event("c2", JobStatus::Success, 1, 5))
        .await
        .unwrap();
    assert_eq!(
        counter.take(),
        ["update"],
        "a first write is one upsert too"
    );
    store.get(&id("c1")).await.unwrap();
    assert_eq!(counter.take(), ["find"]);
}

#[tokio::test]
async fn a_users_jobs_come_newest_first_with_filters_and_a_total() {
    let store = fresh_store("list").await;
    for n in 0..7_i64 {
        let message_id = format!("u{n}");
        let mut queued = job(&message_id);
        queued.at = at(n * 60);
        store.apply(&queued).await.unwrap();
        if n % 3 == 0 {
            store
                .apply(&event(&message_id, JobStatus::Success, 1, n * 60 + 30))
                .await
                .unwrap();
        }
    }
    let user = LineUserId::parse("U1234567890abcdef").unwrap();
    let query = |statuses: Vec<JobStatus>, limit: u32, skip: u64| UserQuery {
        line_user_id: user.clone(),
        statuses,
        job_type: None,
        limit,
        skip,
    };
    let page = store.list_by_user(&query(vec![], 3, 1)).await.unwrap();
    assert_eq!(page.total_count, 7);
    let ids: Vec<_> = page.jobs.iter().map(|j| j.message_id.as_str()).collect();
    assert_eq!(ids, ["u5", "u4", "u3"]);
    let done = store
        .list_by_user(&query(vec![JobStatus::Success], 50, 0))
        .await
        .unwrap();
    assert_eq!(done.total_count, 3);
    let both = store
        .list_by_user(&query(vec![JobStatus::Success, JobStatus::Queued], 50, 0))
        .await
        .unwrap();
    assert_eq!(both.total_count, 7);
    let past_end = store.list_by_user(&query(vec![], 50, 100)).await.unwrap();
    assert_eq!((past_end.jobs.len(), past_end.total_count), (0, 7));
    let mut batch = query(vec![], 50, 0);
    batch.job_type = Some(JobType::BatchCheck);
    assert_eq!(store.list_by_user(&batch).await.unwrap().total_count, 0);
    let stranger = UserQuery {
        line_user_id: LineUserId::parse("nobody").unwrap(),
        ..query(vec![], 50, 0)
    };
    assert_eq!(store.list_by_user(&stranger).await.unwrap().total_count, 0);
}
