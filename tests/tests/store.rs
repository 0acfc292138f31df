//! The store against a real SecantusDB server: the transition rules inside the write,
//! convergence under any arrival order (also from a trace the original system wrote),
//! racing first writes (also when the duplicate key comes with another code), the index
//! set, and the cost of a write in database commands. Every test of a write runs once
//! per strategy (`pipeline::…`, `cas::…`), against the same expectations.

use std::collections::BTreeMap;

use bson::{doc, Document};
use futures::StreamExt;
use job_trace::config::StoreWrite;
use job_trace::ids::{LineUserId, MessageId};
use job_trace::indexes::{seed_index_set, Direction, IndexSpec};
use job_trace::model::{JobStatus, JobType, TraceDocument};
use job_trace::rules::{self, standing, Change, JobDetails};
use job_trace::store::{StoreError, UserQuery, REVISION};
use job_trace::TraceStore;
use job_trace_tests::disguise::Proxy;
use job_trace_tests::histories::{
    arrival_order, check_legacy_semantics, check_semantics, legacy_document, legacy_trace,
    random_history, with_sweeps,
};
use job_trace_tests::{counted_store, fresh_store, unique_name, Database};
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

async fn a_redelivered_processing_after_success_leaves_success(store: TraceStore) {
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

async fn a_failed_attempt_is_reopened_by_the_next_attempt(store: TraceStore) {
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

async fn a_late_event_of_an_older_attempt_changes_nothing(store: TraceStore) {
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

async fn an_event_before_its_job_message_still_gets_the_job_fields(store: TraceStore) {
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

async fn values_are_stored_as_data_never_as_expressions(store: TraceStore) {
    let change = Change::event(
        id("m5"),
        JobStatus::Failed,
        1,
        at(1),
        Some("$status".into()),
        Some(bson::bson!({ "op": "$set", "a.b": "$$ROOT", "n": { "x": ["$literal"] } })),
    );
    let doc = apply_all(&store, &[change]).await;
    assert_eq!(doc.error.as_deref(), Some("$status"));
    assert_eq!(
        doc.result.unwrap().into_relaxed_extjson(),
        serde_json::json!({ "op": "$set", "a.b": "$$ROOT", "n": { "x": ["$literal"] } })
    );
    // A field name starting with `$` is no value: Firestore's upsert cannot create it,
    // so the result becomes the marker (issue 16), and nothing is evaluated either way.
    let change = Change::event(
        id("m6"),
        JobStatus::Success,
        1,
        at(1),
        None,
        Some(bson::bson!({ "$set": "x" })),
    );
    let doc = apply_all(&store, &[change]).await;
    let result = doc.result.unwrap();
    assert_eq!(
        result.as_document().unwrap().get_bool("truncated"),
        Ok(true),
        "{result}"
    );
}

async fn the_store_agrees_with_the_rules_for_every_arrival_order(store: TraceStore) {
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

/// Histories in random arrival orders with sweeps between the arrivals: the store
/// writes what the rules say, and a sweep stands only while no real message with a
/// greater key has arrived after it; otherwise the job stands where it would without it.
async fn sweeps_through_the_store_agree_with_the_rules(store: TraceStore) {
    let seed: u64 = std::env::var("JOBTRACE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut applied, mut overridden) = (0, 0);
    for n in 0..120 {
        let history = random_history(&mut rng, id(&format!("s{n}")));
        let order = arrival_order(&mut rng, &history, &id(&format!("s{n}")));
        let swept = with_sweeps(&mut rng, &order);
        let expected = rules::replay(&swept).unwrap();
        let stored = without_id(apply_all(&store, &swept).await);
        assert_eq!(
            stored, expected,
            "JOBTRACE_SEED={seed}, arrivals {swept:#?}"
        );
        let without = rules::replay(&order).unwrap();
        let mut doc = None;
        let mut last_sweep = None;
        for change in &swept {
            let next = rules::apply_to(doc.as_ref(), change);
            if change.sweep.is_some() && next != doc {
                last_sweep = Some(rules::stored_key(doc.as_ref().unwrap()));
                applied += 1;
            }
            doc = next;
        }
        match last_sweep {
            Some(key) if rules::stored_key(&without) == key => {
                assert_eq!(stored.status, JobStatus::Failed, "JOBTRACE_SEED={seed}");
                assert!(stored.error.as_deref().unwrap_or("").starts_with("swept: "));
            }
            Some(_) => {
                overridden += 1;
                assert_eq!(
                    standing(&stored),
                    standing(&without),
                    "JOBTRACE_SEED={seed}"
                );
            }
            None => assert_eq!(
                standing(&stored),
                standing(&without),
                "JOBTRACE_SEED={seed}"
            ),
        }
    }
    eprintln!("sweeps: {applied} applied, {overridden} histories where a later event overrode one");
    assert!(
        applied > 0 && overridden > 0,
        "the histories exercise sweeps (JOBTRACE_SEED={seed})"
    );
}

/// A sweep written after a real event landed (the listing is older than the trace)
/// changes nothing: the write is conditioned on the trace being as listed.
async fn a_sweep_loses_to_an_event_that_landed_first(store: TraceStore) {
    let listed = apply_all(
        &store,
        &[job("w1"), event("w1", JobStatus::Processing, 1, 5)],
    )
    .await;
    let sweep = Change::swept(&listed, 600, at(5 + 700)).unwrap();
    // The worker reports progress after the listing, before the sweep's write.
    store
        .apply(&Change::progress(id("w1"), 1, at(650), 1, 2, None))
        .await
        .unwrap();
    assert!(
        !store.sweep(&sweep).await.unwrap(),
        "nothing recorded since: not true any more"
    );
    let after = store.get(&id("w1")).await.unwrap().unwrap();
    assert_eq!(after.status, JobStatus::Processing);
    // Without anything new, the same sweep applies once, and only once.
    let listed = apply_all(
        &store,
        &[job("w2"), event("w2", JobStatus::Processing, 1, 5)],
    )
    .await;
    let sweep = Change::swept(&listed, 600, at(5 + 700)).unwrap();
    assert!(store.sweep(&sweep).await.unwrap());
    assert!(
        !store.sweep(&sweep).await.unwrap(),
        "a second run finds it failed"
    );
    let swept = store.get(&id("w2")).await.unwrap().unwrap();
    assert_eq!(swept.status, JobStatus::Failed);
    store
        .apply(&event("w2", JobStatus::Success, 1, 800))
        .await
        .unwrap();
    let done = store.get(&id("w2")).await.unwrap().unwrap();
    assert_eq!((done.status, done.error), (JobStatus::Success, None));
}

async fn fifty_concurrent_first_writes_make_one_document(store: TraceStore) {
    // The unique index production has: `cas` inserts a new trace under it.
    store
        .create_indexes(seed_index_set().into_iter().filter(|index| !index.is_ttl()))
        .await
        .expect("indexes");
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
async fn one_status_event_costs_one_pipeline_update() {
    let (store, counter) = counted_store("commands").await;
    assert_eq!(store.write_strategy(), StoreWrite::Pipeline, "the default");
    store.apply(&job("c1")).await.unwrap();
    store.ready().await.unwrap();
    assert_eq!(counter.take(), ["update", "find"], "ready() is one find");
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
async fn one_status_event_costs_a_read_and_a_write_with_cas() {
    let (store, counter) = counted_store("commands_cas").await;
    let store = store.with_strategy(StoreWrite::Cas);
    store.apply(&job("c1")).await.unwrap();
    assert_eq!(counter.take(), ["find", "insert"], "a first write");
    store
        .apply(&event("c1", JobStatus::Processing, 1, 5))
        .await
        .unwrap();
    assert_eq!(counter.take(), ["find", "update"]);
    store
        .apply(&event("c1", JobStatus::Processing, 1, 5))
        .await
        .unwrap();
    assert_eq!(
        counter.take(),
        ["find"],
        "a redelivery that changes nothing writes nothing"
    );
}

async fn a_users_jobs_come_newest_first_with_filters_and_a_total(store: TraceStore) {
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

/// The original's traces move on under the rules from the key their status implies
/// ([`job_trace::model::TraceKey::implied_by_legacy`]), in the store as in `rules::apply`.
async fn a_legacy_trace_moves_on_as_the_rules_say(store: TraceStore) {
    let seed: u64 = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    for n in 0..60 {
        let message_id = format!("legacy{n}");
        let legacy = legacy_trace(&mut rng, &id(&message_id));
        let status = legacy.status;
        store
            .collection()
            .insert_one(legacy_document(&legacy))
            .await
            .unwrap();
        let start = store.get(&id(&message_id)).await.unwrap().unwrap();
        assert_eq!(without_id(start.clone()), legacy);
        let history = random_history(&mut rng, id(&message_id));
        let order = arrival_order(&mut rng, &history, &id(&message_id));
        let expected = order.iter().fold(start.clone(), |doc, change| {
            rules::apply(Some(&doc), change)
        });
        let stored = apply_all(&store, &order).await;
        assert_eq!(
            stored, expected,
            "a legacy {status} trace (seed {seed}) after {order:#?}"
        );
        if let Err(problem) = check_legacy_semantics(&start, &history, &stored) {
            panic!("{problem} (seed {seed})");
        }
    }
}

/// A store of its own whose duplicate-key answers come disguised (see [`Proxy`]).
async fn disguised_store(write: StoreWrite) -> (TraceStore, Proxy) {
    let database = Database::shared();
    let proxy = Proxy::start(database.port).await;
    let mut config = database.config(&unique_name("disguised"));
    config.mongo_uri = proxy.uri();
    config.store_write = write;
    let disguised = TraceStore::connect(&config).await.unwrap();
    disguised
        .create_indexes(seed_index_set().into_iter().filter(|index| !index.is_ttl()))
        .await
        .unwrap();
    (disguised, proxy)
}

/// A duplicate key answered with another code and text (as Firestore may answer)
/// still ends in one document, with every racing write recorded. `cas` only: the
/// pipeline's upserts never race on SecantusDB, which runs them one at a time.
#[tokio::test]
async fn a_duplicate_key_under_another_code_still_makes_one_document() {
    let (disguised, proxy) = disguised_store(StoreWrite::Cas).await;
    // A race is not lost on demand: race until one was (and was disguised).
    for round in 0..20 {
        let message_id = format!("disguised{round}");
        let writers: Vec<_> = (0..30)
            .map(|n| {
                let store = disguised.clone();
                let change = event(&message_id, JobStatus::Processing, 1, n);
                tokio::spawn(async move { store.apply(&change).await })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().expect("every racing write succeeds");
        }
        let count = disguised
            .collection()
            .count_documents(doc! { "message_id": &message_id })
            .await
            .unwrap();
        assert_eq!(count, 1, "round {round}");
        let doc = disguised.get(&id(&message_id)).await.unwrap().unwrap();
        assert_eq!(doc.history.len(), 30, "every write is in the trace");
        if proxy.disguised() > 0 {
            return;
        }
    }
    panic!("no first write lost a race in 20 rounds: the test proved nothing");
}

/// A first write that fails with an error nobody can read as a duplicate, while no trace
/// exists, is an error (the writer answers 503 and Pub/Sub redelivers), never a success.
/// A second unique index (on `url`) makes such a failure on demand.
async fn an_unreadable_first_write_failure_is_an_error(store: TraceStore) {
    let (disguised, proxy) = disguised_store(store.write_strategy()).await;
    let unique_url = IndexSpec {
        name: "url_unique".into(),
        fields: vec![("url", Direction::Ascending)],
        unique: true,
        ttl_seconds: None,
        partial_filter: None,
    };
    disguised.create_indexes([unique_url]).await.unwrap();
    disguised.apply(&job("first")).await.unwrap();
    let error = disguised
        .apply(&job("second"))
        .await
        .expect_err("a failed write is not a success");
    assert!(
        matches!(error, StoreError::Database(_)),
        "a database error, answered 503: {error:?}"
    );
    assert!(proxy.disguised() > 0, "the duplicate came disguised");
    assert_eq!(disguised.get(&id("second")).await.unwrap(), None);
}

/// Both strategies leave the same trace, and only they differ in `revision`: the
/// pipeline counts every write, `cas` only those that change the trace.
async fn both_strategies_maintain_the_revision(store: TraceStore) {
    let changes = [
        job("r1"),
        event("r1", JobStatus::Processing, 1, 5),
        event("r1", JobStatus::Processing, 1, 5),
    ];
    apply_all(&store, &changes).await;
    let raw = store
        .collection()
        .find_one(doc! { "message_id": "r1" })
        .await
        .unwrap()
        .unwrap();
    let expected = match store.write_strategy() {
        StoreWrite::Pipeline => 3,
        StoreWrite::Cas => 2,
    };
    assert_eq!(raw.get_i64(REVISION), Ok(expected), "{raw:?}");
}

/// Each test once per strategy, on a fresh database (`pipeline::…`, `cas::…`).
macro_rules! for_each_strategy {
    ($($test:ident),* $(,)?) => {
        for_each_strategy!(@in pipeline Pipeline $($test),*);
        for_each_strategy!(@in cas Cas $($test),*);
    };
    (@in $module:ident $write:ident $($test:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    let write = super::StoreWrite::$write;
                    // Database names are short: the test's first 20 characters.
                    let prefix: String = stringify!($test).chars().take(20).collect();
                    super::$test(job_trace_tests::fresh_store_writing(&prefix, write).await).await;
                }
            )*
        }
    };
}

for_each_strategy!(
    a_redelivered_processing_after_success_leaves_success,
    a_failed_attempt_is_reopened_by_the_next_attempt,
    a_late_event_of_an_older_attempt_changes_nothing,
    an_event_before_its_job_message_still_gets_the_job_fields,
    values_are_stored_as_data_never_as_expressions,
    the_store_agrees_with_the_rules_for_every_arrival_order,
    fifty_concurrent_first_writes_make_one_document,
    a_users_jobs_come_newest_first_with_filters_and_a_total,
    a_legacy_trace_moves_on_as_the_rules_say,
    an_unreadable_first_write_failure_is_an_error,
    both_strategies_maintain_the_revision,
    sweeps_through_the_store_agree_with_the_rules,
    a_sweep_loses_to_an_event_that_landed_first,
);
