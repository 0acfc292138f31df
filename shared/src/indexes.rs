//! The one definition of the `job_traces` index set.
//!
//! MongoDB deployments get it from [`crate::store::TraceStore::ensure_indexes`]; Terraform
//! declares the Firestore equivalent, and a test holds the two together.

use bson::{doc, Document};

/// Seven days, in seconds: every trace disappears this long after it was created.
pub const CREATED_TTL_SECONDS: u64 = 7 * 24 * 60 * 60;
/// Three days, in seconds: a completed trace disappears this long after completion.
pub const COMPLETED_TTL_SECONDS: u64 = 3 * 24 * 60 * 60;
/// The field that carries the absolute expiry (Firestore allows one TTL field per
/// collection, so the two relative rules above are folded into it by the writer).
pub const EXPIRE_AT_FIELD: &str = "expire_at";

/// Sort direction of one indexed field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ascending,
    Descending,
}

impl Direction {
    pub fn as_i32(self) -> i32 {
        match self {
            Direction::Ascending => 1,
            Direction::Descending => -1,
        }
    }
}

/// One index of the set, in terms both MongoDB and Terraform can be compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    /// MongoDB's default name for the key pattern (`field_1`, `field_-1`).
    pub name: String,
    pub fields: Vec<(&'static str, Direction)>,
    pub unique: bool,
    /// `expireAfterSeconds` for a TTL index.
    pub ttl_seconds: Option<u64>,
    /// `partialFilterExpression`, when the index covers only some documents.
    pub partial_filter: Option<Document>,
}

impl IndexSpec {
    fn new(fields: Vec<(&'static str, Direction)>) -> Self {
        let name = fields
            .iter()
            .map(|(field, dir)| format!("{field}_{}", dir.as_i32()))
            .collect::<Vec<_>>()
            .join("_");
        IndexSpec {
            name,
            fields,
            unique: false,
            ttl_seconds: None,
            partial_filter: None,
        }
    }

    /// The key pattern as MongoDB stores it.
    pub fn keys(&self) -> Document {
        let mut keys = Document::new();
        for (field, dir) in &self.fields {
            keys.insert(*field, dir.as_i32());
        }
        keys
    }

    /// TTL indexes are MongoDB-only: Firestore replaces them with the TTL on `expire_at`.
    pub fn is_ttl(&self) -> bool {
        self.ttl_seconds.is_some()
    }
}

/// The seed's index set: unique `message_id`; `line_user_id`; `status`; `created_at` and
/// `updated_at` descending; TTL on `created_at` (7 d); partial TTL on `completed_at` (3 d);
/// and, beyond the seed, `{status: 1, updated_at: 1}` for the operators' listings (stalled
/// jobs oldest first, recent ones newest first, across users: `store::ops`).
pub fn seed_index_set() -> Vec<IndexSpec> {
    use Direction::*;
    let mut message_id = IndexSpec::new(vec![("message_id", Ascending)]);
    message_id.unique = true;
    let mut created_ttl = IndexSpec::new(vec![("created_at", Ascending)]);
    created_ttl.ttl_seconds = Some(CREATED_TTL_SECONDS);
    let mut completed_ttl = IndexSpec::new(vec![("completed_at", Ascending)]);
    completed_ttl.ttl_seconds = Some(COMPLETED_TTL_SECONDS);
    completed_ttl.partial_filter = Some(doc! { "completed_at": { "$exists": true } });
    vec![
        message_id,
        IndexSpec::new(vec![("line_user_id", Ascending)]),
        IndexSpec::new(vec![("status", Ascending)]),
        IndexSpec::new(vec![("created_at", Descending)]),
        IndexSpec::new(vec![("updated_at", Descending)]),
        created_ttl,
        completed_ttl,
        IndexSpec::new(vec![("status", Ascending), ("updated_at", Ascending)]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_mongodb_defaults() {
        let names: Vec<_> = seed_index_set().into_iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            [
                "message_id_1",
                "line_user_id_1",
                "status_1",
                "created_at_-1",
                "updated_at_-1",
                "created_at_1",
                "completed_at_1",
                "status_1_updated_at_1"
            ]
        );
    }
}
