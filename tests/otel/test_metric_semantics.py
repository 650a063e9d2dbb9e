"""What the metrics mean, per the conventions and their naming guide: a delivery is counted
at the fetch, once per attempt and with no outcome; up-down counters are not pluralised."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics.export import Sum

from queue_core import Job, Queue, Worker
from queue_otel import semconv as sc
from tests.conftest import wait_counts, wait_for
from tests.otel.conftest import Telemetry

# The attributes of messaging.client.consumed.messages: the conventions' (system and
# operation name required; destination and server as available; error.type only if the
# receive failed) and the job name. Never the outcome of the attempt, which has not run.
CONSUMED_KEYS = {
    sc.MESSAGING_SYSTEM, sc.OPERATION_NAME, sc.DESTINATION, sc.SERVER_ADDRESS, sc.SERVER_PORT,
    sc.JOB_NAME,
}  # fmt: skip


def instruments(telemetry: Telemetry) -> dict[str, Any]:
    """Every instrument of queue_otel that reported, by name (the SDK's Metric)."""
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }


async def test_a_delivery_is_counted_at_the_fetch_before_the_attempt_ends(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def hold(job: Job) -> None:
        started.set()
        await release.wait()

    await queue.add("held")
    async with make_worker(hold):
        await started.wait()
        # Running, no outcome yet: the delivery is already counted.
        (point,) = telemetry.points(sc.CONSUMED_MESSAGES)
        assert point.value == 1
        attributes = dict(point.attributes)
        assert set(attributes) <= CONSUMED_KEYS
        assert attributes[sc.MESSAGING_SYSTEM] == "queue_core"
        assert attributes[sc.OPERATION_NAME] == "receive"
        assert attributes[sc.DESTINATION] == queue.name
        assert attributes[sc.JOB_NAME] == "held"
        assert telemetry.points(sc.PROCESS_DURATION) == []
        release.set()
        await wait_counts(queue, completed=1)
    # Finishing the attempt does not count the delivery a second time.
    assert telemetry.total(sc.CONSUMED_MESSAGES, {sc.DESTINATION: queue.name}) == 1
    assert telemetry.total(sc.PROCESS_DURATION, {sc.JOB_OUTCOME: "completed"}) == 1


async def test_every_attempt_is_a_delivery_whatever_its_outcome(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> str:
        if job.name == "flaky" and job.attempts_started < 3:
            raise ConnectionError("upstream reset")
        if job.name == "doomed":
            raise KeyError("missing")
        return "ok"

    await queue.add("ok")
    await queue.add("flaky", attempts=3)  # fails twice, then completes: three deliveries
    await queue.add("doomed", attempts=2)  # fails twice, the second time for good: two
    async with make_worker(process):
        await wait_counts(queue, completed=2, failed=1)

    q = {sc.DESTINATION: queue.name}
    total = telemetry.total
    assert total(sc.CONSUMED_MESSAGES, q) == 6
    assert total(sc.CONSUMED_MESSAGES, {**q, sc.JOB_NAME: "ok"}) == 1
    assert total(sc.CONSUMED_MESSAGES, {**q, sc.JOB_NAME: "flaky"}) == 3
    assert total(sc.CONSUMED_MESSAGES, {**q, sc.JOB_NAME: "doomed"}) == 2
    points = telemetry.points(sc.CONSUMED_MESSAGES)
    assert len(points) == 3  # one series per job name: nothing splits them by outcome
    for point in points:
        assert set(point.attributes) <= CONSUMED_KEYS, dict(point.attributes)
        assert sc.JOB_OUTCOME not in point.attributes
        assert sc.ERROR_TYPE not in point.attributes

    # The attempts' outcomes and errors: on process.duration and queue_core's counters.
    assert total(sc.PROCESS_DURATION, q) == 6
    retried = {**q, sc.JOB_NAME: "flaky", sc.JOB_OUTCOME: "retry"}
    assert total(sc.PROCESS_DURATION, {**retried, sc.ERROR_TYPE: "ConnectionError"}) == 2
    assert total(sc.PROCESS_DURATION, {**q, sc.JOB_OUTCOME: "completed"}) == 2
    assert (
        total(sc.PROCESS_DURATION, {**q, sc.JOB_OUTCOME: "failed", sc.ERROR_TYPE: "KeyError"}) == 1
    )
    assert total(sc.RETRIES, {**q, sc.ERROR_TYPE: "ConnectionError"}) == 2
    assert total(sc.RETRIES, {**q, sc.ERROR_TYPE: "KeyError"}) == 1
    assert total(sc.FAILURES, {**q, sc.ERROR_TYPE: "KeyError", sc.JOB_NAME: "doomed"}) == 1


async def test_up_down_counters_are_named_per_the_guide(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    release = asyncio.Event()

    async def hold(job: Job) -> None:
        await release.wait()

    await queue.add("held")
    async with make_worker(hold, concurrency=3):
        q = {sc.DESTINATION: queue.name}
        await wait_for(lambda: telemetry.total(sc.ACTIVE_JOBS, q) == 1)
        assert telemetry.total(sc.WORKERS, q) == 1
        assert telemetry.total(sc.WORKER_CAPACITY, q) == 3
        found = instruments(telemetry)
        release.set()

    # Not pluralised: a number of entities is {entity}.count, of those in a state
    # {entity}.{state} (the guide's system.process.count, cicd.pipeline.run.active).
    assert (sc.WORKERS, sc.ACTIVE_JOBS) == ("queue_core.worker.count", "queue_core.job.active")
    expected = {
        sc.WORKERS: ("{worker}", "Workers running now."),
        sc.ACTIVE_JOBS: ("{job}", "Jobs running now."),
        sc.WORKER_CAPACITY: ("{job}", "Jobs the running workers may run at once."),
    }
    for name, (unit, description) in expected.items():
        metric = found[name]
        assert (metric.unit, metric.description) == (unit, description), name
        assert isinstance(metric.data, Sum) and not metric.data.is_monotonic, name
    up_down = {
        name for name, metric in found.items()
        if isinstance(metric.data, Sum) and not metric.data.is_monotonic
    }  # fmt: skip
    assert up_down == set(expected)
    assert not {"queue_core.workers", "queue_core.worker.active_jobs"} & found.keys()

    consumed = found[sc.CONSUMED_MESSAGES]
    assert consumed.unit == "{message}"
    assert isinstance(consumed.data, Sum) and consumed.data.is_monotonic
