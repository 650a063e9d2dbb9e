"""Rate limits: a limiter shared by every worker of a queue, and manual holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import redis.asyncio

from queue_core import Hook, Job, Queue, RateLimit, RateLimitError, RateLimitEvent, Worker
from tests.conftest import wait_counts
from tests.test_retries import TOLERANCE_S


class LimitRecorder(Hook):
    def __init__(self) -> None:
        self.events: list[RateLimitEvent] = []

    def on_rate_limited(self, event: RateLimitEvent) -> None:
        self.events.append(event)


def start_times(starts: list[datetime]) -> Callable[[Job], object]:
    async def process(job: Job) -> None:
        assert job.started_at is not None
        starts.append(job.started_at)

    return process


async def test_limiter_is_shared_by_all_workers_of_a_queue(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    starts: list[datetime] = []
    limit = RateLimit(max=3, duration=0.6)
    recorders = [LimitRecorder(), LimitRecorder()]
    for i in range(9):
        await queue.add("call-api", i)
    workers = [
        make_worker(start_times(starts), limiter=limit, concurrency=5, hooks=[r]) for r in recorders
    ]
    async with workers[0], workers[1]:
        await wait_counts(queue, completed=9)
    starts.sort()
    # Fixed windows of 0.6 s, 3 starts each, whatever the number of workers: the ninth
    # start comes at least two full windows after the first.
    assert (starts[8] - starts[0]).total_seconds() >= 2 * 0.6 - 0.01
    for window in (0, 3, 6):
        assert (starts[window + 2] - starts[window]).total_seconds() < 0.6
    events = [e for r in recorders for e in r.events]
    assert events, "no worker reported being rate limited"
    assert all(not e.manual and 0 < e.delay <= 0.6 for e in events)


async def test_manual_hold_stops_every_worker(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    starts: list[datetime] = []
    recorder = LimitRecorder()
    first = make_worker(start_times(starts), hooks=[recorder])
    second = make_worker(start_times(starts))
    async with first, second:
        await first.rate_limit(0.8)
        held_from = datetime.now(UTC)  # same machine: Redis's clock is this clock
        for i in range(4):
            await queue.add("x", i)
        await wait_counts(queue, completed=4, timeout=10)
    earliest = (min(starts) - held_from).total_seconds()
    assert 0.8 - 0.1 <= earliest <= 0.8 + TOLERANCE_S, earliest
    assert recorder.events and recorder.events[0].manual
    assert recorder.events[0].delay >= 0.8


async def test_rate_limit_error_returns_the_job_without_using_an_attempt(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    starts: list[datetime] = []
    recorder = LimitRecorder()

    async def process(job: Job) -> str:
        assert job.started_at is not None
        starts.append(job.started_at)
        if len(starts) == 1:
            raise RateLimitError(0.5, "HTTP 429 from upstream")
        return "sent"

    job = await queue.add("webhook", attempts=1)
    other = await queue.add("webhook")
    async with make_worker(process, hooks=[recorder]):
        await wait_counts(queue, completed=2)
    done = await queue.get_job(job.id)
    assert done is not None
    assert (done.attempts_started, done.attempts_made) == (2, 1)
    assert done.return_value == "sent"
    # The whole queue was held: the other job did not start during the hold, and the
    # limited job went first once the hold ended.
    assert starts[1] is not None and (starts[1] - starts[0]).total_seconds() >= 0.5 - 0.01
    second = await queue.get_job(other.id)
    assert second is not None and second.started_at is not None
    assert second.started_at >= starts[1]
    assert [(e.manual, e.delay) for e in recorder.events] == [(True, 0.5)]  # one hold, once


async def test_limit_shorter_than_the_work_does_not_stall(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> None:
        await asyncio.sleep(0.01)

    for i in range(20):
        await queue.add("x", i)
    async with make_worker(process, limiter=RateLimit(max=10, duration=0.1), concurrency=4):
        await wait_counts(queue, completed=20)
