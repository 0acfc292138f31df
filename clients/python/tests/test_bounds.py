"""The bounds on their own, no servers: trace-writer's rules (shared/src/rules.rs) as
plain cases. test_reporter.py checks the same cases against trace-writer itself."""

from __future__ import annotations

import json

import pytest

from job_trace_reporter import MAX_ERROR_BYTES, MAX_RESULT_BYTES, bound_error, bound_result
from job_trace_reporter._bounds import (
    UnsendableResult,
    as_stored,
    clean_text,
    result_bytes,
    rust_float,
    stored_float,
)


def nested(depth: int, leaf=1):
    """`depth` objects inside each other: {"n": {"n": ... leaf}}."""
    value = leaf
    for _ in range(depth):
        value = {"n": value}
    return value


def padded(size: int, char: str = "x") -> dict:
    """{"s": "..."} whose compact JSON is exactly `size` bytes (ASCII padding)."""
    return {"s": char * (size - len('{"s":""}'))}


class TestBoundError:
    def test_at_the_limit_text_is_kept(self):
        text = "a" * MAX_ERROR_BYTES
        assert bound_error(text) == text

    def test_one_byte_over_is_cut_with_an_ellipsis(self):
        text = "a" * (MAX_ERROR_BYTES + 1)
        assert bound_error(text) == "a" * MAX_ERROR_BYTES + "\u2026"

    def test_a_two_byte_character_across_the_cut_is_left_out_whole(self):
        text = "a" + "\u00e9" * 1024  # 2049 bytes; byte 2048 is inside the last é
        cut = bound_error(text)
        assert cut == "a" + "\u00e9" * 1023 + "\u2026"
        assert len(cut[:-1].encode()) == MAX_ERROR_BYTES - 1

    def test_a_four_byte_character_across_the_cut_is_left_out_whole(self):
        text = "ab" + "\U0001f600" * 512  # 2050 bytes; the cut falls 2 bytes into one
        assert bound_error(text) == "ab" + "\U0001f600" * 511 + "\u2026"

    def test_characters_ending_at_the_cut_are_kept(self):
        text = "\u00e9" * 1025  # byte 2048 starts a character
        assert bound_error(text) == "\u00e9" * 1024 + "\u2026"

    def test_lone_surrogates_are_written_out(self):
        assert clean_text("bad \udcff name") == "bad \\udcff name"
        assert clean_text("fine") == "fine"


class TestBoundResult:
    def test_at_the_size_limit_the_result_is_kept(self):
        result = padded(MAX_RESULT_BYTES)
        assert result_bytes(result) == MAX_RESULT_BYTES
        assert bound_result(result) == (result, None)

    def test_one_byte_over_becomes_the_marker(self):
        value, reason = bound_result(padded(MAX_RESULT_BYTES + 1))
        assert value == {"truncated": True, "original_bytes": MAX_RESULT_BYTES + 1}
        assert "65537 bytes" in reason

    def test_multibyte_text_counts_in_utf8_bytes(self):
        result = padded(MAX_RESULT_BYTES - 1)
        result["s"] = result["s"][:-1] + "\u00e9"  # one more byte
        assert result_bytes(result) == MAX_RESULT_BYTES
        assert bound_result(result)[1] is None
        result["s"] = result["s"][:-1] + "\u20ac"  # three bytes where é had two
        assert bound_result(result)[0] == {
            "truncated": True,
            "original_bytes": MAX_RESULT_BYTES + 1,
        }

    def test_escapes_count_as_trace_writer_writes_them(self):
        # \n is 2 bytes, \u0001 is 6, a quote 2, non-ASCII raw.
        assert result_bytes({"s": '\n\u0001"\u00e9\u007f'}) == len('{"s":"') + 2 + 6 + 2 + 2 + 1 + 2

    def test_depth_16_is_kept_and_17_is_not(self):
        assert bound_result(nested(16)) == (nested(16), None)
        value, reason = bound_result(nested(17))
        assert value == {"truncated": True, "original_bytes": result_bytes(nested(17))}
        assert "deeper than 16" in reason

    def test_arrays_count_as_levels(self):
        deep_list = [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]  # 16 levels
        assert bound_result(deep_list)[1] is None
        assert bound_result([deep_list])[1] is not None

    def test_a_scalar_below_the_deepest_object_adds_no_level(self):
        assert bound_result(nested(16, leaf="text"))[1] is None

    @pytest.mark.parametrize(
        "name", ["", "a\0b", "__x__", "____", "__\u00e9__", "$x", "$set", "n" * 1501]
    )
    def test_field_names_the_database_refuses_become_the_marker(self, name):
        result = {"ok": 1, "inner": {name: 1}}
        value, reason = bound_result(result)
        assert value == {"truncated": True, "original_bytes": result_bytes(result)}
        assert "field name" in reason

    @pytest.mark.parametrize("name", ["___", "__", "_x_", "__x", "x__", "x$", "a.b"])
    def test_other_field_names_are_kept(self, name):
        assert bound_result({name: 1})[1] is None

    def test_non_json_results_are_refused(self):
        for bad in [float("nan"), {"x": float("inf")}, object(), {"x": {1, 2}}]:
            with pytest.raises(UnsendableResult):
                bound_result(bad)

    def test_integers_outside_64_bits_are_refused(self):
        assert bound_result({"n": 2**63 - 1})[1] is None
        assert bound_result({"n": -(2**63)})[1] is None
        for big in [2**63, -(2**63) - 1, 2**70]:
            with pytest.raises(UnsendableResult, match="64-bit"):
                bound_result({"n": big})

    def test_python_only_shapes_go_through_json(self):
        value, _ = bound_result({"t": (1, 2), 3: "x"})
        assert value == {"t": [1, 2], "3": "x"}


class TestFloats:
    # What trace-writer's serde_json printed for these (checked against it by the
    # end-to-end bounds test, which stores and reads them back).
    @pytest.mark.parametrize(
        "value, text",
        [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1e-05, "0.00001"),
            (1.5e-05, "0.000015"),
            (1e-06, "1e-6"),
            (1.2345e-09, "1.2345e-9"),
            (1e15, "1000000000000000.0"),
            (9876543210000000.0, "9876543210000000.0"),
            (1e16, "1e+16"),
            (1.25e16, "1.25e+16"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ],
    )
    def test_printed_as_serde_json_prints(self, value, text):
        assert rust_float(stored_float(value)) == text

    def test_some_floats_are_read_one_unit_off_as_trace_writer_reads_them(self):
        # serde_json without float_roundtrip: 21970596639628 * 1e117.
        assert stored_float(2.1970596639628e130) != 2.1970596639628e130
        assert rust_float(stored_float(2.1970596639628e130)) == "2.1970596639628001e+130"
        assert as_stored({"f": [2.1970596639628e130]}) == {"f": [stored_float(2.1970596639628e130)]}

    def test_the_size_uses_trace_writers_rendering(self):
        assert result_bytes({"f": 1e-05}) == len('{"f":0.00001}')
        assert result_bytes([2.1970596639628e130]) == len("[2.1970596639628001e+130]")
        assert json.dumps([1e-05]) == "[1e-05]"  # what Python sends: a byte shorter
