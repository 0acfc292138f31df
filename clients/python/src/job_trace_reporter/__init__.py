"""Reports a worker's steps on a job to job trace, as the status events trace-writer reads.

    from job_trace_reporter import JobTraceReporter

    reporter = JobTraceReporter(project_id)
    with reporter.track(message_id, attempt=delivery_attempt) as job:
        job.progress(3, 40, "checking properties")
        job.result = {"properties_checked": 40}

Each event goes to the events topic with the attribute ``trace_event=status`` and the
job's id as ordering key, so that one job's events reach trace-writer in the order they
were published. See the README's "Worker guide".
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import unicodedata
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, Optional

from ._bounds import (
    MAX_ERROR_BYTES,
    MAX_RESULT_BYTES,
    MAX_RESULT_DEPTH,
    UnsendableResult,
    bound_error,
    bound_result,
    clean_text,
)

__all__ = [
    "JobTraceReporter",
    "Job",
    "ReportError",
    "bound_error",
    "bound_result",
    "MAX_ERROR_BYTES",
    "MAX_RESULT_BYTES",
    "MAX_RESULT_DEPTH",
    "MAX_ATTEMPT",
    "MAX_PROGRESS_TOTAL",
    "DEFAULT_TOPIC",
]

logger = logging.getLogger("job_trace_reporter")

DEFAULT_TOPIC = "job-trace-events"
#: The highest attempt trace-writer accepts.
MAX_ATTEMPT = 10_000
#: The highest `total` (and so `done`) of a progress report trace-writer records.
MAX_PROGRESS_TOTAL = 1_000_000_000
#: trace-writer's limit on a job id.
MAX_ID_BYTES = 1024


class ReportError(Exception):
    """An event about a job could not be published (or could never be recorded)."""

    def __init__(self, message_id: str, status: str, reason: str):
        super().__init__(f"could not report {status} for job {message_id}: {reason}")
        self.message_id = message_id
        self.status = status
        self.reason = reason


def _now() -> str:
    """RFC 3339 UTC with milliseconds and ``Z``, as every time in job trace."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _check_message_id(message_id: str) -> None:
    # The same rules trace-writer applies: it would refuse the event otherwise.
    if not isinstance(message_id, str):
        raise TypeError(f"message_id must be a str, got {type(message_id).__name__}")
    if not message_id.strip():
        raise ValueError("message_id is empty")
    try:
        size = len(message_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("message_id is not valid Unicode text") from None
    if size > MAX_ID_BYTES:
        raise ValueError(f"message_id is longer than {MAX_ID_BYTES} bytes")
    if any(unicodedata.category(c) == "Cc" for c in message_id):
        raise ValueError("message_id contains control characters")


def _check_attempt(attempt: Optional[int]) -> int:
    if attempt is None:
        return 1
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise TypeError(f"attempt must be an int, got {type(attempt).__name__}")
    if not 1 <= attempt <= MAX_ATTEMPT:
        raise ValueError(f"attempt must be from 1 to {MAX_ATTEMPT}, got {attempt}")
    return attempt


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_PROGRESS_TOTAL:
        raise ValueError(f"{name} must be from 0 to {MAX_PROGRESS_TOTAL}, got {value}")
    return value


class JobTraceReporter:
    """Publishes a worker's status events for job trace.

    ``publisher``: a ``google.cloud.pubsub_v1.PublisherClient`` to share, created with
    ``PublisherOptions(enable_message_ordering=True)``; by default the reporter makes
    one. ``timeout``: seconds to wait for each publish before :class:`ReportError`.
    """

    def __init__(
        self,
        project_id: str,
        topic_id: str = DEFAULT_TOPIC,
        publisher: Any = None,
        timeout: float = 30.0,
    ):
        if publisher is None:
            from google.cloud import pubsub_v1

            publisher = pubsub_v1.PublisherClient(
                publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
            )
            self._owns_publisher = True
        else:
            # Without ordering the client refuses an ordering key on every publish: say
            # so now rather than at the first report.
            if getattr(publisher, "_enable_message_ordering", True) is False:
                raise ValueError(
                    "the shared publisher must be created with "
                    "PublisherOptions(enable_message_ordering=True)"
                )
            self._owns_publisher = False
        self.publisher = publisher
        self.topic_path = publisher.topic_path(project_id, topic_id)
        self.timeout = timeout

    def close(self) -> None:
        """Stops the publisher this reporter created (a shared one is left alone)."""
        if self._owns_publisher:
            self.publisher.stop()

    def __enter__(self) -> "JobTraceReporter":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    # The status events.

    def processing(self, message_id: str, attempt: Optional[int] = 1) -> str:
        """The worker has started `attempt` of the job. Returns the event's Pub/Sub id."""
        return self._status(message_id, "processing", attempt)

    def success(self, message_id: str, result: Any = None, attempt: Optional[int] = 1) -> str:
        """`attempt` succeeded; `result` (any JSON) is kept on the trace, bounded."""
        return self._status(message_id, "success", attempt, result=result)

    def failed(self, message_id: str, error: str, attempt: Optional[int] = 1) -> str:
        """`attempt` failed with `error` (cut to 2048 bytes)."""
        return self._status(message_id, "failed", attempt, error=error)

    def not_found(
        self, message_id: str, error: Optional[str] = None, attempt: Optional[int] = 1
    ) -> str:
        """What the job was about no longer exists (e.g. the listing was removed)."""
        return self._status(message_id, "not_found", attempt, error=error)

    def progress(
        self,
        message_id: str,
        done: int,
        total: int,
        note: Optional[str] = None,
        attempt: Optional[int] = 1,
    ) -> str:
        """How far `attempt` has got: `done` of `total` steps, with an optional note."""
        _check_message_id(message_id)
        attempt = _check_attempt(attempt)
        _check_count("done", done)
        _check_count("total", total)
        if done > total:
            raise ValueError(f"done ({done}) is more than total ({total})")
        payload: Dict[str, Any] = {
            "message_id": message_id,
            "status": "progress",
            "attempt": attempt,
            "done": done,
            "total": total,
        }
        if note is not None:
            payload["note"] = self._bounded_text(message_id, "note", note)
        payload["occurred_at"] = _now()
        return self.publish_event(message_id, "progress", payload)

    # Building and publishing.

    def event(
        self,
        message_id: str,
        status: str,
        attempt: Optional[int] = 1,
        error: Optional[str] = None,
        result: Any = None,
    ) -> Dict[str, Any]:
        """The payload of a status event, bounded as trace-writer bounds it."""
        _check_message_id(message_id)
        attempt = _check_attempt(attempt)
        payload: Dict[str, Any] = {
            "message_id": message_id,
            "status": status,
            "attempt": attempt,
            "occurred_at": _now(),
        }
        if error is not None:
            payload["error"] = self._bounded_text(message_id, "error", error)
        if result is not None:
            try:
                value, reason = bound_result(result)
            except UnsendableResult as problem:
                raise ReportError(message_id, status, str(problem)) from problem
            if reason is not None:
                logger.warning(
                    "job %s: result replaced by %s: %s",
                    message_id,
                    json.dumps(value),
                    reason,
                )
            payload["result"] = value
        return payload

    @staticmethod
    def _bounded_text(message_id: str, field: str, text: Any) -> str:
        text = clean_text(text if isinstance(text, str) else str(text))
        bounded = bound_error(text)
        if bounded != text:
            logger.warning(
                "job %s: %s cut from %d to %d bytes (and an ellipsis)",
                message_id,
                field,
                len(text.encode("utf-8")),
                len(bounded[:-1].encode("utf-8")),
            )
        return bounded

    def _status(
        self,
        message_id: str,
        status: str,
        attempt: Optional[int],
        error: Optional[str] = None,
        result: Any = None,
    ) -> str:
        payload = self.event(message_id, status, attempt, error=error, result=result)
        return self.publish_event(message_id, status, payload)

    def publish_event(self, message_id: str, status: str, payload: Dict[str, Any]) -> str:
        """Publishes `payload` as it is (no bounds) and waits for Pub/Sub's id."""
        data = json.dumps(
            payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
        try:
            future = self.publisher.publish(
                self.topic_path, data, ordering_key=message_id, trace_event="status"
            )
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError as error:
            # The publish goes on in the client and may still land: the event can be
            # recorded although this call failed, which the rules make harmless.
            raise ReportError(
                message_id,
                status,
                f"publishing to {self.topic_path} got no answer within {self.timeout} s",
            ) from error
        except Exception as error:
            # A failed publish pauses the ordering key: without this, every later event
            # of the job would fail too.
            with contextlib.suppress(Exception):
                self.publisher.resume_publish(self.topic_path, message_id)
            reason = f"{type(error).__name__}: {error}".rstrip(": ")
            raise ReportError(
                message_id, status, f"publishing to {self.topic_path} failed: {reason}"
            ) from error

    # The context manager.

    @contextlib.contextmanager
    def track(
        self,
        message_id: str,
        attempt: Optional[int] = 1,
        raise_on_report_error: bool = False,
    ) -> Iterator["Job"]:
        """Reports `processing` now, then `success` (with ``job.result``) when the block
        ends cleanly, or `failed` with the exception's text when it raises (the exception
        goes on). ``job.not_found(reason)`` ends the job as not found instead.

        A report that cannot be published is logged and does not change what the block
        does; with ``raise_on_report_error=True`` it raises :class:`ReportError` (but
        never hides the block's own exception). ``KeyboardInterrupt``, ``SystemExit``
        and other non-``Exception`` exits report nothing: the message will be delivered
        again, and its next attempt reports.
        """
        job = Job(self, message_id, _check_attempt(attempt), raise_on_report_error)
        job._report(lambda: self.processing(message_id, job.attempt))
        try:
            yield job
        except Exception as error:
            if not job.finished:
                job.finished = True
                text = str(error) or type(error).__name__
                job._report(lambda: self.failed(message_id, text, job.attempt), quiet=True)
            raise
        if not job.finished:
            job.finished = True
            job._report(lambda: self.success(message_id, job.result, job.attempt))


class Job:
    """A job being tracked by :meth:`JobTraceReporter.track`."""

    def __init__(
        self,
        reporter: JobTraceReporter,
        message_id: str,
        attempt: int,
        raise_on_report_error: bool,
    ):
        self.reporter = reporter
        self.message_id = message_id
        self.attempt = attempt
        self.raise_on_report_error = raise_on_report_error
        #: Reported with `success` when the block ends cleanly.
        self.result: Any = None
        #: Whether the job's outcome has been reported (or attempted).
        self.finished = False

    def progress(self, done: int, total: int, note: Optional[str] = None) -> None:
        """Reports how far the job has got (a failure to publish is handled as in track)."""
        self._report(
            lambda: self.reporter.progress(self.message_id, done, total, note, attempt=self.attempt)
        )

    def not_found(self, reason: Optional[str] = None) -> None:
        """Ends the job as `not_found`; the block's clean end then reports nothing more."""
        self.finished = True
        self._report(lambda: self.reporter.not_found(self.message_id, reason, attempt=self.attempt))

    def _report(self, send: Any, quiet: bool = False) -> Optional[str]:
        try:
            return send()
        except ReportError as error:
            logger.error("%s", error)
            if self.raise_on_report_error and not quiet:
                raise
            return None
