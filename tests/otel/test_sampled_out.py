"""A trace that is not sampled costs its spans almost nothing: nothing is built for a span
that will not be recorded (its attributes, links), while the trace context still travels
with the job and the metrics still count every job. Counted through the builders (the
test hook), not timed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

from queue_core import Job, Queue, Worker
from queue_otel import sampled_out, tracing
from queue_otel import semconv as sc
from queue_otel.finished_spans import child_context
from queue_otel.propagation import JOB_HEADER, decode_span_context, extract_span_context
from queue_otel.sampled_out import DroppedSpan, sampled_out_header
from tests.conftest import wait_counts
from tests.otel.conftest import Telemetry

# The parent-based ratio sampler users run in production, at a ratio where no trace is
# sampled, so that counts are exact.
NOT_SAMPLED = ParentBased(TraceIdRatioBased(0.0))
BUILDERS = ("_process_attributes", "_process_links", "_job_attributes", "_job_links")
JOBS = 12


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each per-span builder ran, and how many links queue_otel made."""
    counts: Counter[str] = Counter()
    for name in BUILDERS:
        original = getattr(tracing.TracingHook, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            counts[_name] += 1
            return _original(*args)

        monkeypatch.setattr(tracing.TracingHook, name, counted)
    link = tracing.Link

    def counted_link(*args: Any, **kwargs: Any) -> Any:
        counts["Link"] += 1
        return link(*args, **kwargs)

    monkeypatch.setattr(tracing, "Link", counted_link)
    return counts


async def run_jobs(queue: Queue, make_worker: Callable[..., Worker]) -> list[Job]:
    seen: list[Job] = []
    failed_once: set[str] = set()

    async def work(job: Job) -> None:
        seen.append(job)
        if job.data == 0 and job.id not in failed_once:  # one retry: a second attempt
            failed_once.add(job.id)
            raise RuntimeError("once")

    for i in range(JOBS):
        await queue.add("sampled", i, attempts=2, backoff=0)
    async with make_worker(work):
        await wait_counts(queue, completed=JOBS)
    return seen


async def test_spans_of_a_trace_not_sampled_build_nothing(
    instrument: Callable[..., Telemetry],
    builds: Counter[str],
    queue: Queue,
    make_worker: Callable[..., Worker],
) -> None:
    telemetry = instrument(sampler=NOT_SAMPLED)
    seen = await run_jobs(queue, make_worker)
    assert telemetry.spans() == []
    assert builds == Counter()
    # The context still travels (log correlation, downstream services), marked unsampled.
    traceparent = seen[0].headers["traceparent"]
    version, trace_id, _, flags = traceparent.split("-")
    assert version == "00" and int(trace_id, 16) != 0
    assert int(flags, 16) & 1 == 0  # the sampled bit unset
    # And every job is still measured.
    assert telemetry.total(sc.PROCESS_DURATION) == JOBS + 1
    assert telemetry.total(sc.JOB_DURATION) == JOBS


async def test_spans_of_a_sampled_trace_are_built_once_each(
    instrument: Callable[..., Telemetry],
    builds: Counter[str],
    queue: Queue,
    make_worker: Callable[..., Worker],
) -> None:
    telemetry = instrument(sampler=ALWAYS_ON)  # the control: the same workload, every trace sampled
    await run_jobs(queue, make_worker)
    attempts, jobs = JOBS + 1, JOBS
    assert builds["_process_attributes"] == builds["_process_links"] == attempts
    assert builds["_job_attributes"] == builds["_job_links"] == jobs
    assert builds["Link"] == attempts + jobs  # each links to its producer
    assert len(telemetry.spans("process " + queue.name)) == attempts
    assert len(telemetry.spans("job " + queue.name)) == jobs


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many span contexts were decoded from headers: eagerly, at an attempt's start
    (tracing), or lazily, when a sampled-out attempt's span was first read."""
    counts: Counter[str] = Counter()
    for module, name in (
        (tracing, "decode_span_context"),
        (tracing, "extract_span_context"),
        (sampled_out, "decode_span_context"),
    ):
        original = getattr(module, name)

        def counted(*args: Any, _key: str = f"{module.__name__}.{name}", _f: Any = original) -> Any:
            counts[_key] += 1
            return _f(*args)

        monkeypatch.setattr(module, name, counted)
    return counts


async def test_a_sampled_out_attempt_decodes_no_span_context(
    instrument: Callable[..., Telemetry],
    decodes: Counter[str],
    queue: Queue,
    make_worker: Callable[..., Worker],
) -> None:
    telemetry = instrument(sampler=NOT_SAMPLED)
    await run_jobs(queue, make_worker)  # a retried attempt among them
    # The headers' text told it, and metrics asked nothing: the one context built is the
    # failed attempt's, for its warning line's trace_id (log correlation holds).
    assert decodes == Counter({f"{sampled_out.__name__}.decode_span_context": 1})
    assert telemetry.total(sc.PROCESS_DURATION) == JOBS + 1
    assert telemetry.total(sc.JOB_DURATION) == JOBS


async def test_a_sampled_out_attempts_span_is_the_sdks_dropped_span_once_read(
    instrument: Callable[..., Telemetry],
    decodes: Counter[str],
    queue: Queue,
    make_worker: Callable[..., Worker],
) -> None:
    telemetry = instrument(sampler=NOT_SAMPLED)
    seen: list[tuple[Job, Any, Any, Any]] = []

    async def work(job: Job) -> None:
        span = trace.get_current_span()
        first, again = span.get_span_context(), span.get_span_context()
        with telemetry.tracer_provider.get_tracer("job code").start_as_current_span("child"):
            child = trace.get_current_span().get_span_context()
        seen.append((job, first, again, child))

    await queue.add("read", 1)
    async with make_worker(work):
        await wait_counts(queue, completed=1)
    job, first, again, child = seen[0]
    assert first is again  # built once
    job_span = decode_span_context(job.headers[JOB_HEADER])
    assert job_span is not None
    # What Tracers.dropped (the SDK's dropped span) gives: the job span's trace, a span id
    # of its own, not sampled, local.
    assert first.trace_id == job_span.trace_id
    assert first.span_id not in (0, job_span.span_id)
    assert not first.trace_flags.sampled and not first.is_remote
    assert first.trace_state == job_span.trace_state
    # Job code's own spans are its children, dropped as well.
    assert child.trace_id == first.trace_id and not child.trace_flags.sampled
    assert decodes == Counter({f"{sampled_out.__name__}.decode_span_context": 1})
    assert telemetry.spans() == []


def _traceparent(trace_id: str, span_id: str, flags: str) -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


TRACE, OTHER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
SPAN, JOB_SPAN = "00f067aa0ba902b7", "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("headers", "known"),
    [
        ({"traceparent": _traceparent(TRACE, SPAN, "00"),
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "00")}, True),
        # Other flags count only by their sampled bit (W3C level 2's random-id flag: 02).
        ({"traceparent": _traceparent(TRACE, SPAN, "02"),
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "fe")}, True),
        ({"traceparent": _traceparent(TRACE, SPAN, "03"),
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "02")}, False),
        ({"traceparent": _traceparent(TRACE, SPAN, "02"),
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "0b")}, False),
        ({"traceparent": _traceparent(TRACE, SPAN, "02"),
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "0E")}, False),
        # Anything else is decoded as before: a sampled producer or job span...
        ({"traceparent": _traceparent(TRACE, SPAN, "01"),
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "00")}, False),
        ({"traceparent": _traceparent(TRACE, SPAN, "00"),
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "01")}, False),
        # ... a job span in a trace of its own (link mode, long delays)...
        ({"traceparent": _traceparent(TRACE, SPAN, "00"),
          JOB_HEADER: _traceparent(OTHER_TRACE, JOB_SPAN, "00")}, False),
        # ... trace state (the propagator reads it), a header missing or not text...
        ({"traceparent": _traceparent(TRACE, SPAN, "00"), "tracestate": "a=b",
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "00")}, False),
        ({JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "00")}, False),
        ({"traceparent": 7, JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "00")}, False),
        # ... values the W3C reader refuses: zero ids, upper case, another version.
        ({"traceparent": _traceparent(TRACE, "0" * 16, "00"),
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "00")}, False),
        ({"traceparent": _traceparent(TRACE.upper(), SPAN, "00"),
          JOB_HEADER: _traceparent(TRACE.upper(), JOB_SPAN, "00")}, False),
        ({"traceparent": "01" + _traceparent(TRACE, SPAN, "00")[2:],
          JOB_HEADER: _traceparent(TRACE, JOB_SPAN, "00")}, False),
    ],
)  # fmt: skip
def test_only_a_plain_unsampled_trace_is_told_from_the_text(
    headers: dict[str, Any], known: bool
) -> None:
    assert (sampled_out_header(headers) is not None) is known
    if known:  # and then the decoded contexts say the same
        producer = extract_span_context(headers)
        job_span = decode_span_context(headers[JOB_HEADER])
        assert job_span is not None and producer.trace_id == job_span.trace_id
        assert not producer.trace_flags.sampled and not job_span.trace_flags.sampled


def test_threads_reading_a_dropped_span_first_see_one_context() -> None:
    ids = iter(range(1, 1000))
    span = DroppedSpan(
        _traceparent(TRACE, JOB_SPAN, "00"),
        lambda parent: child_context(parent, next(ids), sampled=False),
    )
    with ThreadPoolExecutor(8) as pool:
        contexts = list(pool.map(lambda _: span.get_span_context(), range(64)))
    assert all(c is contexts[0] for c in contexts)
    assert contexts[0].trace_id == int(TRACE, 16) and contexts[0].span_id == 1
