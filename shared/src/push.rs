//! Decoding Pub/Sub push requests: the wrapped push body, and Eventarc CloudEvents in
//! binary (`ce-*` headers) and structured (`application/cloudevents+json`) mode.
//!
//! Two kinds of failure are kept apart. A request that is not a push at all is an
//! [`EnvelopeError`] (the caller's mistake: 4xx). A push whose message can never be
//! recorded is a [`MessageError`] inside [`Outcome::Reject`]: it is acknowledged, since
//! redelivery would only loop until the dead-letter topic, and it fails the job it names.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::http::HeaderMap;
use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::ids::{IdError, LineUserId, MessageId};
use crate::model::{JobStatus, JobType, UnknownStatus};
use crate::rules::{Change, JobDetails, MAX_ATTEMPT, MAX_PROGRESS_TOTAL};

pub mod encode;
mod result_size;

use result_size::{read_result, Shape};

/// Pub/Sub's own limit on one message's data.
pub const MAX_MESSAGE_DATA_BYTES: usize = 10_000_000;
/// The data, base64-encoded (4/3), plus the envelope and attributes.
pub const MAX_PUSH_BODY_BYTES: usize = 14 * 1024 * 1024;
/// What one push may hold at once beyond its body's size: headers, the small values of
/// one message, and the `result` it builds only when that is under MAX_RESULT_BYTES.
pub const PUSH_MEMORY_OVERHEAD_BYTES: usize = 1024 * 1024;
/// The most memory a push with a body of `body_bytes` holds while it is read and
/// decoded: the body, plus either its chunks while they are collected into one buffer,
/// or the data decoded from base64 (3/4 of it) beside the unescaped text of a `data` that
/// writes `/` as `\/`. Nothing else grows with the body: the payload is read in place.
pub const fn push_memory_bytes(body_bytes: usize) -> usize {
    3 * body_bytes + PUSH_MEMORY_OVERHEAD_BYTES
}
/// [`push_memory_bytes`] of the largest push: what an instance must keep free for each
/// worst-case push it takes at once (Terraform's `memory` / `concurrency` check it).
pub const PUSH_MEMORY_BUDGET_BYTES: usize = push_memory_bytes(MAX_PUSH_BODY_BYTES);
/// Job URLs longer than this are refused.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Values kept for logging only (subscription, ordering key) are cut to this.
const MAX_LOGGED_BYTES: usize = 512;

/// The request is not a Pub/Sub push or CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("request body is {size} bytes; the limit is {MAX_PUSH_BODY_BYTES}")]
    TooLarge { size: usize },
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    #[error("request body is not a JSON object")]
    NotObject,
    #[error("push body has no `message` object")]
    MissingMessage,
    #[error("structured CloudEvent has no `data` object")]
    MissingCloudEventData,
}

/// The push is well-formed but its message can never be recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("message has no messageId")]
    MissingMessageId,
    #[error("messageId is invalid: {0}")]
    BadMessageId(IdError),
    #[error("message has no data")]
    MissingData,
    #[error("data is not valid base64: {0}")]
    BadBase64(String),
    #[error("data is {size} bytes; Pub/Sub's limit is {MAX_MESSAGE_DATA_BYTES}")]
    DataTooLarge { size: usize },
    #[error("data is not JSON: {0}")]
    DataNotJson(String),
    #[error("data is not a JSON object")]
    DataNotObject,
    #[error("status event has no message_id")]
    MissingEventMessageId,
    #[error("status event has no status")]
    MissingStatus,
    #[error(transparent)]
    UnknownStatus(#[from] UnknownStatus),
    #[error("status event cannot set status queued; only the job message queues a job")]
    QueuedEvent,
    #[error("field `{field}` {problem}")]
    BadField {
        field: &'static str,
        problem: String,
    },
}

fn bad_field(field: &'static str, problem: impl Into<String>) -> MessageError {
    MessageError::BadField {
        field,
        problem: problem.into(),
    }
}

/// What a push says beyond its payload: for logging and for times.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushMeta {
    /// Pub/Sub's `messageId` of this message (a status event's own id, not its job's).
    pub pubsub_message_id: Option<String>,
    pub publish_time: Option<bson::DateTime>,
    pub subscription: Option<String>,
    pub delivery_attempt: Option<u32>,
    pub ordering_key: Option<String>,
    /// `wrapped`, `cloudevent-binary` or `cloudevent-structured`.
    pub format: &'static str,
}

/// What to do with a push.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Record this change.
    Record(Change),
    /// Acknowledge without recording the message; fail the named job when there is one.
    Reject {
        error: MessageError,
        failed_trace: Option<Change>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    pub meta: PushMeta,
    pub outcome: Outcome,
}

impl Push {
    /// The job this push is about, when it can be told.
    pub fn job_message_id(&self) -> Option<&MessageId> {
        match &self.outcome {
            Outcome::Record(change) => Some(&change.message_id),
            Outcome::Reject { failed_trace, .. } => failed_trace.as_ref().map(|c| &c.message_id),
        }
    }
}

/// A JSON object whose members stay as received until one is read: the envelope and the
/// payload are looked at field by field, so the large ones (`data`, `result`) are never
/// copied into a value tree.
/// Member names are borrowed too: a push's members cost no allocation each.
type RawObject<'a> = BTreeMap<Text<'a>, &'a RawValue>;

/// A JSON string, borrowed from the input unless it holds escapes.
#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Ordered as its text, so that a [`RawObject`] is looked up by `&str`.
impl std::borrow::Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn parse_time(raw: &str) -> Option<bson::DateTime> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|time| bson::DateTime::from_chrono(time.with_timezone(&chrono::Utc)))
}

const HOUR_MILLIS: i64 = 60 * 60 * 1000;
const DAY_MILLIS: i64 = 24 * HOUR_MILLIS;
/// No message is dated before 2000-01-01T00:00:00Z: Pub/Sub and this system are younger,
/// and a clock reset to its epoch (1970) says nothing about when a job ran.
pub const EARLIEST_TIME: bson::DateTime = bson::DateTime::from_millis(946_684_800_000);
/// No message is dated from 9999-01-01T00:00:00Z on: every time a trace derives from a
/// message's (`expire_at` is 7 days later) then stays inside the dates BSON, the server's
/// date arithmetic and Firestore (up to 9999-12-31T23:59:59Z) all hold.
pub const LATEST_TIME: bson::DateTime = bson::DateTime::from_millis(253_370_764_800_000);
/// How far a `publishTime` may lie after the push's receipt (the two clocks differ).
pub const MAX_PUBLISH_AHEAD_MILLIS: i64 = DAY_MILLIS;
/// How far an `occurred_at` may lie after its message's `publishTime`: a worker stamps
/// the event before it publishes it, so only its clock's error counts.
pub const MAX_OCCURRED_AHEAD_MILLIS: i64 = DAY_MILLIS;
/// How far an `occurred_at` may lie before its message's `publishTime`: a trace created
/// earlier would already be past its own expiry (`created_at` + 7 d) when recorded.
pub const MAX_OCCURRED_BEHIND_MILLIS: i64 = crate::indexes::CREATED_TTL_SECONDS as i64 * 1000;

/// `time` moved into `[EARLIEST_TIME, LATEST_TIME]`: the receive clock of a real
/// instance is always inside; a test's or a fuzzer's may not be.
fn within_range(time: bson::DateTime) -> bson::DateTime {
    time.clamp(EARLIEST_TIME, LATEST_TIME)
}

/// Whether `time` lies in `[low, high]`, both cut to the range every stored time keeps.
fn plausible(time: bson::DateTime, low: i64, high: i64) -> bool {
    let low = low.max(EARLIEST_TIME.timestamp_millis());
    let high = high.min(LATEST_TIME.timestamp_millis());
    (low..=high).contains(&time.timestamp_millis())
}

/// A message time that was not used, and why: kept in the trace's history entry.
fn replaced_time(field: &str, raw: &str, reference: &str, used: bson::DateTime) -> String {
    let note = format!(
        "{field} {raw:?} is implausible (outside the window around {reference}); recorded at {reference} {}",
        crate::model::render_time(used)
    );
    tracing::warn!(field, raw, used = %crate::model::render_time(used), "implausible message time replaced");
    note
}

/// The time a message is recorded at, from its `publishTime` (or `ce-time`) and the
/// receive time: the first when plausible, else the second with a note saying why.
fn publish_time_of(
    raw: Option<&str>,
    received: bson::DateTime,
) -> (Option<bson::DateTime>, bson::DateTime, Option<String>) {
    let received = within_range(received);
    let Some(raw) = raw else {
        return (None, received, None);
    };
    let Some(published) = parse_time(raw) else {
        return (None, received, None);
    };
    let latest = received
        .timestamp_millis()
        .saturating_add(MAX_PUBLISH_AHEAD_MILLIS);
    if plausible(published, i64::MIN, latest) {
        (Some(published), published, None)
    } else {
        let raw = cut_for_log(raw);
        let note = replaced_time("publishTime", &raw, "the receive time", received);
        (Some(published), received, Some(note))
    }
}

/// The member `name` read as a `T`, when it is one.
fn member<'a, T: Deserialize<'a>>(object: &RawObject<'a>, name: &str) -> Option<T> {
    let raw: &'a RawValue = object.get(name)?;
    serde_json::from_str(raw.get()).ok()
}

/// The member `name` when it is an object; a checked document holds no unreadable object.
fn object_member<'a>(object: &RawObject<'a>, name: &str) -> Option<RawObject<'a>> {
    object.get(name).copied().and_then(as_object)
}

fn as_object(raw: &RawValue) -> Option<RawObject<'_>> {
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

fn string_field(object: &RawObject<'_>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| member::<Text>(object, name))
        .map(|text| text.0.into_owned())
}

/// `raw` cut to what a log line keeps of a value from outside.
pub(crate) fn cut_for_log(raw: &str) -> String {
    crate::rules::cut_at_char(raw, MAX_LOGGED_BYTES).to_owned()
}

/// Checks that `json` is one JSON value that a [`Value`] could hold (syntax, number
/// ranges, escapes, nesting limit), without building it; then exposes it raw.
fn checked(json: &[u8]) -> Result<&RawValue, serde_json::Error> {
    serde_json::from_slice::<Shape>(json)?;
    serde_json::from_slice(json)
}

/// Decodes one push request received at `now`: the time of a message that carries none,
/// or whose `publishTime` is implausible ([`MAX_PUBLISH_AHEAD_MILLIS`]).
pub fn decode_push(
    headers: &HeaderMap,
    body: &[u8],
    now: bson::DateTime,
) -> Result<Push, EnvelopeError> {
    if body.len() > MAX_PUSH_BODY_BYTES {
        return Err(EnvelopeError::TooLarge { size: body.len() });
    }
    let root = checked(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let root = as_object(root).ok_or(EnvelopeError::NotObject)?;

    let structured = header(headers, "content-type")
        .is_some_and(|ct| ct.trim_start().starts_with("application/cloudevents+json"));
    let (format, envelope, ce_id, ce_time) = if structured {
        let Some(data) = object_member(&root, "data") else {
            return Err(EnvelopeError::MissingCloudEventData);
        };
        (
            "cloudevent-structured",
            data,
            string_field(&root, &["id"]),
            string_field(&root, &["time"]),
        )
    } else if let Some(ce_id) = header(headers, "ce-id") {
        (
            "cloudevent-binary",
            root,
            Some(ce_id.to_owned()),
            header(headers, "ce-time").map(str::to_owned),
        )
    } else {
        ("wrapped", root, None, None)
    };

    let Some(message) = object_member(&envelope, "message") else {
        return Err(EnvelopeError::MissingMessage);
    };

    let pubsub_message_id =
        match member::<Value>(&message, "messageId").or_else(|| member(&message, "message_id")) {
            Some(Value::String(id)) => Some(id),
            Some(Value::Number(id)) => Some(id.to_string()),
            _ => ce_id,
        };
    let raw_publish_time = string_field(&message, &["publishTime", "publish_time"]).or(ce_time);
    let (publish_time, at, publish_note) = publish_time_of(raw_publish_time.as_deref(), now);
    let meta = PushMeta {
        pubsub_message_id: pubsub_message_id.as_deref().map(cut_for_log),
        publish_time,
        subscription: string_field(&envelope, &["subscription"]).map(|s| cut_for_log(&s)),
        delivery_attempt: member::<Value>(&envelope, "deliveryAttempt")
            .as_ref()
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        ordering_key: string_field(&message, &["orderingKey", "ordering_key"])
            .map(|key| cut_for_log(&key)),
        format,
    };
    let marked_event = object_member(&message, "attributes").is_some_and(|attributes| {
        member::<Text>(&attributes, "trace_event").is_some_and(|event| event.0 == "status")
    });
    let outcome = decode_message(
        message.get("data").copied(),
        marked_event,
        pubsub_message_id.as_deref(),
        at,
    );
    Ok(Push {
        meta,
        outcome: with_time_note(outcome, publish_note),
    })
}

/// Every change of `outcome` notes that its message's `publishTime` was replaced.
fn with_time_note(outcome: Outcome, note: Option<String>) -> Outcome {
    let Some(note) = note else {
        return outcome;
    };
    let noted = |mut change: Change| {
        change.time_note.get_or_insert(note.clone());
        change
    };
    match outcome {
        Outcome::Record(change) => Outcome::Record(noted(change)),
        Outcome::Reject {
            error,
            failed_trace,
        } => Outcome::Reject {
            error,
            failed_trace: failed_trace.map(noted),
        },
    }
}

fn decode_message(
    data: Option<&RawValue>,
    marked_event: bool,
    pubsub_message_id: Option<&str>,
    at: bson::DateTime,
) -> Outcome {
    // Until the payload is read, the only job it can name is a job message's own id.
    let own_job = || -> Result<MessageId, MessageError> {
        let raw = pubsub_message_id.ok_or(MessageError::MissingMessageId)?;
        MessageId::parse(raw).map_err(MessageError::BadMessageId)
    };
    let reject = |error: MessageError, job: Option<MessageId>| Outcome::Reject {
        failed_trace: job.map(|id| Change::rejected(id, at, &format!("message rejected: {error}"))),
        error,
    };
    let bytes = match read_data(data) {
        Ok(bytes) => bytes,
        Err(error) => {
            let job = if marked_event { None } else { own_job().ok() };
            return reject(error, job);
        }
    };
    let payload = match read_payload(&bytes) {
        Ok(payload) => payload,
        Err(error) => {
            let job = if marked_event { None } else { own_job().ok() };
            return reject(error, job);
        }
    };
    let is_event =
        marked_event || (payload.contains_key("message_id") && payload.contains_key("status"));
    if is_event {
        let job = match optional(&payload, "message_id") {
            Some(Value::String(raw)) => MessageId::parse(raw.as_str()).ok(),
            _ => None,
        };
        // A bad progress report is dropped, never turned into a failed trace: progress
        // never changes a status.
        let progress =
            member::<Text>(&payload, "status").is_some_and(|status| status.0 == PROGRESS_STATUS);
        match decode_event(&payload, at) {
            Ok(change) => Outcome::Record(change),
            Err(error) => reject(error, job.filter(|_| !progress)),
        }
    } else {
        let job = match own_job() {
            Ok(job) => job,
            Err(error) => return reject(error, None),
        };
        match decode_job(&payload) {
            Ok(details) => Outcome::Record(Change::queued(job, at, details)),
            Err(error) => reject(error, Some(job)),
        }
    }
}

/// The message's data, base64-decoded once; the encoded text is borrowed from the body.
fn read_data(data: Option<&RawValue>) -> Result<Vec<u8>, MessageError> {
    let encoded = match data {
        None => return Err(MessageError::MissingData),
        Some(raw) if raw.get() == "null" => return Err(MessageError::MissingData),
        Some(raw) => match serde_json::from_str::<Text>(raw.get()) {
            Ok(Text(encoded)) => encoded,
            Err(_) => return Err(bad_field("data", "is not a base64 string")),
        },
    };
    if encoded.len() / 4 * 3 > MAX_MESSAGE_DATA_BYTES {
        return Err(MessageError::DataTooLarge {
            size: encoded.len() / 4 * 3,
        });
    }
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| MessageError::BadBase64(e.to_string()))
}

fn read_payload(bytes: &[u8]) -> Result<RawObject<'_>, MessageError> {
    let payload = checked(bytes).map_err(|e| MessageError::DataNotJson(e.to_string()))?;
    as_object(payload).ok_or(MessageError::DataNotObject)
}

/// A payload field as a value, absent when missing or null. Only for the small fields;
/// `result` is read by [`read_result`].
fn optional(payload: &RawObject<'_>, field: &str) -> Option<Value> {
    member(payload, field).filter(|value: &Value| !value.is_null())
}

fn optional_string(
    payload: &RawObject<'_>,
    field: &'static str,
) -> Result<Option<String>, MessageError> {
    match optional(payload, field) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(bad_field(field, "is not a string")),
    }
}

fn event_message_id(payload: &RawObject<'_>) -> Result<MessageId, MessageError> {
    match optional(payload, "message_id") {
        None => Err(MessageError::MissingEventMessageId),
        Some(Value::String(raw)) => {
            MessageId::parse(raw.as_str()).map_err(|e| bad_field("message_id", e.to_string()))
        }
        Some(_) => Err(bad_field("message_id", "is not a string")),
    }
}

fn event_attempt(payload: &RawObject<'_>) -> Result<u32, MessageError> {
    match optional(payload, "attempt") {
        None => Ok(1),
        Some(value) => value
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_ATTEMPT)).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| {
                bad_field(
                    "attempt",
                    format!("must be a whole number from 1 to {MAX_ATTEMPT}"),
                )
            }),
    }
}

/// The event's time: its `occurred_at` when that lies in the window around `at` (the
/// message's publish time), else `at` with a note saying why.
fn event_time(
    payload: &RawObject<'_>,
    at: bson::DateTime,
) -> Result<(bson::DateTime, Option<String>), MessageError> {
    let Some(raw) = optional_string(payload, "occurred_at")? else {
        return Ok((at, None));
    };
    let occurred =
        parse_time(&raw).ok_or_else(|| bad_field("occurred_at", "is not an RFC 3339 time"))?;
    let at_millis = at.timestamp_millis();
    if plausible(
        occurred,
        at_millis.saturating_sub(MAX_OCCURRED_BEHIND_MILLIS),
        at_millis.saturating_add(MAX_OCCURRED_AHEAD_MILLIS),
    ) {
        Ok((occurred, None))
    } else {
        let raw = cut_for_log(&raw);
        Ok((
            at,
            Some(replaced_time("occurred_at", &raw, "publishTime", at)),
        ))
    }
}

/// The status a progress report carries; it is no [`JobStatus`], since it changes none.
pub const PROGRESS_STATUS: &str = "progress";

/// A progress report: `done` and `total` whole numbers with
/// `0 <= done <= total <= MAX_PROGRESS_TOTAL`, `note` an optional text.
fn decode_progress(payload: &RawObject<'_>, at: bson::DateTime) -> Result<Change, MessageError> {
    let message_id = event_message_id(payload)?;
    let attempt = event_attempt(payload)?;
    // A progress report has no history entry: the replaced time is only logged.
    let (occurred_at, _) = event_time(payload, at)?;
    let count = |field: &'static str| -> Result<i64, MessageError> {
        optional(payload, field)
            .ok_or_else(|| bad_field(field, "is missing"))?
            .as_i64()
            .filter(|n| (0..=MAX_PROGRESS_TOTAL).contains(n))
            .ok_or_else(|| {
                bad_field(
                    field,
                    format!("must be a whole number from 0 to {MAX_PROGRESS_TOTAL}"),
                )
            })
    };
    let total = count("total")?;
    let done = count("done")?;
    if done > total {
        return Err(bad_field(
            "done",
            format!("is {done}, more than total {total}"),
        ));
    }
    let note = optional_string(payload, "note")?;
    Ok(Change::progress(
        message_id,
        attempt,
        occurred_at,
        done,
        total,
        note,
    ))
}

fn decode_event(payload: &RawObject<'_>, at: bson::DateTime) -> Result<Change, MessageError> {
    let message_id = event_message_id(payload)?;
    let raw_status = optional_string(payload, "status")?.ok_or(MessageError::MissingStatus)?;
    if raw_status == PROGRESS_STATUS {
        return decode_progress(payload, at);
    }
    let status: JobStatus = raw_status.parse()?;
    if status == JobStatus::Queued {
        return Err(MessageError::QueuedEvent);
    }
    let attempt = event_attempt(payload)?;
    let (occurred_at, time_note) = event_time(payload, at)?;
    let error = match optional(payload, "error") {
        None => None,
        Some(Value::String(text)) => Some(text),
        Some(other) => Some(other.to_string()),
    };
    let result = match payload.get("result") {
        Some(raw) if raw.get() != "null" => Some(read_result(raw)?),
        _ => None,
    };
    let mut change = Change::event(message_id, status, attempt, occurred_at, error, result);
    change.time_note = time_note;
    Ok(change)
}

fn decode_job(payload: &RawObject<'_>) -> Result<JobDetails, MessageError> {
    let url = optional_string(payload, "url")?;
    if let Some(url) = &url {
        if url.len() > MAX_URL_BYTES {
            return Err(bad_field(
                "url",
                format!("is {} bytes; the limit is {MAX_URL_BYTES}", url.len()),
            ));
        }
    }
    let line_user_id = optional_string(payload, "line_user_id")?
        .map(LineUserId::parse)
        .transpose()
        .map_err(|e| bad_field("line_user_id", e.to_string()))?;
    let check_only = match optional(payload, "check_only") {
        None => false,
        Some(Value::Bool(flag)) => flag,
        Some(_) => return Err(bad_field("check_only", "is not a boolean")),
    };
    Ok(JobDetails {
        job_type: if url.is_some() {
            JobType::PropertyScrape
        } else {
            JobType::BatchCheck
        },
        url,
        line_user_id,
        check_only,
    })
}

#[cfg(test)]
mod tests;
