//! Following a trace through trace-api's server-sent events.

use std::time::{Duration, Instant};

use futures::StreamExt;
use job_trace::model::JobStatus;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;
use serde_json::Value;

use crate::Failure;

/// The trace-api of `make run`.
pub const LOCAL_API: &str = "http://127.0.0.1:8082";

/// trace-api, as a client sees it.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Result<Api, Failure> {
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .map_err(Failure::of)?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// With `include=history`, for the attempt, which the seed's body does not carry.
    fn events_url(&self, message_id: &str) -> String {
        format!(
            "{}/api/v1/jobs/status/{}/events?include=history",
            self.base,
            encode_segment(message_id)
        )
    }

    /// Follows `message_id` until its status is terminal, calling `on_change` with each
    /// version of the trace; returns the last. A trace not recorded yet is waited for
    /// (`patience`), since its job message may still be on its way.
    pub async fn follow(
        &self,
        message_id: &str,
        patience: Duration,
        on_change: impl FnMut(&Value),
    ) -> Result<Value, Failure> {
        let terminal = |trace: &Value| status_of(trace).is_some_and(JobStatus::is_terminal);
        self.follow_until(message_id, patience, on_change, terminal)
            .await
    }

    /// Like [`Api::follow`], until `done` says so: one who knows a failed job will be
    /// retried waits past its first terminal status (the server then ends each stream at
    /// once, and the follower resumes it until the next change).
    pub async fn follow_until(
        &self,
        message_id: &str,
        patience: Duration,
        mut on_change: impl FnMut(&Value),
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, Failure> {
        let url = self.events_url(message_id);
        let started = Instant::now();
        let mut last_event_id: Option<String> = None;
        let mut failures = 0u32;
        loop {
            let mut request = self.http.get(&url).header(ACCEPT, "text/event-stream");
            if let Some(token) = &self.token {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            if let Some(id) = &last_event_id {
                request = request.header("Last-Event-ID", id);
            }
            let response = match request.send().await {
                Ok(response) => response,
                // trace-api may be restarting: a few tries before giving up.
                Err(_) if failures < 3 => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    return Err(Failure::new(format!(
                        "cannot reach trace-api at {}: {e} (is `make run` running? --api / \
                         JOBTRACE_API names another)",
                        self.base
                    )))
                }
            };
            match response.status() {
                StatusCode::OK => {}
                // The events of a resumed stream have all been seen; wait for the next.
                StatusCode::NO_CONTENT => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                StatusCode::NOT_FOUND if started.elapsed() < patience => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                StatusCode::NOT_FOUND => {
                    return Err(Failure::new(format!(
                        "no trace of {message_id} after {} s: was the job enqueued, and does \
                         trace-writer receive pushes?",
                        patience.as_secs()
                    )))
                }
                status => {
                    let body = response.text().await.unwrap_or_default();
                    return Err(Failure::new(format!(
                        "trace-api answered {status} for {url}: {}",
                        body.trim()
                    )));
                }
            }
            failures = 0;
            let mut parser = EventParser::default();
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                for event in parser.push(&chunk) {
                    if event.name != "status" {
                        continue;
                    }
                    if let Some(id) = event.id {
                        last_event_id = Some(id);
                    }
                    let trace: Value = serde_json::from_str(&event.data).map_err(|e| {
                        Failure::new(format!("trace-api sent an event that is not JSON: {e}"))
                    })?;
                    on_change(&trace);
                    if done(&trace) {
                        return Ok(trace);
                    }
                }
            }
            // The stream ended before a terminal status (a restart, a proxy's timeout):
            // resume after the last event seen.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The status a trace's JSON reports.
pub fn status_of(trace: &Value) -> Option<JobStatus> {
    trace.get("status")?.as_str()?.parse().ok()
}

/// One line per transition: time, status, attempt, error.
pub fn describe(trace: &Value) -> String {
    let field = |name: &str| trace.get(name).and_then(Value::as_str).unwrap_or("");
    let mut line = format!(
        "{}  {:<10} attempt {}",
        field("updated_at"),
        field("status"),
        trace.get("attempt").and_then(Value::as_u64).unwrap_or(0)
    );
    if let Some(error) = trace.get("error").and_then(Value::as_str) {
        line.push_str("  error: ");
        line.push_str(error);
    }
    line
}

/// What distinguishes two transitions worth a line: a trace may also change by gaining
/// descriptive fields, which is not news to someone watching its status.
pub fn transition_key(trace: &Value) -> (Option<String>, Option<u64>, Option<String>) {
    (
        trace
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_owned),
        trace.get("attempt").and_then(Value::as_u64),
        trace
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned),
    )
}

/// Percent-encodes a path segment (ids are opaque strings).
fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A server-sent event.
#[derive(Debug, Default, PartialEq)]
pub struct Event {
    pub name: String,
    pub id: Option<String>,
    pub data: String,
}

/// An incremental parser of `text/event-stream` (the WHATWG rules this API needs: `event`,
/// `id`, multi-line `data`, comments, any line ending).
#[derive(Default)]
pub struct EventParser {
    pending: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl EventParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR LF pair is one line ending; wait for the LF if the CR ends the buffer.
            let width = match (self.pending[end], self.pending.get(end + 1)) {
                (b'\r', Some(b'\n')) => 2,
                (b'\r', None) => break,
                _ => 1,
            };
            let line: Vec<u8> = self.pending.drain(..end + width).take(end).collect();
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                let event = std::mem::take(&mut self.current);
                if std::mem::take(&mut self.has_data) {
                    events.push(Event {
                        name: if event.name.is_empty() {
                            "message".into()
                        } else {
                            event.name
                        },
                        ..event
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.current.name = value.to_owned(),
                "id" => self.current.id = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings_parse_whole() {
        let stream = b": heartbeat\r\n\r\nevent: status\r\nid: \"abc\"\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent: status\ndata: x\n\n";
        for split in 0..stream.len() {
            let mut parser = EventParser::default();
            let mut events = parser.push(&stream[..split]);
            events.extend(parser.push(&stream[split..]));
            assert_eq!(
                events,
                vec![
                    Event {
                        name: "status".into(),
                        id: Some("\"abc\"".into()),
                        data: "{\"a\":\n1}".into()
                    },
                    Event {
                        name: "status".into(),
                        id: None,
                        data: "x".into()
                    }
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(encode_segment("12/3 é"), "12%2F3%20%C3%A9");
        assert_eq!(encode_segment("1234567890"), "1234567890");
    }

    #[test]
    fn a_transition_line_names_status_attempt_and_error() {
        let trace = serde_json::json!({"status": "failed", "attempt": 2,
            "updated_at": "2026-01-01T00:00:00.000Z", "error": "HTTP 503"});
        assert_eq!(
            describe(&trace),
            "2026-01-01T00:00:00.000Z  failed     attempt 2  error: HTTP 503"
        );
        assert_eq!(status_of(&trace), Some(JobStatus::Failed));
    }
}
