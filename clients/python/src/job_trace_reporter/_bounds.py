"""The bounds trace-writer puts on `error` and `result` (shared/src/rules.rs), applied
before publishing so that the worker knows, and logs, what the trace will hold.

trace-writer measures a result as the compact JSON it renders back out of the database
(serde_json after BSON), not as the JSON that was sent: Python writes ``1e-05`` where
trace-writer writes ``0.00001``, and trace-writer reads some floats one unit in the last
place off, which can change their length. Both are reproduced here (for the serde_json
of the workspace's Cargo.lock), which is what makes the cut agree byte for byte.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional, Tuple

MAX_ERROR_BYTES = 2048
MAX_RESULT_BYTES = 64 * 1024
MAX_RESULT_DEPTH = 16
# Firestore's limits on a field name and on a field's path (`result.a.b`), in bytes.
MAX_FIELD_NAME_BYTES = 1500
MAX_FIELD_PATH_BYTES = 1500
ELLIPSIS = "\u2026"

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


class UnsendableResult(ValueError):
    """A result that trace-writer would refuse as a whole (and fail the job for)."""


def clean_text(text: str) -> str:
    """Text that UTF-8 can carry: lone surrogates (from bytes decoded with
    ``surrogateescape``, common in exception texts about file names) are written out."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def bound_error(text: str) -> str:
    """`text` cut to 2048 UTF-8 bytes on a character boundary, plus an ellipsis."""
    raw = text.encode("utf-8")
    if len(raw) <= MAX_ERROR_BYTES:
        return text
    end = MAX_ERROR_BYTES
    # A byte 0b10xxxxxx continues a character; the cut backs off to the one it continues.
    while raw[end] & 0xC0 == 0x80:
        end -= 1
    return raw[:end].decode("utf-8") + ELLIPSIS


def normalize_result(result: Any) -> Any:
    """`result` as trace-writer will read it: through JSON (tuples become lists, keys
    strings), with integers only in the signed 64-bit range that BSON stores.

    Raises :class:`UnsendableResult` for what trace-writer would refuse outright.
    """
    try:
        text = json.dumps(result, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise UnsendableResult(f"result is not JSON: {error}") from error
    try:
        value = json.loads(text)
    except RecursionError as error:
        raise UnsendableResult(f"result is not JSON: {error}") from error
    _check_integers(value)
    return value


def _check_integers(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not _I64_MIN <= item <= _I64_MAX:
                # trace-writer rejects an unsigned integer past i64 (the job would be
                # failed) and reads larger ones as floats: neither is what was meant.
                raise UnsendableResult(
                    f"result holds the integer {item}, outside the signed 64-bit range "
                    "the trace can store; send it as a string"
                )


# serde_json's table of powers of ten, as f64 literals.
_POW10 = [float(f"1e{i}") for i in range(309)]


def stored_float(value: float) -> float:
    """The f64 trace-writer reads from Python's JSON for `value`.

    trace-writer's serde_json is built without ``float_roundtrip``: it reads a number as
    its digits times a power of ten in plain f64 arithmetic, which is one unit in the
    last place off for some values with many digits or a large exponent. The same
    operations here give the same double.
    """
    if not math.isfinite(value):
        raise UnsendableResult(f"result holds {value!r}, which JSON cannot carry")
    text = repr(value)
    positive = not text.startswith("-")
    mantissa, _, exponent_text = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    significand = int(whole + fraction)
    exponent = int(exponent_text or 0) - len(fraction)
    number = float(significand)
    while True:
        if abs(exponent) < len(_POW10):
            if exponent >= 0:
                number *= _POW10[exponent]
            else:
                number /= _POW10[-exponent]
            break
        if number == 0.0:
            break
        number /= 1e308
        exponent += 308
    if math.isinf(number):
        # serde_json refuses it, and trace-writer would fail the job.
        raise UnsendableResult(f"result holds {value!r}, out of range for trace-writer")
    return number if positive else -number


def rust_float(value: float) -> str:
    """`value` as trace-writer's serde_json prints an f64: the shortest digits that read
    back as `value`, which Python's ``repr`` finds too, laid out differently (``1e-05``
    -> ``0.00001``, ``1e-07`` -> ``1e-7``; ``1e+16`` stays)."""
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    digits = all_digits.lstrip("0")
    # value = 0.<digits> * 10**kk
    kk = len(whole) - (len(all_digits) - len(digits)) + int(exponent or 0)
    digits = digits.rstrip("0")
    length = len(digits)
    if 0 <= kk - length and kk <= 16:
        return f"{sign}{digits}{'0' * (kk - length)}.0"
    if 0 < kk <= 16:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -5 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    power = f"e{'+' if kk > 0 else ''}{kk - 1}"
    if length == 1:
        return f"{sign}{digits}{power}"
    return f"{sign}{digits[0]}.{digits[1:]}{power}"


def as_stored(value: Any) -> Any:
    """`value` (as :func:`normalize_result` gives it) with each float as trace-writer
    reads it: what the trace's `result` will be."""
    if isinstance(value, float):
        return stored_float(value)
    if isinstance(value, list):
        return [as_stored(item) for item in value]
    if isinstance(value, dict):
        return {name: as_stored(item) for name, item in value.items()}
    return value


def rust_json(value: Any) -> str:
    """`value` (as :func:`normalize_result` gives it) in trace-writer's compact JSON."""
    parts: list = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, parts: list) -> None:
    # Explicit recursion is fine: normalize_result already went through json, whose own
    # recursion limit is below Python's.
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, int):
        parts.append(str(value))
    elif isinstance(value, float):
        parts.append(rust_float(stored_float(value)))
    elif isinstance(value, str):
        parts.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, list):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _write(item, parts)
        parts.append("]")
    elif isinstance(value, dict):
        parts.append("{")
        for index, (name, item) in enumerate(value.items()):
            if index:
                parts.append(",")
            parts.append(json.dumps(name, ensure_ascii=False))
            parts.append(":")
            _write(item, parts)
        parts.append("}")
    else:
        raise UnsendableResult(f"result holds a {type(value).__name__}")


def result_bytes(value: Any) -> int:
    """The size trace-writer measures `value` at."""
    try:
        return len(rust_json(value).encode("utf-8"))
    except UnicodeEncodeError as error:
        raise UnsendableResult(f"result holds text UTF-8 cannot carry: {error}") from error


def _bad_name(name: str) -> bool:
    raw = name.encode("utf-8")
    return (
        not raw
        or "\0" in name
        or name.startswith("$")
        or len(raw) > MAX_FIELD_NAME_BYTES
        or (len(raw) >= 4 and name.startswith("__") and name.endswith("__"))
    )


def unstorable(value: Any, depth: int = 1) -> Optional[str]:
    """Why the database could not store `value` as a trace's result, or None."""
    stack = [(value, depth, len("result"))]
    while stack:
        item, level, path = stack.pop()
        if isinstance(item, dict):
            if level > MAX_RESULT_DEPTH:
                return f"nested deeper than {MAX_RESULT_DEPTH} levels"
            for name, child in item.items():
                if _bad_name(name):
                    return f"field name {name!r} cannot be stored"
                child_path = path + 1 + len(name.encode("utf-8"))
                if child_path > MAX_FIELD_PATH_BYTES:
                    return f"a field path is longer than {MAX_FIELD_PATH_BYTES} bytes"
                stack.append((child, level + 1, child_path))
        elif isinstance(item, list):
            if level > MAX_RESULT_DEPTH:
                return f"nested deeper than {MAX_RESULT_DEPTH} levels"
            stack.extend((child, level + 1, path) for child in item)
    return None


def bound_result(result: Any) -> Tuple[Any, Optional[str]]:
    """`result` as the trace will hold it, and why it was replaced (None when kept).

    Like trace-writer: over 65536 bytes, nested deeper than 16, with an empty,
    NUL-holding, ``$``-leading, ``__x__`` or over 1500-byte field name, or a field path
    over 1500 bytes, the result becomes
    ``{"truncated": true, "original_bytes": N}``.
    """
    value = normalize_result(result)
    size = result_bytes(value)
    if size > MAX_RESULT_BYTES:
        reason = f"{size} bytes of JSON, over the {MAX_RESULT_BYTES} a trace keeps"
    else:
        reason = unstorable(value)
    if reason is None:
        return value, None
    return {"truncated": True, "original_bytes": size}, reason
