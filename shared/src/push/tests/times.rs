//! Message times: a plausible `publishTime` and `occurred_at` are kept; any other is
//! replaced (by the receive time and by `publishTime`), noted in the history entry, and
//! never gives a trace a date the database or the API cannot hold.

use serde_json::json;

use super::{decode, now, recorded, rejection, time, with_data};
use crate::model::render_time;
use crate::push::{
    decode_push, Outcome, EARLIEST_TIME, LATEST_TIME, MAX_OCCURRED_AHEAD_MILLIS,
    MAX_OCCURRED_BEHIND_MILLIS, MAX_PUBLISH_AHEAD_MILLIS,
};
use crate::rules;

/// `with_data`'s publishTime.
const PUBLISHED: &str = "2023-06-01T12:00:00.000Z";

fn event_at(occurred_at: &str) -> crate::rules::Change {
    let data = json!({"message_id": "42", "status": "processing", "occurred_at": occurred_at});
    recorded(&decode(&with_data(
        &data.to_string(),
        json!({"trace_event": "status"}),
    )))
    .clone()
}

fn shifted(raw: &str, millis: i64) -> String {
    render_time(bson::DateTime::from_millis(
        time(raw).timestamp_millis() + millis,
    ))
}

#[test]
fn an_occurred_at_inside_its_window_is_kept() {
    for occurred in [
        PUBLISHED.to_owned(),
        shifted(PUBLISHED, MAX_OCCURRED_AHEAD_MILLIS),
        shifted(PUBLISHED, -MAX_OCCURRED_BEHIND_MILLIS),
        "2023-06-01T21:00:00+09:00".to_owned(),
    ] {
        let change = event_at(&occurred);
        assert_eq!(change.at, time(&occurred), "{occurred}");
        assert_eq!(change.time_note, None);
        assert_eq!(change.history_entry().error, None);
    }
}

#[test]
fn an_implausible_occurred_at_is_replaced_by_publish_time_with_the_reason() {
    for occurred in [
        "0000-01-01T00:00:00Z".to_owned(),
        "1970-01-01T00:00:00Z".to_owned(),
        "9999-12-31T23:59:59.999Z".to_owned(),
        "9999-12-31T23:59:59-23:59".to_owned(),
        shifted(PUBLISHED, MAX_OCCURRED_AHEAD_MILLIS + 1),
        shifted(PUBLISHED, -MAX_OCCURRED_BEHIND_MILLIS - 1),
    ] {
        let change = event_at(&occurred);
        assert_eq!(change.at, time(PUBLISHED), "{occurred}");
        let note = change.history_entry().error.expect("the history says why");
        assert!(
            note.contains("occurred_at") && note.contains(&occurred) && note.contains(PUBLISHED),
            "{note}"
        );
        assert_eq!(
            change.error, None,
            "the trace's own error stays the worker's"
        );
    }
}

#[test]
fn a_worker_error_and_the_time_note_share_the_history_entry() {
    let data = json!({"message_id": "42", "status": "failed", "error": "boom",
                      "occurred_at": "0000-01-01T00:00:00Z"});
    let push = decode(&with_data(
        &data.to_string(),
        json!({"trace_event": "status"}),
    ));
    let change = recorded(&push);
    assert_eq!(change.error.as_deref(), Some("boom"));
    let entry = change.history_entry().error.unwrap();
    assert!(entry.starts_with("boom (occurred_at"), "{entry}");
}

#[test]
fn an_implausible_publish_time_is_replaced_by_the_receive_time() {
    let ahead = shifted(&render_time(now()), MAX_PUBLISH_AHEAD_MILLIS + 1);
    for published in ["0000-01-01T00:00:00Z", "1999-12-31T23:59:59.999Z", &ahead] {
        let mut body = with_data(r#"{"url": "https://x"}"#, json!({}));
        body["message"]["publishTime"] = json!(published);
        let push = decode(&body);
        let change = recorded(&push);
        assert_eq!(change.at, now(), "{published}");
        let note = change.history_entry().error.unwrap();
        assert!(
            note.contains("publishTime") && note.contains(published),
            "{note}"
        );
        assert_eq!(
            push.meta.publish_time,
            Some(time(published)),
            "logged as sent"
        );
    }
    // A rejected message fails its job at the receive time too, saying why.
    let mut body = with_data("not json", json!({}));
    body["message"]["publishTime"] = json!("0000-01-01T00:00:00Z");
    let push = decode(&body);
    let (_, failed) = rejection(&push);
    let failed = failed.unwrap();
    assert_eq!(failed.at, now());
    assert!(failed
        .history_entry()
        .error
        .unwrap()
        .contains("publishTime"));
}

#[test]
fn a_leap_second_is_a_time_like_any_other() {
    let change = event_at("2023-06-01T11:59:60.5Z");
    assert_eq!(change.time_note, None);
    let from_published = change.at.timestamp_millis() - time(PUBLISHED).timestamp_millis();
    assert!((-1000..=1000).contains(&from_published), "{}", change.at);
}

/// Any RFC 3339 time the parser takes: years 0000..=9999, offsets, leap seconds.
fn rfc3339() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    (
        0..=9999u32,
        1..=12u32,
        1..=28u32,
        (0..24u32, 0..60u32, 0..=60u32),
        proptest::option::of(0..1_000_000_000u32),
        prop_oneof![
            Just(None),
            (any::<bool>(), 0..24u32, 0..60u32).prop_map(Some)
        ],
    )
        .prop_map(|(year, month, day, (h, m, s), nanos, offset)| {
            let fraction = nanos.map_or(String::new(), |n| format!(".{n:09}"));
            let offset = offset.map_or("Z".to_owned(), |(east, oh, om)| {
                format!("{}{oh:02}:{om:02}", if east { '+' } else { '-' })
            });
            format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{fraction}{offset}")
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// Whatever the times, the change is dated inside the range every stored time keeps,
    /// and the trace it makes renders with four-digit years.
    #[test]
    fn any_times_give_a_trace_of_storable_dates(
        published in proptest::option::of(rfc3339()),
        occurred in proptest::option::of(rfc3339()),
        status in 0..4usize,
    ) {
        let status = ["processing", "success", "failed", "progress"][status];
        let mut data = json!({"message_id": "42", "status": status, "done": 1, "total": 2});
        if let Some(occurred) = &occurred {
            data["occurred_at"] = json!(occurred);
        }
        let mut body = with_data(&data.to_string(), json!({"trace_event": "status"}));
        match &published {
            Some(raw) => body["message"]["publishTime"] = json!(raw),
            None => {
                body["message"].as_object_mut().unwrap().remove("publishTime");
            }
        }
        let push = decode_push(&Default::default(), body.to_string().as_bytes(), now()).unwrap();
        let change = match push.outcome {
            Outcome::Record(change) => change,
            Outcome::Reject { failed_trace, .. } => failed_trace.expect("the job is named"),
        };
        proptest::prop_assert!((EARLIEST_TIME..=LATEST_TIME).contains(&change.at), "{}", change.at);
        let trace = rules::replay([&change]).unwrap();
        proptest::prop_assert!(trace.renderable().is_ok(), "{:?}", trace.renderable());
        let kept = occurred.as_deref().and_then(|raw| chrono::DateTime::parse_from_rfc3339(raw).ok());
        if let Some(kept) = kept {
            let kept = bson::DateTime::from_chrono(kept.with_timezone(&chrono::Utc));
            // Either the worker's time, or a replacement the history explains.
            if change.at != kept && change.progress.is_none() {
                let entry = change.history_entry().error.unwrap_or_default();
                proptest::prop_assert!(entry.contains("occurred_at"), "{}", entry);
            }
        }
    }
}
