//! Keeping what workers send within what a trace document can hold.

use super::{MAX_ERROR_BYTES, MAX_RESULT_BYTES};

/// Cuts an error text to [`MAX_ERROR_BYTES`] on a character boundary.
pub fn bound_error(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_owned();
    }
    format!("{}…", cut_at_char(text, MAX_ERROR_BYTES))
}

/// The longest start of `text` of at most `max_bytes` that ends on a character boundary.
pub(crate) fn cut_at_char(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Replaces a result larger than [`MAX_RESULT_BYTES`], or one the database cannot store
/// (nested deeper than [`MAX_RESULT_DEPTH`]; a field name that is empty, `__…__`, starts
/// with `$`, holds a NUL or is longer than [`MAX_FIELD_NAME_BYTES`]; a field path longer
/// than [`MAX_FIELD_PATH_BYTES`]), by a marker that says so: such a write would fail on
/// every redelivery.
pub fn bound_result(result: bson::Bson) -> bson::Bson {
    let size = result.clone().into_relaxed_extjson().to_string().len();
    if size <= MAX_RESULT_BYTES && storable(&result, 1, RESULT_FIELD.len()) {
        result
    } else {
        truncation_marker(size)
    }
}

/// What stands in place of a result of `bytes` bytes that is not kept.
pub(crate) fn truncation_marker(bytes: usize) -> bson::Bson {
    bson::bson!({ "truncated": true, "original_bytes": bytes as i64 })
}

/// Firestore allows 20 levels of nesting in a document; `result` is one of them.
pub const MAX_RESULT_DEPTH: usize = 16;
/// Firestore's limit on one field name.
pub const MAX_FIELD_NAME_BYTES: usize = 1500;
/// Firestore's limit on a field's whole path (`result.a.b`).
pub const MAX_FIELD_PATH_BYTES: usize = 1500;
const RESULT_FIELD: &str = "result";

/// Whether Firestore takes `name` as a field name in an upsert: not empty, not `__…__`
/// (its reserved names), not starting with `$` (an upsert cannot create such a field, and
/// MongoDB reads it as an operator), at most [`MAX_FIELD_NAME_BYTES`]; and without NUL,
/// since BSON writes names NUL-terminated and the driver cannot even encode one (found by
/// fuzzing).
pub fn storable_field_name(name: &str) -> bool {
    !(name.is_empty()
        || name.starts_with('$')
        || name.contains('\0')
        || name.len() > MAX_FIELD_NAME_BYTES
        || (name.len() >= 4 && name.starts_with("__") && name.ends_with("__")))
}

/// `value` at nesting `depth` whose field path so far is `path_bytes` long.
fn storable(value: &bson::Bson, depth: usize, path_bytes: usize) -> bool {
    match value {
        bson::Bson::Document(doc) => {
            depth <= MAX_RESULT_DEPTH
                && doc.iter().all(|(name, child)| {
                    let path = path_bytes + 1 + name.len();
                    storable_field_name(name)
                        && path <= MAX_FIELD_PATH_BYTES
                        && storable(child, depth + 1, path)
                })
        }
        bson::Bson::Array(items) => {
            depth <= MAX_RESULT_DEPTH
                && items
                    .iter()
                    .all(|child| storable(child, depth + 1, path_bytes))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_and_results_are_bounded() {
        let cut = bound_error(&"é".repeat(MAX_ERROR_BYTES));
        assert!(cut.len() <= MAX_ERROR_BYTES + '…'.len_utf8());
        let huge = bson::bson!({ "blob": "x".repeat(MAX_RESULT_BYTES + 1) });
        assert_eq!(
            bound_result(huge)
                .as_document()
                .unwrap()
                .get_bool("truncated"),
            Ok(true)
        );
        let small = bson::bson!({ "status": "success" });
        assert_eq!(bound_result(small.clone()), small);
        let mut deep = bson::bson!("leaf");
        for _ in 0..MAX_RESULT_DEPTH {
            deep = bson::bson!({ "a": [deep] });
        }
        assert!(bound_result(deep)
            .as_document()
            .unwrap()
            .contains_key("truncated"));
        let long_name = "n".repeat(MAX_FIELD_NAME_BYTES + 1);
        for name in ["", "__name__", "r\0[", "$set", "$", long_name.as_str()] {
            let odd = bson::Bson::Document(bson::doc! { name: 1 });
            assert!(bound_result(odd)
                .as_document()
                .unwrap()
                .contains_key("truncated"));
        }
        let nested = bson::bson!({ "ok": [{ "inner": { "$where": "1" } }] });
        assert!(bound_result(nested)
            .as_document()
            .unwrap()
            .contains_key("truncated"));
        // Names that only look odd are kept: `$` inside, dots, `__` on one side only.
        let fine = bson::bson!({ "a$b": 1, "x.y": 2, "__a": 3, "b__": 4, "価格": 5 });
        assert_eq!(bound_result(fine.clone()), fine);
        // A path of short names can still grow past Firestore's limit.
        let mut deep_path = bson::bson!(1);
        for _ in 0..MAX_RESULT_DEPTH - 1 {
            deep_path = bson::Bson::Document(bson::doc! { "n".repeat(100): deep_path });
        }
        assert!(bound_result(deep_path)
            .as_document()
            .unwrap()
            .contains_key("truncated"));
    }
}
