"""Queue-wide settings hold for workers in other processes: a pause stops every worker
process within the call, and a global concurrency of 3 holds across three processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from queue_core import JobSpec, Queue
from tests.chaos.support import WorkerProcess
from tests.chaos.worker_process import RUNS, tracking_key
from tests.conftest import wait_counts, wait_for
from tests.redis_server import RedisServer


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.cleanup()


def _spawn(
    started: list[WorkerProcess],
    tmp_path: Path,
    url: str,
    queue: str,
    count: int,
    **options: object,
) -> None:
    for i in range(count):
        worker = WorkerProcess(tmp_path, url, queue, f"W{i}", **options)
        started.append(worker)
        worker.start()
    for worker in started:
        worker.wait_ready()


def _runs(client: redis.Redis, queue: str) -> set[str]:
    return {field.decode().split("|")[0] for field in client.hkeys(tracking_key(queue, RUNS))}


async def test_pause_stops_two_busy_worker_processes_at_once(
    redis_server: RedisServer, queue_name: str, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    client = redis_server.client()
    async with Queue(queue_name, redis=redis_server.url) as queue:
        await queue.add_bulk([JobSpec("work", {"sleep": 0.02}) for _ in range(600)])
        _spawn(workers, tmp_path, redis_server.url, queue_name, 2, concurrency=4)
        await wait_for(lambda: len(_runs(client, queue_name)) >= 50, timeout=20)

        await queue.pause()
        # After pause() returned, no fetch takes a job: the only jobs that may still
        # start are those fetched before it, which sit in `active` now.
        ran_before = _runs(client, queue_name)
        fetched_before = {m.decode() for m in client.zrange(queue.keys["active"], 0, -1)}
        await asyncio.sleep(1.5)
        started_after = _runs(client, queue_name) - ran_before
        assert started_after <= fetched_before, started_after - fetched_before
        counts = await queue.get_counts()
        assert counts["active"] == 0
        waiting = counts["waiting"]
        assert waiting > 0
        await asyncio.sleep(0.5)
        assert (await queue.get_counts())["waiting"] == waiting  # nothing moves while paused

        await queue.resume()
        await wait_counts(queue, timeout=60, completed=600)
    for worker in workers:
        worker.check_alive()


async def test_global_concurrency_of_three_holds_across_three_processes(
    redis_server: RedisServer, queue_name: str, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    client = redis_server.client()
    async with Queue(queue_name, redis=redis_server.url) as queue:
        await queue.set_global_concurrency(3)
        # Each process could run 2 at once (6 in all): the limit of 3 is the queue's.
        _spawn(workers, tmp_path, redis_server.url, queue_name, 3, concurrency=2)
        await queue.add_bulk([JobSpec("work", {"sleep": 0.03}) for _ in range(150)])
        samples: list[int] = []
        deadline = time.monotonic() + 60
        while (await queue.get_counts())["completed"] < 150:
            samples.append(client.zcard(queue.keys["active"]))
            assert time.monotonic() < deadline, "the jobs did not complete in time"
            await asyncio.sleep(0.003)
    assert len(samples) > 100
    assert max(samples) <= 3
    assert max(samples) == 3  # the room is used, not just respected
    # More than one process took part: the limit is shared, not one worker's.
    who = {v.decode().split(":")[0] for v in client.hvals(tracking_key(queue_name, RUNS))}
    assert len(who) >= 2
