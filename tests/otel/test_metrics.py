"""Every metric's value after a known workload, buckets, exemplars and cardinality."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio

from queue_core import DelayedError, Job, Queue, RateLimitError, Worker
from queue_otel import semconv as sc
from tests.conftest import wait_counts, wait_for
from tests.otel.conftest import Telemetry

ALLOWED_ATTRIBUTES = {
    "messaging.system", "messaging.destination.name", "messaging.operation.name",
    "messaging.operation.type", "server.address", "server.port", "error.type",
    "queue_core.job.name", "queue_core.job.outcome", "queue_core.job.state",
    "queue_core.rate_limit.kind", "queue_core.stall.outcome",
}  # fmt: skip


async def processor(job: Job) -> str:
    attempt = job.attempts_started
    if job.name == "flaky" and attempt == 1:
        raise ConnectionError("upstream reset")
    if job.name == "doomed":
        raise KeyError("missing")
    if job.name == "step" and attempt == 1:
        raise DelayedError(0.05)
    if job.name == "limited" and attempt == 1:
        raise RateLimitError(0.1)
    return "ok"


async def run_workload(queue: Queue, make_worker: Callable[..., Worker]) -> list[Job]:
    jobs = [await queue.add("ok", i) for i in range(3)]
    jobs.append(await queue.add("flaky", attempts=2))
    jobs.append(await queue.add("doomed", attempts=2))
    jobs.append(await queue.add("step"))
    jobs.append(await queue.add("limited"))
    async with make_worker(processor, concurrency=2) as worker:
        await wait_counts(queue, completed=6, failed=1)
        # Redis shows the outcome as the settle lands; the worker counts the job active
        # until its hooks have run, a moment later.
        await wait_for(lambda: worker.active_jobs == 0, what="no active job")
    return jobs


async def test_metric_values_after_a_known_workload(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    await run_workload(queue, make_worker)
    q = {sc.DESTINATION: queue.name}
    total = telemetry.total

    assert total(sc.SENT_MESSAGES, q) == 7
    assert total(sc.SENT_MESSAGES, {**q, sc.JOB_NAME: "ok"}) == 3
    assert total(sc.CLIENT_OPERATION_DURATION, {**q, sc.OPERATION_NAME: "send"}) == 7

    outcomes = {
        "completed": 6, "retry": 2, "failed": 1, "delayed": 1, "rate_limited": 1,
    }  # fmt: skip
    for outcome, count in outcomes.items():  # each attempt's outcome: on process.duration
        assert total(sc.PROCESS_DURATION, {**q, sc.JOB_OUTCOME: outcome}) == count, outcome
    assert total(sc.CONSUMED_MESSAGES, q) == 11  # one delivery per attempt, at the fetch

    assert total(sc.PROCESS_DURATION, q) == 11
    assert total(sc.PROCESS_DURATION, {**q, sc.ERROR_TYPE: "ConnectionError"}) == 1
    assert total(sc.PROCESS_DURATION, {**q, sc.ERROR_TYPE: "KeyError"}) == 2
    errors = {p.attributes.get(sc.ERROR_TYPE) for p in telemetry.points(sc.PROCESS_DURATION)}
    assert errors == {None, "ConnectionError", "KeyError"}  # no error.type for delay/limit

    assert total(sc.WAIT_DURATION, q) == 7  # one per job: first attempts only
    assert total(sc.JOB_DURATION, {**q, sc.JOB_OUTCOME: "completed"}) == 6
    assert total(sc.JOB_DURATION, {**q, sc.JOB_OUTCOME: "failed", sc.ERROR_TYPE: "KeyError"}) == 1
    assert total(sc.RETRIES, {**q, sc.ERROR_TYPE: "ConnectionError"}) == 1
    assert total(sc.RETRIES, {**q, sc.ERROR_TYPE: "KeyError"}) == 1
    assert total(sc.FAILURES, {**q, sc.ERROR_TYPE: "KeyError", sc.JOB_NAME: "doomed"}) == 1
    assert total(sc.FAILURES, q) == 1
    assert total(sc.RATE_LIMIT_DELAY, {**q, sc.RATE_LIMIT_KIND: "manual"}) >= 1

    # Up-down counters are back to zero once the worker has stopped.
    assert total(sc.ACTIVE_JOBS, q) == 0
    assert total(sc.WORKERS, q) == 0
    assert total(sc.WORKER_CAPACITY, q) == 0


async def test_workers_and_capacity_while_running(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    release = asyncio.Event()

    async def slow(job: Job) -> None:
        await release.wait()

    await queue.add("slow")
    async with make_worker(slow, concurrency=4), make_worker(slow, concurrency=2):
        await wait_for(lambda: telemetry.total(sc.ACTIVE_JOBS, {sc.DESTINATION: queue.name}) == 1)
        assert telemetry.total(sc.WORKERS, {sc.DESTINATION: queue.name}) == 2
        assert telemetry.total(sc.WORKER_CAPACITY, {sc.DESTINATION: queue.name}) == 6
        release.set()


async def test_duration_values_and_buckets(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def slow(job: Job) -> None:
        await asyncio.sleep(0.2)

    await queue.add("slow", delay=0.1)
    async with make_worker(slow):
        await wait_counts(queue, completed=1)
    (process,) = telemetry.points(sc.PROCESS_DURATION)
    assert tuple(process.explicit_bounds) == sc.JOB_BUCKETS
    assert 0.2 <= process.sum < 1.0
    (job,) = telemetry.points(sc.JOB_DURATION)
    assert 0.3 <= job.sum < 1.5  # delay + run
    (wait,) = telemetry.points(sc.WAIT_DURATION)
    assert 0 <= wait.sum < 0.3  # the delay is not waiting
    (client,) = telemetry.points(sc.CLIENT_OPERATION_DURATION)
    assert tuple(client.explicit_bounds) == sc.CLIENT_BUCKETS
    assert 0 < client.sum < 0.5


async def test_exemplars_point_at_the_attempt(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    await queue.add("x")
    async with make_worker(lambda job: None):
        await wait_counts(queue, completed=1)
    await wait_for(lambda: len(telemetry.spans(f"process {queue.name}")) == 1)
    (attempt,) = telemetry.spans(f"process {queue.name}")
    (point,) = telemetry.points(sc.PROCESS_DURATION)
    assert point.exemplars, "no exemplar recorded"
    exemplar = point.exemplars[-1]
    assert (exemplar.trace_id, exemplar.span_id) == (
        attempt.context.trace_id, attempt.context.span_id
    )  # fmt: skip


async def test_stalls_are_counted(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()

    async def hang(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    await queue.add("x")
    first = make_worker(hang, lock_duration=0.2)
    async with first:
        await started.wait()
        await first.close(force=True)
    async with make_worker(lambda job: None, stalled_interval=0.05):
        await wait_counts(queue, completed=1)
    assert (
        telemetry.total(sc.STALLS, {sc.DESTINATION: queue.name, sc.STALL_OUTCOME: "requeued"}) == 1
    )
    interrupted = {sc.DESTINATION: queue.name, sc.JOB_OUTCOME: "interrupted"}
    assert telemetry.total(sc.PROCESS_DURATION, interrupted) == 1


async def test_the_observer_reads_queues_under_another_prefix(
    instrument: Callable[..., Telemetry], queue_name: str, redis_url: str
) -> None:
    telemetry = instrument(
        observe_queues=[queue_name], observe_redis_url=redis_url, observe_prefix="qc-demo"
    )
    async with Queue(queue_name, redis=redis_url, prefix="qc-demo") as demo:
        await demo.add("a")
        await demo.add("b")
    await asyncio.sleep(0.3)
    depth = {p.attributes[sc.JOB_STATE]: p.value for p in telemetry.points(sc.QUEUE_DEPTH)}
    assert depth["waiting"] == 2


async def test_queue_depth_and_oldest_age_from_one_observer(
    instrument: Callable[..., Telemetry], queue: Queue, redis_url: str
) -> None:
    telemetry = instrument(observe_queues=[queue.name], observe_redis_url=redis_url)
    await queue.add("a")
    await queue.add("b", delay=60)
    await asyncio.sleep(0.3)
    depth = {p.attributes[sc.JOB_STATE]: p.value for p in telemetry.points(sc.QUEUE_DEPTH)}
    assert depth == {
        "waiting": 1,
        "active": 0,
        "delayed": 1,
        "completed": 0,
        "failed": 0,
        "waiting_children": 0,
    }
    (age,) = telemetry.points(sc.OLDEST_JOB_AGE)
    assert age.attributes[sc.DESTINATION] == queue.name
    assert 0.3 <= age.value < 5


async def test_metric_attributes_stay_bounded(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    jobs = await run_workload(queue, make_worker)
    job_ids = {j.id for j in jobs}
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    seen: set[str] = set()
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    attributes: dict[str, Any] = dict(point.attributes)
                    seen |= set(attributes)
                    assert not job_ids & {str(v) for v in attributes.values()}, metric.name
    assert seen <= ALLOWED_ATTRIBUTES, seen - ALLOWED_ATTRIBUTES


async def test_duplicate_adds_are_not_sent_messages(telemetry: Telemetry, queue: Queue) -> None:
    await queue.add("x", job_id="same")
    await queue.add("x", job_id="same")
    assert telemetry.total(sc.SENT_MESSAGES, {sc.DESTINATION: queue.name}) == 1
    assert telemetry.total(sc.CLIENT_OPERATION_DURATION, {sc.DESTINATION: queue.name}) == 2


async def test_quarantined_jobs_and_worker_loop_errors_are_counted(
    telemetry: Telemetry,
    queue: Queue,
    raw: redis.asyncio.Redis,
    make_worker: Callable[..., Worker],
) -> None:
    q = {sc.DESTINATION: queue.name}
    corrupt = await queue.add("job", 1)
    await raw.hset(queue.keys["state"], corrupt.id, b"garbage")

    async def noop(job: Job) -> None:
        return None

    worker = make_worker(noop, drain_delay=0.2)
    async with worker:
        await wait_counts(queue, failed=1)
        await raw.delete(queue.keys["wait"])
        await raw.set(queue.keys["wait"], b"not a sorted set")
        await raw.zadd(queue.keys["marker"], {"0": 0})
        await wait_for(lambda: telemetry.total(sc.WORKER_ERRORS, q) >= 1, timeout=10)
        await raw.delete(queue.keys["wait"])
    assert telemetry.total(sc.FAILURES, {**q, sc.ERROR_TYPE: "CorruptJobError"}) == 1
    (point, *_) = telemetry.points(sc.WORKER_ERRORS)
    assert point.attributes[sc.WORKER_LOOP] == "fetch"
    assert point.attributes[sc.ERROR_TYPE] == "ResponseError"
