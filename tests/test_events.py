"""QueueEvents: every transition of the jobs a worker runs, read back in order, from "now"
or from a given id, across a Redis restart, through a gap, and from another process."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from queue_core import (
    DelayedError,
    InvalidOptionError,
    Job,
    JobSpec,
    Queue,
    QueueEvent,
    QueueEvents,
    Worker,
)
from queue_core.events import stream_id
from tests.conftest import wait_for
from tests.log_capture import capture_logs
from tests.processes import Process
from tests.redis_server import RedisCluster, RedisServer


async def collect(
    events: QueueEvents,
    done: Callable[[list[QueueEvent]], bool],
    timeout: float = 20.0,
) -> list[QueueEvent]:
    """Events until ``done(seen)`` holds; fails the test after ``timeout`` seconds."""
    seen: list[QueueEvent] = []
    async with asyncio.timeout(timeout):
        async for event in events:
            seen.append(event)
            if done(seen):
                return seen
    raise AssertionError(f"the events stopped: {seen}")


def by_job(seen: list[QueueEvent]) -> dict[str | None, list[str]]:
    names: dict[str | None, list[str]] = defaultdict(list)
    for event in seen:
        names[event.job_id].append(event.event)
    return names


def finished(job_ids: list[str]) -> Callable[[list[QueueEvent]], bool]:
    def check(seen: list[QueueEvent]) -> bool:
        ended = {e.job_id for e in seen if e.event in ("completed", "failed")}
        return ended >= set(job_ids)

    return check


def assert_in_order(seen: list[QueueEvent]) -> None:
    ids = [stream_id(event.id) for event in seen]
    assert ids == sorted(set(ids)), "stream ids must be strictly increasing"


async def test_each_transition_of_the_watched_jobs_in_order(
    queue: Queue, queue_name: str, redis_url: str, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> Any:
        if job.name == "ok":
            await job.update_progress({"step": 1})
            return "done"
        if job.name == "flaky" and job.attempt == 1:
            raise ValueError("first try")
        if job.name == "doomed":
            raise RuntimeError("always")
        if job.name == "put-off" and job.attempt == 1:
            raise DelayedError(0.1)
        return job.name

    async with QueueEvents(queue_name, redis=redis_url, block=0.5) as events:
        start = datetime.now(UTC)
        ok = await queue.add("ok")
        flaky = await queue.add("flaky", attempts=2)
        doomed = await queue.add("doomed", attempts=2)
        later = await queue.add("later", delay=0.2)
        put_off = await queue.add("put-off")
        ids = [ok.id, flaky.id, doomed.id, later.id, put_off.id]
        async with make_worker(process):
            seen = await collect(events, finished(ids))

    assert_in_order(seen)
    names = by_job(seen)
    assert names[ok.id] == ["added", "active", "progress", "completed"]
    assert names[flaky.id] == [
        "added", "active", "retry_scheduled", "waiting", "active", "completed",
    ]  # fmt: skip
    assert names[doomed.id] == [
        "added", "active", "retry_scheduled", "waiting", "active", "failed",
    ]  # fmt: skip
    assert names[later.id] == ["added", "waiting", "active", "completed"]
    assert names[put_off.id] == ["added", "active", "delayed", "waiting", "active", "completed"]

    def fields(job_id: str, name: str) -> dict[str, str]:
        (event,) = [e for e in seen if e.job_id == job_id and e.event == name]
        return dict(event.fields)

    assert fields(ok.id, "progress") == {"data": '{"step": 1}'}
    assert fields(ok.id, "completed") == {"attempts": "1", "value": '"done"'}
    retry = fields(flaky.id, "retry_scheduled")
    assert (retry["type"], retry["reason"], retry["attempts"]) == ("ValueError", "first try", "1")
    assert int(retry["due"]) > 0
    assert fields(doomed.id, "failed") == {
        "attempts": "2", "type": "RuntimeError", "reason": "always",
    }  # fmt: skip
    assert fields(later.id, "added")["state"] == "delayed"
    assert int(fields(put_off.id, "delayed")["due"]) > 0
    stamps = [e.timestamp for e in seen]
    assert start - timedelta(seconds=5) <= stamps[0] <= stamps[-1] <= datetime.now(UTC)


async def test_a_stalled_job_is_reported(
    queue: Queue, queue_name: str, redis_url: str, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()

    async def hang(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    async with QueueEvents(queue_name, redis=redis_url, block=0.5) as events:
        job = await queue.add("work")
        first = make_worker(hang, lock_duration=0.3)
        async with first:
            await started.wait()
            await first.close(force=True)  # gone without settling: the lock expires
        async with make_worker(lambda j: "recovered", stalled_interval=0.1):
            seen = await collect(events, finished([job.id]))
    assert by_job(seen)[job.id] == ["added", "active", "stalled", "waiting", "active", "completed"]
    (stalled,) = [e for e in seen if e.event == "stalled"]
    assert stalled.fields == {"count": "1"}


async def test_reading_from_a_given_id(queue: Queue, queue_name: str, redis_url: str) -> None:
    jobs = await queue.add_bulk([JobSpec("n", i) for i in range(3)])
    await queue.pause()
    async with QueueEvents(queue_name, redis=redis_url, last_id="0-0", block=0.2) as events:
        everything = await collect(events, lambda seen: len(seen) == 4)
    assert [(e.event, e.job_id) for e in everything] == [
        ("added", jobs[0].id), ("added", jobs[1].id), ("added", jobs[2].id), ("paused", None),
    ]  # fmt: skip
    async with QueueEvents(queue_name, redis=redis_url, last_id=everything[1].id) as events:
        rest = await collect(events, lambda seen: len(seen) == 2)
        assert events.last_id == rest[-1].id
        # From "now": only what comes later.
        async with QueueEvents(queue_name, redis=redis_url, block=0.2) as now:
            await queue.resume()
            assert [e.event for e in await collect(now, lambda seen: True)] == ["resumed"]
    assert rest == everything[2:]


@pytest.mark.parametrize("bad", ["now", "12-x", "", 5, "-1"])
def test_a_bad_start_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidOptionError, match="last_id"):
        QueueEvents("q", redis="redis://127.0.0.1:1/0", last_id=bad)


async def test_close_ends_a_blocked_read_at_once(queue_name: str, redis_url: str) -> None:
    events = QueueEvents(queue_name, redis=redis_url, block=30)
    await events.start()

    async def drain() -> list[QueueEvent]:
        return [event async for event in events]

    reading = asyncio.create_task(drain())
    await asyncio.sleep(0.2)  # blocked in XREAD for up to 30 s
    await events.aclose()
    assert await asyncio.wait_for(reading, 5) == []  # iteration ended, long before 30 s


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True, appendfsync="always").start()
    yield server
    server.cleanup()


async def test_reconnects_after_a_redis_restart_without_duplicates(
    aof_server: RedisServer, queue_name: str
) -> None:
    seen: list[QueueEvent] = []

    async def read(events: QueueEvents) -> None:
        async for event in events:
            seen.append(event)

    with capture_logs() as logs:
        async with (
            Queue(queue_name, redis=aof_server.url) as queue,
            QueueEvents(queue_name, redis=aof_server.url, block=0.5) as events,
        ):
            reader = asyncio.create_task(read(events))
            before = await queue.add_bulk([JobSpec("before", i) for i in range(5)])
            await wait_for(lambda: len(seen) == 5, what="the events before the restart")
            aof_server.restart(graceful=True, downtime=0.5)
            async with Queue(queue_name, redis=aof_server.url) as fresh:  # no stale pool
                after = await fresh.add_bulk([JobSpec("after", i) for i in range(5)])
            await wait_for(lambda: len(seen) == 10, what="the events after the restart")
            await asyncio.sleep(0.3)  # nothing more comes, nothing twice
            await events.close()
            await reader
    admin = aof_server.client()
    stored: Any = admin.xrange(f"qc:{{{queue_name}}}:events")
    admin.close()
    assert [e.id for e in seen] == [entry_id.decode() for entry_id, _ in stored]
    assert [e.job_id for e in seen] == [job.id for job in [*before, *after]]
    assert events.missed_gaps == 0
    assert any(e["event"] == "redis_unavailable" for e in logs)


async def test_a_reader_behind_the_cap_reports_the_gap_and_goes_on(
    queue: Queue, queue_name: str, redis_url: str
) -> None:
    await queue.set_events_max_length(10)  # MAXLEN ~ trims whole nodes of 100 entries
    await queue.add("first")
    with capture_logs() as logs:
        async with QueueEvents(queue_name, redis=redis_url, last_id="0-0", block=0.2) as events:
            (first,) = await collect(events, lambda seen: True)
            assert first.event == "added"
            # The reader reads nothing while 500 more events are added and trimmed.
            jobs = await queue.add_bulk([JobSpec("burst", i) for i in range(500)])
            rest = await collect(events, lambda seen: seen[-1].job_id == jobs[-1].id)
    assert events.missed_gaps == 1
    assert len(rest) < 500  # the oldest of the burst were trimmed before they were read
    assert [e.job_id for e in rest] == [job.id for job in jobs[-len(rest) :]]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["events_missed"]


async def test_a_deleted_stream_is_a_gap_and_the_new_one_is_read_whole(
    queue: Queue, queue_name: str, redis_url: str, raw: redis.asyncio.Redis
) -> None:
    async with QueueEvents(queue_name, redis=redis_url, block=0.2) as events:
        await queue.add("a")
        await collect(events, lambda seen: True)
        await raw.delete(queue.keys["events"])
        # A read meets the stream gone (its next block ends with nothing).
        reading = asyncio.ensure_future(collect(events, lambda seen: True))
        await asyncio.sleep(0.6)
        b = await queue.add("b")
        (event,) = await reading
    assert (event.event, event.job_id) == ("added", b.id)
    assert events.missed_gaps == 1


async def test_a_second_process_reads_the_events_of_5000_jobs(
    queue: Queue, queue_name: str, redis_url: str, make_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:  # fmt: skip
    total = 5000
    reader = Process(
        [sys.executable, "-m", "tests.events_reader", redis_url, queue_name, str(total)],
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        tmp_path,
        "events-reader",
    )
    try:
        reader.wait_for_output("ready")
        ids: list[str] = []
        for start in range(0, total, 500):
            jobs = await queue.add_bulk([JobSpec("n", i) for i in range(start, start + 500)])
            ids += [job.id for job in jobs]
        async with make_worker(lambda job: None, concurrency=50):
            # It exits once it has read the 5000th completed event.
            assert await asyncio.to_thread(reader.wait, 60) == 0, reader.describe()
    finally:
        reader.kill()
    *lines, last = reader.stdout().splitlines()
    assert lines[0] == "ready" and last == "missed_gaps 0"
    entries = [line.split(" ") for line in lines[1:]]
    stream_ids = [stream_id(entry_id) for entry_id, _, _ in entries]
    assert stream_ids == sorted(set(stream_ids)), "stream ids must be strictly increasing"
    names: dict[str, list[str]] = defaultdict(list)
    for _, event, job_id in entries:
        names[job_id].append(event)
    assert set(names) == set(ids)
    assert all(names[job_id] == ["added", "active", "completed"] for job_id in ids)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    local = RedisCluster(masters=3)
    try:
        local.start()
        yield local
    finally:
        local.cleanup()


@pytest.fixture
async def cluster_client(cluster: RedisCluster) -> AsyncIterator[AsyncRedisCluster]:
    nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
    client = AsyncRedisCluster(startup_nodes=nodes, decode_responses=False)
    yield client
    await client.aclose()


async def test_events_and_waits_through_a_cluster_client(
    cluster_client: AsyncRedisCluster, queue_name: str
) -> None:
    async with (
        Queue(queue_name, redis=cluster_client) as queue,
        QueueEvents(queue_name, redis=cluster_client, block=0.5) as events,
        Worker(queue_name, lambda job: job.data * 2, redis=cluster_client, drain_delay=1.0),
    ):
        job = await queue.add("double", 21)
        assert await job.wait_until_finished(timeout=20) == 42
        seen = await collect(events, finished([job.id]))
    assert by_job(seen)[job.id] == ["added", "active", "completed"]
