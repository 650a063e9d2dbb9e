"""One trace from an HTTP request to a job's outcome, across real processes.

A FastAPI app (``tests/e2e/app_api.py``, served by uvicorn, instrumented with FastAPI's
instrumentation and queue_otel, exporting over OTLP/HTTP) enqueues a job when
``POST /users`` is called over HTTP. A worker process (``tests/e2e/app_worker.py``,
exporting over OTLP/gRPC) runs it: the first attempt fails, the retry succeeds. Both send
traces, metrics and logs to the OTLP receiver this module starts; both are stopped with
SIGTERM, which flushes their telemetry. The scenario runs once; each test below checks
one aspect of what the receiver got.
"""

from __future__ import annotations

import json
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx
import pytest

from queue_core import SyncQueue
from tests.e2e.app_worker import JOB_LOG_LINE
from tests.e2e.otlp_receiver import DataPoint, OtlpReceiver, ReceivedLog, ReceivedSpan, latest
from tests.e2e.support import Process, clean_env, port_open, wait_until
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")

API = "e2e-api"
WORKER = "e2e-worker"
MS = 1_000_000  # nanoseconds


@dataclass(frozen=True)
class Scenario:
    queue: str
    email: str  # the job's data: must never become an attribute
    job_id: str
    enqueued_at: datetime
    finished_at: datetime
    receiver: OtlpReceiver

    def spans(self) -> list[ReceivedSpan]:
        return self.receiver.spans()

    def logs(self) -> list[ReceivedLog]:
        return self.receiver.logs()

    def points(self, metric: str, service: str) -> list[DataPoint]:
        return [
            p
            for p in self.receiver.metric_points(metric)
            if p.resource.get("service.name") == service
            and p.attributes.get("messaging.destination.name") == self.queue
        ]


@pytest.fixture(scope="module")
def scenario(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    workdir = tmp_path_factory.mktemp("e2e")
    queue = f"q-{uuid.uuid4().hex[:12]}"
    with OtlpReceiver() as receiver:
        env = clean_env(
            E2E_QUEUE=queue,
            REDIS_URL=redis_server.url,
            E2E_OTLP_GRPC_ENDPOINT=receiver.grpc_endpoint,
            E2E_OTLP_HTTP_ENDPOINT=receiver.http_endpoint,
        )
        port = free_port()
        worker = Process([sys.executable, "-m", "tests.e2e.app_worker"], env, workdir, "worker")
        api = Process(
            [sys.executable, "-m", "uvicorn", "tests.e2e.app_api:app", "--host", "127.0.0.1",
             "--port", str(port), "--lifespan", "on", "--no-access-log"],
            env, workdir, "api",
        )  # fmt: skip
        try:
            worker.wait_for_output('"event": "worker_started"')
            api.wait_for_output("Application startup complete")
            wait_until(lambda: port_open(port), timeout=10, what="the API's port")

            email = f"ada-{uuid.uuid4().hex[:10]}@example.com"
            response = httpx.post(
                f"http://127.0.0.1:{port}/users", json={"email": email}, timeout=10
            )
            assert response.status_code == 202, response.text
            reply = response.json()

            def alive() -> None:
                api.check_alive()
                worker.check_alive()

            # The job span is recorded when the job reaches its final outcome.
            receiver.wait_for(
                lambda: receiver.spans_named(f"job {queue}"),
                timeout=20,
                what="the job span",
                check=alive,
            )
            # uvicorn shuts down gracefully (the lifespan flushes the providers), then
            # re-raises SIGTERM, so its exit status is -SIGTERM.
            assert api.terminate() in (0, -signal.SIGTERM), api.describe()
            assert "Application shutdown complete" in api.stderr(), api.describe()
            assert worker.terminate() == 0, worker.describe()
            # queue_core logs a hook's exception and carries on: none may have happened.
            for process in (api, worker):
                assert "hook failed" not in process.stderr(), process.describe()
        finally:
            api.kill()
            worker.kill()

        with SyncQueue(queue, redis=redis_server.url) as sync_queue:
            job = sync_queue.get_job(reply["job_id"])
        assert job is not None
        assert job.state == "completed", job
        assert job.finished_at is not None
        yield Scenario(
            queue=queue,
            email=email,
            job_id=reply["job_id"],
            enqueued_at=datetime.fromisoformat(reply["enqueued_at"]),
            finished_at=job.finished_at,
            receiver=receiver,
        )


def one(items: Iterable[T], what: str) -> T:
    found = list(items)
    assert len(found) == 1, f"expected one {what}, got {len(found)}: {found}"
    return found[0]


@dataclass(frozen=True)
class Tree:
    server: ReceivedSpan
    send: ReceivedSpan
    job: ReceivedSpan
    attempts: list[ReceivedSpan]  # the process spans, by attempt


def tree(scenario: Scenario) -> Tree:
    spans = scenario.spans()
    queue = scenario.queue
    server = one(
        (s for s in spans if s.kind == "SERVER" and s.name == "POST /users"), "SERVER span"
    )
    send = one((s for s in spans if s.name == f"send {queue}"), "send span")
    job = one((s for s in spans if s.name == f"job {queue}"), "job span")
    attempts = sorted(
        (s for s in spans if s.name == f"process {queue}"),
        key=lambda s: int(s.attributes["queue_core.job.attempt"]),
    )
    assert len(attempts) == 2, attempts
    return Tree(server, send, job, attempts)


# ------------------------------------------------------------------------ traces


def test_one_trace_from_the_http_request_to_the_job_outcome(scenario: Scenario) -> None:
    t = tree(scenario)
    trace_id = t.server.trace_id
    assert trace_id is not None

    # FastAPI: the SERVER span is the root; its ASGI receive/send spans are its children.
    assert t.server.parent_span_id is None
    assert t.server.resource["service.name"] == API
    assert t.server.scope == "opentelemetry.instrumentation.fastapi"

    # The enqueue happens in the route handler, so the send span is the SERVER span's
    # direct child (not a child of the ASGI "http receive"/"http send" spans).
    assert (t.send.kind, t.send.scope) == ("PRODUCER", "queue_otel")
    assert t.send.resource["service.name"] == API
    assert t.send.parent_span_id == t.server.span_id

    assert (t.job.kind, t.job.scope) == ("INTERNAL", "queue_otel.jobs")
    assert t.job.resource["service.name"] == WORKER
    assert t.job.parent_span_id == t.send.span_id

    for span in t.attempts:
        assert span.kind == "CONSUMER"
        assert span.resource["service.name"] == WORKER
        assert span.parent_span_id == t.job.span_id
        # Every attempt links to the producer's context, as the conventions ask.
        assert [(link.trace_id, link.span_id) for link in span.links] == [
            (trace_id, t.send.span_id)
        ]

    first, second = t.attempts
    assert first.status_code == "ERROR"
    assert first.attributes["error.type"] == "MailServerDownError"
    assert "exception" in first.events
    assert second.status_code == "UNSET"
    assert "error.type" not in second.attributes

    # One trace: every span of the request and the job shares its id, and the queue's
    # spans are exactly send, job and the two attempts.
    everything = [t.server, t.send, t.job, *t.attempts]
    assert {s.trace_id for s in everything} == {trace_id}
    queue_spans = [s for s in scenario.spans() if s.scope.startswith("queue_otel")]
    assert {s.span_id for s in queue_spans} == {s.span_id for s in everything[1:]}
    in_trace = [s for s in scenario.spans() if s.trace_id == trace_id]
    fastapi_children = [s for s in in_trace if s.scope == t.server.scope and s is not t.server]
    assert fastapi_children, "expected FastAPI's ASGI receive/send spans"
    assert all(s.parent_span_id == t.server.span_id for s in fastapi_children)


def test_span_attributes_follow_the_messaging_conventions(scenario: Scenario) -> None:
    t = tree(scenario)
    common = {
        "messaging.system": "queue_core",
        "messaging.destination.name": scenario.queue,
        "messaging.message.id": scenario.job_id,
        "queue_core.job.name": "welcome",
    }
    assert t.send.attributes | common == t.send.attributes
    assert t.send.attributes["messaging.operation.name"] == "send"
    assert t.send.attributes["messaging.operation.type"] == "send"

    assert t.job.attributes | common == t.job.attributes
    assert t.job.attributes["queue_core.job.outcome"] == "completed"
    assert t.job.attributes["queue_core.job.attempt"] == 2
    assert t.job.attributes["queue_core.job.max_attempts"] == 2
    assert [(link.trace_id, link.span_id) for link in t.job.links] == [
        (t.send.trace_id, t.send.span_id)
    ]

    for attempt, span in enumerate(t.attempts, start=1):
        assert span.attributes | common == span.attributes
        assert span.attributes["messaging.operation.name"] == "process"
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["queue_core.job.attempt"] == attempt
        assert span.attributes["queue_core.job.max_attempts"] == 2
        assert span.attributes["messaging.client.id"]
    assert t.attempts[0].attributes["queue_core.job.outcome"] == "retry"
    assert t.attempts[1].attributes["queue_core.job.outcome"] == "completed"


def test_no_attribute_carries_the_job_data(scenario: Scenario) -> None:
    secret = scenario.email.split("@")[0]

    def leaks(attributes: dict[str, Any]) -> list[str]:
        return [key for key, value in attributes.items() if secret in str(value)]

    for span in scenario.spans():
        assert not leaks(span.attributes), (span.name, span.attributes)
        assert secret not in span.status_message
        for link in span.links:
            assert not leaks(link.attributes)
    for record in scenario.logs():
        assert not leaks(record.attributes), record
        assert secret not in str(record.body)
    for name in scenario.receiver.metric_names():
        for point in scenario.receiver.metric_points(name):
            assert not leaks(point.attributes), (name, point.attributes)


def test_the_job_span_runs_from_the_enqueue_to_the_final_outcome(scenario: Scenario) -> None:
    t = tree(scenario)
    enqueued_ns = round(scenario.enqueued_at.timestamp() * 1_000_000) * 1000
    finished_ns = round(scenario.finished_at.timestamp() * 1_000_000) * 1000
    # Redis stamps jobs in milliseconds; the tolerance covers that and float rounding.
    assert abs(t.job.start_ns - enqueued_ns) <= MS
    assert t.send.start_ns - MS <= t.job.start_ns <= t.send.end_ns + MS
    # It ends once the outcome is recorded (Redis's finish time, or when the worker saw it).
    assert t.job.end_ns >= finished_ns - MS
    first, second = t.attempts
    assert t.job.start_ns <= first.start_ns < first.end_ns <= second.start_ns
    assert t.job.end_ns >= second.start_ns
    # A parent span encloses its children: the job span ends after its last attempt.
    assert t.job.end_ns >= second.end_ns, (
        f"the job span ends {(second.end_ns - t.job.end_ns) / MS:.3f} ms before "
        "the span of its last attempt"
    )


# ------------------------------------------------------------------------ metrics


def test_metrics_arrive_with_exemplars_of_the_trace(scenario: Scenario) -> None:
    t = tree(scenario)
    durations = latest(scenario.points("messaging.process.duration", WORKER))
    assert {p.type for p in durations} == {"histogram"}
    by_error = Counter({p.attributes.get("error.type"): p.count or 0 for p in durations})
    assert by_error == Counter({"MailServerDownError": 1, None: 1})
    assert sum(by_error.values()) == 2

    sent = latest(scenario.points("messaging.client.sent.messages", API))
    assert [(p.value, p.attributes["queue_core.job.name"]) for p in sent] == [(1, "welcome")]

    # Two deliveries (the first attempt and its retry), counted at the fetch, no outcome.
    consumed = latest(scenario.points("messaging.client.consumed.messages", WORKER))
    assert [p.value for p in consumed] == [2]
    assert not {"queue_core.job.outcome", "error.type"} & consumed[0].attributes.keys()
    by_outcome = {p.attributes["queue_core.job.outcome"]: p for p in durations}
    assert {outcome: p.count for outcome, p in by_outcome.items()} == {
        "retry": 1,
        "completed": 1,
    }
    assert by_outcome["retry"].attributes["error.type"] == "MailServerDownError"
    assert "error.type" not in by_outcome["completed"].attributes

    # OTLP exemplars carry the trace: each attempt's duration points back to its span.
    exemplars = [
        e
        for p in scenario.points("messaging.process.duration", WORKER)
        for e in p.exemplars
        if e.trace_id is not None
    ]
    assert {e.trace_id for e in exemplars} == {t.server.trace_id}
    assert {e.span_id for e in exemplars} == {s.span_id for s in t.attempts}


# ------------------------------------------------------------------------ logs


def test_logs_carry_the_trace_once_per_attempt(scenario: Scenario) -> None:
    t = tree(scenario)
    logs = scenario.logs()

    lines = sorted(
        (r for r in logs if r.body == JOB_LOG_LINE), key=lambda r: int(r.attributes["attempt"])
    )
    assert [r.attributes["attempt"] for r in lines] == [1, 2], lines  # once per attempt
    for record, span in zip(lines, t.attempts, strict=True):
        assert record.resource["service.name"] == WORKER
        assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)
        assert record.attributes["job_id"] == scenario.job_id
        assert record.attributes["queue"] == scenario.queue
        assert record.attributes["job_name"] == "welcome"
        # add_trace_context puts the ids in the line too (for Loki's derived fields).
        assert record.attributes["trace_id"] == span.trace_id
        assert record.attributes["span_id"] == span.span_id

    signup = one((r for r in logs if r.body == "user_signup_accepted"), "signup log line")
    assert signup.resource["service.name"] == API
    assert (signup.trace_id, signup.span_id) == (t.server.trace_id, t.server.span_id)

    # No line is exported twice, whichever process logged it.
    keys = Counter(
        (
            r.resource.get("service.name"),
            str(r.body),
            r.trace_id,
            r.span_id,
            json.dumps(r.attributes, sort_keys=True, default=str),
        )
        for r in logs
    )
    assert [key for key, n in keys.items() if n > 1] == []
