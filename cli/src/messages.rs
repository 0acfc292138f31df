//! The messages producers publish, in the formats DESIGN.md fixes: the API's job message
//! and the worker's status event.

use chrono::{SecondsFormat, Utc};
use job_trace::model::JobStatus;
use serde_json::{json, Map, Value};

/// A scrape request as the API publishes it. Without a URL it is a batch check.
pub fn job_message(url: Option<&str>, line_user_id: &str, check_only: bool) -> Value {
    let mut payload = Map::new();
    payload.insert("timestamp".into(), json!(now()));
    if let Some(url) = url {
        payload.insert("url".into(), json!(url));
    }
    payload.insert("line_user_id".into(), json!(line_user_id));
    payload.insert("check_only".into(), json!(check_only));
    Value::Object(payload)
}

/// What a worker reports about one attempt of a job.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub message_id: String,
    pub status: JobStatus,
    pub attempt: u32,
    pub error: Option<String>,
    pub result: Option<Value>,
}

impl StatusReport {
    pub fn new(message_id: &str, status: JobStatus, attempt: u32) -> Self {
        StatusReport {
            message_id: message_id.to_owned(),
            status,
            attempt,
            error: None,
            result: None,
        }
    }

    /// The event's payload; `occurred_at` is now, so that the trace keeps the worker's
    /// time rather than Pub/Sub's.
    pub fn payload(&self) -> Value {
        let mut payload = Map::new();
        payload.insert("message_id".into(), json!(self.message_id));
        payload.insert("status".into(), json!(self.status.as_str()));
        payload.insert("attempt".into(), json!(self.attempt));
        payload.insert("occurred_at".into(), json!(now()));
        if let Some(error) = &self.error {
            payload.insert("error".into(), json!(error));
        }
        if let Some(result) = &self.result {
            payload.insert("result".into(), result.clone());
        }
        Value::Object(payload)
    }
}

/// RFC 3339 UTC with milliseconds, as every timestamp of job trace.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_without_url_is_a_batch_check_message() {
        let message = job_message(None, "U1", true);
        assert!(message.get("url").is_none());
        assert_eq!(message["line_user_id"], "U1");
        assert_eq!(message["check_only"], true);
        assert!(message["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_status_report_carries_only_what_it_knows() {
        let mut report = StatusReport::new("42", JobStatus::Failed, 2);
        assert!(report.payload().get("error").is_none());
        report.error = Some("HTTP 503".into());
        let payload = report.payload();
        assert_eq!(payload["status"], "failed");
        assert_eq!(payload["attempt"], 2);
        assert_eq!(payload["error"], "HTTP 503");
    }
}
