//! Completion notifications: what trace-writer publishes to `COMPLETIONS_TOPIC` for every
//! terminal transition it applies, and which of a trace's pending notifications a push
//! publishes.
//!
//! The obligation is written with the transition, in the same update
//! ([`crate::rules::apply`] adds a [`PendingCompletion`] to the trace); trace-writer then
//! publishes it, removes it ([`crate::TraceStore::settle_completions`]) and only then
//! acknowledges the push. A push that fails anywhere in between is answered 503, and its
//! redelivery finds the entry still pending and publishes it.

use std::time::Duration;

use crate::ids::MessageId;
use crate::model::{JobStatus, PendingCompletion, TraceDocument};

/// How many unpublished notifications a trace keeps: those of its latest attempts. More
/// would mean a trace whose terminal events keep arriving while none is ever published.
pub const MAX_PENDING_COMPLETIONS: usize = 5;

/// A pending notification older than this is published by any push of its trace, not
/// only by a delivery of the event that owes it: that event's own push was lost (dead
/// lettered) or is long gone. Well above the subscriptions' ack deadline (30 s), so a
/// push still being answered is never raced by another one in a run without faults.
pub const ORPHANED_AFTER: Duration = Duration::from_secs(120);

/// The attributes of a notification.
pub const ATTRIBUTE_MESSAGE_ID: &str = "message_id";
pub const ATTRIBUTE_STATUS: &str = "status";
pub const ATTRIBUTE_ATTEMPT: &str = "attempt";
pub const ATTRIBUTE_DEDUPE_KEY: &str = "dedupe_key";

/// `{message_id}:{attempt}:{status}`: one per terminal transition, whoever publishes it
/// and however often.
pub fn dedupe_key(message_id: &MessageId, attempt: u32, status: JobStatus) -> String {
    format!("{}:{attempt}:{}", message_id.as_str(), status.as_str())
}

/// One notification, ready for any Pub/Sub client.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The trace in the seed's JSON shape, as it stands when published.
    pub data: String,
    pub attributes: Vec<(&'static str, String)>,
    /// The job's `message_id`, so one job's notifications arrive in order.
    pub ordering_key: String,
    pub dedupe_key: String,
}

impl Notification {
    /// The notification of `owed` for `trace`.
    pub fn of(trace: &TraceDocument, owed: &PendingCompletion) -> Notification {
        let data = serde_json::to_string(&trace.view(false))
            .unwrap_or_else(|_| unreachable!("a trace view always serializes"));
        Notification {
            data,
            attributes: vec![
                (ATTRIBUTE_MESSAGE_ID, trace.message_id.clone()),
                (ATTRIBUTE_STATUS, owed.status.as_str().to_owned()),
                (ATTRIBUTE_ATTEMPT, owed.attempt.to_string()),
                (ATTRIBUTE_DEDUPE_KEY, owed.dedupe_key.clone()),
            ],
            ordering_key: trace.message_id.clone(),
            dedupe_key: owed.dedupe_key.clone(),
        }
    }
}

/// What a push that wrote `own` (the completion its change owes, if any) publishes of
/// `trace`'s pending notifications at `now`: its own one, which is there either because
/// it just wrote it or because an earlier delivery of the same event did not get to
/// publish it; and any [`ORPHANED_AFTER`]. Fresh entries of other pushes are left to
/// them, so two pushes of one job in flight at once do not both publish one transition.
pub fn to_publish<'a>(
    trace: &'a TraceDocument,
    own: Option<&str>,
    now: bson::DateTime,
) -> Vec<&'a PendingCompletion> {
    let orphaned_before = now.timestamp_millis() - ORPHANED_AFTER.as_millis() as i64;
    trace
        .pending_completions
        .iter()
        .filter(|owed| {
            Some(owed.dedupe_key.as_str()) == own
                || owed.noted_at.timestamp_millis() < orphaned_before
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{apply, replay, Change};

    fn id() -> MessageId {
        MessageId::parse("1234567890").unwrap()
    }

    fn at(seconds: i64) -> bson::DateTime {
        bson::DateTime::from_millis(1_685_622_896_789 + seconds * 1000)
    }

    fn event(status: JobStatus, attempt: u32, seconds: i64) -> Change {
        Change::event(id(), status, attempt, at(seconds), None, None).notifying(at(seconds))
    }

    #[test]
    fn only_applied_terminal_transitions_owe_a_notification() {
        let trace = replay(&[
            event(JobStatus::Processing, 1, 1),
            event(JobStatus::Failed, 1, 2),
            event(JobStatus::Failed, 1, 2),
            event(JobStatus::Success, 1, 3),
            event(JobStatus::NotFound, 2, 4),
            event(JobStatus::Success, 1, 5),
        ])
        .unwrap();
        let keys: Vec<_> = trace
            .pending_completions
            .iter()
            .map(|owed| owed.dedupe_key.as_str())
            .collect();
        assert_eq!(keys, ["1234567890:1:failed", "1234567890:2:not_found"]);
        assert!(
            trace.view(true).details.is_some()
                && !serde_json::to_string(&trace.view(true))
                    .unwrap()
                    .contains("pending"),
            "never rendered"
        );
        let quiet = replay(&[Change::event(
            id(),
            JobStatus::Success,
            1,
            at(1),
            None,
            None,
        )]);
        assert!(
            quiet.unwrap().pending_completions.is_empty(),
            "off: nothing owed"
        );
    }

    #[test]
    fn only_the_latest_attempts_stay_owed() {
        let changes: Vec<_> = (1..=8)
            .map(|attempt| event(JobStatus::Failed, attempt, i64::from(attempt)))
            .collect();
        let trace = replay(&changes).unwrap();
        let attempts: Vec<_> = trace
            .pending_completions
            .iter()
            .map(|o| o.attempt)
            .collect();
        assert_eq!(attempts, [4, 5, 6, 7, 8]);
    }

    #[test]
    fn a_push_publishes_its_own_and_orphaned_entries_only() {
        let first = apply(None, &event(JobStatus::Failed, 1, 0));
        let trace = apply(Some(&first), &event(JobStatus::Success, 2, 10));
        let own = "1234567890:2:success";
        let keys = |now| -> Vec<String> {
            to_publish(&trace, Some(own), now)
                .iter()
                .map(|owed| owed.dedupe_key.clone())
                .collect()
        };
        assert_eq!(keys(at(11)), [own]);
        assert_eq!(
            to_publish(&trace, None, at(11)),
            Vec::<&PendingCompletion>::new()
        );
        assert_eq!(keys(at(121)), ["1234567890:1:failed", own]);

        let notification = Notification::of(&trace, &trace.pending_completions[0]);
        assert_eq!(notification.ordering_key, "1234567890");
        let data: serde_json::Value = serde_json::from_str(&notification.data).unwrap();
        assert_eq!(data["status"], "success", "the trace as it stands");
        assert!(data.get("pending_completions").is_none());
        assert!(notification
            .attributes
            .contains(&(ATTRIBUTE_DEDUPE_KEY, "1234567890:1:failed".into())));
        assert!(notification
            .attributes
            .contains(&(ATTRIBUTE_ATTEMPT, "1".into())));
    }
}
