//! What one document of the original becomes: decided without the database.

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use job_trace::model::{HistoryEntry, JobStatus, TraceKey};
use job_trace::rules::{bound_error, expire_at, history_order};

use super::MARKER;

/// The timestamps `--legacy-offset` moves.
const TIMESTAMPS: [&str; 4] = ["created_at", "updated_at", "started_at", "completed_at"];
/// A larger offset is surely a typo: the original was off by whole hours of a time zone.
const MAX_OFFSET_MILLIS: i64 = 24 * 60 * 60 * 1000;

/// Parses `9h`, `540m`, `32400s`, `9h30m`, `1500ms` into milliseconds.
pub fn parse_offset(raw: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut rest = raw.trim();
    if rest.is_empty() {
        return Err("empty duration; expected e.g. 9h, 540m or 32400s".into());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let millis_per_unit = match unit {
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            _ => {
                return Err(format!(
                    "{raw:?} is not a duration; expected numbers with units h, m, s or ms, e.g. 9h"
                ))
            }
        };
        let number: i64 = number
            .parse()
            .map_err(|_| format!("{raw:?} is not a duration; expected e.g. 9h"))?;
        total = number
            .checked_mul(millis_per_unit)
            .and_then(|millis| total.checked_add(millis))
            .filter(|&total| total <= MAX_OFFSET_MILLIS)
            .ok_or_else(|| format!("{raw:?} is more than 24h; the original was 9h off"))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// Writes an offset back the way a person would type it.
pub(super) fn describe_offset(millis: i64) -> String {
    match millis {
        0 => "none".into(),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1_000 == 0 => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    }
}

/// What a run does with one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    AlreadyMigrated,
    Skip(String),
    Migrate(Migration),
}

/// One document's conditional update.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub message_id: String,
    pub status: JobStatus,
    /// Matches the document only while it is as it was read and still unmigrated, so
    /// that a writer that touched it in between is never overwritten.
    pub filter: Document,
    pub set: Document,
    /// `created_at` before and after (the one timestamp every document has).
    pub created: (bson::DateTime, bson::DateTime),
}

fn date(document: &Document, field: &str) -> Result<Option<bson::DateTime>, String> {
    match document.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::DateTime(at)) => Ok(Some(*at)),
        Some(other) => Err(format!(
            "{field} is not a date ({:?})",
            other.element_type()
        )),
    }
}

/// Decides what to do with `document`; `offset_millis` is taken off its timestamps, `now`
/// goes into the marker.
pub fn plan(document: &Document, offset_millis: i64, now: bson::DateTime) -> Plan {
    if document.contains_key(MARKER) {
        return Plan::AlreadyMigrated;
    }
    if document.contains_key("attempt") {
        return Plan::Skip("written by this system (has attempt)".into());
    }
    let message_id = match document.get("message_id") {
        Some(Bson::String(id)) if !id.is_empty() => id.clone(),
        _ => return Plan::Skip("missing message_id".into()),
    };
    let status = match document.get("status") {
        Some(Bson::String(raw)) => match raw.parse::<JobStatus>() {
            Ok(status) => status,
            Err(_) => return Plan::Skip(format!("unknown status {:?}", raw)),
        },
        None | Some(Bson::Null) => return Plan::Skip("missing status".into()),
        Some(_) => return Plan::Skip("status is not a string".into()),
    };
    let shift =
        |at: bson::DateTime| bson::DateTime::from_millis(at.timestamp_millis() - offset_millis);
    let mut dates = BTreeMap::new();
    for field in TIMESTAMPS {
        match date(document, field) {
            Ok(at) => {
                dates.insert(field, at.map(shift));
            }
            Err(reason) => return Plan::Skip(reason),
        }
    }
    let Some(created_at) = dates["created_at"] else {
        return Plan::Skip("missing created_at".into());
    };
    let (started_at, completed_at) = (dates["started_at"], dates["completed_at"]);

    // Every status the original recorded belonged to the job's first attempt.
    let entry = |status: JobStatus, at: bson::DateTime, error: Option<String>| {
        let key = TraceKey::implied_by_legacy(status);
        HistoryEntry {
            attempt: i64::from(key.attempt),
            rank: i32::from(key.rank),
            status,
            at,
            error,
        }
    };
    let mut history = vec![entry(JobStatus::Queued, created_at, None)];
    if let Some(started) = started_at {
        history.push(entry(JobStatus::Processing, started, None));
    }
    if status.is_terminal() {
        // The original wrote completed_at and updated_at in the same call.
        let at = completed_at.or(dates["updated_at"]).unwrap_or(created_at);
        let error = document.get_str("error").ok().map(bound_error);
        history.push(entry(status, at, error));
    }
    history.sort_by(history_order);
    let key = TraceKey::implied_by_legacy(status);

    let mut set = Document::new();
    if offset_millis != 0 {
        for (field, at) in &dates {
            if let Some(at) = at {
                set.insert(*field, *at);
            }
        }
    }
    set.insert("attempt", i64::from(key.attempt));
    set.insert("rank", i32::from(key.rank));
    set.insert(
        "history",
        history
            .iter()
            .map(|entry| bson::to_bson(entry).expect("a history entry is BSON"))
            .collect::<Vec<_>>(),
    );
    // The original's two TTL indexes deleted a trace at whichever of these came first,
    // whatever its status: `expire_at` keeps that retention.
    set.insert("expire_at", expire_at(created_at, completed_at));
    set.insert(
        MARKER,
        doc! { "from": "original", "at": now, "legacy_offset_ms": offset_millis },
    );

    let filter = doc! {
        "_id": document.get("_id").cloned().unwrap_or(Bson::Null),
        MARKER: { "$exists": false },
        "attempt": { "$exists": false },
        "status": status.as_str(),
        "updated_at": document.get("updated_at").cloned().unwrap_or(Bson::Null),
    };
    Plan::Migrate(Migration {
        message_id,
        status,
        filter,
        set,
        created: (
            bson::DateTime::from_millis(created_at.timestamp_millis() + offset_millis),
            created_at,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn offsets_parse_in_the_units_people_write() {
        assert_eq!(parse_offset("9h"), Ok(9 * HOUR));
        assert_eq!(parse_offset("540m"), Ok(9 * HOUR));
        assert_eq!(parse_offset("32400s"), Ok(9 * HOUR));
        assert_eq!(parse_offset("8h60m"), Ok(9 * HOUR));
        assert_eq!(parse_offset("1500ms"), Ok(1500));
        for bad in [
            "",
            "9",
            "h",
            "9d",
            "-9h",
            "9 h",
            "25h",
            "99999999999999999999h",
        ] {
            assert!(parse_offset(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(describe_offset(9 * HOUR), "9h");
        assert_eq!(describe_offset(90_000), "90s");
    }

    fn legacy(status: &str) -> Document {
        let at = |millis: i64| bson::DateTime::from_millis(1_685_622_896_789 + millis);
        let mut document = doc! {
            "_id": bson::oid::ObjectId::new(),
            "message_id": "1234567890",
            "job_type": "property_scrape",
            "status": status,
            "created_at": at(0),
            "updated_at": at(40_000),
            "started_at": at(5_000),
            "completed_at": at(40_000),
            "error": "boom",
            "result": Bson::Null,
        };
        if status == "queued" {
            document.insert("started_at", Bson::Null);
            document.insert("completed_at", Bson::Null);
        }
        document
    }

    #[test]
    fn a_terminal_document_gets_its_first_attempt_and_a_history() {
        let now = bson::DateTime::now();
        let Plan::Migrate(migration) = plan(&legacy("failed"), 9 * HOUR, now) else {
            panic!("not migrated");
        };
        let set = &migration.set;
        assert_eq!(set.get_i64("attempt"), Ok(1));
        assert_eq!(set.get_i32("rank"), Ok(2));
        let created = 1_685_622_896_789 - 9 * HOUR;
        assert_eq!(
            set.get_datetime("created_at").unwrap().timestamp_millis(),
            created
        );
        let history: Vec<HistoryEntry> = set
            .get_array("history")
            .unwrap()
            .iter()
            .map(|entry| bson::from_bson(entry.clone()).unwrap())
            .collect();
        let shape: Vec<_> = history
            .iter()
            .map(|e| (e.attempt, e.rank, e.status, e.at.timestamp_millis()))
            .collect();
        assert_eq!(
            shape,
            [
                (0, 0, JobStatus::Queued, created),
                (1, 1, JobStatus::Processing, created + 5_000),
                (1, 2, JobStatus::Failed, created + 40_000),
            ]
        );
        assert_eq!(history[2].error.as_deref(), Some("boom"));
        assert_eq!(
            set.get_datetime("expire_at").unwrap().timestamp_millis(),
            created + 40_000 + 3 * 24 * HOUR
        );
        assert_eq!(
            set.get_document(MARKER)
                .unwrap()
                .get_i64("legacy_offset_ms"),
            Ok(9 * HOUR)
        );
    }

    #[test]
    fn a_queued_document_stays_before_any_attempt_and_without_an_offset_keeps_its_times() {
        let Plan::Migrate(migration) = plan(&legacy("queued"), 0, bson::DateTime::now()) else {
            panic!("not migrated");
        };
        assert_eq!(migration.set.get_i64("attempt"), Ok(0));
        assert_eq!(migration.set.get_i32("rank"), Ok(0));
        assert_eq!(migration.set.get_array("history").unwrap().len(), 1);
        for field in TIMESTAMPS {
            assert!(!migration.set.contains_key(field), "{field} is set");
        }
    }

    #[test]
    fn what_is_not_the_originals_or_cannot_be_read_is_skipped_with_its_reason() {
        let now = bson::DateTime::now();
        let mut marked = legacy("success");
        marked.insert(MARKER, doc! {});
        assert_eq!(plan(&marked, 0, now), Plan::AlreadyMigrated);
        let mut ours = legacy("success");
        ours.insert("attempt", 1_i64);
        assert_eq!(
            plan(&ours, 0, now),
            Plan::Skip("written by this system (has attempt)".into())
        );
        assert_eq!(
            plan(&legacy("done"), 0, now),
            Plan::Skip("unknown status \"done\"".into())
        );
        let mut anonymous = legacy("success");
        anonymous.remove("message_id");
        assert_eq!(
            plan(&anonymous, 0, now),
            Plan::Skip("missing message_id".into())
        );
        let mut text_time = legacy("success");
        text_time.insert("created_at", "2023-06-01T12:34:56");
        assert_eq!(
            plan(&text_time, 0, now),
            Plan::Skip("created_at is not a date (String)".into())
        );
    }
}
