"""A trace that is not sampled costs its spans almost nothing: nothing is built for a span
that will not be recorded (its attributes, links), while the trace context still travels
with the job and the metrics still count every job. Counted through the builders (the
test hook), not timed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

from queue_core import Job, Queue, Worker
from queue_otel import semconv as sc
from queue_otel import tracing
from tests.conftest import wait_counts
from tests.otel.conftest import Telemetry

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
    # The parent-based ratio sampler users run in production, at a ratio where no trace
    # is sampled, so that the count is exact.
    telemetry = instrument(sampler=ParentBased(TraceIdRatioBased(0.0)))
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
