//! Google's documented limits of Firestore with MongoDB compatibility, as a checker of
//! stored documents: what the trace rules write must be something Firestore would store.
//! Written from the limits themselves, not from `rules::bounds`, so that the two can
//! disagree (and a test then fails).
//!
//! Sources (read 2026-12):
//! * <https://cloud.google.com/firestore/mongodb-compatibility/quotas>: field names must be
//!   UTF-8, not empty, not matching `__.*__`; a field name and a field path at most 1,500
//!   bytes; a field value at most 4 MiB − 89 bytes; a document at most 4 MiB; fields at
//!   most 20 levels deep, each map and array adding one level (`{a: {b: [{c: 1}]}}`: `c` is
//!   at depth 3).
//! * <https://cloud.google.com/firestore/mongodb-compatibility/docs/behavior-differences>:
//!   dates within `[0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z]`; an upsert (`update` or
//!   `findAndModify`) cannot create a field whose name starts with `$`; no JavaScript,
//!   Symbol, DBPointer or Undefined values; `_id` an ObjectId, a string or a 64-bit
//!   integer, never `""` or `0`.
//! * <https://cloud.google.com/firestore/mongodb-compatibility/docs/supported-data-types-drivers>:
//!   the BSON types above.
//!
//! Index entries: the quotas page has a table of index limits whose figures were not in
//! the reference text available when this was written. The checker holds every value of
//! an indexed field (the seed's index set) to [`MAX_INDEXED_VALUE_BYTES`], the smallest
//! size the page gives for anything, a bound chosen here and to be confirmed against that
//! table.
//!
//! Self-contained (only `bson`), so that the fuzz crate includes this file as it is.

use bson::{Bson, Document};

pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_FIELD_VALUE_BYTES: usize = 4 * 1024 * 1024 - 89;
pub const MAX_FIELD_NAME_BYTES: usize = 1500;
pub const MAX_FIELD_PATH_BYTES: usize = 1500;
pub const MAX_DEPTH: usize = 20;
/// 0001-01-01T00:00:00Z.
pub const EARLIEST_DATE_MILLIS: i64 = -62_135_596_800_000;
/// 9999-12-31T23:59:59Z.
pub const LATEST_DATE_MILLIS: i64 = 253_402_300_799_000;
/// The seed's indexed fields ([`job_trace::indexes::seed_index_set`] and the TTL field).
pub const INDEXED_FIELDS: [&str; 7] = [
    "message_id",
    "line_user_id",
    "status",
    "created_at",
    "updated_at",
    "completed_at",
    "expire_at",
];
pub const MAX_INDEXED_VALUE_BYTES: usize = 1500;

/// Every way `doc`, as stored, breaks a documented limit; empty when Firestore takes it.
pub fn violations(doc: &Document) -> Vec<String> {
    let mut found = Vec::new();
    match bson::to_vec(doc) {
        Ok(bytes) if bytes.len() > MAX_DOCUMENT_BYTES => {
            found.push(format!("document is {} bytes", bytes.len()))
        }
        Ok(_) => {}
        Err(error) => found.push(format!("document does not encode: {error}")),
    }
    match doc.get("_id") {
        None | Some(Bson::ObjectId(_)) => {}
        Some(Bson::String(id)) if !id.is_empty() => {}
        Some(Bson::Int64(id)) if *id != 0 => {}
        Some(other) => found.push(format!("_id {other} is not a supported id")),
    }
    for (name, value) in doc {
        let size = value_bytes(value);
        if size > MAX_FIELD_VALUE_BYTES {
            found.push(format!("field {name} holds {size} bytes"));
        }
        if INDEXED_FIELDS.contains(&name.as_str()) && size > MAX_INDEXED_VALUE_BYTES {
            found.push(format!("indexed field {name} holds {size} bytes"));
        }
    }
    check_fields(doc, "", 1, &mut found);
    found
}

/// The encoded size of one value (inside a one-field document, less its frame).
fn value_bytes(value: &Bson) -> usize {
    bson::to_vec(&bson::doc! { "v": value.clone() }).map_or(usize::MAX, |bytes| bytes.len() - 8)
}

fn field_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() >= 4 && name.starts_with("__") && name.ends_with("__") {
        Some("matches __.*__")
    } else if name.starts_with('$') {
        Some("starts with $ (an upsert cannot create it)")
    } else if name.contains('\0') {
        Some("holds a NUL")
    } else if name.len() > MAX_FIELD_NAME_BYTES {
        Some("is longer than 1,500 bytes")
    } else {
        None
    }
}

/// The fields of `doc`, whose own path is `path`, each at `depth`.
fn check_fields(doc: &Document, path: &str, depth: usize, found: &mut Vec<String>) {
    for (name, value) in doc {
        let field_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        if let Some(problem) = field_name_problem(name) {
            found.push(format!("field name {name:?} at {path:?} {problem}"));
        }
        if field_path.len() > MAX_FIELD_PATH_BYTES {
            found.push(format!("field path of {} bytes", field_path.len()));
        }
        check_value(value, &field_path, depth, found);
    }
}

/// A value at `depth` (the depth of the field or array element that holds it).
fn check_value(value: &Bson, path: &str, depth: usize, found: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        found.push(format!("{path} is at depth {depth}"));
        return;
    }
    match value {
        Bson::Document(doc) => check_fields(doc, path, depth + 1, found),
        Bson::Array(items) => {
            for item in items {
                match item {
                    // A map in an array adds no level of its own: its fields are one
                    // below the array, as the quotas page counts.
                    Bson::Document(doc) => check_fields(doc, path, depth + 1, found),
                    other => check_value(other, path, depth + 1, found),
                }
            }
        }
        Bson::DateTime(time) => {
            let millis = time.timestamp_millis();
            if !(EARLIEST_DATE_MILLIS..=LATEST_DATE_MILLIS).contains(&millis) {
                found.push(format!("{path} is a date outside 0001..9999 ({millis} ms)"));
            }
        }
        Bson::JavaScriptCode(_)
        | Bson::JavaScriptCodeWithScope(_)
        | Bson::Symbol(_)
        | Bson::DbPointer(_)
        | Bson::Undefined => found.push(format!("{path} has an unsupported BSON type")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn each_documented_limit_is_caught() {
        let ok = doc! { "_id": bson::oid::ObjectId::new(), "a": { "b": [{ "c": 1 }] } };
        assert_eq!(violations(&ok), Vec::<String>::new());
        for (what, bad) in [
            ("empty name", doc! { "": 1 }),
            ("reserved name", doc! { "r": { "__name__": 1 } }),
            ("dollar name", doc! { "r": [{ "$set": 1 }] }),
            ("long name", doc! { "n".repeat(1501): 1 }),
            (
                "year 10000",
                doc! { "t": bson::DateTime::from_millis(LATEST_DATE_MILLIS + 1000) },
            ),
            (
                "year 0",
                doc! { "t": bson::DateTime::from_millis(EARLIEST_DATE_MILLIS - 1) },
            ),
            ("symbol", doc! { "s": Bson::Symbol("x".into()) }),
            ("empty id", doc! { "_id": "" }),
            ("indexed", doc! { "line_user_id": "u".repeat(2000) }),
            ("size", doc! { "blob": "x".repeat(MAX_DOCUMENT_BYTES) }),
        ] {
            assert!(!violations(&bad).is_empty(), "{what}");
        }
        // Depth as the quotas page counts it: its example is 3 levels deep.
        let mut deep = Bson::Int32(1);
        for _ in 0..MAX_DEPTH - 1 {
            deep = Bson::Document(doc! { "a": deep });
        }
        assert!(violations(&doc! { "top": deep.clone() }).is_empty());
        assert!(!violations(&doc! { "top": { "one": deep } }).is_empty());
        let mut path = Bson::Int32(1);
        for _ in 0..15 {
            path = Bson::Document(doc! { "p".repeat(100): path });
        }
        assert!(!violations(&doc! { "r": path }).is_empty(), "path length");
    }
}
