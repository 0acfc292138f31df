//! `result`: read size-first, it ends exactly as it would built whole.

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{decode, recorded, with_data};
use crate::push::{read_result, MessageError, Shape};

#[test]
fn a_result_field_name_with_a_nul_becomes_the_marker() {
    let payload = json!({"message_id": "42", "status": "success", "result": {"r\u{0}[": null}});
    let push = decode(&with_data(
        &payload.to_string(),
        json!({"trace_event": "status"}),
    ));
    let result = recorded(&push).result.clone().unwrap();
    assert_eq!(
        result.as_document().unwrap().get_bool("truncated"),
        Ok(true),
        "{result}"
    );
}

/// `result` as the decoder kept it before it learned sizes first: built whole, converted
/// and bounded.
fn result_built_whole(raw: &str) -> bson::Bson {
    let value: Value = serde_json::from_str(raw).unwrap();
    crate::rules::bound_result(bson::to_bson(&value).unwrap())
}

fn result_as_decoded(raw: &str) -> bson::Bson {
    let raw: &RawValue = serde_json::from_str(raw).unwrap();
    crate::rules::bound_result(read_result(raw).unwrap())
}

fn original_bytes(result: &bson::Bson) -> Option<i64> {
    let marker = result.as_document()?;
    assert_eq!(marker.get_bool("truncated"), Ok(true), "{marker}");
    marker.get_i64("original_bytes").ok()
}

/// Small objects of every kind of scalar, in the order `seed` picks: escapes that shrink
/// (`\u00e9`) and grow (`\u0001` stays escaped), numbers whose compact form is longer
/// than their text (`1E2` is `100.0`), names that repeat only across objects.
fn small_objects(count: usize, seed: u64) -> Vec<String> {
    let pieces = [
        r#"{"id":1,"name":"caf\u00e9","ok":true}"#,
        r#"{"n":-12,"x":1E2,"big":1e15,"tiny":-2.5e-7}"#,
        r#"{"s":"tab\tand \"quote\" \u0001 \/ done","z":null}"#,
        r#"{"nested":{"a":[1,2,{"b":false}],"c":{}},"e":[]}"#,
        r#"{"u":9223372036854775807,"v":"日本語","w":0.1}"#,
    ];
    (0..count)
        .map(|i| pieces[((i as u64).wrapping_mul(seed | 1) >> 3) as usize % pieces.len()].into())
        .collect()
}

/// A result whose compact JSON is `target` bytes (at least 200), written compactly or
/// spread out: small objects, then one string that pads it to the byte.
fn result_of_size(target: usize, seed: u64, spread: bool) -> String {
    let compact_len = |raw: &str| {
        serde_json::from_str::<Value>(raw)
            .unwrap()
            .to_string()
            .len()
    };
    let mut items = Vec::new();
    // `[`, `]` and the padding's quotes; each object brings its comma.
    let mut compact = 2 + 2;
    for object in small_objects(target / 20, seed) {
        let len = compact_len(&object) + 1;
        if compact + len > target {
            break;
        }
        compact += len;
        items.push(object);
    }
    items.push(format!("\"{}\"", "x".repeat(target - compact)));
    let raw = format!("[{}]", items.join(if spread { " ,\n  " } else { "," }));
    assert_eq!(compact_len(&raw), target, "the test's generator is off");
    raw
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Around the bound, the result read size-first is exactly the one built whole: the
    /// same value when it fits, the same marker (same `original_bytes`) when not.
    #[test]
    fn results_around_the_bound_are_the_same_read_either_way(
        delta in -40i64..40,
        seed in proptest::prelude::any::<u64>(),
        spread in proptest::prelude::any::<bool>(),
    ) {
        let target = (crate::rules::MAX_RESULT_BYTES as i64 + delta) as usize;
        let raw = result_of_size(target, seed, spread);
        let decoded = result_as_decoded(&raw);
        proptest::prop_assert_eq!(&decoded, &result_built_whole(&raw));
        let expected_marker = (target > crate::rules::MAX_RESULT_BYTES).then_some(target as i64);
        proptest::prop_assert_eq!(original_bytes(&decoded), expected_marker);
    }
}

#[test]
fn the_shape_is_the_compact_length_of_every_kind_of_value() {
    for raw in small_objects(5, 1)
        .into_iter()
        .chain(["[]", "{}", "\"\"", "-0", "0.0", "1.5e300", "[[],[{}]]"].map(String::from))
    {
        let shape: Shape = serde_json::from_str(&raw).unwrap();
        let compact = serde_json::from_str::<Value>(&raw).unwrap().to_string();
        assert_eq!(shape.bytes, compact.len(), "{raw} is {compact}");
        assert!(shape.exact, "{raw}");
    }
}

/// The shapes whose BSON is not their JSON take the full path, and so still end as they
/// always did: repeated names, extended-JSON objects and integers BSON cannot hold.
#[test]
fn results_whose_bson_differs_from_their_json_are_built_whole() {
    let filler = "x".repeat(crate::rules::MAX_RESULT_BYTES);
    let shrinks_to_fit = format!(r#"{{"a":"{filler}","a":1,"n":{{"$numberLong":"5"}}}}"#,);
    let shape: Shape = serde_json::from_str(&shrinks_to_fit).unwrap();
    assert!(!shape.exact);
    let decoded = result_as_decoded(&shrinks_to_fit);
    assert_eq!(decoded, result_built_whole(&shrinks_to_fit));
    assert_eq!(decoded, bson::bson!({"a": 1_i64, "n": 5_i64}));

    let extended = format!(r#"[{{"$numberLong":"5"}},"{filler}"]"#);
    assert_eq!(result_as_decoded(&extended), result_built_whole(&extended));

    let too_big_for_bson = format!(r#"["{filler}",18446744073709551615]"#);
    let raw: &RawValue = serde_json::from_str(&too_big_for_bson).unwrap();
    assert!(matches!(
        read_result(raw),
        Err(MessageError::BadField {
            field: "result",
            ..
        })
    ));
}

/// The case of the issue: megabytes of small objects decode to the marker, whose size
/// is the one the whole value would have had.
#[test]
fn a_large_result_of_small_objects_is_the_marker_of_its_full_size() {
    let raw = format!("[{}]", small_objects(50_000, 7).join(","));
    let payload = format!(r#"{{"message_id":"42","status":"success","result":{raw}}}"#);
    let push = decode(&with_data(&payload, json!({"trace_event": "status"})));
    let result = recorded(&push).result.clone().unwrap();
    assert_eq!(result, result_built_whole(&raw));
    let compact = serde_json::from_str::<Value>(&raw)
        .unwrap()
        .to_string()
        .len();
    assert_eq!(original_bytes(&result), Some(compact as i64));
    assert!(compact > 1_000_000);
}
