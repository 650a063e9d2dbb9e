"""Queue-wide settings stored in Redis: pause and resume, global concurrency, the queue's
rate limit and the events stream's length, as every worker sees them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis.asyncio

from queue_core import (
    InvalidOptionError,
    Job,
    JobSpec,
    OperationEvent,
    Queue,
    RateLimit,
    SyncQueue,
    Worker,
)
from queue_core.hooks import Hook
from tests.conftest import wait_counts, wait_for
from tests.redis_server import RedisServer


async def test_pause_holds_every_worker_and_resume_wakes_them(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    started: list[str] = []

    async def process(job: Job) -> None:
        started.append(job.id)

    assert await queue.pause() is True
    assert await queue.pause() is False  # already paused: nothing changes
    assert await queue.is_paused()
    # Two idle workers with a long drain delay: only a wake-up can start them quickly.
    async with make_worker(process, drain_delay=5.0), make_worker(process, drain_delay=5.0):
        jobs = [await queue.add("job", i) for i in range(5)]  # adds are accepted
        await asyncio.sleep(0.5)
        assert started == []
        assert (await queue.get_counts())["waiting"] == 5

        began = time.monotonic()
        assert await queue.resume() is True
        await wait_counts(queue, completed=5)
        # Woken by resume(), not by their 5 s idle block ending.
        assert time.monotonic() - began < 3.0
    assert sorted(started) == sorted(job.id for job in jobs)
    assert not await queue.is_paused()


async def test_pause_lets_running_jobs_finish(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    release = asyncio.Event()
    running: list[str] = []

    async def process(job: Job) -> str:
        running.append(job.id)
        await release.wait()
        return "done"

    async with make_worker(process, concurrency=2):
        first = await queue.add("slow")
        await wait_for(lambda: running == [first.id], what="the first job to start")
        await queue.pause()
        second = await queue.add("waits")
        release.set()
        await wait_counts(queue, completed=1, waiting=1)
        await asyncio.sleep(0.3)
        assert running == [first.id]
        assert (await queue.get_job(second.id)).state.value == "waiting"  # type: ignore[union-attr]


async def test_pause_survives_a_redis_restart(tmp_path: Any) -> None:
    server = RedisServer(appendonly=True, appendfsync="always").start()
    try:
        async with Queue("restart-pause", redis=server.url) as queue:
            await queue.pause()
        server.restart(graceful=True)
        async with Queue("restart-pause", redis=server.url) as queue:
            assert await queue.is_paused()
    finally:
        server.cleanup()


async def test_global_concurrency_caps_active_jobs_and_frees_room(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    running = 0
    peak = 0

    async def process(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    await queue.set_global_concurrency(2)
    assert (await queue.get_config()).global_concurrency == 2
    for i in range(20):
        await queue.add("job", i)
    async with make_worker(process, concurrency=5), make_worker(process, concurrency=5):
        await wait_counts(queue, completed=20, timeout=20)
    assert peak == 2

    await queue.set_global_concurrency(None)
    assert (await queue.get_config()).global_concurrency is None


async def test_raising_the_global_concurrency_wakes_idle_workers(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    release = asyncio.Event()

    async def process(job: Job) -> None:
        await release.wait()

    await queue.set_global_concurrency(1)
    for i in range(3):
        await queue.add("job", i)
    async with make_worker(process, concurrency=3, drain_delay=5.0):
        await wait_counts(queue, active=1, waiting=2)
        await asyncio.sleep(0.3)
        assert (await queue.get_counts())["active"] == 1
        await queue.set_global_concurrency(3)
        await wait_counts(queue, active=3, timeout=3)
        release.set()
        await wait_counts(queue, completed=3)


async def test_the_queue_rate_limit_replaces_the_workers_own(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    starts: list[float] = []

    async def process(job: Job) -> None:
        starts.append(time.monotonic())

    await queue.set_rate_limit(RateLimit(4, 0.5))
    config = await queue.get_config()
    assert config.rate_limit == RateLimit(4, 0.5)
    for i in range(12):
        await queue.add("job", i)
    # The worker's own limiter would allow all 12 at once: the queue's limit wins.
    async with make_worker(process, concurrency=12, limiter=RateLimit(100, 0.1)):
        await wait_for(lambda: len(starts) >= 5, what="a first window of jobs and the next one")
        hold = (await queue.get_config()).rate_limit_hold
        await wait_counts(queue, completed=12, timeout=20)
    # 12 jobs at 4 per 0.5 s window: three windows, so the last start is at least two
    # windows after the first.
    assert max(starts) - min(starts) >= 0.9
    assert 0.0 <= hold <= 0.5

    await queue.set_rate_limit(None)
    assert (await queue.get_config()).rate_limit is None


async def test_a_manual_hold_is_reported(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    async with make_worker(lambda job: None) as worker:
        await worker.rate_limit(2.0)
        config = await queue.get_config()
    assert 1.0 < config.rate_limit_hold <= 2.0


async def test_events_can_be_turned_off_and_capped(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    events = queue.keys["events"]
    await queue.set_events_max_length(0)
    assert (await queue.get_config()).events_max_length == 0
    await queue.add("quiet")
    assert await raw.xlen(events) == 0

    await queue.set_events_max_length(100)
    for i in range(400):
        await queue.add("loud", i)
    # MAXLEN ~ trims whole nodes: never fewer than asked, a little more at most.
    assert 100 <= await raw.xlen(events) < 400

    # One call that appends many events (a bulk add) trims every 64th of them: the
    # stream stays within a node (100) and 63 events of the cap.
    await queue.add_bulk([JobSpec("bulk", i) for i in range(1000)])
    assert 100 <= await raw.xlen(events) <= 100 + 100 + 63

    await queue.set_events_max_length(None)
    assert (await queue.get_config()).events_max_length == 10_000


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("set_global_concurrency", 0),
        ("set_global_concurrency", -3),
        ("set_global_concurrency", "3"),
        ("set_rate_limit", 5),
        ("set_events_max_length", -1),
        ("set_events_max_length", 10**9),
    ],
)
async def test_bad_settings_are_refused_and_change_nothing(
    queue: Queue, raw: redis.asyncio.Redis, method: str, value: Any
) -> None:
    with pytest.raises(InvalidOptionError):
        await getattr(queue, method)(value)
    assert await raw.hgetall(queue.keys["meta"]) == {}


def test_the_sync_queue_has_the_same_settings(queue_name: str, redis_url: str) -> None:
    with SyncQueue(queue_name, redis=redis_url) as queue:
        assert queue.pause() is True
        assert queue.is_paused()
        queue.set_global_concurrency(4)
        queue.set_rate_limit(RateLimit(10, 1))
        queue.set_events_max_length(500)
        config = queue.get_config()
        assert queue.resume() is True
    assert config.paused
    assert config.global_concurrency == 4
    assert config.rate_limit == RateLimit(10, 1)
    assert config.events_max_length == 500


async def test_operations_are_seen_by_operation_hooks(queue_name: str, redis_url: str) -> None:
    seen: list[tuple[str, int | None, str | None]] = []

    class Recorder(Hook):
        @contextmanager
        def around_operation(self, event: OperationEvent) -> Iterator[None]:
            yield
            error = type(event.error).__name__ if event.error else None
            seen.append((event.operation, event.count, error))

    async with Queue(queue_name, redis=redis_url, hooks=[Recorder()]) as queue:
        await queue.pause()
        await queue.pause()
        await queue.resume()
    assert seen == [("pause", 1, None), ("pause", 0, None), ("resume", 1, None)]
