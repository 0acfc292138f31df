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

/// Every parameter a route reads: a value of one of them that is not UTF-8 is refused
/// by its name (the others are ignored, whatever they hold).
const PARAMETERS: [&str; 8] = [
    "message_id",
    "line_user_id",
    "limit",
    "skip",
    "wait",
    "status",
    "job_type",
    "include",
];

/// The decoded query string. A repeated scalar parameter takes its last value, as in
/// FastAPI; `status` and `include` take every value.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
    /// Parameters whose value is not UTF-8 once percent-decoded: refused, never
    /// decoded lossily into another value (`%FF` is not `�`).
    not_utf8: Vec<FieldError>,
}

/// The query string is longer than [`MAX_QUERY_BYTES`]: answered 414 as a whole, since
/// none of its parameters can be trusted to have been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTooLong {
    pub bytes: usize,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, QueryTooLong> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY_BYTES {
            return Err(QueryTooLong { bytes: raw.len() });
        }
        let mut query = Query::default();
        for (name, value) in form_urlencoded_pairs(raw) {
            match (String::from_utf8(name), String::from_utf8(value)) {
                (Ok(name), Ok(value)) => query.pairs.push((name, value)),
                (Ok(name), Err(value)) => {
                    if let Some(known) = PARAMETERS.iter().find(|known| **known == name) {
                        query.not_utf8.push(FieldError::new(
                            Location::Query,
                            known,
                            "string_unicode",
                            "Input should be a valid string: the value is not UTF-8",
                            Some(&String::from_utf8_lossy(value.as_bytes())),
                        ));
                    }
                }
                (Err(_), _) => {}
            }
        }
        Ok(query)
    }

    /// The error of parameter `name` when its value was not UTF-8.
    fn not_utf8(&self, name: &str) -> Option<&FieldError> {
        self.not_utf8.iter().find(|error| error.name == name)
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

/// `application/x-www-form-urlencoded` pairs as raw bytes: `+` is a space, `%XX` a byte,
/// a `%` not followed by two hex digits itself (as browsers and FastAPI read them).
fn form_urlencoded_pairs(raw: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                if let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) {
                    decoded.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                decoded.push(b'%');
            }
            other => decoded.push(other),
        }
        i += 1;
    }
    decoded
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

    /// The errors, each once (a standalone route's id is checked twice when its value is
    /// not UTF-8: as the id and as a parameter).
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        let mut errors: Vec<FieldError> = Vec::with_capacity(self.errors.len());
        for error in self.errors {
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Parses the raw query and hands it to `parse`, which takes each parameter through
    /// the checks; its value stands only when no parameter was invalid.
    pub fn run<T>(
        query: Option<&str>,
        parse: impl FnOnce(&mut Checks, &Query) -> Option<T>,
    ) -> Result<T, ApiError> {
        let query = Query::parse(query).map_err(|too_long| ApiError::QueryTooLong {
            bytes: too_long.bytes,
        })?;
        let mut checks = Checks::default();
        for error in &query.not_utf8 {
            checks.push(error.clone());
        }
        let value = parse(&mut checks, &query);
        checks.finish().map_err(ApiError::Invalid)?;
        value.ok_or(ApiError::Invalid(Vec::new()))
    }
}

/// The raw value of a required query parameter (the standalone routes' ids). A query too
/// long to read counts as none here: [`Checks::run`] answers it as a whole.
pub fn required(query: Option<&str>, name: &'static str) -> Result<String, FieldError> {
    let Ok(query) = Query::parse(query) else {
        return Err(FieldError::missing(Location::Query, name));
    };
    if let Some(error) = query.not_utf8(name) {
        return Err(error.clone());
    }
    query
        .last(name)
        .map(str::to_owned)
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
    fn values_that_are_not_utf8_are_refused_by_name() {
        let query = q("message_id=%FF%FE&pad=%FF&limit=5");
        assert_eq!(query.last("message_id"), None);
        assert_eq!(query.last("limit"), Some("5"));
        let error = query.not_utf8("message_id").expect("refused");
        assert_eq!(
            (error.location, error.name, error.kind),
            (Location::Query, "message_id", "string_unicode")
        );
        assert!(
            query.not_utf8("pad").is_none(),
            "an unknown parameter is ignored"
        );
        assert_eq!(
            required(Some("message_id=%FF"), "message_id")
                .unwrap_err()
                .kind,
            "string_unicode"
        );
        // A `%` that starts no escape is itself; `+` is a space.
        assert_eq!(q("x=100%&y=a+b%2").last("x"), Some("100%"));
        assert_eq!(q("y=a+b%2").last("y"), Some("a b%2"));
    }

    #[test]
    fn an_overlong_query_is_refused_whole() {
        let long = format!("message_id=m&pad={}", "x".repeat(MAX_QUERY_BYTES));
        assert_eq!(
            Query::parse(Some(&long)).unwrap_err(),
            QueryTooLong { bytes: long.len() }
        );
        assert!(matches!(
            Checks::run(Some(&long), |_, _| Some(())),
            Err(ApiError::QueryTooLong { .. })
        ));
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
