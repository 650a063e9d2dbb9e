"""Retries, backoff and the dead-letter set.

Timings are checked against the timestamps Redis records (``started_at`` is Redis's
clock when the attempt was fetched) with a stated tolerance: a retry must never start
before its backoff has elapsed, and should start within TOLERANCE_S after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest

from queue_core import Backoff, Hook, Job, JobEvent, JobState, Queue, Worker
from queue_core.options import JobOptions
from queue_core.retry import retry_delay
from tests.conftest import wait_counts

TOLERANCE_S = 0.35  # fetch latency + Redis timer granularity + a loaded CI machine


class Recorder(Hook):
    def __init__(self) -> None:
        self.retries: list[JobEvent] = []
        self.failed: list[JobEvent] = []

    def on_retry_scheduled(self, event: JobEvent) -> None:
        self.retries.append(event)

    def on_failed(self, event: JobEvent) -> None:
        self.failed.append(event)


def failing(times: int) -> tuple[Callable[[Job], Any], list[datetime]]:
    """A processor that fails ``times`` times, recording each attempt's Redis start time."""
    starts: list[datetime] = []

    async def process(job: Job) -> str:
        assert job.started_at is not None
        starts.append(job.started_at)
        if len(starts) <= times:
            raise ConnectionResetError(f"attempt {len(starts)} failed")
        return "ok"

    return process, starts


async def test_retries_until_success(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    process, starts = failing(2)
    job = await queue.add("flaky", attempts=3)
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    done = await queue.get_job(job.id)
    assert done is not None
    assert (done.attempts_started, done.attempts_made) == (3, 3)
    assert done.return_value == "ok"
    assert done.failed_reason is None  # a success clears the last attempt's error
    assert len(starts) == 3


async def test_exhausted_attempts_go_to_the_failed_set(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    recorder = Recorder()
    process, _ = failing(10)
    job = await queue.add("doomed", {"x": 1}, attempts=3)
    async with make_worker(process, hooks=[recorder]):
        await wait_counts(queue, failed=1)
    failed = await queue.get_job(job.id)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert (failed.attempts_started, failed.attempts_made) == (3, 3)
    assert failed.error_type == "ConnectionResetError"
    assert failed.failed_reason == "attempt 3 failed"
    assert failed.stacktrace is not None and "in process" in failed.stacktrace
    assert failed.finished_at is not None
    assert len(recorder.retries) == 2 and len(recorder.failed) == 1
    assert recorder.failed[0].job.state is JobState.FAILED
    assert [j.id for j in await queue.get_jobs("failed")] == [job.id]


async def test_fixed_backoff_timing(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    recorder = Recorder()
    process, starts = failing(2)
    await queue.add("flaky", attempts=3, backoff=Backoff.fixed(0.5))
    async with make_worker(process, hooks=[recorder]):
        await wait_counts(queue, completed=1)
    assert [e.delay for e in recorder.retries] == [0.5, 0.5]
    for before, after in pairwise(starts):
        gap = (after - before).total_seconds()
        assert 0.5 <= gap <= 0.5 + TOLERANCE_S, gap


async def test_exponential_backoff_timing_and_cap(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    recorder = Recorder()
    process, starts = failing(4)
    backoff = Backoff.exponential(0.1, max_delay=0.5)
    await queue.add("flaky", attempts=5, backoff=backoff)
    async with make_worker(process, hooks=[recorder]):
        await wait_counts(queue, completed=1)
    expected = [0.1, 0.2, 0.4, 0.5]  # 0.8 capped at 0.5
    assert [e.delay for e in recorder.retries] == expected
    gaps = [(b - a).total_seconds() for a, b in pairwise(starts)]
    for gap, delay in zip(gaps, expected, strict=True):
        assert delay <= gap <= delay + TOLERANCE_S, (gaps, expected)


async def test_retry_due_time_is_recorded_in_redis(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    recorder = Recorder()
    process, _ = failing(1)
    job = await queue.add("flaky", attempts=2, backoff=30)
    async with make_worker(process, hooks=[recorder]):
        await wait_counts(queue, delayed=1)
        waiting = await queue.get_job(job.id)
    assert waiting is not None
    assert waiting.state is JobState.DELAYED
    assert waiting.attempts_made == 1 and waiting.attempts_started == 1
    assert waiting.failed_reason == "attempt 1 failed"  # the last error stays visible
    event = recorder.retries[0]
    assert event.until == waiting.delayed_until
    assert event.delay == 30.0


async def test_jitter_spreads_delays_within_bounds(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    recorder = Recorder()
    process, _ = failing(3)
    await queue.add("flaky", attempts=4, backoff=Backoff.fixed(0.2, jitter=0.5))
    async with make_worker(process, hooks=[recorder]):
        await wait_counts(queue, completed=1)
    delays = [e.delay for e in recorder.retries]
    assert len(delays) == 3
    assert all(d is not None and 0.1 <= d <= 0.2 for d in delays), delays


def test_retry_delay_arithmetic() -> None:
    job = Job(
        id="1",
        name="x",
        data=None,
        queue_name="q",
        options=JobOptions(attempts=10, backoff=Backoff.exponential(2, jitter=0.5)),
        headers={},
        state=JobState.ACTIVE,
        enqueued_at=datetime.now(),
        attempts_made=2,  # this failure is the third attempt made
    )
    error = RuntimeError()
    assert retry_delay(job, error, {}, rand=lambda: 0.0) == 8.0
    assert retry_delay(job, error, {}, rand=lambda: 1.0) == 4.0
    job.attempts_made = 9
    assert retry_delay(job, error, {}) is None  # the tenth attempt was the last


async def test_custom_backoff_strategy(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    recorder = Recorder()
    process, _ = failing(2)
    seen: list[tuple[int, str]] = []

    def linear(attempts_made: int, error: BaseException, job: Job) -> float:
        seen.append((attempts_made, type(error).__name__))
        return 0.05 * attempts_made

    await queue.add("flaky", attempts=3, backoff=Backoff.custom("linear"))
    async with make_worker(process, hooks=[recorder], backoff_strategies={"linear": linear}):
        await wait_counts(queue, completed=1)
    assert seen == [(1, "ConnectionResetError"), (2, "ConnectionResetError")]
    assert [e.delay for e in recorder.retries] == [0.05, 0.1]


async def test_custom_strategy_returning_none_stops_retrying(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    process, starts = failing(5)
    job = await queue.add("flaky", attempts=5, backoff=Backoff.custom("give-up"))
    async with make_worker(process, backoff_strategies={"give-up": lambda n, e, j: None}):
        await wait_counts(queue, failed=1)
    failed = await queue.get_job(job.id)
    assert failed is not None and failed.attempts_made == 1 and len(starts) == 1


async def test_unknown_strategy_fails_the_job_with_its_own_error(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    process, _ = failing(5)
    job = await queue.add("flaky", attempts=5, backoff=Backoff.custom("missing"))
    async with make_worker(process):
        await wait_counts(queue, failed=1)
    failed = await queue.get_job(job.id)
    assert failed is not None
    assert failed.failed_reason == "attempt 1 failed"


async def test_no_backoff_retries_at_once(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    process, starts = failing(1)
    await queue.add("flaky", attempts=2)
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    assert (starts[1] - starts[0]).total_seconds() <= TOLERANCE_S


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_many_failing_jobs_all_end_up_failed(
    queue: Queue, make_worker: Callable[..., Worker], concurrency: int
) -> None:
    async def process(job: Job) -> None:
        await asyncio.sleep(0.001)
        raise ValueError(job.data)

    for i in range(30):
        await queue.add("bad", i, attempts=2, backoff=0.01)
    async with make_worker(process, concurrency=concurrency):
        counts = await wait_counts(queue, failed=30)
    assert counts["completed"] == counts["delayed"] == counts["active"] == 0
    assert all(j.attempts_made == 2 for j in await queue.get_jobs("failed"))
