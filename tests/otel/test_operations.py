"""Operator actions in telemetry: a span per action, in the caller's trace and never in a
job's, linked to the job it acted on; counts per operation; a job run again by an operator
gets a trace of its own, linked to its first run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from opentelemetry import trace

from queue_core import Job, JobNotFoundError, Queue, UnrecoverableError, Worker
from queue_otel import semconv as sc
from tests.conftest import wait_counts, wait_for
from tests.otel.conftest import Telemetry


async def test_pause_and_resume_are_spans_and_counted(telemetry: Telemetry, queue: Queue) -> None:
    tracer = telemetry.tracer_provider.get_tracer("admin")
    with tracer.start_as_current_span("POST /admin/pause") as request:
        await queue.pause()
    await queue.resume()

    pause, resume = telemetry.spans(f"pause {queue.name}"), telemetry.spans(f"resume {queue.name}")
    assert len(pause) == len(resume) == 1
    span = pause[0]
    assert span.kind is trace.SpanKind.CLIENT
    assert span.attributes is not None
    assert span.attributes[sc.OPERATION] == "pause"
    assert span.attributes[sc.DESTINATION] == queue.name
    assert span.attributes[sc.OPERATION_COUNT] == 1
    # In the caller's trace: a child of the admin request.
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    where = {sc.DESTINATION: queue.name}
    assert telemetry.total(sc.OPERATOR_ACTIONS, {**where, sc.OPERATION: "pause"}) == 1
    assert telemetry.total(sc.OPERATOR_JOBS, {**where, sc.OPERATION: "resume"}) == 1


async def test_a_failed_action_records_its_error(telemetry: Telemetry, queue: Queue) -> None:
    with pytest.raises(JobNotFoundError):
        await queue.retry_job("no-such-job")
    (span,) = telemetry.spans(f"retry {queue.name}")
    assert span.attributes is not None
    assert span.attributes[sc.ERROR_TYPE] == "JobNotFoundError"
    assert span.status.status_code is trace.StatusCode.ERROR
    counted = {sc.OPERATION: "retry", sc.ERROR_TYPE: "JobNotFoundError"}
    assert telemetry.total(sc.OPERATOR_ACTIONS, counted) == 1


async def test_an_operator_retry_links_to_the_job_and_reruns_in_a_trace_of_its_own(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    fail = True

    async def process(job: Job) -> str:
        if fail:
            raise UnrecoverableError("upstream down")
        return "ok"

    job = await queue.add("report", {"day": 1})
    async with make_worker(process):
        await wait_counts(queue, failed=1)
        # Redis shows the outcome as the settle lands; the worker's hooks record the job
        # span a moment later.
        await wait_for(lambda: len(telemetry.spans(f"job {queue.name}")) == 1, what="job span")
        (first_job_span,) = telemetry.spans(f"job {queue.name}")
        fail = False
        await queue.retry_job(job.id)
        await wait_counts(queue, completed=1)

    (retry_span,) = telemetry.spans(f"retry {queue.name}")
    first = first_job_span.get_span_context()
    # The action is not part of the job's trace, but links to it.
    assert retry_span.get_span_context().trace_id != first.trace_id
    assert [link.context.span_id for link in retry_span.links] == [first.span_id]

    job_spans = telemetry.spans(f"job {queue.name}")
    assert len(job_spans) == 2
    rerun = job_spans[1]
    assert rerun.attributes is not None
    assert rerun.attributes[sc.JOB_OUTCOME] == "completed"
    # The second run is a new trace (the first run's job span ended long ago), linked to
    # the first run; its attempt hangs under it.
    assert rerun.get_span_context().trace_id != first.trace_id
    assert first.span_id in [link.context.span_id for link in rerun.links]
    process_spans = telemetry.spans(f"process {queue.name}")
    assert process_spans[-1].parent is not None
    assert process_spans[-1].parent.span_id == rerun.get_span_context().span_id


async def test_a_cancelled_job_ends_its_spans_as_cancelled(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()

    async def process(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    job = await queue.add("export", attempts=3)
    async with make_worker(process):
        await started.wait()
        assert await queue.cancel(job.id, "user left") == "cancelling"
        await wait_counts(queue, failed=1)

    (process_span,) = telemetry.spans(f"process {queue.name}")
    (job_span,) = telemetry.spans(f"job {queue.name}")
    (cancel_span,) = telemetry.spans(f"cancel {queue.name}")
    assert process_span.attributes is not None and job_span.attributes is not None
    assert process_span.attributes[sc.JOB_OUTCOME] == "cancelled"
    assert job_span.attributes[sc.JOB_OUTCOME] == "cancelled"
    # An operator's decision, not an error of the job.
    assert process_span.status.status_code is not trace.StatusCode.ERROR
    assert sc.ERROR_TYPE not in job_span.attributes
    assert [link.context.span_id for link in cancel_span.links] == [
        job_span.get_span_context().span_id
    ]
    where = {sc.DESTINATION: queue.name, sc.JOB_OUTCOME: "cancelled"}
    assert telemetry.total(sc.JOB_DURATION, where) == 1
    assert telemetry.total(sc.PROCESS_DURATION, where) == 1
    assert telemetry.total(sc.CONSUMED_MESSAGES, {sc.DESTINATION: queue.name}) == 1
    assert telemetry.total(sc.OPERATOR_JOBS, {sc.OPERATION: "cancel"}) == 1
