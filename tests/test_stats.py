"""get_stats: counts and the age of the oldest waiting job, by Redis's clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from queue_core import Job, Queue, SyncQueue, Worker
from tests.conftest import wait_counts


async def test_empty_queue_has_no_oldest_job(queue: Queue) -> None:
    stats = await queue.get_stats()
    assert stats.oldest_waiting_age is None
    assert stats.counts == dict.fromkeys(
        ("waiting", "active", "delayed", "completed", "failed", "waiting_children"), 0
    )


async def test_oldest_waiting_age_grows_with_time(queue: Queue) -> None:
    await queue.add("x")
    await asyncio.sleep(0.3)
    await queue.add("y")
    stats = await queue.get_stats()
    assert stats.counts["waiting"] == 2
    assert stats.oldest_waiting_age is not None
    assert 0.3 <= stats.oldest_waiting_age < 2.0


async def test_oldest_job_is_found_in_every_priority(queue: Queue) -> None:
    await queue.add("old-low", priority=-5)
    await asyncio.sleep(0.3)
    for priority in (0, 3, 9):
        await queue.add("new", priority=priority)
    await queue.add("new-lifo", priority=3, lifo=True)
    stats = await queue.get_stats()
    assert stats.oldest_waiting_age is not None and stats.oldest_waiting_age >= 0.3


async def test_old_lifo_job_counts_as_oldest(queue: Queue) -> None:
    await queue.add("old-lifo", lifo=True)
    await asyncio.sleep(0.3)
    await queue.add("new-lifo", lifo=True)
    await queue.add("new-fifo")
    stats = await queue.get_stats()
    assert stats.oldest_waiting_age is not None and stats.oldest_waiting_age >= 0.3


async def test_due_delayed_job_waits_from_its_due_time(queue: Queue) -> None:
    await queue.add("later", delay=0.1)
    await queue.add("far", delay=3600)
    await asyncio.sleep(0.4)  # due for 0.3 s, but no worker has promoted it
    stats = await queue.get_stats()
    assert stats.counts["delayed"] == 2 and stats.counts["waiting"] == 0
    assert stats.oldest_waiting_age is not None
    assert 0.25 <= stats.oldest_waiting_age < 1.0  # from its due time, not from its enqueue


async def test_a_promoted_job_keeps_its_due_time(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()

    async def busy(job: Job) -> None:
        started.set()
        await asyncio.sleep(1.0)

    await queue.add("blocker")
    async with make_worker(busy):
        await started.wait()
        await queue.add("later", delay=0.1)
        await asyncio.sleep(0.5)
        stats = await queue.get_stats()  # still delayed or promoted: both count from due
        assert stats.oldest_waiting_age is not None
        assert 0.3 <= stats.oldest_waiting_age < 1.0
        await wait_counts(queue, completed=2)


def test_sync_get_stats(redis_url: str, queue_name: str) -> None:
    with SyncQueue(queue_name, redis=redis_url) as queue:
        queue.add("x")
        stats = queue.get_stats()
    assert stats.counts["waiting"] == 1
    assert stats.oldest_waiting_age is not None and stats.oldest_waiting_age < 5
