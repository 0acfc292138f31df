"""The reporter end to end: the real Python Pub/Sub client, the emulator, trace-writer and
trace-api (started by tests/tests/python_reporter.rs; see conftest.py)."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import uuid
from datetime import datetime
from typing import Any, Dict, List

import pytest
from google.cloud import pubsub_v1

from job_trace_reporter import MAX_ERROR_BYTES, MAX_RESULT_BYTES, JobTraceReporter, ReportError
from job_trace_reporter._bounds import as_stored, bound_error, bound_result, normalize_result

from test_bounds import nested, padded

URL = "https://suumo.jp/chintai/jnc_000012345678/"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def data(message: Any) -> Dict[str, Any]:
    return json.loads(message.data.decode("utf-8"))


def statuses(messages: List[Any]) -> List[str]:
    return [data(m)["status"] for m in messages]


def millis(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def now_millis() -> int:
    return time.time_ns() // 1_000_000


def sentinel(reporter: JobTraceReporter, job: str) -> str:
    """A last event for `job`: once it is pulled, every earlier event of the job has been
    (the subscription is ordered), so what is missing was never published."""
    return reporter.progress(job, 0, 0, "sentinel")


class TestCalls:
    def test_each_call_moves_a_queued_job_to_success(self, reporter, api, pulled, publish_job):
        job = publish_job(url=URL)
        api.wait_for(job, lambda t: t["status"] == "queued" and t["url"] == URL, "queued")

        before = now_millis()
        ids = [reporter.processing(job, attempt=1)]
        after = now_millis()
        trace = api.wait_status(job, "processing")
        # occurred_at is the worker's time at the call, not Pub/Sub's.
        assert before <= millis(trace["started_at"]) <= after
        assert trace["completed_at"] is None

        ids.append(reporter.progress(job, done=12, total=40, note="checking properties", attempt=1))
        result = {"properties_checked": 40, "changed": ["room 203"], "ratio": 0.3}
        ids.append(reporter.success(job, result=result, attempt=1))
        trace = api.wait_status(job, "success")
        assert trace["result"] == result
        assert trace["error"] is None
        assert trace["url"] == URL and trace["job_type"] == "property_scrape"
        assert millis(trace["completed_at"]) >= millis(trace["started_at"])

        messages = pulled.messages(job, 3)
        assert [m.message_id for m in messages] == ids
        assert statuses(messages) == ["processing", "progress", "success"]

    def test_progress_shows_while_the_attempt_runs_and_not_after_it(
        self, reporter, api, publish_job
    ):
        job = publish_job()
        reporter.processing(job, attempt=1)
        api.wait_status(job, "processing")
        reporter.progress(job, done=12, total=40, note="checking properties", attempt=1)
        trace = api.wait_for(job, lambda t: "progress" in t, "progress of attempt 1")
        assert trace["status"] == "processing"
        assert {k: v for k, v in trace["progress"].items() if k != "at"} == {
            "done": 12,
            "total": 40,
            "note": "checking properties",
        }
        assert TIME.match(trace["progress"]["at"])
        assert [h["status"] for h in trace["history"]] == ["queued", "processing"]

        reporter.success(job, {"checked": 40}, attempt=1)
        reporter.progress(job, done=39, total=40, note="late", attempt=1)
        # The late report counts for updated_at (its occurred_at is after success's, the
        # publish in between taking milliseconds): once it shows there, it is recorded.
        trace = api.wait_for(
            job,
            lambda t: t["status"] == "success"
            and millis(t["updated_at"]) > millis(t["completed_at"]),
            "the late progress report recorded",
        )
        assert trace["status"] == "success"
        assert "progress" not in trace

    def test_failed_keeps_the_error(self, reporter, api, new_id):
        job = new_id()
        reporter.failed(job, error="HTTP 503 from suumo.jp", attempt=1)
        trace = api.wait_status(job, "failed")
        assert trace["error"] == "HTTP 503 from suumo.jp"
        assert trace["completed_at"] is not None

    def test_not_found_with_and_without_a_reason(self, reporter, api, new_id):
        silent, explained = new_id(), new_id()
        reporter.not_found(silent)
        reporter.not_found(explained, error="listing removed", attempt=1)
        assert api.wait_status(silent, "not_found")["error"] is None
        assert api.wait_status(explained, "not_found")["error"] == "listing removed"

    def test_events_are_in_the_contract_trace_writer_reads(self, reporter, pulled, new_id):
        job = new_id()
        reporter.failed(job, error="HTTP 503", attempt=2)
        reporter.success(job, result={"a": [1, 2.5, None, True]}, attempt=3)
        reporter.progress(job, 3, 10, attempt=3)
        reporter.progress(job, 4, 10, note="page 4", attempt=None)
        failed, success, progress, noted = pulled.messages(job, 4)
        for message in (failed, success, progress, noted):
            assert dict(message.attributes) == {"trace_event": "status"}
            assert message.ordering_key == job
            assert TIME.match(data(message)["occurred_at"])

        def compact(payload: Dict[str, Any]) -> bytes:
            return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

        at = data(failed)["occurred_at"]
        assert failed.data == compact(
            {
                "message_id": job,
                "status": "failed",
                "attempt": 2,
                "occurred_at": at,
                "error": "HTTP 503",
            }
        )
        at = data(success)["occurred_at"]
        assert success.data == compact(
            {
                "message_id": job,
                "status": "success",
                "attempt": 3,
                "occurred_at": at,
                "result": {"a": [1, 2.5, None, True]},
            }
        )
        at = data(progress)["occurred_at"]
        assert progress.data == compact(
            {
                "message_id": job,
                "status": "progress",
                "attempt": 3,
                "done": 3,
                "total": 10,
                "occurred_at": at,
            }
        )
        assert list(data(noted)) == [
            "message_id",
            "status",
            "attempt",
            "done",
            "total",
            "note",
            "occurred_at",
        ]
        assert data(noted)["attempt"] == 1 and data(noted)["note"] == "page 4"

    def test_mistakes_are_refused_before_anything_is_published(self, reporter, pulled, new_id):
        job = new_id()
        for attempt, error in [
            (0, ValueError),
            (10_001, ValueError),
            (True, TypeError),
            ("2", TypeError),
        ]:
            with pytest.raises(error, match="attempt"):
                reporter.processing(job, attempt=attempt)
        bad_ids = [
            ("", ValueError),
            ("  ", ValueError),
            ("a\nb", ValueError),
            ("x" * 1025, ValueError),
            ("\udcff", ValueError),
            (42, TypeError),
        ]
        for bad_id, error in bad_ids:
            with pytest.raises(error, match="message_id"):
                reporter.processing(bad_id)
        with pytest.raises(ValueError, match="more than total"):
            reporter.progress(job, 5, 4)
        with pytest.raises(ValueError, match="done must be from 0"):
            reporter.progress(job, -1, 4)
        with pytest.raises(ValueError, match="total must be from 0 to 1000000000"):
            reporter.progress(job, 1, 1_000_000_001)
        sentinel(reporter, job)
        assert statuses(pulled.messages(job, 1)) == ["progress"]


class TestTrack:
    def test_a_clean_block_reports_processing_then_success_with_the_result(
        self, reporter, api, pulled, new_id
    ):
        job = new_id()
        with reporter.track(job, attempt=1) as tracked:
            # Reported on entering, before the work is done.
            assert api.wait_status(job, "processing")["status"] == "processing"
            tracked.progress(1, 2, "half way")
            tracked.result = {"checked": 2}
        trace = api.wait_status(job, "success")
        assert trace["result"] == {"checked": 2}
        messages = pulled.messages(job, 3)
        assert statuses(messages) == ["processing", "progress", "success"]
        assert data(messages[1])["note"] == "half way"

    def test_an_exception_reports_failed_with_its_text_and_goes_on(
        self, reporter, api, pulled, new_id
    ):
        job = new_id()
        with pytest.raises(RuntimeError, match="HTTP 503 from suumo.jp"):
            with reporter.track(job, attempt=2):
                raise RuntimeError("HTTP 503 from suumo.jp")
        trace = api.wait_status(job, "failed", attempt=2)
        assert trace["error"] == "HTTP 503 from suumo.jp"
        sentinel(reporter, job)
        assert statuses(pulled.messages(job, 3)) == ["processing", "failed", "progress"]

    def test_an_exception_without_text_reports_its_type(self, reporter, api, new_id):
        job = new_id()
        with pytest.raises(KeyError):
            with reporter.track(job):
                raise KeyError()
        assert api.wait_status(job, "failed")["error"] == "KeyError"

    def test_not_found_ends_the_job_and_nothing_follows(self, reporter, api, pulled, new_id):
        job = new_id()
        with reporter.track(job, attempt=None) as tracked:
            tracked.not_found("listing removed")
            tracked.result = {"ignored": True}
        trace = api.wait_status(job, "not_found")
        assert trace["error"] == "listing removed" and trace["result"] is None
        sentinel(reporter, job)
        assert statuses(pulled.messages(job, 3)) == ["processing", "not_found", "progress"]

    def test_an_interrupt_reports_nothing_more_the_redelivery_will(self, reporter, pulled, new_id):
        job = new_id()
        with pytest.raises(KeyboardInterrupt):
            with reporter.track(job):
                raise KeyboardInterrupt
        sentinel(reporter, job)
        assert statuses(pulled.messages(job, 2)) == ["processing", "progress"]


class TestOrderAndAttempts:
    def test_one_jobs_events_arrive_in_the_order_published(self, reporter, api, pulled, new_id):
        job = new_id()
        ids = [reporter.processing(job)]
        for step in range(1, 9):
            ids.append(reporter.progress(job, step, 8, f"step {step}"))
        ids.append(reporter.success(job, {"steps": 8}))
        messages = pulled.messages(job, len(ids))
        assert [m.message_id for m in messages] == ids
        assert [data(m).get("done") for m in messages] == [None, *range(1, 9), None]
        assert all(m.ordering_key == job for m in messages)
        assert api.wait_status(job, "success")["result"] == {"steps": 8}

    def test_attempt_2_reopens_a_failed_attempt_1(self, reporter, api, publish_job):
        job = publish_job(url=URL)
        reporter.processing(job, attempt=1)
        reporter.failed(job, "HTTP 503 from suumo.jp", attempt=1)
        api.wait_status(job, "failed", attempt=1)

        reporter.processing(job, attempt=2)
        trace = api.wait_status(job, "processing", attempt=2)
        assert trace["error"] is None and trace["completed_at"] is None

        reporter.success(job, {"rooms": 3}, attempt=2)
        trace = api.wait_for(
            job,
            lambda t: t["status"] == "success" and len(t["history"]) == 5,
            "success of attempt 2 after the queued record",
        )
        assert trace["attempt"] == 2 and trace["result"] == {"rooms": 3}
        assert [(h["attempt"], h["status"]) for h in trace["history"]] == [
            (0, "queued"),
            (1, "processing"),
            (1, "failed"),
            (2, "processing"),
            (2, "success"),
        ]
        assert trace["history"][2]["error"] == "HTTP 503 from suumo.jp"

        # A late redelivery of attempt 1 is recorded in the history but moves nothing.
        reporter.processing(job, attempt=1)
        trace = api.wait_for(
            job,
            lambda t: [(h["attempt"], h["status"]) for h in t["history"]].count((1, "processing"))
            == 2,
            "the late attempt 1",
        )
        assert trace["status"] == "success" and trace["attempt"] == 2


# Each case: a result whose bound is near a limit, and what trace-writer must keep of it.
FLOAT_PAD = 10 * len("0.00001")  # ten 1e-05, each two bytes longer in trace-writer's JSON
RESULT_CASES = {
    "size at the limit": padded(MAX_RESULT_BYTES),
    "size one byte over": padded(MAX_RESULT_BYTES + 1),
    "two-byte characters at the limit": {"s": "x" * (MAX_RESULT_BYTES - 10) + "\u00e9"},
    "a three-byte character one byte over": {"s": "x" * (MAX_RESULT_BYTES - 10) + "\u20ac"},
    "a string result at the limit": "x" * (MAX_RESULT_BYTES - 2),
    "a string result one byte over": "x" * (MAX_RESULT_BYTES - 1),
    # Python sends 1e-05, trace-writer measures 0.00001: under the limit as sent, over
    # it as measured.
    "floats over only as trace-writer writes them": {
        "f": [1e-05] * 10,
        "s": "x" * (MAX_RESULT_BYTES + 1 - len('{"f":[],"s":""}') - 9 - FLOAT_PAD),
    },
    "floats at the limit as trace-writer writes them": {
        "f": [1e-05] * 10,
        "s": "x" * (MAX_RESULT_BYTES - len('{"f":[],"s":""}') - 9 - FLOAT_PAD),
    },
    # trace-writer reads this float one unit in the last place off, a digit longer.
    "a float trace-writer reads differently": {"f": [2.1970596639628e130, 0.1, -0.0, 1e16]},
    "depth 16": nested(16),
    "depth 17": nested(17),
    "arrays 17 deep": {"a": nested(15, leaf=[[1]])},
    "an empty field name": {"ok": {"": 1}},
    "a field name with NUL": {"a\0b": 1},
    "a field name like __x__": {"deep": [{"__x__": 1}]},
    "names that are fine": {"___": 1, "__": 2, "_x_": 3, "x$": 4, "n" * 1493: 5},
    "a field name starting with $": {"ok": {"$set": {"status": "x"}}},
    "a field name over 1500 bytes": {"n" * 1501: 1},
    "a field path over 1500 bytes": {"a" * 700: {"b" * 700: {"c" * 100: 1}}},
}

ERROR_CASES = {
    "at the limit": "a" * MAX_ERROR_BYTES,
    "one byte over": "a" * (MAX_ERROR_BYTES + 1),
    "a two-byte character across the cut": "a" + "\u00e9" * 1024,
    "a four-byte character across the cut": "ab" + "\U0001f600" * 512,
    "characters ending at the cut": "\u00e9" * 1025,
}


class TestBounds:
    def test_the_cases_sit_where_they_claim(self):
        from job_trace_reporter._bounds import result_bytes

        sizes = {name: result_bytes(normalize_result(r)) for name, r in RESULT_CASES.items()}
        assert sizes["size at the limit"] == MAX_RESULT_BYTES
        assert sizes["two-byte characters at the limit"] == MAX_RESULT_BYTES
        assert sizes["a three-byte character one byte over"] == MAX_RESULT_BYTES + 1
        assert sizes["a string result one byte over"] == MAX_RESULT_BYTES + 1
        assert sizes["floats at the limit as trace-writer writes them"] == MAX_RESULT_BYTES
        over = RESULT_CASES["floats over only as trace-writer writes them"]
        assert sizes["floats over only as trace-writer writes them"] == MAX_RESULT_BYTES + 1
        assert len(json.dumps(over, separators=(",", ":")).encode()) < MAX_RESULT_BYTES

    def test_trace_writer_keeps_exactly_what_the_reporter_predicts(
        self, reporter, api, new_id, caplog
    ):
        """Each case twice: bounded by the reporter, and sent unbounded so that
        trace-writer bounds it itself. Both traces must hold the reporter's prediction."""
        jobs = []
        with caplog.at_level(logging.WARNING, logger="job_trace_reporter"):
            for name, result in RESULT_CASES.items():
                kept, reason = bound_result(result)
                expected = {"result": as_stored(kept), "error": None}
                bounded, raw = new_id(), new_id()
                reporter.success(bounded, result=result)
                payload = reporter.event(raw, "success")
                payload["result"] = normalize_result(result)
                reporter.publish_event(raw, "success", payload)
                jobs += [
                    (name, bounded, expected, reason),
                    (name + " (unbounded)", raw, expected, None),
                ]
            for name, text in ERROR_CASES.items():
                expected = {"result": None, "error": bound_error(text)}
                bounded, raw = new_id(), new_id()
                reporter.failed(bounded, error=text)
                payload = reporter.event(raw, "failed")
                payload["error"] = text
                reporter.publish_event(raw, "failed", payload)
                cut = expected["error"] != text
                jobs += [
                    (name, bounded, expected, cut or None),
                    (name + " (unbounded)", raw, expected, None),
                ]

        for name, job, expected, _ in jobs:
            trace = api.wait_for(job, lambda t: t["status"] in ("success", "failed"), name)
            assert {"result": trace["result"], "error": trace["error"]} == expected, name

        # Every cut the reporter made is in the log, with the job's id.
        for name, job, _, reason in jobs:
            if reason:
                assert job in caplog.text, f"{name}: the cut is not logged"
        replaced = {
            name
            for name, _, e, r in jobs
            if r and isinstance(e["result"], dict) and "truncated" in e["result"]
        }
        assert replaced == {
            "size one byte over",
            "a three-byte character one byte over",
            "a string result one byte over",
            "floats over only as trace-writer writes them",
            "depth 17",
            "arrays 17 deep",
            "an empty field name",
            "a field name with NUL",
            "a field name like __x__",
            "a field name starting with $",
            "a field name over 1500 bytes",
            "a field path over 1500 bytes",
        }


class TestPublishFailure:
    def test_a_missing_topic_raises_report_error_naming_the_job(self, project, new_id):
        bad = JobTraceReporter(project, f"no-such-topic-{uuid.uuid4().hex[:8]}", timeout=15)
        job = new_id()
        with pytest.raises(ReportError) as raised:
            bad.processing(job)
        assert raised.value.message_id == job and raised.value.status == "processing"
        assert job in str(raised.value) and "NotFound" in str(raised.value)
        bad.close()

    def test_track_never_fails_a_scrape_for_a_report(self, project, new_id, caplog):
        bad = JobTraceReporter(project, f"no-such-topic-{uuid.uuid4().hex[:8]}", timeout=15)
        job = new_id()
        ran = []
        with caplog.at_level(logging.ERROR, logger="job_trace_reporter"):
            with bad.track(job) as tracked:
                ran.append("clean")
                tracked.result = {"ok": True}
        assert ran == ["clean"]
        assert f"could not report processing for job {job}" in caplog.text
        assert f"could not report success for job {job}" in caplog.text

        # The block's own exception goes on, not the report's.
        with pytest.raises(RuntimeError, match="scrape broke"):
            with bad.track(job):
                raise RuntimeError("scrape broke")
        assert f"could not report failed for job {job}" in caplog.text

        # Asked to: the report error is raised, here on entering, before the work.
        with pytest.raises(ReportError, match=job):
            with bad.track(job, raise_on_report_error=True):
                ran.append("asked")
        assert ran == ["clean"]
        bad.close()

    def test_a_failed_publish_does_not_block_the_jobs_later_events(self, project, new_id):
        # The client pauses an ordering key after a failure; the reporter resumes it.
        topic = f"late-topic-{uuid.uuid4().hex[:8]}"
        late = JobTraceReporter(project, topic, timeout=15)
        job = new_id()
        with pytest.raises(ReportError):
            late.processing(job)
        admin = pubsub_v1.PublisherClient()
        admin.create_topic(request={"name": late.topic_path})
        assert late.processing(job)
        late.close()
        admin.delete_topic(request={"topic": late.topic_path})

    def test_a_publish_without_answer_is_given_up_after_the_timeout(
        self, project, events_topic, new_id, monkeypatch
    ):
        with socket.socket() as silent:
            # Accepts connections (the kernel does, into the backlog) and never answers.
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:%d" % silent.getsockname()[1])
            stuck = JobTraceReporter(project, events_topic, timeout=2)
            job = new_id()
            started = time.monotonic()
            with pytest.raises(ReportError, match="no answer within 2 s") as raised:
                stuck.processing(job)
            assert 2 <= time.monotonic() - started < 10
            assert raised.value.message_id == job

    def test_an_unsendable_result_is_a_report_error(self, reporter, new_id, caplog):
        job = new_id()
        with pytest.raises(ReportError, match="64-bit"):
            reporter.success(job, result={"n": 2**64})
        with caplog.at_level(logging.ERROR, logger="job_trace_reporter"):
            with reporter.track(job) as tracked:
                tracked.result = {"bad": float("nan")}
        assert f"could not report success for job {job}" in caplog.text


class TestSharedPublisher:
    def test_reporters_can_share_one_ordered_client(self, project, events_topic, pulled, new_id):
        shared = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        )
        first = JobTraceReporter(project, events_topic, publisher=shared)
        second = JobTraceReporter(project, events_topic, publisher=shared)
        assert first.publisher is shared and second.publisher is shared
        job = new_id()
        first.processing(job)
        first.close()  # leaves the shared client alone
        second.success(job, {"shared": True})
        assert statuses(pulled.messages(job, 2)) == ["processing", "success"]
        shared.stop()

    def test_a_client_without_ordering_is_refused(self, project):
        with pytest.raises(ValueError, match="enable_message_ordering"):
            JobTraceReporter(project, publisher=pubsub_v1.PublisherClient())
