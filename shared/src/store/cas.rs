//! `STORE_WRITE=cas`: read the trace, [`crate::rules::apply`] in Rust, write the result
//! back only if the trace is still what was read. A new trace is an `insert` under the
//! unique `message_id` index; an existing one an `update` with `$set` whose filter holds
//! the [`REVISION`] that was read. Losing either race means another writer got in
//! first: read again and re-apply, which the rules make safe in any order.

use std::time::Duration;

use bson::{doc, Bson, Document};

use super::{StoreError, TraceStore, REVISION};
use crate::model::TraceDocument;
use crate::rules::{self, Change};

/// The revision a write after `read` stores: one more, counting a trace without one
/// (written by the original system) as at 0.
fn next_revision(read: &Bson) -> i64 {
    match read {
        Bson::Int64(n) => n + 1,
        Bson::Int32(n) => i64::from(*n) + 1,
        _ => 1,
    }
}

/// The trace as a document to store: every field of `trace` (absent ones as `null`, as
/// the pipeline writes them) but `_id`, which the database assigns.
fn stored_fields(trace: &TraceDocument, revision: i64) -> Result<Document, StoreError> {
    let mut fields = bson::to_document(trace).map_err(mongodb::error::Error::from)?;
    fields.remove("_id");
    fields.insert(REVISION, revision);
    Ok(fields)
}

/// A pause after a lost race that grows with the losses, so that many writers of one
/// trace take turns instead of all reading and losing again together.
fn backoff(losses: u32) -> Duration {
    Duration::from_millis(u64::from(losses.min(20)))
}

/// What a `cas` write left: the trace as it now stands (none when a sweep found no trace
/// to sweep) and whether this write changed it.
pub(super) struct CasOutcome {
    pub(super) trace: Option<TraceDocument>,
    pub(super) wrote: bool,
}

impl CasOutcome {
    fn written(trace: TraceDocument) -> Self {
        CasOutcome {
            trace: Some(trace),
            wrote: true,
        }
    }

    fn unwritten(trace: Option<TraceDocument>) -> Self {
        CasOutcome {
            trace,
            wrote: false,
        }
    }
}

impl TraceStore {
    /// Two commands when nobody else writes the trace (one `find`, one write), one when
    /// the change is already in it. Retries lost races until the store's timeout (the
    /// caller bounds it), each a sign that another writer made progress.
    pub(super) async fn apply_cas(&self, change: &Change) -> Result<CasOutcome, StoreError> {
        let filter = Self::filter_of(&change.message_id);
        let mut losses = 0;
        loop {
            if losses > 0 {
                tokio::time::sleep(backoff(losses)).await;
            }
            losses += 1;
            let Some(read) = self.traces.find_one(filter.clone()).await? else {
                let Some(mut trace) = rules::apply_to(None, change) else {
                    return Ok(CasOutcome::unwritten(None));
                };
                match self.traces.insert_one(stored_fields(&trace, 1)?).await {
                    Ok(inserted) => {
                        trace.id = inserted.inserted_id.as_object_id();
                        return Ok(CasOutcome::written(trace));
                    }
                    Err(error) => {
                        self.settle_failed_first_write(&change.message_id, error)
                            .await?;
                        continue;
                    }
                }
            };
            let revision = read.get(REVISION).cloned().unwrap_or(Bson::Null);
            let id = read.get("_id").cloned().unwrap_or(Bson::Null);
            let current: TraceDocument = bson::from_document(read)?;
            let next = rules::apply(Some(&current), change);
            if next == current {
                return Ok(CasOutcome::unwritten(Some(current)));
            }
            // `revision: null` also matches a trace without the field (the original's).
            let unchanged = doc! { "_id": id, REVISION: revision.clone() };
            let set = doc! { "$set": stored_fields(&next, next_revision(&revision))? };
            if self.traces.update_one(unchanged, set).await?.matched_count == 1 {
                return Ok(CasOutcome::written(next));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_count_up_from_absent() {
        assert_eq!(next_revision(&Bson::Null), 1);
        assert_eq!(next_revision(&Bson::Int32(4)), 5);
        assert_eq!(next_revision(&Bson::Int64(41)), 42);
    }
}
