//! Seed-like jobs with full lifecycles, as the Pub/Sub push bodies trace-writer receives.
//! The data set is written by decoding these very bodies and applying them through the
//! real store, so the documents the reads hit are the ones production would hold.

use std::sync::atomic::{AtomicU64, Ordering};

use job_trace::push::encode::PushMessage;
use job_trace::push::{decode_push, Outcome};
use job_trace::Change;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;

/// Pub/Sub message ids are decimal strings of about 16 digits; one counter for the whole
/// run keeps every job and event id unique across the data set and every push stream.
static NEXT_ID: AtomicU64 = AtomicU64::new(4_000_000_000_000_000);

pub fn next_id() -> String {
    NEXT_ID.fetch_add(1, Ordering::Relaxed).to_string()
}

/// A LINE user id: `U` and 32 hex digits. `space` keeps the writer's users apart from
/// the data set's, so pushes never change the pages the list scenario reads.
pub fn user_id(space: u8, n: usize) -> String {
    format!("U{space:02x}{n:030x}")
}

pub struct Job {
    pub message_id: String,
    /// Push bodies of the whole lifecycle, in the order the worker produced them.
    pub pushes: Vec<String>,
}

fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .expect("times within range")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The push body of a message whose data is the JSON text `data`: a job message, or a
/// status event of job `event_of`, built by the one encoder the tests and the CLI use.
pub fn wrap(message_id: &str, data: &str, publish_ms: i64, event_of: Option<&str>) -> String {
    let published =
        chrono::DateTime::from_timestamp_millis(publish_ms).expect("times within range");
    let message = PushMessage::new(message_id, data, published);
    let (message, subscription) = match event_of {
        Some(job) => (
            message.status_event(job),
            "projects/demo/subscriptions/job-trace-events-push",
        ),
        None => (message, "projects/demo/subscriptions/scrape-jobs-trace"),
    };
    let mut body = message.wrapped(subscription);
    body["deliveryAttempt"] = json!(1);
    body.to_string()
}

pub fn job(rng: &mut impl Rng, user: String, created_ms: i64) -> Job {
    let message_id = next_id();
    let property = rng.random_range(10_000_000..99_999_999u32);
    let batch = rng.random_ratio(1, 10);
    let mut job_data = json!({
        "timestamp": rfc3339(created_ms),
        "line_user_id": user,
        "check_only": batch,
    });
    if !batch {
        job_data["url"] = json!(format!(
            "https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_{property}/"
        ));
    }
    let mut pushes = vec![wrap(&message_id, &job_data.to_string(), created_ms, None)];
    let mut at = created_ms;
    let mut event =
        |rng: &mut dyn rand::RngCore, status: &str, attempt: u32, extra: serde_json::Value| {
            at += rng.random_range(500..60_000);
            let mut data = json!({
                "message_id": message_id,
                "status": status,
                "attempt": attempt,
                "occurred_at": rfc3339(at),
            });
            if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
                data.extend(extra.clone());
            }
            pushes.push(wrap(
                &next_id(),
                &data.to_string(),
                at + 40,
                Some(&message_id),
            ));
        };
    let success = json!({ "result": {
        "status": "success",
        "property_info": { "properties": {
            "name": format!("Example Property {property}"),
            "price": format!("{}万円", rng.random_range(1_000..20_000)),
            "address": "東京都新宿区",
        } },
    } });
    let failure = json!({ "error": "scraper timed out after 30 s while loading the listing page" });
    let roll = rng.random_range(0..100);
    event(rng, "processing", 1, json!({}));
    match roll {
        0..75 => event(rng, "success", 1, success),
        75..85 => event(
            rng,
            "not_found",
            1,
            json!({ "error": "listing no longer exists" }),
        ),
        85..95 => {
            event(rng, "failed", 1, failure);
            event(rng, "processing", 2, json!({}));
            event(rng, "success", 2, success);
        }
        _ => event(rng, "failed", 1, failure),
    }
    Job { message_id, pushes }
}

/// A push stream as Pub/Sub delivers it: `jobs` fresh jobs from `users` users of the
/// writer's own space, every push in random order, and one push in ten a redelivery.
pub fn push_stream(rng: &mut impl Rng, jobs: usize, users: usize, now_ms: i64) -> Vec<String> {
    let mut stream: Vec<String> = (0..jobs)
        .flat_map(|_| {
            let user = user_id(0xee, rng.random_range(0..users.max(1)));
            let created = now_ms - rng.random_range(0..600_000);
            job(rng, user, created).pushes
        })
        .collect();
    let duplicates = stream.len() / 9;
    for _ in 0..duplicates {
        let again = stream[rng.random_range(0..stream.len())].clone();
        stream.push(again);
    }
    stream.shuffle(rng);
    stream
}

/// The change a push records, decoded by the service's own decoder.
pub fn change_of(body: &str) -> Change {
    let push = decode_push(
        &axum::http::HeaderMap::new(),
        body.as_bytes(),
        bson::DateTime::now(),
    )
    .expect("generated pushes are valid envelopes");
    match push.outcome {
        Outcome::Record(change) => change,
        Outcome::Reject { error, .. } => panic!("generated push rejected: {error}"),
    }
}
