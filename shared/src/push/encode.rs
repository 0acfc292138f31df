//! Building push bodies: what Pub/Sub POSTs to a push subscription, the inverse of
//! [`decode_push`](super::decode_push) for wrapped pushes. The CLI's local transport,
//! the tests, the bench and the fuzzer all build their bodies here, so a change to the
//! wire format is made once.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::model::render_time;

/// The attribute that marks a status event (as the worker publishes them).
pub const EVENT_ATTRIBUTE: (&str, &str) = ("trace_event", "status");

/// One Pub/Sub message as a push subscription delivers it. Fields are public so that a
/// test or the fuzzer can set what Pub/Sub itself never would (a raw, invalid time).
#[derive(Debug, Clone, PartialEq)]
pub struct PushMessage {
    pub message_id: String,
    /// The message's data, raw: base64-encoded in the body.
    pub data: Vec<u8>,
    /// RFC 3339, as Pub/Sub renders it; `None` leaves it out.
    pub publish_time: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub ordering_key: Option<String>,
}

impl PushMessage {
    pub fn new(
        message_id: impl Into<String>,
        data: impl Into<Vec<u8>>,
        published: DateTime<Utc>,
    ) -> Self {
        PushMessage {
            message_id: message_id.into(),
            data: data.into(),
            publish_time: Some(render_time(bson::DateTime::from_chrono(published))),
            attributes: BTreeMap::new(),
            ordering_key: None,
        }
    }

    /// A status event about `job`: marked by its attribute, ordered by the job's id (as
    /// the worker publishes them).
    pub fn status_event(mut self, job: &str) -> Self {
        self.attributes
            .insert(EVENT_ATTRIBUTE.0.into(), EVENT_ATTRIBUTE.1.into());
        self.ordering_key = Some(job.into());
        self
    }

    /// The `message` object, with both spellings Pub/Sub sends (`messageId` and
    /// `message_id`, `publishTime` and `publish_time`).
    pub fn message(&self) -> Value {
        let mut message = Map::new();
        message.insert("attributes".into(), json!(self.attributes));
        message.insert(
            "data".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&self.data)),
        );
        message.insert("messageId".into(), json!(self.message_id));
        message.insert("message_id".into(), json!(self.message_id));
        if let Some(time) = &self.publish_time {
            message.insert("publishTime".into(), json!(time));
            message.insert("publish_time".into(), json!(time));
        }
        if let Some(key) = &self.ordering_key {
            message.insert("orderingKey".into(), json!(key));
        }
        Value::Object(message)
    }

    /// The wrapped push body as delivered by `subscription` (its full
    /// `projects/…/subscriptions/…` name).
    pub fn wrapped(&self, subscription: &str) -> Value {
        json!({ "message": self.message(), "subscription": subscription })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;
    use crate::push::{decode_push, Outcome};

    fn at(raw: &str) -> DateTime<Utc> {
        raw.parse().unwrap()
    }

    #[test]
    fn what_is_encoded_decodes_to_the_same_message() {
        let published = at("2026-05-01T10:00:00.123Z");
        let data = json!({"url": "https://suumo.jp/ms/chuko/nc_1/", "line_user_id": "U1"});
        let job = PushMessage::new("42", data.to_string(), published);
        let body = job.wrapped("projects/demo/subscriptions/s");
        let push = decode_push(
            &HeaderMap::new(),
            body.to_string().as_bytes(),
            bson::DateTime::now(),
        )
        .unwrap();
        assert_eq!(push.meta.pubsub_message_id.as_deref(), Some("42"));
        assert_eq!(
            push.meta.publish_time,
            Some(bson::DateTime::from_chrono(published))
        );
        assert!(matches!(push.outcome, Outcome::Record(_)), "{push:?}");

        let event = json!({"message_id": "42", "status": "processing"});
        let event = PushMessage::new("43", event.to_string(), published).status_event("42");
        let push = decode_push(
            &HeaderMap::new(),
            event
                .wrapped("projects/demo/subscriptions/e")
                .to_string()
                .as_bytes(),
            bson::DateTime::now(),
        )
        .unwrap();
        assert_eq!(push.meta.ordering_key.as_deref(), Some("42"));
        assert_eq!(push.job_message_id().map(|id| id.as_str()), Some("42"));
    }
}
