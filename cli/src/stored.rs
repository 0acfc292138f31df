//! `jobtrace highest-id`: the largest numeric `message_id` the database holds, which
//! `make run` needs to move a restarted Pub/Sub emulator's ids past the jobs already
//! stored (the emulator numbers messages from 1 at every start; `.run/data` stays).

use futures::TryStreamExt;
use job_trace::config::DatabaseConfig;
use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;

use crate::Failure;

/// Pub/Sub's ids are decimal; longer ones would not fit the emulator's counter.
const MAX_ID_DIGITS: usize = 18;

/// The numeric value of a Pub/Sub-style id, `None` for any other id.
pub fn numeric_id(message_id: &str) -> Option<u64> {
    let digits = !message_id.is_empty()
        && message_id.len() <= MAX_ID_DIGITS
        && message_id.bytes().all(|b| b.is_ascii_digit());
    if digits {
        message_id.parse().ok()
    } else {
        None
    }
}

/// The largest numeric `message_id` in the traces collection of `config`; 0 when none is.
pub async fn highest_id(config: &DatabaseConfig) -> Result<u64, Failure> {
    let unreachable =
        |e: mongodb::error::Error| Failure::new(format!("database {}: {e}", config.mongo_uri));
    let mut options = ClientOptions::parse(&config.mongo_uri)
        .await
        .map_err(unreachable)?;
    options.server_selection_timeout = Some(config.timeout());
    let traces = mongodb::Client::with_options(options)
        .map_err(unreachable)?
        .database(&config.mongo_database)
        .collection::<Document>(&config.collection_job_traces);
    let mut ids = traces
        .find(doc! {})
        .projection(doc! { "message_id": 1, "_id": 0 })
        .await
        .map_err(unreachable)?;
    let mut highest = 0;
    while let Some(trace) = ids.try_next().await.map_err(unreachable)? {
        if let Some(id) = trace.get_str("message_id").ok().and_then(numeric_id) {
            highest = highest.max(id);
        }
    }
    Ok(highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pubsub_style_ids_count() {
        assert_eq!(numeric_id("1234567890"), Some(1_234_567_890));
        assert_eq!(numeric_id(&"9".repeat(18)), Some(999_999_999_999_999_999));
        for other in ["", "abc", "12a", "-1", "+1", " 1", &"1".repeat(19)] {
            assert_eq!(numeric_id(other), None, "{other:?}");
        }
    }
}
