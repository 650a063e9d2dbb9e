"""A job scheduler's runs in telemetry: each run is a trace of its own (never one endless
trace for a repeating job), its spans name the scheduler, and the runs and their
lateness are counted per scheduler."""

from __future__ import annotations

from collections.abc import Callable

from queue_core import Job, Queue, Worker
from queue_otel import semconv as sc
from tests.conftest import wait_counts
from tests.otel.conftest import Telemetry


async def test_each_run_is_its_own_trace_and_is_counted(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> None:
        return None

    await queue.upsert_scheduler("tick", every=0.2, limit=3)
    async with make_worker(process):
        await wait_counts(queue, completed=3, timeout=15)

    job_spans = telemetry.spans(f"job {queue.name}")
    process_spans = telemetry.spans(f"process {queue.name}")
    assert len(job_spans) == len(process_spans) == 3
    traces = {span.get_span_context().trace_id for span in job_spans}
    assert len(traces) == 3  # one trace per run
    for job_span in job_spans:
        assert job_span.attributes is not None
        assert job_span.attributes[sc.SCHEDULER_ID] == "tick"
        assert job_span.parent is None  # the root of its run's trace
    for process_span in process_spans:
        assert process_span.attributes is not None
        assert process_span.attributes[sc.SCHEDULER_ID] == "tick"
        assert process_span.parent is not None
        assert process_span.context is not None
        assert process_span.context.trace_id in traces

    where = {sc.DESTINATION: queue.name, sc.SCHEDULER_ID: "tick"}
    assert telemetry.total(sc.SCHEDULER_RUNS, where) == 3
    assert telemetry.total(sc.SCHEDULER_LATENESS, where) == 3


async def test_runs_link_to_the_upsert_of_their_schedule(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> None:
        return None

    tracer = telemetry.tracer_provider.get_tracer("deploy")
    with tracer.start_as_current_span("app start"):
        await queue.upsert_scheduler("tick", every=0.2, limit=2)
    (upsert,) = telemetry.spans(f"upsert_scheduler {queue.name}")
    async with make_worker(process):
        await wait_counts(queue, completed=2, timeout=15)

    schedule = upsert.get_span_context().span_id
    for span in telemetry.spans(f"process {queue.name}") + telemetry.spans(f"job {queue.name}"):
        assert span.context is not None
        assert span.context.trace_id != upsert.get_span_context().trace_id  # its own trace
        assert schedule in [link.context.span_id for link in span.links], span.name
