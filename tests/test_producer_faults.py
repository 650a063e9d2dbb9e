"""Producers across Redis faults: a typed error while Redis is away, nothing half-written,
and back to work on the same Queue object once Redis returns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from queue_core import JobSpec, Queue, RedisUnavailableError, SyncQueue
from tests.redis_server import RedisServer


@pytest.fixture
def server() -> Iterator[RedisServer]:
    srv = RedisServer(appendonly=True, appendfsync="always").start()
    yield srv
    srv.cleanup()


async def test_async_producer_survives_a_restart(server: RedisServer, queue_name: str) -> None:
    async with Queue(queue_name, redis=server.url) as queue:
        await queue.add("before", 1)
        server.stop()
        with pytest.raises(RedisUnavailableError):
            await queue.add("during", 2)
        with pytest.raises(RedisUnavailableError):
            await queue.add_bulk([JobSpec("during", i) for i in range(10)])
        server.start()
        await queue.add("after", 3)
        jobs = await queue.get_jobs("waiting")
    assert [j.name for j in jobs] == ["before", "after"]


def test_sync_producer_survives_a_kill(server: RedisServer, queue_name: str) -> None:
    with SyncQueue(queue_name, redis=server.url) as queue:
        queue.add_bulk([JobSpec("before", i) for i in range(5)])
        server.kill()  # SIGKILL; appendfsync always keeps every acknowledged write
        with pytest.raises(RedisUnavailableError):
            queue.add("during", 1)
        server.start()
        queue.add("after", 2)
        counts = queue.get_counts()
    assert counts["waiting"] == 6
