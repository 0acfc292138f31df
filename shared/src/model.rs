//! The trace document as stored in MongoDB, and its JSON rendering (the seed's contract).

use std::fmt;
use std::str::FromStr;

use bson::oid::ObjectId;
use chrono::{Datelike, SecondsFormat, Timelike};
use serde::{Deserialize, Serialize};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Status))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Processing,
    Success,
    Failed,
    NotFound,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Processing,
        JobStatus::Success,
        JobStatus::Failed,
        JobStatus::NotFound,
    ];

    /// `queued` 0 < `processing` 1 < terminal 2.
    pub fn rank(self) -> u8 {
        match self {
            JobStatus::Queued => 0,
            JobStatus::Processing => 1,
            JobStatus::Success | JobStatus::Failed | JobStatus::NotFound => 2,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 2
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::NotFound => "not_found",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}; expected one of queued, processing, success, failed, not_found")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.chars().take(64).collect()))
    }
}

/// What kind of scrape a job is: one property, or a batch re-check of a user's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobType {
    PropertyScrape,
    BatchCheck,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::PropertyScrape => "property_scrape",
            JobType::BatchCheck => "batch_check",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job_type {0:?}; expected property_scrape or batch_check")]
pub struct UnknownJobType(pub String);

impl FromStr for JobType {
    type Err = UnknownJobType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "property_scrape" => Ok(JobType::PropertyScrape),
            "batch_check" => Ok(JobType::BatchCheck),
            other => Err(UnknownJobType(other.chars().take(64).collect())),
        }
    }
}

/// The order of status changes: `(attempt, rank)`, compared lexicographically.
/// A job message is `(0, 0)`; an event `(attempt, rank(status))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TraceKey {
    pub attempt: u32,
    pub rank: u8,
}

impl TraceKey {
    /// The key a trace without `attempt` is taken to be at: the original system wrote
    /// none, and every status it recorded belonged to the job's first attempt (its queued
    /// record comes before any attempt). So a redelivered attempt-1 `processing` cannot
    /// reopen its `success`, while a real attempt 2 still does.
    pub fn implied_by_legacy(status: JobStatus) -> TraceKey {
        TraceKey {
            attempt: u32::from(status != JobStatus::Queued),
            rank: status.rank(),
        }
    }
}

/// One status change the trace has learnt of. Stored in the document's bounded `history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub attempt: i64,
    pub rank: i32,
    pub status: JobStatus,
    pub at: bson::DateTime,
    pub error: Option<String>,
}

/// The progress report a trace keeps ([`crate::rules::apply`]): the greatest, by
/// [`StoredProgress::order`], of those still admissible under the trace's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredProgress {
    pub attempt: i64,
    pub at: bson::DateTime,
    pub done: i64,
    pub total: i64,
    pub note: Option<String>,
}

impl StoredProgress {
    /// `(attempt, at, done, total, note)`: total, so the kept report is the same in any
    /// arrival order; the pipeline compares field by field in this order.
    pub fn order(&self) -> (i64, bson::DateTime, i64, i64, Option<&str>) {
        (
            self.attempt,
            self.at,
            self.done,
            self.total,
            self.note.as_deref(),
        )
    }

    /// Whether a trace at `(attempt, rank)` may still take this report: a later attempt,
    /// or the current one while it has not finished.
    pub fn admissible(&self, (attempt, rank): (i64, i32)) -> bool {
        self.attempt > attempt || (self.attempt == attempt && rank < 2)
    }
}

/// The stored trace. Every field but `_id` is written by [`crate::store`]'s update
/// pipeline; fields may be missing in documents written by the original system, so
/// reading is lenient and rendering turns anything absent into `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceDocument {
    #[serde(rename = "_id", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ObjectId>,
    pub message_id: String,
    #[serde(default)]
    pub job_type: Option<JobType>,
    pub status: JobStatus,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub line_user_id: Option<String>,
    #[serde(default)]
    pub check_only: Option<bool>,
    #[serde(default)]
    pub created_at: Option<bson::DateTime>,
    #[serde(default)]
    pub updated_at: Option<bson::DateTime>,
    #[serde(default)]
    pub started_at: Option<bson::DateTime>,
    #[serde(default)]
    pub completed_at: Option<bson::DateTime>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub result: Option<bson::Bson>,
    /// The attempt of the current status (0 for a job that only has been queued).
    #[serde(default)]
    pub attempt: Option<i64>,
    /// The rank of the current status; with `attempt` the stored [`TraceKey`].
    #[serde(default)]
    pub rank: Option<i32>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    #[serde(default)]
    pub expire_at: Option<bson::DateTime>,
    #[serde(default)]
    pub progress: Option<StoredProgress>,
    /// Completion notifications owed but not yet published
    /// ([`crate::completions`]); never rendered, and absent while there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_completions: Vec<PendingCompletion>,
}

/// A terminal transition a trace has taken whose notification is not published yet:
/// written in the same update as the transition, removed once published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCompletion {
    /// `{message_id}:{attempt}:{status}`: what subscribers deduplicate on.
    pub dedupe_key: String,
    pub status: JobStatus,
    pub attempt: i64,
    /// When trace-writer recorded the transition (its own clock), so that an entry whose
    /// push was lost can be told from one whose push is still being answered.
    pub noted_at: bson::DateTime,
}

/// RFC 3339, UTC, milliseconds, `Z`: `2023-06-01T12:34:56.789Z`. Written digit by digit:
/// a list page renders some 200 of these, and chrono's formatter cost ten times as much.
pub fn render_time(time: bson::DateTime) -> String {
    let time = time.to_chrono();
    let year = time.year();
    if !(0..=9999).contains(&year) {
        // Outside four digits RFC 3339 has no form; chrono's is what was always written.
        return time.to_rfc3339_opts(SecondsFormat::Millis, true);
    }
    fn digits(out: &mut String, value: u32, width: u32) {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
        }
    }
    let mut out = String::with_capacity(24);
    digits(&mut out, year as u32, 4);
    out.push('-');
    digits(&mut out, time.month(), 2);
    out.push('-');
    digits(&mut out, time.day(), 2);
    out.push('T');
    digits(&mut out, time.hour(), 2);
    out.push(':');
    digits(&mut out, time.minute(), 2);
    out.push(':');
    digits(&mut out, time.second(), 2);
    out.push('.');
    digits(&mut out, time.timestamp_subsec_millis().min(999), 3);
    out.push('Z');
    out
}

fn render_optional_time(time: Option<bson::DateTime>) -> Option<String> {
    time.map(render_time)
}

/// The seed's status object, field for field and in the seed's order. It borrows the
/// trace's text and result: a list page renders fifty of these, and copying them first
/// cost more than writing them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = JobTrace))]
pub struct TraceView<'a> {
    /// The ObjectId as hex (never `_id`).
    pub id: Option<String>,
    pub message_id: &'a str,
    pub status: JobStatus,
    pub url: Option<&'a str>,
    pub line_user_id: Option<&'a str>,
    pub check_only: Option<bool>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub error: Option<&'a str>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<RelaxedJson<'a>>,
    /// Only while the current attempt runs and has reported progress: the seed's body
    /// for every other trace stays as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub progress: Option<ProgressView>,
    /// Only with `?include=history`: what the seed's body does not carry.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = TraceDetails))]
    pub details: Option<TraceDetails>,
}

/// A stored value written as its relaxed extended JSON
/// ([`bson::Bson::into_relaxed_extjson`], byte for byte) without building that JSON
/// first. Results hold documents, lists, text, numbers and booleans, written as they
/// are; anything else is rare and converted as `into_relaxed_extjson` does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelaxedJson<'a>(pub &'a bson::Bson);

impl Serialize for RelaxedJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use bson::Bson;
        match self.0 {
            Bson::Document(doc) => {
                serializer.collect_map(doc.iter().map(|(key, value)| (key, RelaxedJson(value))))
            }
            Bson::Array(items) => serializer.collect_seq(items.iter().map(RelaxedJson)),
            Bson::String(text) => serializer.serialize_str(text),
            Bson::Boolean(value) => serializer.serialize_bool(*value),
            Bson::Int32(value) => serializer.serialize_i32(*value),
            Bson::Int64(value) => serializer.serialize_i64(*value),
            // Not NaN or infinite: those are `{"$numberDouble": ...}`.
            Bson::Double(value) if value.is_finite() => serializer.serialize_f64(*value),
            Bson::Null => serializer.serialize_unit(),
            other => other.clone().into_relaxed_extjson().serialize(serializer),
        }
    }
}

/// How far the running attempt has got, as its worker last reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = JobProgress))]
pub struct ProgressView {
    pub done: i64,
    pub total: i64,
    pub note: Option<String>,
    pub at: String,
}

/// The fields behind `?include=history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceDetails {
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub job_type: Option<JobType>,
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub attempt: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub expire_at: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub history: Vec<HistoryView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = HistoryEntry))]
pub struct HistoryView {
    pub attempt: i64,
    pub status: JobStatus,
    pub at: String,
    pub error: Option<String>,
}

/// The years an RFC 3339 time can show (four digits) and Firestore can store.
const RENDERABLE_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

impl TraceDocument {
    /// Every time the document holds, with the field it is in.
    fn times(&self) -> impl Iterator<Item = (&'static str, bson::DateTime)> + '_ {
        let fields = [
            ("created_at", self.created_at),
            ("updated_at", self.updated_at),
            ("started_at", self.started_at),
            ("completed_at", self.completed_at),
            ("expire_at", self.expire_at),
            ("progress.at", self.progress.as_ref().map(|p| p.at)),
        ];
        fields
            .into_iter()
            .filter_map(|(field, time)| Some((field, time?)))
            .chain(self.history.iter().map(|entry| ("history.at", entry.at)))
    }

    /// Whether [`TraceDocument::view`] can render every time as RFC 3339: a stored date
    /// outside years 1..=9999 (no trace the rules write holds one) cannot.
    pub fn renderable(&self) -> Result<(), String> {
        match self.times().find(|(_, time)| {
            !RENDERABLE_YEARS.contains(&chrono::Datelike::year(&time.to_chrono()))
        }) {
            None => Ok(()),
            Some((field, time)) => Err(format!(
                "{field} is {} ms since the epoch, outside years 1..=9999",
                time.timestamp_millis()
            )),
        }
    }

    /// Renders the seed's JSON; `with_details` adds job type, attempt, expiry and history.
    pub fn view(&self, with_details: bool) -> TraceView<'_> {
        TraceView {
            id: self.id.map(|id| id.to_hex()),
            message_id: &self.message_id,
            status: self.status,
            url: self.url.as_deref(),
            line_user_id: self.line_user_id.as_deref(),
            check_only: self.check_only,
            created_at: render_optional_time(self.created_at),
            updated_at: render_optional_time(self.updated_at),
            started_at: render_optional_time(self.started_at),
            completed_at: render_optional_time(self.completed_at),
            error: self.error.as_deref(),
            result: self
                .result
                .as_ref()
                .filter(|result| !matches!(result, bson::Bson::Null))
                .map(RelaxedJson),
            progress: self
                .progress
                .as_ref()
                .filter(|p| Some(p.attempt) == self.attempt && !self.status.is_terminal())
                .map(|p| ProgressView {
                    done: p.done,
                    total: p.total,
                    note: p.note.clone(),
                    at: render_time(p.at),
                }),
            details: with_details.then(|| TraceDetails {
                job_type: self.job_type,
                attempt: self.attempt,
                expire_at: render_optional_time(self.expire_at),
                history: self
                    .history
                    .iter()
                    .map(|entry| HistoryView {
                        attempt: entry.attempt,
                        status: entry.status,
                        at: render_time(entry.at),
                        error: entry.error.clone(),
                    })
                    .collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_rank() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert!(JobStatus::Queued.rank() < JobStatus::Processing.rank());
        assert!(JobStatus::NotFound.is_terminal() && !JobStatus::Processing.is_terminal());
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn keys_order_by_attempt_then_rank() {
        let key = |attempt, rank| TraceKey { attempt, rank };
        assert!(key(1, 2) > key(1, 1));
        assert!(key(2, 1) > key(1, 2));
        assert!(key(0, 2) < key(1, 1));
    }

    #[test]
    fn a_legacy_status_implies_the_first_attempt() {
        let implied = |status| TraceKey::implied_by_legacy(status);
        let key = |attempt, rank| TraceKey { attempt, rank };
        assert_eq!(implied(JobStatus::Queued), key(0, 0));
        assert_eq!(implied(JobStatus::Processing), key(1, 1));
        for terminal in [JobStatus::Success, JobStatus::Failed, JobStatus::NotFound] {
            assert_eq!(implied(terminal), key(1, 2));
        }
    }

    #[test]
    fn times_render_with_milliseconds_and_z() {
        let time = bson::DateTime::from_millis(1_685_622_896_789);
        assert_eq!(render_time(time), "2023-06-01T12:34:56.789Z");
        assert_eq!(
            render_time(bson::DateTime::from_millis(1_685_622_896_000)),
            "2023-06-01T12:34:56.000Z"
        );
        // Digit by digit as chrono wrote them, across the range a trace can hold.
        for millis in [0, 1, 999, 86_399_999, 951_782_400_007, 4_102_444_799_999] {
            let time = bson::DateTime::from_millis(millis);
            assert_eq!(
                render_time(time),
                time.to_chrono()
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
    }

    #[test]
    fn results_are_written_as_their_relaxed_extended_json() {
        use bson::{doc, spec::BinarySubtype, Binary, Bson, Decimal128, Regex, Timestamp};
        let values = vec![
            Bson::Double(1.0),
            Bson::Double(-0.0),
            Bson::Double(0.1),
            Bson::Double(1e300),
            Bson::Double(5e-324),
            Bson::Double(f64::NAN),
            Bson::Double(f64::NEG_INFINITY),
            Bson::Int32(i32::MIN),
            Bson::Int64(i64::MAX),
            Bson::String("東京 \"quoted\" \u{0}\n".into()),
            Bson::Boolean(false),
            Bson::Null,
            Bson::Array(vec![]),
            Bson::Document(doc! {}),
            Bson::ObjectId(bson::oid::ObjectId::from_bytes([7; 12])),
            Bson::DateTime(bson::DateTime::from_millis(1_685_622_896_789)),
            Bson::DateTime(bson::DateTime::from_millis(-1)),
            Bson::DateTime(bson::DateTime::MAX),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![0, 255],
            }),
            Bson::RegularExpression(Regex {
                pattern: "a+".into(),
                options: "xi".into(),
            }),
            Bson::Timestamp(Timestamp {
                time: 1,
                increment: 2,
            }),
            Bson::Decimal128(Decimal128::from_bytes([1; 16])),
            Bson::Symbol("s".into()),
            Bson::JavaScriptCode("f()".into()),
            Bson::Undefined,
            Bson::MinKey,
            Bson::MaxKey,
        ];
        let nested = doc! {
            "all": values.clone(),
            "$set": { "b": 1, "a": [{ "": Bson::Null }] },
            "z": 2,
        };
        for value in values.into_iter().chain([Bson::Document(nested)]) {
            assert_eq!(
                serde_json::to_string(&RelaxedJson(&value)).unwrap(),
                serde_json::to_string(&value.clone().into_relaxed_extjson()).unwrap(),
                "{value:?}"
            );
        }
    }
}
