//! Query and path parameters: URL-decoded (the original did not), bounded, and checked
//! with every mistake reported at once, in FastAPI's terms.

use std::time::Duration;

use job_trace::ids::IdError;
use job_trace::model::{JobStatus, JobType};
use job_trace::{LineUserId, MessageId};

use crate::error::{ApiError, FieldError, Location};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 100;
/// Far past any real user's traces (they expire within a week), and cheap for the database.
pub const MAX_SKIP: u64 = 1_000_000;
/// Longest long-poll, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 30;
/// A query string longer than this is refused whole (ids are at most 1 KiB).
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// The decoded query string. A repeated scalar parameter takes its last value, as in
/// FastAPI; `status` and `include` take every value.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, FieldError> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY_BYTES {
            return Err(FieldError::new(
                Location::Query,
                "query",
                "string_too_long",
                format!("The query string is longer than {MAX_QUERY_BYTES} bytes"),
                None,
            ));
        }
        let pairs = form_urlencoded_pairs(raw);
        Ok(Query { pairs })
    }

    pub fn last(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn form_urlencoded_pairs(raw: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw).unwrap_or_else(|_| {
        // serde_urlencoded only fails on shapes a Vec of pairs cannot hold; be lenient.
        Vec::new()
    })
}

fn id_error(location: Location, name: &'static str, error: IdError, raw: &str) -> FieldError {
    let kind = match error {
        IdError::Empty { .. } => "string_too_short",
        IdError::TooLong { .. } => "string_too_long",
        IdError::ControlCharacters { .. } => "string_pattern_mismatch",
    };
    FieldError::new(location, name, kind, error.to_string(), Some(raw))
}

pub fn message_id(location: Location, raw: Option<&str>) -> Result<MessageId, FieldError> {
    let raw = raw.ok_or_else(|| FieldError::missing(location, "message_id"))?;
    MessageId::parse(raw).map_err(|e| id_error(location, "message_id", e, raw))
}

pub fn line_user_id(location: Location, raw: Option<&str>) -> Result<LineUserId, FieldError> {
    let raw = raw.ok_or_else(|| FieldError::missing(location, "line_user_id"))?;
    LineUserId::parse(raw).map_err(|e| id_error(location, "line_user_id", e, raw))
}

pub fn integer(name: &'static str, raw: &str, min: u64, max: u64) -> Result<u64, FieldError> {
    let value: i128 = raw.parse().map_err(|_| {
        FieldError::new(
            Location::Query,
            name,
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
            Some(raw),
        )
    })?;
    if value < i128::from(min) {
        return Err(FieldError::new(
            Location::Query,
            name,
            "greater_than_equal",
            format!("Input should be greater than or equal to {min}"),
            Some(raw),
        ));
    }
    if value > i128::from(max) {
        return Err(FieldError::new(
            Location::Query,
            name,
            "less_than_equal",
            format!("Input should be less than or equal to {max}"),
            Some(raw),
        ));
    }
    Ok(value as u64)
}

/// `limit`: 1..=100, default 50.
pub fn limit(query: &Query) -> Result<u32, FieldError> {
    query.last("limit").map_or(Ok(DEFAULT_LIMIT), |raw| {
        integer("limit", raw, 1, u64::from(MAX_LIMIT)).map(|v| v as u32)
    })
}

/// `skip`: 0..=1,000,000, default 0.
pub fn skip(query: &Query) -> Result<u64, FieldError> {
    query
        .last("skip")
        .map_or(Ok(0), |raw| integer("skip", raw, 0, MAX_SKIP))
}

/// `wait`: 0..=30 seconds, default 0 (answer at once).
pub fn wait(query: &Query) -> Result<Duration, FieldError> {
    query.last("wait").map_or(Ok(Duration::ZERO), |raw| {
        integer("wait", raw, 0, MAX_WAIT_SECONDS).map(Duration::from_secs)
    })
}

/// `status`: one or several statuses, comma-separated or repeated.
pub fn statuses(query: &Query) -> Result<Vec<JobStatus>, FieldError> {
    let mut statuses = Vec::new();
    for raw in query.all("status") {
        for item in raw.split(',') {
            let status: JobStatus = item.parse().map_err(|_| {
                FieldError::new(
                    Location::Query,
                    "status",
                    "enum",
                    "Input should be 'queued', 'processing', 'success', 'failed' or 'not_found' (comma-separated)",
                    Some(raw),
                )
            })?;
            if !statuses.contains(&status) {
                statuses.push(status);
            }
        }
    }
    Ok(statuses)
}

/// `job_type`: `property_scrape` or `batch_check`.
pub fn job_type(query: &Query) -> Result<Option<JobType>, FieldError> {
    query
        .last("job_type")
        .map(|raw| {
            raw.parse().map_err(|_| {
                FieldError::new(
                    Location::Query,
                    "job_type",
                    "enum",
                    "Input should be 'property_scrape' or 'batch_check'",
                    Some(raw),
                )
            })
        })
        .transpose()
}

/// `include=history`: the fields the seed's body does not carry.
pub fn include_history(query: &Query) -> Result<bool, FieldError> {
    let mut history = false;
    for raw in query.all("include") {
        for item in raw.split(',') {
            match item {
                "history" => history = true,
                _ => {
                    return Err(FieldError::new(
                        Location::Query,
                        "include",
                        "literal_error",
                        "Input should be 'history'",
                        Some(raw),
                    ))
                }
            }
        }
    }
    Ok(history)
}

/// Collects the parameters' results, so that every mistake is reported at once.
#[derive(Default)]
pub struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    pub fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|error| self.errors.push(error)).ok()
    }

    pub fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }

    /// Parses the raw query and hands it to `parse`, which takes each parameter through
    /// the checks; its value stands only when no parameter was invalid.
    pub fn run<T>(
        query: Option<&str>,
        parse: impl FnOnce(&mut Checks, &Query) -> Option<T>,
    ) -> Result<T, ApiError> {
        let mut checks = Checks::default();
        let query = checks.take(Query::parse(query)).unwrap_or_default();
        let value = parse(&mut checks, &query);
        checks.finish().map_err(ApiError::Invalid)?;
        value.ok_or(ApiError::Invalid(Vec::new()))
    }
}

/// The raw value of a required query parameter (the standalone routes' ids).
pub fn required(query: Option<&str>, name: &'static str) -> Result<String, FieldError> {
    Query::parse(query)
        .ok()
        .and_then(|q| q.last(name).map(str::to_owned))
        .ok_or_else(|| FieldError::missing(Location::Query, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &str) -> Query {
        Query::parse(Some(raw)).unwrap()
    }

    #[test]
    fn limits_and_skips() {
        assert_eq!(limit(&q("")), Ok(50));
        assert_eq!(limit(&q("limit=1")), Ok(1));
        assert_eq!(limit(&q("limit=100")), Ok(100));
        assert_eq!(limit(&q("limit=0")).unwrap_err().kind, "greater_than_equal");
        assert_eq!(limit(&q("limit=101")).unwrap_err().kind, "less_than_equal");
        assert_eq!(limit(&q("limit=abc")).unwrap_err().kind, "int_parsing");
        assert_eq!(
            limit(&q("limit=99999999999999999999999999999999999999999"))
                .unwrap_err()
                .kind,
            "int_parsing"
        );
        assert_eq!(skip(&q("skip=-1")).unwrap_err().kind, "greater_than_equal");
        assert_eq!(skip(&q("skip=7")), Ok(7));
        assert_eq!(wait(&q("wait=31")).unwrap_err().kind, "less_than_equal");
        assert_eq!(wait(&q("wait=2")), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn values_are_url_decoded() {
        let query = q("message_id=a%2Fb%20c+d&x=%E7%89%A9");
        assert_eq!(query.last("message_id"), Some("a/b c d"));
        assert_eq!(query.last("x"), Some("物"));
    }

    #[test]
    fn statuses_are_comma_separated_or_repeated() {
        assert_eq!(
            statuses(&q("status=success,failed&status=queued&status=success")),
            Ok(vec![
                JobStatus::Success,
                JobStatus::Failed,
                JobStatus::Queued
            ])
        );
        assert_eq!(statuses(&q("status=done")).unwrap_err().kind, "enum");
        assert_eq!(
            job_type(&q("job_type=batch_check")),
            Ok(Some(JobType::BatchCheck))
        );
        assert!(job_type(&q("job_type=x")).is_err());
        assert_eq!(include_history(&q("include=history")), Ok(true));
        assert!(include_history(&q("include=secrets")).is_err());
    }
}
