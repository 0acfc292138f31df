//! Decoding Pub/Sub push requests: the wrapped push body, and Eventarc CloudEvents in
//! binary (`ce-*` headers) and structured (`application/cloudevents+json`) mode.
//!
//! Two kinds of failure are kept apart. A request that is not a push at all is an
//! [`EnvelopeError`] (the caller's mistake: 4xx). A push whose message can never be
//! recorded is a [`MessageError`] inside [`Outcome::Reject`]: it is acknowledged, since
//! redelivery would only loop until the dead-letter topic, and it fails the job it names.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::{Map, Value};

use crate::ids::{IdError, LineUserId, MessageId};
use crate::model::{JobStatus, JobType, UnknownStatus};
use crate::rules::{Change, JobDetails, MAX_ATTEMPT};

pub mod encode;

/// Pub/Sub's own limit on one message's data.
pub const MAX_MESSAGE_DATA_BYTES: usize = 10_000_000;
/// The data, base64-encoded (4/3), plus the envelope and attributes.
pub const MAX_PUSH_BODY_BYTES: usize = 14 * 1024 * 1024;
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

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn parse_time(raw: &str) -> Option<bson::DateTime> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|time| bson::DateTime::from_chrono(time.with_timezone(&chrono::Utc)))
}

fn string_field<'a>(object: &'a Map<String, Value>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| object.get(*name).and_then(Value::as_str))
}

fn cut_for_log(raw: &str) -> String {
    let mut end = raw.len().min(MAX_LOGGED_BYTES);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    raw[..end].to_owned()
}

/// Decodes one push request. `now` is used only for a message that carries no time at all.
pub fn decode_push(
    headers: &HeaderMap,
    body: &[u8],
    now: bson::DateTime,
) -> Result<Push, EnvelopeError> {
    if body.len() > MAX_PUSH_BODY_BYTES {
        return Err(EnvelopeError::TooLarge { size: body.len() });
    }
    let root: Value =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let Value::Object(root) = root else {
        return Err(EnvelopeError::NotObject);
    };

    let structured = header(headers, "content-type")
        .is_some_and(|ct| ct.trim_start().starts_with("application/cloudevents+json"));
    let (format, envelope, ce_id, ce_time) = if structured {
        let Some(Value::Object(data)) = root.get("data") else {
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
            &root,
            Some(ce_id),
            header(headers, "ce-time"),
        )
    } else {
        ("wrapped", &root, None, None)
    };

    let Some(Value::Object(message)) = envelope.get("message") else {
        return Err(EnvelopeError::MissingMessage);
    };

    let pubsub_message_id = match message.get("messageId").or(message.get("message_id")) {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Number(id)) => Some(id.to_string()),
        _ => ce_id.map(str::to_owned),
    };
    let publish_time = string_field(message, &["publishTime", "publish_time"])
        .or(ce_time)
        .and_then(parse_time);
    let meta = PushMeta {
        pubsub_message_id: pubsub_message_id.as_deref().map(cut_for_log),
        publish_time,
        subscription: string_field(envelope, &["subscription"]).map(cut_for_log),
        delivery_attempt: envelope
            .get("deliveryAttempt")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        ordering_key: string_field(message, &["orderingKey", "ordering_key"]).map(cut_for_log),
        format,
    };
    let attributes: BTreeMap<&str, &str> = match message.get("attributes") {
        Some(Value::Object(attributes)) => attributes
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let marked_event = attributes.get("trace_event") == Some(&"status");
    let at = publish_time.unwrap_or(now);

    let outcome = decode_message(
        message.get("data"),
        marked_event,
        pubsub_message_id.as_deref(),
        at,
    );
    Ok(Push { meta, outcome })
}

fn decode_message(
    data: Option<&Value>,
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
    let payload = match read_payload(data) {
        Ok(payload) => payload,
        Err(error) => {
            let job = if marked_event { None } else { own_job().ok() };
            return reject(error, job);
        }
    };
    let is_event =
        marked_event || (payload.contains_key("message_id") && payload.contains_key("status"));
    if is_event {
        let job = match payload.get("message_id") {
            Some(Value::String(raw)) => MessageId::parse(raw.as_str()).ok(),
            _ => None,
        };
        match decode_event(&payload, at) {
            Ok(change) => Outcome::Record(change),
            Err(error) => reject(error, job),
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

fn read_payload(data: Option<&Value>) -> Result<Map<String, Value>, MessageError> {
    let encoded = match data {
        None | Some(Value::Null) => return Err(MessageError::MissingData),
        Some(Value::String(encoded)) => encoded,
        Some(_) => return Err(bad_field("data", "is not a base64 string")),
    };
    if encoded.len() / 4 * 3 > MAX_MESSAGE_DATA_BYTES {
        return Err(MessageError::DataTooLarge {
            size: encoded.len() / 4 * 3,
        });
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| MessageError::BadBase64(e.to_string()))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(payload)) => Ok(payload),
        Ok(_) => Err(MessageError::DataNotObject),
        Err(e) => Err(MessageError::DataNotJson(e.to_string())),
    }
}

fn optional<'a>(payload: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    payload.get(field).filter(|value| !value.is_null())
}

fn optional_string<'a>(
    payload: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, MessageError> {
    match optional(payload, field) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(bad_field(field, "is not a string")),
    }
}

fn decode_event(payload: &Map<String, Value>, at: bson::DateTime) -> Result<Change, MessageError> {
    let message_id = match optional(payload, "message_id") {
        None => return Err(MessageError::MissingEventMessageId),
        Some(Value::String(raw)) => {
            MessageId::parse(raw.as_str()).map_err(|e| bad_field("message_id", e.to_string()))?
        }
        Some(_) => return Err(bad_field("message_id", "is not a string")),
    };
    let status: JobStatus = optional_string(payload, "status")?
        .ok_or(MessageError::MissingStatus)?
        .parse()?;
    if status == JobStatus::Queued {
        return Err(MessageError::QueuedEvent);
    }
    let attempt = match optional(payload, "attempt") {
        None => 1,
        Some(value) => value
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_ATTEMPT)).contains(n))
            .ok_or_else(|| {
                bad_field(
                    "attempt",
                    format!("must be a whole number from 1 to {MAX_ATTEMPT}"),
                )
            })? as u32,
    };
    let occurred_at = match optional_string(payload, "occurred_at")? {
        None => at,
        Some(raw) => {
            parse_time(raw).ok_or_else(|| bad_field("occurred_at", "is not an RFC 3339 time"))?
        }
    };
    let error = match optional(payload, "error") {
        None => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    };
    let result = optional(payload, "result")
        .map(bson::to_bson)
        .transpose()
        .map_err(|e| bad_field("result", e.to_string()))?;
    Ok(Change::event(
        message_id,
        status,
        attempt,
        occurred_at,
        error,
        result,
    ))
}

fn decode_job(payload: &Map<String, Value>) -> Result<JobDetails, MessageError> {
    let url = optional_string(payload, "url")?;
    if let Some(url) = url {
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
        Some(Value::Bool(flag)) => *flag,
        Some(_) => return Err(bad_field("check_only", "is not a boolean")),
    };
    Ok(JobDetails {
        job_type: if url.is_some() {
            JobType::PropertyScrape
        } else {
            JobType::BatchCheck
        },
        url: url.map(str::to_owned),
        line_user_id,
        check_only,
    })
}

#[cfg(test)]
mod tests;
