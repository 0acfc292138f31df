"""What the end-to-end tests share: the Pub/Sub emulator, trace-writer and trace-api that
tests/tests/python_reporter.rs starts, named by environment variables.

* ``PUBSUB_EMULATOR_HOST``: the emulator (the Python client reads it itself)
* ``JOBTRACE_PROJECT``: its project
* ``JOBTRACE_EVENTS_TOPIC``: the events topic, pushed (ordered) to trace-writer
* ``JOBTRACE_JOBS_TOPIC``: the jobs topic, pushed to trace-writer
* ``JOBTRACE_API``: trace-api's base URL, over the same database

The unit tests (test_bounds.py) need none of them.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Dict, List, Optional

import pytest

from job_trace_reporter import JobTraceReporter

WAIT_SECONDS = 60.0


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        # Failing, not skipping: a run without the servers must not look like a pass.
        pytest.fail(
            f"{name} is not set: the end-to-end tests run from "
            "`cargo test -p job-trace-tests --test python_reporter`"
        )
    return value


class Api:
    """trace-api, read as a client of the status page would."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")

    def trace(self, message_id: str) -> Optional[Dict[str, Any]]:
        quoted = urllib.request.quote(message_id, safe="")
        url = f"{self.base}/api/v1/jobs/status/{quoted}?include=history"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def wait_for(
        self,
        message_id: str,
        check: Callable[[Dict[str, Any]], bool],
        what: str,
        seconds: float = WAIT_SECONDS,
    ) -> Dict[str, Any]:
        """Polls until the trace passes `check`; fails the test with the last trace."""
        deadline = time.monotonic() + seconds
        trace = None
        while time.monotonic() < deadline:
            trace = self.trace(message_id)
            if trace is not None and check(trace):
                return trace
            time.sleep(0.1)
        pytest.fail(f"job {message_id}: {what} not seen within {seconds} s; last trace: {trace}")

    def wait_status(self, message_id: str, status: str, attempt: int = 1) -> Dict[str, Any]:
        return self.wait_for(
            message_id,
            lambda t: t["status"] == status and t.get("attempt") == attempt,
            f"status {status} of attempt {attempt}",
        )


class Pulled:
    """Everything published to the events topic since the session began, read from an
    ordered pull subscription of its own, by ordering key."""

    def __init__(self, project: str, topic: str):
        from google.cloud import pubsub_v1

        self.subscriber = pubsub_v1.SubscriberClient()
        self.path = self.subscriber.subscription_path(
            project, f"reporter-tests-{uuid.uuid4().hex[:12]}"
        )
        self.subscriber.create_subscription(
            request={
                "name": self.path,
                "topic": f"projects/{project}/topics/{topic}",
                "enable_message_ordering": True,
                "ack_deadline_seconds": 60,
            }
        )
        self.by_key: Dict[str, List[Any]] = {}
        self.lock = threading.Lock()

    def _pull_once(self) -> None:
        from google.api_core import exceptions

        try:
            response = self.subscriber.pull(
                request={"subscription": self.path, "max_messages": 100}, timeout=5
            )
        except (exceptions.DeadlineExceeded, exceptions.RetryError):
            return
        if not response.received_messages:
            return
        for received in response.received_messages:
            message = received.message
            self.by_key.setdefault(message.ordering_key, []).append(message)
        self.subscriber.acknowledge(
            request={
                "subscription": self.path,
                "ack_ids": [r.ack_id for r in response.received_messages],
            }
        )

    def messages(self, key: str, count: int, seconds: float = WAIT_SECONDS) -> List[Any]:
        """The first `count` messages with ordering key `key`, in delivery order."""
        deadline = time.monotonic() + seconds
        with self.lock:
            while len(self.by_key.get(key, [])) < count and time.monotonic() < deadline:
                self._pull_once()
            got = self.by_key.get(key, [])
        if len(got) < count:
            pytest.fail(f"{len(got)} of {count} messages with key {key} pulled: {got}")
        return got[:count]

    def close(self) -> None:
        self.subscriber.delete_subscription(request={"subscription": self.path})
        self.subscriber.close()


@pytest.fixture(scope="session")
def project() -> str:
    _env("PUBSUB_EMULATOR_HOST")
    return _env("JOBTRACE_PROJECT")


@pytest.fixture(scope="session")
def events_topic() -> str:
    return _env("JOBTRACE_EVENTS_TOPIC")


@pytest.fixture(scope="session")
def api() -> Api:
    return Api(_env("JOBTRACE_API"))


@pytest.fixture(scope="session")
def pulled(project: str, events_topic: str):
    pulled = Pulled(project, events_topic)
    yield pulled
    pulled.close()


@pytest.fixture(scope="session")
def reporter(project: str, events_topic: str, pulled: Pulled):
    # `pulled` first: its subscription must exist before anything is published.
    reporter = JobTraceReporter(project, events_topic, timeout=30)
    yield reporter
    reporter.close()


@pytest.fixture(scope="session")
def publish_job(project: str):
    """Publishes a job message as the API does; returns its Pub/Sub id (the job's id)."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    topic = client.topic_path(project, _env("JOBTRACE_JOBS_TOPIC"))

    def publish(url: Optional[str] = None, line_user_id: str = "U0123456789abcdef") -> str:
        data: Dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "line_user_id": line_user_id,
            "check_only": url is None,
        }
        if url is not None:
            data["url"] = url
        return client.publish(topic, json.dumps(data).encode()).result(timeout=30)

    yield publish
    client.stop()


_counter = [0]


@pytest.fixture
def new_id() -> Callable[[], str]:
    """A job id no other test uses (for events without a job message)."""

    def make() -> str:
        _counter[0] += 1
        return f"py-{uuid.uuid4().hex[:10]}-{_counter[0]}"

    return make
