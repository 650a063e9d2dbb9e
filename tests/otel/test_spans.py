"""Spans: names, kinds, attributes, parents, links, the job span, and failure recording."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from queue_core import (
    DelayedError,
    EnqueueEvent,
    Hook,
    Job,
    JobSpec,
    Queue,
    SerializationError,
    Worker,
)
from queue_otel.propagation import JOB_HEADER, decode_span_context
from tests.conftest import wait_counts, wait_for
from tests.otel.conftest import Telemetry

SECRET = "s3cr3t-payload-value"  # noqa: S105 - a marker that must never reach telemetry


def exact_ns(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def ids(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def link_ids(span: ReadableSpan) -> set[int]:
    return {link.context.span_id for link in span.links}


def assert_no_secret(spans: list[ReadableSpan]) -> None:
    for span in spans:
        for value in (span.attributes or {}).values():
            assert SECRET not in str(value), (span.name, span.attributes)


async def run_until(
    queue: Queue, make_worker: Callable[..., Worker], processor: Any, **counts: int
) -> None:
    async with make_worker(processor):
        await wait_counts(queue, **counts)


async def test_send_span_and_headers(telemetry: Telemetry, queue: Queue) -> None:
    app = telemetry.tracer_provider.get_tracer("app")
    with app.start_as_current_span("POST /users") as request:
        job = await queue.add("welcome", {"token": SECRET})
    (send,) = telemetry.spans(f"send {queue.name}")
    assert send.kind is SpanKind.PRODUCER
    assert parent_id(send) == request.get_span_context().span_id
    assert send.context.trace_id == request.get_span_context().trace_id
    attributes = dict(send.attributes or {})
    assert attributes == {
        "messaging.system": "queue_core",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": queue.name,
        "messaging.message.id": job.id,
        "queue_core.job.name": "welcome",
        "server.address": "127.0.0.1",
        "server.port": queue.server_port,
    }
    assert send.status.status_code is StatusCode.UNSET
    stored = await queue.get_job(job.id)
    assert stored is not None
    assert (
        stored.headers["traceparent"]
        == f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-"
        f"{int(send.context.trace_flags):02x}"
    )
    job_context = decode_span_context(stored.headers[JOB_HEADER])
    assert job_context is not None
    assert job_context.trace_id == send.context.trace_id  # parent mode: the same trace
    assert job_context.trace_flags.sampled
    assert stored.data == {"token": SECRET}  # headers never mix into data
    assert_no_secret(telemetry.spans())


async def test_bulk_enqueue_creates_one_span_per_job(telemetry: Telemetry, queue: Queue) -> None:
    app = telemetry.tracer_provider.get_tracer("app")
    with app.start_as_current_span("import") as ambient:
        jobs = await queue.add_bulk([JobSpec("row", i) for i in range(3)])
    creates = telemetry.spans(f"create {queue.name}")
    (send,) = telemetry.spans(f"send {queue.name}")
    assert [c.kind for c in creates] == [SpanKind.PRODUCER] * 3
    assert {parent_id(c) for c in creates} == {ambient.get_span_context().span_id}
    assert [c.attributes["messaging.message.id"] for c in creates] == [j.id for j in jobs]
    assert send.kind is SpanKind.CLIENT  # the create spans are the creation contexts
    assert send.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in (send.attributes or {})
    assert link_ids(send) == {c.context.span_id for c in creates}
    for create, job in zip(creates, jobs, strict=True):
        assert job.headers["traceparent"].split("-")[2] == f"{create.context.span_id:016x}"


async def test_failed_enqueue_is_an_error_span(telemetry: Telemetry, queue: Queue) -> None:
    with pytest.raises(SerializationError):
        await queue.add("x", {1, 2})
    (send,) = telemetry.spans(f"send {queue.name}")
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == "SerializationError"
    assert [e.name for e in send.events] == ["exception"]


async def test_duplicate_enqueue_is_marked(telemetry: Telemetry, queue: Queue) -> None:
    await queue.add("x", 1, job_id="same")
    await queue.add("x", 2, job_id="same")
    first, second = telemetry.spans(f"send {queue.name}")
    assert "queue_core.job.duplicate" not in (first.attributes or {})
    assert second.attributes["queue_core.job.duplicate"] is True
    assert second.attributes["messaging.message.id"] == "same"


async def test_trace_from_request_to_outcome_with_retries(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def flaky(job: Job) -> str:
        if job.attempts_started < 3:
            raise ConnectionResetError(f"attempt {job.attempts_started}")
        return SECRET

    app = telemetry.tracer_provider.get_tracer("app")
    with app.start_as_current_span("POST /users") as request:
        job = await queue.add("webhook", {"url": SECRET}, attempts=3)
    async with make_worker(flaky) as worker:
        await wait_counts(queue, completed=1)
        worker_id = worker.id
    await wait_for(lambda: len(telemetry.spans(f"job {queue.name}")) == 1)
    (send,) = telemetry.spans(f"send {queue.name}")
    (job_span,) = telemetry.spans(f"job {queue.name}")
    attempts = telemetry.spans(f"process {queue.name}")
    done = await queue.get_job(job.id)
    assert done is not None

    # One trace: request -> send -> job -> every attempt.
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in [send, job_span, *attempts]} == {trace_id}
    assert parent_id(job_span) == send.context.span_id
    assert [parent_id(a) for a in attempts] == [job_span.context.span_id] * 3
    assert all(link_ids(a) == {send.context.span_id} for a in attempts)
    assert link_ids(job_span) == {send.context.span_id}

    # The job span runs from the enqueue (Redis's clock, ms) to the final outcome.
    assert job_span.start_time == exact_ns(done.enqueued_at)
    assert done.finished_at is not None
    assert job_span.end_time >= exact_ns(done.finished_at)
    assert job_span.end_time >= max(a.end_time or 0 for a in attempts)  # parent outlives all
    assert job_span.kind is SpanKind.INTERNAL
    assert job_span.attributes["queue_core.job.outcome"] == "completed"
    assert job_span.status.status_code is StatusCode.UNSET

    assert [a.attributes["queue_core.job.attempt"] for a in attempts] == [1, 2, 3]
    assert [a.attributes["queue_core.job.outcome"] for a in attempts] == [
        "retry",
        "retry",
        "completed",
    ]
    for failed in attempts[:2]:
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.attributes["error.type"] == "ConnectionResetError"
        (event,) = failed.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "ConnectionResetError"
    assert attempts[2].status.status_code is StatusCode.UNSET
    assert "error.type" not in (attempts[2].attributes or {})
    first = dict(attempts[0].attributes or {})
    assert first["messaging.operation.type"] == "process"
    assert first["messaging.message.id"] == job.id
    assert first["messaging.client.id"] == worker_id
    assert first["queue_core.job.max_attempts"] == 3
    assert 0 <= first["queue_core.job.wait_time"] < 5
    assert "queue_core.job.wait_time" not in (attempts[1].attributes or {})
    assert all(a.kind is SpanKind.CONSUMER for a in attempts)
    assert_no_secret(telemetry.spans())


async def test_final_failure_marks_the_job_span(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def broken(job: Job) -> None:
        raise KeyError("missing")

    await queue.add("x", attempts=2)
    await run_until(queue, make_worker, broken, failed=1)
    await wait_for(lambda: len(telemetry.spans(f"job {queue.name}")) == 1)
    (job_span,) = telemetry.spans(f"job {queue.name}")
    assert job_span.status.status_code is StatusCode.ERROR
    assert job_span.attributes["error.type"] == "KeyError"
    assert job_span.attributes["queue_core.job.outcome"] == "failed"
    outcomes = [
        a.attributes["queue_core.job.outcome"] for a in telemetry.spans(f"process {queue.name}")
    ]
    assert outcomes == ["retry", "failed"]


async def test_delay_is_not_an_error(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def step(job: Job) -> None:
        if job.attempts_started == 1:
            raise DelayedError(0.05)

    await queue.add("step")
    await run_until(queue, make_worker, step, completed=1)
    await wait_for(lambda: len(telemetry.spans(f"process {queue.name}")) == 2)
    delayed, done = telemetry.spans(f"process {queue.name}")
    assert delayed.attributes["queue_core.job.outcome"] == "delayed"
    assert delayed.attributes["queue_core.job.delay"] == 0.05
    assert delayed.status.status_code is StatusCode.UNSET
    assert "error.type" not in (delayed.attributes or {})
    assert done.attributes["queue_core.job.outcome"] == "completed"


async def test_link_mode_gives_each_job_its_own_trace(
    instrument: Callable[..., Telemetry], queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    telemetry = instrument(trace_mode="link")
    app = telemetry.tracer_provider.get_tracer("app")
    with app.start_as_current_span("POST /users") as request:
        await queue.add("welcome")
    await run_until(queue, make_worker, lambda job: None, completed=1)
    await wait_for(lambda: len(telemetry.spans(f"job {queue.name}")) == 1)
    (send,) = telemetry.spans(f"send {queue.name}")
    (job_span,) = telemetry.spans(f"job {queue.name}")
    (attempt,) = telemetry.spans(f"process {queue.name}")
    assert send.context.trace_id == request.get_span_context().trace_id
    assert job_span.context.trace_id != send.context.trace_id
    assert job_span.parent is None
    assert link_ids(job_span) == {send.context.span_id}
    assert attempt.context.trace_id == job_span.context.trace_id
    assert parent_id(attempt) == job_span.context.span_id
    assert link_ids(attempt) == {send.context.span_id}


async def test_a_long_delay_starts_a_new_trace(
    instrument: Callable[..., Telemetry], queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    telemetry = instrument(new_trace_after=0.2)
    await queue.add("soon")
    await queue.add("later", delay=0.3)
    await run_until(queue, make_worker, lambda job: None, completed=2)
    await wait_for(lambda: len(telemetry.spans(f"job {queue.name}")) == 2)
    sends = telemetry.spans(f"send {queue.name}")
    jobs = {s.attributes["queue_core.job.name"]: s for s in telemetry.spans(f"job {queue.name}")}
    assert jobs["soon"].context.trace_id == sends[0].context.trace_id
    assert jobs["later"].context.trace_id != sends[1].context.trace_id
    assert link_ids(jobs["later"]) == {sends[1].context.span_id}


async def test_an_attempt_long_after_the_enqueue_starts_a_new_trace(
    instrument: Callable[..., Telemetry], queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    telemetry = instrument(new_trace_after=0.2)

    async def step(job: Job) -> None:
        if job.attempts_started == 1:
            raise DelayedError(0.3)

    await queue.add("step")
    await run_until(queue, make_worker, step, completed=1)
    await wait_for(lambda: len(telemetry.spans(f"job {queue.name}")) == 1)
    (job_span,) = telemetry.spans(f"job {queue.name}")
    (send,) = telemetry.spans(f"send {queue.name}")
    first, later = telemetry.spans(f"process {queue.name}")
    assert parent_id(first) == job_span.context.span_id
    assert later.parent is None
    assert later.context.trace_id != job_span.context.trace_id
    assert link_ids(later) == {send.context.span_id, job_span.context.span_id}


async def test_job_from_an_uninstrumented_producer(
    telemetry: Telemetry, redis_url: str, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    telemetry.instrumentor.uninstrument()
    await queue.add("plain")  # no headers at all
    telemetry.instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    await run_until(queue, make_worker, lambda job: None, completed=1)
    await wait_for(lambda: len(telemetry.spans(f"process {queue.name}")) == 1)
    (attempt,) = telemetry.spans(f"process {queue.name}")
    assert attempt.parent is None and attempt.links == ()
    assert attempt.attributes["messaging.system"] == "queue_core"
    assert telemetry.spans(f"job {queue.name}") == []  # nothing to anchor it to
    assert telemetry.spans(f"send {queue.name}") == []


async def test_job_from_an_instrumented_producer_on_an_uninstrumented_worker(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("traced", {"n": 1})
    telemetry.instrumentor.uninstrument()
    seen: list[Any] = []
    await run_until(queue, make_worker, lambda j: seen.append(j.data), completed=1)
    assert seen == [{"n": 1}]  # headers are ignored; data is untouched
    assert telemetry.spans(f"process {queue.name}") == []
    assert job.headers  # the producer did write trace context


class Garbage(Hook):
    """Overwrites the trace headers after the instrumentation wrote them."""

    def __init__(self, headers: dict[str, Any]) -> None:
        self.headers = headers

    @contextmanager
    def around_enqueue(self, event: EnqueueEvent) -> Iterator[None]:
        for job in event.jobs:
            job.headers.update(self.headers)
        yield


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-zzzz-not-a-trace", JOB_HEADER: "nonsense"},
        {
            "traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
            JOB_HEADER: "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
        },
        {
            "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + "x" * 9000,
            JOB_HEADER: "00-" + "c" * 32 + "-" + "d" * 16 + "-01" + "x" * 9000,
            "tracestate": "k=" + "v" * 20000,
        },
    ],
)
async def test_malformed_or_oversized_headers_are_ignored(
    telemetry: Telemetry,
    queue_name: str,
    redis_url: str,
    make_worker: Callable[..., Worker],
    headers: dict[str, Any],
) -> None:
    async with Queue(queue_name, redis=redis_url, hooks=[Garbage(headers)]) as queue:
        await queue.add("x")
        await run_until(queue, make_worker, lambda job: "fine", completed=1)
    await wait_for(lambda: len(telemetry.spans(f"process {queue_name}")) == 1)
    (attempt,) = telemetry.spans(f"process {queue_name}")
    assert attempt.parent is None
    assert attempt.links == ()
    assert telemetry.spans(f"job {queue_name}") == []


async def test_user_spans_nest_under_the_attempt(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def process(job: Job) -> None:
        with tracer.start_as_current_span("render template"):
            await asyncio.sleep(0)

    def blocking(job: Job) -> None:
        with tracer.start_as_current_span("resize image"):
            pass

    await queue.add("async")
    await queue.add("sync")
    await run_until(queue, make_worker, {"async": process, "sync": blocking}, completed=2)
    await wait_for(lambda: len(telemetry.spans(f"process {queue.name}")) == 2)
    attempts = {a.context.span_id for a in telemetry.spans(f"process {queue.name}")}
    for name in ("render template", "resize image"):  # a thread keeps the context too
        (user,) = telemetry.spans(name)
        assert parent_id(user) in attempts


async def test_a_broken_tracer_never_breaks_a_job(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    class Exploding(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            raise RuntimeError("exporter bug")

    telemetry.tracer_provider.add_span_processor(Exploding())
    job = await queue.add("x", {"n": 2})
    await run_until(queue, make_worker, lambda j: j.data["n"] * 2, completed=1)
    done = await queue.get_job(job.id)
    assert done is not None and done.return_value == 4


async def test_stalled_failure_records_the_job_span(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()

    async def hang(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    await queue.add("poison")
    first = make_worker(hang, lock_duration=0.2)
    async with first:
        await started.wait()
        await first.close(force=True)
    async with make_worker(hang, stalled_interval=0.05, max_stalled_count=0):
        await wait_counts(queue, failed=1)
    await wait_for(lambda: len(telemetry.spans(f"job {queue.name}")) == 1)
    (job_span,) = telemetry.spans(f"job {queue.name}")
    assert job_span.attributes["error.type"] == "StalledJobError"
    assert job_span.status.status_code is StatusCode.ERROR
    (attempt,) = telemetry.spans(f"process {queue.name}")
    assert attempt.attributes["queue_core.job.outcome"] == "interrupted"


async def test_a_job_quarantined_at_its_settle_ends_its_spans_as_failed(
    telemetry: Telemetry,
    queue: Queue,
    raw: redis.asyncio.Redis,
    make_worker: Callable[..., Worker],
) -> None:
    """Its record goes bad while it runs: the settle quarantines it, and both the attempt
    and the job span end as failed with CorruptJobError (none is left open)."""
    corrupted = asyncio.Event()
    job = await queue.add("x", 1)

    async def victim(running: Job) -> None:
        await raw.hset(queue.keys["state"], running.id, b"garbage")
        corrupted.set()

    await run_until(queue, make_worker, victim, failed=1)
    assert corrupted.is_set()
    await wait_for(lambda: len(telemetry.spans(f"job {queue.name}")) == 1)
    (job_span,) = telemetry.spans(f"job {queue.name}")
    (attempt,) = telemetry.spans(f"process {queue.name}")
    for span in (job_span, attempt):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "CorruptJobError"
        assert span.attributes["queue_core.job.outcome"] == "failed"
    assert attempt.attributes["messaging.message.id"] == job.id
