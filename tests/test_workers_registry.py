"""The worker registry: workers beat into Redis, ``get_workers()`` lists the live ones, a
closed worker leaves at once and a killed one once its heartbeat expires."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from queue_core import InvalidOptionError, Job, Queue, SyncQueue, Worker, WorkerInfo
from tests.conftest import wait_for
from tests.processes import Process

BEAT = 0.2  # heartbeat_interval of the tests' workers: an entry lives 3 beats

# A worker in a process of its own, killed with SIGKILL by the test: no goodbye.
_WORKER_PROCESS = """
import asyncio, sys
from queue_core import Worker

async def main() -> None:
    redis_url, queue, worker_id = sys.argv[1:4]
    async with Worker(queue, lambda job: None, redis=redis_url, worker_id=worker_id,
                      heartbeat_interval=float(sys.argv[4])):
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def _workers(queue: Queue) -> dict[str, WorkerInfo]:
    return {info.id: info for info in await queue.get_workers()}


async def _wait_listed(queue: Queue, *ids: str) -> dict[str, WorkerInfo]:
    listed: dict[str, WorkerInfo] = {}

    async def all_listed() -> bool:
        nonlocal listed
        listed = await _workers(queue)
        return set(ids) <= set(listed)

    await wait_for(all_listed, what=f"workers {ids} to be listed")
    return listed


async def test_two_workers_are_listed_with_their_fields(
    queue: Queue, queue_name: str, redis_url: str, make_worker: Callable[..., Worker]
) -> None:
    assert await queue.get_workers() == []
    one = make_worker(lambda job: None, worker_id="w-one", concurrency=3, heartbeat_interval=BEAT)
    two = make_worker(lambda job: None, worker_id="w-two", heartbeat_interval=BEAT)
    async with one, two:
        listed = await _wait_listed(queue, "w-one", "w-two")
        assert set(listed) == {"w-one", "w-two"}
        first = listed["w-one"]
        assert first.host == socket.gethostname()
        assert first.pid == os.getpid()
        assert first.queue == queue_name
        assert first.concurrency == 3
        assert first.running_job_ids == ()
        assert listed["w-two"].concurrency == 1
        assert first.last_heartbeat.tzinfo is not None
        assert first.started_at.tzinfo is not None

        # It keeps beating.
        await wait_for(
            lambda: _beat_after(queue, "w-one", first), what="a later heartbeat of w-one"
        )
        again = (await _workers(queue))["w-one"]
        assert again.started_at == first.started_at

        with SyncQueue(queue_name, redis=redis_url) as sync_queue:
            listed_sync = await asyncio.to_thread(sync_queue.get_workers)
        assert {info.id for info in listed_sync} == {"w-one", "w-two"}


async def _beat_after(queue: Queue, worker_id: str, seen: WorkerInfo) -> bool:
    info = (await _workers(queue)).get(worker_id)
    return info is not None and info.last_heartbeat > seen.last_heartbeat


async def test_running_job_ids_appear_while_a_job_runs(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    release = asyncio.Event()

    async def process(job: Job) -> None:
        await release.wait()

    async with make_worker(process, worker_id="busy", concurrency=2, heartbeat_interval=BEAT):
        await _wait_listed(queue, "busy")
        first = await queue.add("work")
        second = await queue.add("work")

        async def both_running() -> bool:
            info = (await _workers(queue)).get("busy")
            return info is not None and set(info.running_job_ids) == {first.id, second.id}

        await wait_for(both_running, what="the running jobs in the heartbeat")
        release.set()

        async def none_running() -> bool:
            info = (await _workers(queue)).get("busy")
            return info is not None and info.running_job_ids == ()

        await wait_for(none_running, what="an empty job list in the heartbeat")


async def test_a_graceful_close_removes_the_worker_at_once(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    # A long interval: only the goodbye can remove the entry within this test.
    leaving = make_worker(lambda job: None, worker_id="leaving", heartbeat_interval=60)
    staying = make_worker(lambda job: None, worker_id="staying", heartbeat_interval=60)
    async with staying:
        await leaving.__aenter__()
        await _wait_listed(queue, "leaving", "staying")
        await leaving.close()
        assert set(await _workers(queue)) == {"staying"}
        assert await raw.hkeys(queue.keys["workerinfo"]) == [b"staying"]
    assert await queue.get_workers() == []
    assert await raw.exists(queue.keys["workers"], queue.keys["workerinfo"]) == 0


async def test_a_killed_worker_disappears_once_its_heartbeat_expires(
    queue: Queue,
    queue_name: str,
    redis_url: str,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    env = {**os.environ}
    env.pop("REDIS_URL", None)
    command = [sys.executable, "-c", _WORKER_PROCESS, redis_url, queue_name, "doomed", str(BEAT)]
    doomed = Process(command, env, tmp_path, "doomed")
    try:
        await asyncio.to_thread(doomed.wait_for_output, "ready")
        async with make_worker(lambda job: None, worker_id="alive", heartbeat_interval=BEAT):
            listed = await _wait_listed(queue, "doomed", "alive")
            assert listed["doomed"].pid == doomed.pid
            assert listed["alive"].pid == os.getpid()

            doomed.kill()

            async def gone() -> bool:
                return "doomed" not in await _workers(queue)

            await wait_for(gone, what="the killed worker to leave the list")
            listed = await _workers(queue)
            assert set(listed) == {"alive"}
            # The live worker stays across several of its expiry periods.
            await asyncio.sleep(BEAT * 6)
            assert set(await _workers(queue)) == {"alive"}
    finally:
        doomed.kill()


async def test_an_entry_not_written_by_a_worker_is_left_out(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    await raw.hset(queue.keys["workerinfo"], "junk", b"not json")
    await raw.zadd(queue.keys["workers"], {"junk": 2**50})
    assert await queue.get_workers() == []


@pytest.mark.parametrize("interval", [0, -1, "5", float("inf")])
def test_a_bad_heartbeat_interval_is_refused(interval: Any) -> None:
    with pytest.raises(InvalidOptionError, match="heartbeat_interval"):
        Worker("q", lambda job: None, redis="redis://127.0.0.1:1/0", heartbeat_interval=interval)
