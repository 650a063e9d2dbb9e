"""Producers across Redis faults: a typed error while Redis is away, nothing half-written,
and back to work on the same Queue object once Redis returns."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from queue_core import (
    InvalidOptionError,
    Job,
    JobSpec,
    Queue,
    RedisUnavailableError,
    SyncQueue,
    Worker,
)
from tests.log_capture import capture_logs
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


async def test_a_server_that_drops_idle_clients_costs_no_call(queue_name: str) -> None:
    """Redis `timeout` (like proxies and managed services) closes idle connections. The
    next call of an idle producer or worker gets a reconnected one: no error, no retry
    warning, no job late by a retry's backoff."""
    server = RedisServer(extra=("--timeout", "1")).start()
    seen: list[int] = []
    done = asyncio.Event()

    async def record(job: Job) -> None:
        seen.append(job.data)
        done.set()

    try:
        with capture_logs() as logs:
            async with (
                Queue(queue_name, redis=server.url) as queue,
                Worker(queue_name, record, redis=server.url),
            ):
                await queue.add("first", 1)
                await asyncio.wait_for(done.wait(), 10)
                done.clear()
                await asyncio.sleep(4.5)  # idle: the worker gives its connection back at 2 s
                connected = redis.Redis(port=server.port).client_list()
                await queue.add("second", 2)
                await asyncio.wait_for(done.wait(), 10)
    finally:
        server.cleanup()
    assert seen == [1, 2]
    # The blocked worker and this one: idle ones were closed. The worker's cancel
    # subscription (flag P) is a pub/sub connection, which Redis's timeout never closes.
    calling = [c for c in connected if "P" not in c["flags"]]
    assert len(calling) <= 2, connected
    problems = [e for e in logs if e["log_level"] in ("warning", "error")]
    assert problems == []


@pytest.mark.parametrize("bad", ["5", -1, 0, float("nan"), True, [5]])
def test_a_bad_redis_timeout_is_refused_before_anything_connects(bad: object) -> None:
    def noop(job: Job) -> None:
        return None

    url = "redis://127.0.0.1:1/0"  # nothing listens: a refusal must come first
    for build in (
        lambda: Queue("q", redis=url, redis_timeout=bad),  # type: ignore[arg-type]
        lambda: SyncQueue("q", redis=url, redis_timeout=bad),  # type: ignore[arg-type]
        lambda: Worker("q", noop, redis=url, redis_timeout=bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidOptionError, match="redis_timeout"):
            build()
