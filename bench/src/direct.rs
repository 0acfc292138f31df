//! The same loads sent straight to the database by a minimal client, without HTTP or the
//! services: the ceiling the services are measured against, and the original system's
//! read-then-write pattern measured the same way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use job_trace::store::update_pipeline;
use job_trace::Change;
use mongodb::Collection;
use rand::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectOp {
    /// `findOne` by `message_id`: what a status read costs the database.
    Find,
    /// The user list's one `aggregate` (`$match` + `$facet`), as the store sends it.
    List,
    /// One conditional upsert with the service's own update pipeline.
    Update,
    /// The original's write: `find_one`, then `update_one` with `$set` (two round trips).
    Original,
}

pub struct Inputs {
    pub ids: Arc<Vec<String>>,
    pub users: Arc<Vec<String>>,
    pub changes: Arc<Vec<Change>>,
}

pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies in microseconds, sorted.
    pub latencies: Vec<u32>,
}

fn list_pipeline(user: &str) -> Vec<Document> {
    vec![
        doc! { "$match": { "line_user_id": user } },
        doc! { "$facet": {
            "jobs": [
                { "$sort": { "created_at": -1, "_id": -1 } },
                { "$skip": 0_i64 },
                { "$limit": 50_i64 },
            ],
            "total": [{ "$count": "n" }],
        } },
    ]
}

/// The original's update for one message: the fields it set, with no rules at all (a late
/// `processing` moves a finished job back; that is what the rules in the pipeline fix).
fn original_update(change: &Change) -> Document {
    let mut set = doc! {
        "status": change.status.as_str(),
        "updated_at": change.at,
    };
    match change.key.rank {
        1 => {
            set.insert("started_at", change.at);
        }
        2 => {
            set.insert("completed_at", change.at);
            set.insert(
                "error",
                change.error.clone().map_or(Bson::Null, Bson::String),
            );
            set.insert("result", change.result.clone().unwrap_or(Bson::Null));
        }
        _ => {}
    }
    let mut on_insert = doc! { "created_at": change.at };
    if let Some(job) = &change.job {
        on_insert.insert("job_type", job.job_type.as_str());
        on_insert.insert("url", job.url.clone().map_or(Bson::Null, Bson::String));
        on_insert.insert(
            "line_user_id",
            job.line_user_id
                .as_ref()
                .map_or(Bson::Null, |u| Bson::String(u.as_str().to_owned())),
        );
        on_insert.insert("check_only", job.check_only);
    }
    doc! { "$set": set, "$setOnInsert": on_insert }
}

async fn one(
    op: DirectOp,
    traces: &Collection<Document>,
    original: &Collection<Document>,
    inputs: &Inputs,
    cursor: &AtomicUsize,
) -> mongodb::error::Result<()> {
    match op {
        DirectOp::Find => {
            let id = &inputs.ids[rand::rng().random_range(0..inputs.ids.len())];
            traces.find_one(doc! { "message_id": id.as_str() }).await?;
        }
        DirectOp::List => {
            let user = &inputs.users[rand::rng().random_range(0..inputs.users.len())];
            let mut facets = traces.aggregate(list_pipeline(user)).await?;
            facets.try_next().await?;
        }
        DirectOp::Update => {
            let change =
                &inputs.changes[cursor.fetch_add(1, Ordering::Relaxed) % inputs.changes.len()];
            traces
                .update_one(
                    doc! { "message_id": change.message_id.as_str() },
                    update_pipeline(change),
                )
                .upsert(true)
                .await?;
        }
        DirectOp::Original => {
            let change =
                &inputs.changes[cursor.fetch_add(1, Ordering::Relaxed) % inputs.changes.len()];
            let filter = doc! { "message_id": change.message_id.as_str() };
            // The original read the trace first to decide what to write.
            let _existing = original.find_one(filter.clone()).await?;
            original
                .update_one(filter, original_update(change))
                .upsert(true)
                .await?;
        }
    }
    Ok(())
}

/// `conns` concurrent clients, each sending the next operation as soon as the last one is
/// answered, for `duration`.
pub async fn run(
    op: DirectOp,
    traces: Collection<Document>,
    original: Collection<Document>,
    inputs: Arc<Inputs>,
    conns: usize,
    duration: Duration,
) -> Outcome {
    let cursor = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (traces, original, inputs, cursor) = (
                traces.clone(),
                original.clone(),
                inputs.clone(),
                cursor.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    if one(op, &traces, &original, &inputs, &cursor).await.is_err() {
                        errors += 1;
                    }
                    latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut l, e) = task.await.expect("direct client task");
        latencies.append(&mut l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Outcome {
        requests: latencies.len() as u64,
        errors,
        elapsed,
        latencies,
    }
}

/// The `q`-th percentile of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// Runs `op` `n` times one after another (for counting commands).
pub async fn run_count(
    op: DirectOp,
    traces: &Collection<Document>,
    original: &Collection<Document>,
    inputs: &Inputs,
    n: usize,
) -> u64 {
    let cursor = AtomicUsize::new(0);
    let mut errors = 0;
    for _ in 0..n {
        if one(op, traces, original, inputs, &cursor).await.is_err() {
            errors += 1;
        }
    }
    errors
}
