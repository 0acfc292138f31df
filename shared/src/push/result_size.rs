//! Reading a `result` by its size first, so that one too large to keep is never built.

use std::collections::HashSet;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{bad_field, MessageError, Text};
use crate::rules::{truncation_marker, MAX_RESULT_BYTES};

/// `result` as the trace will keep it. A result whose compact JSON is certainly over
/// [`MAX_RESULT_BYTES`] becomes the marker [`crate::rules::bound_result`] would make of
/// it, without ever being built: built, ten megabytes of small objects take hundreds of
/// MiB. Anything that may fit is built and bounded as before, and is small.
pub(super) fn read_result(raw: &RawValue) -> Result<bson::Bson, MessageError> {
    if raw.get().len() > MAX_RESULT_BYTES {
        let shape: Shape = serde_json::from_str(raw.get())
            .map_err(|e| MessageError::DataNotJson(e.to_string()))?;
        if shape.exact && shape.bytes > MAX_RESULT_BYTES {
            return Ok(truncation_marker(shape.bytes));
        }
    }
    let value: Value =
        serde_json::from_str(raw.get()).map_err(|e| MessageError::DataNotJson(e.to_string()))?;
    bson::to_bson(&value).map_err(|e| bad_field("result", e.to_string()))
}

/// What serializing a JSON value compactly would give, learned by reading it once
/// without building it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// Bytes of the value's compact JSON ([`Value`]'s `to_string`).
    pub(super) bytes: usize,
    /// `bytes` is also what [`crate::rules::bound_result`] measures (the value's BSON as
    /// relaxed extended JSON). It is not when a field name repeats (the value keeps the
    /// last one), when an object of one or two fields has a `$` name (the BSON
    /// conversion reads `{"$numberLong": "5"}` as a number) or when an integer is beyond
    /// `i64` (the conversion refuses it): those take the full path.
    pub(super) exact: bool,
}

/// Counts what is written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of `value` in compact JSON, written by serde_json itself so that escapes and
/// number formats are exactly those of `Value::to_string`.
fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and a scalar always serializes.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

impl Shape {
    fn scalar(bytes: usize) -> Self {
        Shape { bytes, exact: true }
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Shape, E> {
        Ok(Shape::scalar(if value { 4 } else { 5 }))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Shape, E> {
        Ok(Shape::scalar(json_len(&value)))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Shape, E> {
        Ok(Shape {
            bytes: json_len(&value),
            exact: i64::try_from(value).is_ok(),
        })
    }

    fn visit_f64<E>(self, value: f64) -> Result<Shape, E> {
        Ok(Shape::scalar(json_len(&value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Shape, E> {
        Ok(Shape::scalar(json_len(value)))
    }

    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::scalar(4))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut shape = Shape::scalar(2);
        let mut items = 0;
        while let Some(item) = seq.next_element::<Shape>()? {
            shape.bytes += item.bytes + usize::from(items > 0);
            shape.exact &= item.exact;
            items += 1;
        }
        Ok(shape)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut shape = Shape::scalar(2);
        let mut names = HashSet::new();
        let mut dollar = false;
        while let Some(Text(name)) = map.next_key::<Text>()? {
            let value = map.next_value::<Shape>()?;
            shape.bytes +=
                json_len(name.as_ref()) + 1 + value.bytes + usize::from(!names.is_empty());
            shape.exact &= value.exact;
            dollar |= name.starts_with('$');
            if !names.insert(name) {
                shape.exact = false;
            }
        }
        if dollar && names.len() <= 2 {
            shape.exact = false;
        }
        Ok(shape)
    }
}
