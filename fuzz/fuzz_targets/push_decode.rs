//! Push decoding, then the transition rules over what decodes.
//!
//! The input is a few pushes. Each is either raw bytes (the envelope itself is fuzzed) or
//! an envelope built here around fuzzed parts, so that the fuzzer also reaches the payload
//! decoder instead of spending its inputs on JSON syntax. Ids come mostly from a small
//! set, so that several pushes name one job and the rules see real sequences.
//!
//! Checked: decoding never panics; a built envelope is always a push; every decoded
//! change or rejection is bounded and consistent; a well-formed event decodes to exactly
//! the change the rules expect (its time kept or replaced as DESIGN.md's plausibility
//! windows say, for any RFC 3339 time of years 0000..9999); and for each job the
//! reducer's trace is bounded, satisfies Firestore's documented limits (the tests'
//! checker, `tests/src/firestore_limits.rs`), renders as JSON and BSON, is unchanged by a
//! redelivery, and is the same in two arrival orders.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use job_trace::ids::{MessageId, MAX_ID_BYTES};
use job_trace::model::{render_time, JobStatus, TraceDocument, TraceKey};
use job_trace::push::{decode_push, EnvelopeError, Outcome};
use job_trace::rules::{
    self, Change, HISTORY_ATTEMPTS, HISTORY_MAX_ENTRIES, MAX_ATTEMPT, MAX_ERROR_BYTES,
    MAX_RESULT_BYTES,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

/// The checker the store's property tests use, included as it is (it needs only `bson`).
#[path = "../../tests/src/firestore_limits.rs"]
#[allow(dead_code)]
mod firestore_limits;

const NOW_MILLIS: i64 = 1_900_000_000_000;
const BASE_MILLIS: i64 = 1_785_000_000_000;

#[derive(Arbitrary, Debug)]
struct Input {
    pushes: Vec<PushInput>,
}

#[derive(Arbitrary, Debug)]
struct PushInput {
    content_type: ContentType,
    ce_id: Option<Text>,
    ce_time: Option<Time>,
    body: Body,
}

#[derive(Arbitrary, Debug)]
enum ContentType {
    None,
    Json,
    CloudEvents,
    Other(String),
}

/// A string that is usually one a producer would send.
#[derive(Arbitrary, Debug, Clone)]
enum Text {
    Id(u8),
    Any(String),
}

impl Text {
    fn render(&self) -> String {
        match self {
            Text::Id(n) => format!("{}", 4_200_000_000_000_000u64 + u64::from(n % 4)),
            Text::Any(text) => text.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Time {
    /// Seconds after a base time, rendered as RFC 3339 (with an offset now and then).
    Valid(u32, bool),
    /// Any RFC 3339 time: year, month, day, hour, minute, second (60: a leap second),
    /// nanoseconds, and an offset in minutes (none: `Z`).
    Rfc(u16, u8, u8, u8, u8, u8, Option<u32>, Option<i16>),
    Any(String),
}

impl Time {
    fn render(&self) -> String {
        match self {
            Time::Valid(seconds, offset) => {
                let time = bson::DateTime::from_millis(
                    BASE_MILLIS + i64::from(*seconds % 864_000) * 1000 + i64::from(*seconds % 1000),
                )
                .to_chrono();
                if *offset {
                    time.with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap())
                        .to_rfc3339()
                } else {
                    render_time(bson::DateTime::from_chrono(time))
                }
            }
            Time::Rfc(year, month, day, hour, minute, second, nanos, offset) => {
                let fraction = nanos.map_or(String::new(), |n| format!(".{:09}", n % 1_000_000_000));
                let offset = offset.map_or("Z".to_owned(), |minutes| {
                    let minutes = i32::from(minutes % (24 * 60));
                    let sign = if minutes < 0 { '-' } else { '+' };
                    format!("{sign}{:02}:{:02}", minutes.abs() / 60, minutes.abs() % 60)
                });
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}{offset}",
                    year % 10_000,
                    month % 13,
                    day % 32,
                    hour % 24,
                    minute % 60,
                    second % 61
                )
            }
            Time::Any(text) => text.clone(),
        }
    }

    /// The time as the RFC 3339 parser reads it; `None` for a fuzzed string, which might
    /// parse or not.
    fn millis(&self) -> Option<Option<i64>> {
        match self {
            Time::Valid(seconds, _) => Some(Some(
                BASE_MILLIS + i64::from(*seconds % 864_000) * 1000 + i64::from(*seconds % 1000),
            )),
            Time::Rfc(..) => Some(
                chrono::DateTime::parse_from_rfc3339(&self.render())
                    .ok()
                    .map(|time| time.timestamp_millis()),
            ),
            Time::Any(_) => None,
        }
    }
}

/// DESIGN.md's plausibility windows, restated: times from 2000-01-01 up to (not
/// including) 9999-01-01; a publishTime at most a day after its receipt; an occurred_at
/// from 7 days before to a day after its publishTime.
const EARLIEST_MILLIS: i64 = 946_684_800_000;
const LATEST_MILLIS: i64 = 253_370_764_800_000;
const DAY_MILLIS: i64 = 86_400_000;

fn inside(millis: i64, low: i64, high: i64) -> bool {
    (low.max(EARLIEST_MILLIS)..=high.min(LATEST_MILLIS)).contains(&millis)
}

/// The time a message is recorded at from its publish time (`None`: it has none).
fn recorded_at(published: Option<i64>, now: i64) -> i64 {
    let received = now.clamp(EARLIEST_MILLIS, LATEST_MILLIS);
    match published {
        Some(published) if inside(published, i64::MIN, received + DAY_MILLIS) => published,
        _ => received,
    }
}

/// The time an event is recorded at from its occurred_at (`None`: it has none).
fn event_recorded_at(occurred: Option<i64>, at: i64) -> i64 {
    match occurred {
        Some(occurred) if inside(occurred, at - 7 * DAY_MILLIS, at + DAY_MILLIS) => occurred,
        _ => at,
    }
}

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Built(Envelope),
}

#[derive(Arbitrary, Debug)]
struct Envelope {
    message_id: Option<Text>,
    numeric_id: Option<u64>,
    publish_time: Option<Time>,
    marked: bool,
    attributes: Vec<(String, Json)>,
    data: Data,
    delivery_attempt: Option<Json>,
    subscription: Option<String>,
    ordering_key: Option<String>,
}

#[derive(Arbitrary, Debug)]
enum Data {
    Missing,
    /// Placed in `data` as is (often not base64).
    Verbatim(Json),
    /// Base64-encoded here.
    Bytes(Vec<u8>),
    Event(Event),
    Job(Job),
}

#[derive(Arbitrary, Debug)]
struct Event {
    message_id: Option<Text>,
    status: Status,
    attempt: Option<Attempt>,
    occurred_at: Option<Time>,
    error: Option<Json>,
    result: Option<Json>,
    extra: Vec<(String, Json)>,
}

#[derive(Arbitrary, Debug)]
enum Status {
    Known(u8),
    Any(Json),
}

#[derive(Arbitrary, Debug)]
enum Attempt {
    Small(u8),
    Any(Json),
}

#[derive(Arbitrary, Debug)]
struct Job {
    url: Option<Json>,
    line_user_id: Option<Json>,
    check_only: Option<Json>,
    timestamp: Option<Time>,
}

/// Any JSON value; deep ones come from nesting.
#[derive(Arbitrary, Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Big(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
    /// Nesting without spending many bytes of input.
    Deep(u8, Box<Json>),
}

/// Deeper than serde_json reads (128 levels), so that the decoder's refusal of a deep body
/// is reached, yet shallow enough that building, rendering and dropping a value (all
/// recursive) stay well within the stack: nested `Deep`s once made values thousands of
/// levels deep, and the run died of a stack overflow in the harness.
const MAX_DEPTH: usize = 160;

impl Json {
    fn value(&self) -> Value {
        self.value_within(MAX_DEPTH)
    }

    /// The value, at most `room` levels deep.
    fn value_within(&self, room: usize) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(flag) => json!(flag),
            Json::Int(n) => json!(n),
            Json::Big(n) => json!(n),
            Json::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Json::Str(text) => json!(text),
            Json::Array(_) | Json::Object(_) if room == 0 => Value::Null,
            Json::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.value_within(room - 1))
                    .collect(),
            ),
            Json::Object(fields) => Value::Object(object_within(fields, room - 1)),
            Json::Deep(levels, inner) => {
                let levels = usize::from(levels % 40).min(room);
                let mut value = inner.value_within(room - levels);
                // Not `json!`: it would copy the whole value at every level, and a few
                // nested `Deep`s then took seconds (libFuzzer's slow units).
                for level in 0..levels {
                    value = if level % 2 == 0 {
                        Value::Object(Map::from_iter([("a".to_owned(), value)]))
                    } else {
                        Value::Array(vec![value])
                    };
                }
                value
            }
        }
    }
}

fn object(fields: &[(String, Json)]) -> Map<String, Value> {
    object_within(fields, MAX_DEPTH)
}

fn object_within(fields: &[(String, Json)], room: usize) -> Map<String, Value> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), v.value_within(room)))
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What DESIGN.md says an id may be, independently of `ids.rs`.
fn valid_id(raw: &str) -> bool {
    !raw.trim().is_empty() && raw.len() <= MAX_ID_BYTES && !raw.chars().any(char::is_control)
}

/// The change a well-formed event must decode to, when it is one.
fn expected_event(
    event: &Event,
    at: bson::DateTime,
) -> Option<(String, JobStatus, u32, bson::DateTime)> {
    if !event.extra.is_empty() {
        return None;
    }
    let id = event.message_id.as_ref()?.render();
    let status = match event.status {
        Status::Known(n) => JobStatus::ALL[1 + usize::from(n % 4)],
        Status::Any(_) => return None,
    };
    let attempt = match &event.attempt {
        None => 1,
        Some(Attempt::Small(n)) => u32::from(n % 5) + 1,
        Some(Attempt::Any(_)) => return None,
    };
    let at = match &event.occurred_at {
        None => at,
        // An occurred_at that does not parse rejects the event: not well-formed.
        Some(time) => bson::DateTime::from_millis(event_recorded_at(
            Some(time.millis()??),
            at.timestamp_millis(),
        )),
    };
    if event.error.is_some() || event.result.is_some() || !valid_id(&id) {
        return None;
    }
    Some((id, status, attempt, at))
}

fn event_payload(event: &Event) -> Value {
    let mut payload = object(&event.extra);
    if let Some(id) = &event.message_id {
        payload.insert("message_id".into(), json!(id.render()));
    }
    payload.insert(
        "status".into(),
        match &event.status {
            Status::Known(n) => json!(JobStatus::ALL[1 + usize::from(n % 4)].as_str()),
            Status::Any(value) => value.value(),
        },
    );
    if let Some(attempt) = &event.attempt {
        let value = match attempt {
            Attempt::Small(n) => json!(u32::from(n % 5) + 1),
            Attempt::Any(value) => value.value(),
        };
        payload.insert("attempt".into(), value);
    }
    if let Some(time) = &event.occurred_at {
        payload.insert("occurred_at".into(), json!(time.render()));
    }
    if let Some(error) = &event.error {
        payload.insert("error".into(), error.value());
    }
    if let Some(result) = &event.result {
        payload.insert("result".into(), result.value());
    }
    Value::Object(payload)
}

fn job_payload(job: &Job) -> Value {
    let mut payload = Map::new();
    for (name, field) in [
        ("url", &job.url),
        ("line_user_id", &job.line_user_id),
        ("check_only", &job.check_only),
    ] {
        if let Some(value) = field {
            payload.insert(name.into(), value.value());
        }
    }
    if let Some(time) = &job.timestamp {
        payload.insert("timestamp".into(), json!(time.render()));
    }
    Value::Object(payload)
}

/// The body, and whether it must decode as a push.
fn build(push: &PushInput, structured: bool) -> (Vec<u8>, bool) {
    let envelope = match &push.body {
        Body::Raw(bytes) => return (bytes.clone(), false),
        Body::Built(envelope) => envelope,
    };
    let mut message = Map::new();
    if let Some(id) = &envelope.message_id {
        message.insert("messageId".into(), json!(id.render()));
    } else if let Some(id) = envelope.numeric_id {
        message.insert("messageId".into(), json!(id));
    }
    if let Some(time) = &envelope.publish_time {
        message.insert("publishTime".into(), json!(time.render()));
    }
    let mut attributes = object(&envelope.attributes);
    if envelope.marked {
        attributes.insert("trace_event".into(), json!("status"));
    }
    message.insert("attributes".into(), Value::Object(attributes));
    let data = match &envelope.data {
        Data::Missing => None,
        Data::Verbatim(value) => Some(value.value()),
        Data::Bytes(bytes) => Some(json!(b64(bytes))),
        Data::Event(event) => Some(json!(b64(event_payload(event).to_string().as_bytes()))),
        Data::Job(job) => Some(json!(b64(job_payload(job).to_string().as_bytes()))),
    };
    if let Some(data) = data {
        message.insert("data".into(), data);
    }
    if let Some(key) = &envelope.ordering_key {
        message.insert("orderingKey".into(), json!(key));
    }
    let mut wrapped = Map::new();
    wrapped.insert("message".into(), Value::Object(message));
    if let Some(subscription) = &envelope.subscription {
        wrapped.insert("subscription".into(), json!(subscription));
    }
    if let Some(attempt) = &envelope.delivery_attempt {
        wrapped.insert("deliveryAttempt".into(), attempt.value());
    }
    let body = if structured {
        json!({ "specversion": "1.0", "id": "ce-1", "data": wrapped })
    } else {
        Value::Object(wrapped)
    };
    // serde_json refuses nesting deeper than 128 levels; Pub/Sub never sends such a body.
    let readable = depth(&body) < 128;
    (body.to_string().into_bytes(), readable)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The headers, whether the body is read as a structured CloudEvent, and whether as a
/// binary one.
fn headers(push: &PushInput) -> (HeaderMap, bool, bool) {
    let mut headers = HeaderMap::new();
    let mut insert = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    let structured = match &push.content_type {
        ContentType::None => false,
        ContentType::Json => {
            insert("content-type", "application/json");
            false
        }
        ContentType::CloudEvents => {
            insert(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            );
            true
        }
        ContentType::Other(text) => {
            insert("content-type", text);
            false
        }
    };
    if let Some(id) = &push.ce_id {
        insert("ce-id", &id.render());
    }
    if let Some(time) = &push.ce_time {
        insert("ce-time", &time.render());
    }
    // Whether the decoder will read the body as a structured CloudEvent is its own call
    // on the header; only a header it certainly takes as one makes the built body right.
    let structured = structured
        || headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("application/cloudevents+json"));
    let binary = !structured && headers.contains_key("ce-id");
    (headers, structured, binary)
}

fn check_change(change: &Change) {
    assert!(
        inside(change.at.timestamp_millis(), i64::MIN, i64::MAX),
        "recorded at {}",
        change.at
    );
    if let Some(note) = &change.time_note {
        assert!(note.contains("implausible"), "{note}");
        assert!(change.history_entry().error.unwrap().contains(note.as_str()));
    }
    assert!(MessageId::parse(change.message_id.as_str()).is_ok());
    assert!(valid_id(change.message_id.as_str()));
    assert_eq!(change.key.rank, change.status.rank());
    assert!(change.key.attempt <= MAX_ATTEMPT);
    if change.status == JobStatus::Queued {
        assert_eq!(
            change.key,
            TraceKey {
                attempt: 0,
                rank: 0
            }
        );
        assert!(change.job.is_some() && change.error.is_none() && change.result.is_none());
    } else if change.key.attempt == 0 {
        assert_eq!(
            change.status,
            JobStatus::Failed,
            "only a rejection has attempt 0"
        );
        assert!(change
            .error
            .as_deref()
            .unwrap()
            .starts_with("message rejected: "));
    } else {
        assert!(change.job.is_none());
    }
    if let Some(error) = &change.error {
        assert!(error.len() <= MAX_ERROR_BYTES + '…'.len_utf8());
    }
    if let Some(result) = &change.result {
        let size = result.clone().into_relaxed_extjson().to_string().len();
        let marker = result
            .as_document()
            .is_some_and(|doc| doc.get_bool("truncated") == Ok(true));
        assert!(
            size <= MAX_RESULT_BYTES || marker,
            "result of {size} bytes kept"
        );
        // The store writes it inside a document; it must encode.
        bson::to_vec(&bson::doc! { "result": result.clone() }).expect("result encodes");
    }
}

fn check_trace(doc: &TraceDocument, changes: &[Change]) {
    let top = changes.iter().map(|c| c.key).max().unwrap();
    assert_eq!(
        (doc.attempt, doc.rank),
        (Some(i64::from(top.attempt)), Some(i32::from(top.rank)))
    );
    assert_eq!(doc.status.rank(), top.rank);
    assert!(changes
        .iter()
        .any(|c| c.key == top && c.status == doc.status));
    assert_eq!(doc.created_at, changes.iter().map(|c| c.at).min());
    assert_eq!(doc.updated_at, changes.iter().map(|c| c.at).max());
    assert_eq!(doc.completed_at.is_some(), doc.status.is_terminal());
    assert_eq!(
        doc.expire_at,
        Some(rules::expire_at(doc.created_at.unwrap(), doc.completed_at))
    );
    if let Some(started) = doc.started_at {
        assert!(changes.iter().any(|c| c.key
            == TraceKey {
                attempt: top.attempt,
                rank: 1
            }
            && c.at == started));
    }
    assert!(doc.history.len() <= HISTORY_MAX_ENTRIES);
    let newest = doc.history.iter().map(|e| e.attempt).max().unwrap_or(0);
    assert!(doc
        .history
        .iter()
        .all(|e| e.attempt > newest - HISTORY_ATTEMPTS));
    assert!(doc
        .history
        .windows(2)
        .all(|pair| rules::history_order(&pair[0], &pair[1]).is_lt()));
    if let Some(error) = &doc.error {
        assert!(error.len() <= MAX_ERROR_BYTES + '…'.len_utf8());
    }
    for details in [false, true] {
        let text = serde_json::to_string(&doc.view(details)).expect("renders");
        let value: Value = serde_json::from_str(&text).expect("rendered JSON parses");
        assert_eq!(value["message_id"], json!(doc.message_id));
        assert_eq!(value["status"], json!(doc.status.as_str()));
    }
    let stored = bson::to_document(doc).expect("the trace encodes as BSON");
    let broken = firestore_limits::violations(&stored);
    assert!(broken.is_empty(), "{broken:?}");
    doc.renderable().expect("every time renders");
}

fuzz_target!(|input: Input| {
    let now = bson::DateTime::from_millis(NOW_MILLIS);
    let mut by_job: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for push in input.pushes.iter().take(8) {
        let (headers, structured, binary) = headers(push);
        let (body, built) = build(push, structured);
        let decoded = decode_push(&headers, &body, now);
        let push_decoded = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                assert!(!built, "a built envelope was refused: {error}");
                assert!(!matches!(error, EnvelopeError::TooLarge { .. }));
                continue;
            }
        };
        for logged in [
            &push_decoded.meta.pubsub_message_id,
            &push_decoded.meta.subscription,
            &push_decoded.meta.ordering_key,
        ] {
            assert!(logged.as_ref().is_none_or(|text| text.len() <= 512));
        }
        if let Body::Built(Envelope {
            data: Data::Event(event),
            publish_time,
            ..
        }) = &push.body
        {
            // The decoder's time: publishTime, else a binary CloudEvent's `ce-time`, else
            // now. A fuzzed string might parse as a time too; then the time is unknown.
            let published = match (publish_time, &push.ce_time) {
                (Some(time), _) => time.millis(),
                (None, Some(time)) if binary => time.millis(),
                _ => Some(None),
            };
            let at = published.map(|published| {
                bson::DateTime::from_millis(recorded_at(published, now.timestamp_millis()))
            });
            if let Some((id, status, attempt, at)) = at.and_then(|at| expected_event(event, at)) {
                match &push_decoded.outcome {
                    Outcome::Record(change) => {
                        assert_eq!(change.message_id.as_str(), id);
                        assert_eq!(change.status, status);
                        assert_eq!(change.key.attempt, attempt);
                        assert_eq!(change.at, at);
                        assert!(change.error.is_none() && change.result.is_none());
                    }
                    other => panic!("a well-formed event was not recorded: {other:?}"),
                }
            }
        }
        match push_decoded.outcome {
            Outcome::Record(change) => {
                check_change(&change);
                by_job
                    .entry(change.message_id.as_str().to_owned())
                    .or_default()
                    .push(change);
            }
            Outcome::Reject {
                error,
                failed_trace,
            } => {
                let _ = error.to_string();
                if let Some(change) = failed_trace {
                    assert_eq!(change.status, JobStatus::Failed);
                    assert_eq!(
                        change.key,
                        TraceKey {
                            attempt: 0,
                            rank: 2
                        }
                    );
                    check_change(&change);
                    by_job
                        .entry(change.message_id.as_str().to_owned())
                        .or_default()
                        .push(change);
                }
            }
        }
    }

    for changes in by_job.values() {
        let doc = rules::replay(changes).unwrap();
        check_trace(&doc, changes);
        for change in changes {
            assert_eq!(
                rules::apply(Some(&doc), change),
                doc,
                "a redelivery changed the trace"
            );
        }
        // Two messages with one key are one message delivered twice by a correct worker;
        // with distinct keys, every order must end in the same trace.
        let mut distinct: Vec<Change> = Vec::new();
        for change in changes {
            if !distinct.iter().any(|c| c.key == change.key) {
                distinct.push(change.clone());
            }
        }
        let forward = rules::replay(&distinct).unwrap();
        let backward = rules::replay(distinct.iter().rev()).unwrap();
        assert_eq!(forward, backward, "arrival order changed the trace");
        check_trace(&forward, &distinct);
    }
});
