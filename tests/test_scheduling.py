"""Delays, priorities, LIFO, and re-scheduling from inside a processor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
import redis.asyncio

from queue_core import DelayedError, Hook, Job, JobEvent, JobState, Queue, QueueError, Worker
from tests.conftest import wait_counts, wait_for
from tests.test_retries import TOLERANCE_S


def recording(order: list[Any]) -> Callable[[Job], Any]:
    async def process(job: Job) -> None:
        order.append(job.data)

    return process


async def test_delayed_job_starts_on_time(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    starts: list[Job] = []

    async def process(job: Job) -> None:
        starts.append(job)

    async with make_worker(process, drain_delay=30.0):
        await asyncio.sleep(0.2)  # idle and blocked long before the job is added
        job = await queue.add("remind", delay=0.5)
        await wait_counts(queue, completed=1)
    started_at = starts[0].started_at
    assert started_at is not None
    waited = (started_at - job.enqueued_at).total_seconds()
    assert 0.5 <= waited <= 0.5 + TOLERANCE_S, waited


async def test_delayed_jobs_are_promoted_while_the_worker_is_busy(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    order: list[Any] = []

    async def process(job: Job) -> None:
        order.append(job.data)
        await asyncio.sleep(0.01)

    for i in range(30):
        await queue.add("busy", f"n{i}")
    # A promoted job joins its priority band at the back, like any newly ready job; a
    # higher priority shows that it became ready while the backlog was still running.
    # It is added once the worker runs, so that a slow start cannot make it due at once.
    async with make_worker(process):
        await wait_for(lambda: len(order) >= 3, what="the backlog to start")
        started = len(order)
        await queue.add("late", "delayed", delay=0.1, priority=1)
        await wait_counts(queue, completed=31)
    assert started < order.index("delayed") < 25, order


async def test_priority_highest_first_and_fifo_within_a_priority(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    order: list[Any] = []
    plan = [("a", 0), ("b", 5), ("c", 0), ("d", -3), ("e", 5), ("f", 100), ("g", 0), ("h", -3)]
    for data, priority in plan:
        await queue.add("p", data, priority=priority)
    async with make_worker(recording(order)):
        await wait_counts(queue, completed=len(plan))
    assert order == ["f", "b", "e", "a", "c", "g", "d", "h"]


async def test_lifo_runs_ahead_of_its_priority(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    order: list[Any] = []
    await queue.add("p", "fifo-1")
    await queue.add("p", "fifo-2")
    await queue.add("p", "lifo-1", lifo=True)
    await queue.add("p", "lifo-2", lifo=True)
    await queue.add("p", "urgent", priority=1)
    async with make_worker(recording(order)):
        await wait_counts(queue, completed=5)
    assert order == ["urgent", "lifo-2", "lifo-1", "fifo-1", "fifo-2"]


async def test_delayed_job_keeps_its_priority_when_promoted(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    order: list[Any] = []
    await queue.add("p", "delayed-urgent", priority=9, delay=0.05)
    await asyncio.sleep(0.2)
    await queue.add("p", "normal")
    async with make_worker(recording(order)):
        await wait_counts(queue, completed=2)
    assert order == ["delayed-urgent", "normal"]


class DelayRecorder(Hook):
    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def on_delayed(self, event: JobEvent) -> None:
        self.events.append(event)


async def test_delayed_error_reschedules_without_using_an_attempt(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    recorder = DelayRecorder()
    starts: list[datetime] = []

    async def process(job: Job) -> str:
        assert job.started_at is not None
        starts.append(job.started_at)
        if len(starts) < 3:
            raise DelayedError(timedelta(milliseconds=300))
        return "finally"

    job = await queue.add("step", attempts=1)
    async with make_worker(process, hooks=[recorder]):
        await wait_counts(queue, completed=1)
    done = await queue.get_job(job.id)
    assert done is not None
    assert (done.attempts_started, done.attempts_made) == (3, 1)
    assert done.return_value == "finally"
    assert [e.delay for e in recorder.events] == [0.3, 0.3]
    for a, b in pairwise(starts):
        assert 0.3 <= (b - a).total_seconds() <= 0.3 + TOLERANCE_S


async def test_delayed_error_with_an_absolute_time(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    target = datetime.now(UTC) + timedelta(hours=3)

    async def process(job: Job) -> None:
        raise DelayedError(target)

    job = await queue.add("later")
    async with make_worker(process):
        await wait_counts(queue, delayed=1)
    delayed = await queue.get_job(job.id)
    assert delayed is not None and delayed.delayed_until is not None
    assert abs((delayed.delayed_until - target).total_seconds()) < 0.002
    assert (delayed.attempts_started, delayed.attempts_made) == (1, 0)


async def test_move_to_delayed_from_a_processor(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    recorder = DelayRecorder()
    calls = 0
    errors: list[BaseException] = []

    async def process(job: Job) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await job.move_to_delayed(0.2)
            try:
                await job.move_to_delayed(5)
            except QueueError as exc:
                errors.append(exc)
            return "ignored"  # the attempt already ended when the job moved
        return "second run"

    job = await queue.add("step")
    async with make_worker(process, hooks=[recorder]):
        await wait_counts(queue, completed=1)
    done = await queue.get_job(job.id)
    assert done is not None
    assert done.return_value == "second run"
    assert (done.attempts_started, done.attempts_made) == (2, 1)
    assert len(recorder.events) == 1 and recorder.events[0].delay == 0.2
    assert len(errors) == 1


async def test_move_to_delayed_is_only_for_running_jobs(queue: Queue) -> None:
    job = await queue.add("x")
    with pytest.raises(QueueError, match="only for a running job"):
        await job.move_to_delayed(1)


async def test_delay_zero_runs_at_once(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    order: list[Any] = []
    job = await queue.add("now", "x", delay=0)
    assert job.state is JobState.WAITING
    async with make_worker(recording(order)):
        await wait_for(lambda: order == ["x"])
