"""Shared fixtures: a private Redis per test session, unique queue names, and helpers."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from queue_core import Queue, Worker
from tests.processes import STARTED, kill_left_since
from tests.redis_server import RedisServer


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """A subprocess a test (or its function-scoped fixtures) started is gone after it."""
    mark = len(STARTED)
    yield
    left = kill_left_since(mark)
    if left:  # shown with the test's report when it failed
        print(f"killed subprocesses the test left running: {left}", file=sys.stderr)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client to look at the keys the scripts wrote."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(queue_name: str, redis_url: str) -> AsyncIterator[Queue]:
    q = Queue(queue_name, redis=redis_url)
    yield q
    await q.close()


@pytest.fixture
async def make_worker(queue_name: str, redis_url: str) -> AsyncIterator[Callable[..., Worker]]:
    """Build workers for the test's queue (fast timings); they are closed at teardown."""
    workers: list[Worker] = []

    def build(processor: Any, **options: Any) -> Worker:
        options.setdefault("redis", redis_url)
        options.setdefault("drain_delay", 1.0)
        options.setdefault("shutdown_timeout", 5.0)
        worker = Worker(options.pop("queue_name", queue_name), processor, **options)
        workers.append(worker)
        return worker

    yield build
    for worker in workers:
        await worker.close(force=True)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll until ``predicate`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_counts(queue: Queue, timeout: float = 10.0, **expected: int) -> dict[str, int]:
    """Wait until the queue's counts include ``expected`` (e.g. completed=3)."""
    counts: dict[str, int] = {}

    async def matches() -> bool:
        nonlocal counts
        counts = await queue.get_counts()
        return all(counts[state] == n for state, n in expected.items())

    try:
        await wait_for(matches, timeout, what=f"counts {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last counts {counts}") from None
    return counts
