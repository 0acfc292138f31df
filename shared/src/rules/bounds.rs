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
/// (nested deeper than [`MAX_RESULT_DEPTH`], or with an empty, `__…__` or NUL-holding
/// field name), by a marker that says so: such a write would fail on every redelivery.
pub fn bound_result(result: bson::Bson) -> bson::Bson {
    let size = result.clone().into_relaxed_extjson().to_string().len();
    if size <= MAX_RESULT_BYTES && storable(&result, 1) {
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

fn storable(value: &bson::Bson, depth: usize) -> bool {
    let fits = |child: &bson::Bson| storable(child, depth + 1);
    match value {
        bson::Bson::Document(doc) => {
            depth <= MAX_RESULT_DEPTH
                && doc.iter().all(|(name, child)| {
                    // BSON writes field names NUL-terminated, so the driver cannot even
                    // encode one that holds a NUL (found by fuzzing).
                    !(name.is_empty()
                        || name.contains('\0')
                        || (name.len() >= 4 && name.starts_with("__") && name.ends_with("__")))
                        && fits(child)
                })
        }
        bson::Bson::Array(items) => depth <= MAX_RESULT_DEPTH && items.iter().all(fits),
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
        for name in ["", "__name__", "r\0["] {
            let odd = bson::Bson::Document(bson::doc! { name: 1 });
            assert!(bound_result(odd)
                .as_document()
                .unwrap()
                .contains_key("truncated"));
        }
    }
}
