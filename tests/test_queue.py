"""The producer: add, add_bulk, ids, reads, validation and the stored layout."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio

from queue_core import (
    InvalidOptionError,
    JobOptions,
    JobSpec,
    JobState,
    PayloadTooLargeError,
    Queue,
    RedisUnavailableError,
    SerializationError,
)
from tests.log_capture import capture_logs
from tests.redis_server import RedisServer, free_port


def key(queue: Queue, name: str) -> str:
    return queue.keys[name]


async def script_calls(raw: redis.asyncio.Redis) -> int:
    """Script calls so far: FCALL (Redis 7+) or EVALSHA."""
    stats = await raw.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("fcall", "evalsha"))


async def test_add_stores_job_and_returns_it(queue: Queue, raw: redis.asyncio.Redis) -> None:
    before = datetime.now(UTC)
    job = await queue.add("welcome", {"to": "ada@example.com"}, attempts=3)
    assert job.id == "1"
    assert job.name == "welcome"
    assert job.state is JobState.WAITING
    assert job.options.attempts == 3
    assert (
        before - timedelta(seconds=1) <= job.enqueued_at <= datetime.now(UTC) + timedelta(seconds=1)
    )

    stored = await queue.get_job(job.id)
    assert stored is not None
    assert (stored.name, stored.data, stored.state) == (
        "welcome",
        {"to": "ada@example.com"},
        JobState.WAITING,
    )
    assert stored.options == job.options
    assert stored.enqueued_at == job.enqueued_at
    assert (stored.attempts_started, stored.attempts_made, stored.stalled_count) == (0, 0, 0)
    assert await raw.zscore(key(queue, "wait"), job.id) is not None
    second = await queue.add("welcome", {"to": "bob@example.com"})
    assert second.id == "2"


async def test_every_key_shares_the_queue_hash_tag(queue: Queue, raw: redis.asyncio.Redis) -> None:
    await queue.add("a", 1)
    await queue.add("b", 2, delay=60)
    keys = [k.decode() async for k in raw.scan_iter(match=f"*{queue.name}*")]
    assert keys, "the queue wrote no keys"
    assert all(k.startswith(f"qc:{{{queue.name}}}:") for k in keys), keys


async def test_envelope_keeps_headers_apart_from_data(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("report", {"headers": "user data named headers"})
    envelope = await raw.hget(key(queue, "jobs"), job.id)
    header_line, _, payload = envelope.partition(b"\n")
    header = json.loads(header_line)
    assert header["v"] == 1 and header["name"] == "report"
    assert "headers" not in header  # no hook wrote any
    assert json.loads(payload) == {"headers": "user data named headers"}


async def test_default_job_options_merge_with_keywords(redis_url: str, queue_name: str) -> None:
    async with Queue(
        queue_name, redis=redis_url, default_job_options=JobOptions(attempts=4, priority=1)
    ) as q:
        job = await q.add("x", priority=9)
        assert (job.options.attempts, job.options.priority) == (4, 9)
        plain = await q.add("x")
        assert (plain.options.attempts, plain.options.priority) == (4, 1)


async def test_add_bulk_is_one_round_trip(queue: Queue, raw: redis.asyncio.Redis) -> None:
    await queue.get_counts()  # connect and check the server first
    before = await script_calls(raw)
    jobs = await queue.add_bulk(
        [JobSpec("email", {"n": i}, JobOptions(priority=i % 3)) for i in range(50)]
    )
    assert await script_calls(raw) - before == 1
    assert [j.id for j in jobs] == [str(i) for i in range(1, 51)]
    assert (await queue.get_counts())["waiting"] == 50


async def test_bad_job_in_a_bulk_writes_nothing(queue: Queue, raw: redis.asyncio.Redis) -> None:
    with pytest.raises(SerializationError, match="not JSON-serializable"):
        await queue.add_bulk([JobSpec("ok", 1), JobSpec("bad", {"when": datetime.now(UTC)})])
    assert await queue.get_counts() == dict.fromkeys(
        ("waiting", "active", "delayed", "completed", "failed", "waiting_children"), 0
    )
    assert [k async for k in raw.scan_iter(match=f"*{queue.name}*")] == []


@pytest.mark.parametrize("data", [{1, 2}, object(), float("nan"), b"bytes"])
async def test_unserializable_payload_is_a_typed_error(queue: Queue, data: Any) -> None:
    with pytest.raises(SerializationError):
        await queue.add("x", data)
    assert (await queue.get_counts())["waiting"] == 0


async def test_oversized_payload_is_rejected(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis=redis_url, max_payload_bytes=1024) as q:
        await q.add("small", "x" * 100)
        with pytest.raises(PayloadTooLargeError) as info:
            await q.add("big", "x" * 2000)
        assert info.value.limit == 1024 and info.value.size > 2000
        assert isinstance(info.value, ValueError)
        assert (await q.get_counts())["waiting"] == 1


async def test_invalid_names_and_options_are_rejected(queue: Queue, redis_url: str) -> None:
    with pytest.raises(InvalidOptionError, match="job name"):
        await queue.add("", 1)
    with pytest.raises(InvalidOptionError, match="job name"):
        await queue.add("bad{tag}", 1)
    with pytest.raises(InvalidOptionError, match="attempts"):
        await queue.add("x", attempts=0)
    with pytest.raises(InvalidOptionError, match="unknown job option"):
        await queue.add("x", retries=3)  # type: ignore[call-arg]
    with pytest.raises(InvalidOptionError, match="queue name"):
        Queue("", redis=redis_url)
    with pytest.raises(InvalidOptionError, match="JobSpec"):
        await queue.add_bulk([("x", 1)])  # type: ignore[list-item]
    with pytest.raises(InvalidOptionError, match="at least one"):
        await queue.add_bulk([])
    assert (await queue.get_counts())["waiting"] == 0


async def test_existing_job_id_returns_existing_job_and_writes_nothing(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    first = await queue.add("charge", {"amount": 10}, job_id="order-1")
    envelope = await raw.hget(key(queue, "jobs"), "order-1")
    meta = await raw.hgetall(key(queue, "meta"))
    again = await queue.add("charge", {"amount": 99}, job_id="order-1", priority=5)
    assert again.id == first.id == "order-1"
    assert again.data == {"amount": 10}
    assert again.options.priority == 0
    assert await raw.hget(key(queue, "jobs"), "order-1") == envelope
    assert await raw.hgetall(key(queue, "meta")) == meta
    assert (await queue.get_counts())["waiting"] == 1

    jobs = await queue.add_bulk(
        [
            JobSpec("charge", 1, JobOptions(job_id="order-1")),
            JobSpec("charge", 2, JobOptions(job_id="order-2")),
            JobSpec("charge", 3, JobOptions(job_id="order-2")),
        ]
    )
    assert [j.data for j in jobs] == [{"amount": 10}, 2, 2]
    assert (await queue.get_counts())["waiting"] == 2


async def test_delay_is_recorded_against_redis_time(queue: Queue, raw: redis.asyncio.Redis) -> None:
    job = await queue.add("remind", delay=timedelta(hours=2))
    assert job.state is JobState.DELAYED
    due = await raw.zscore(key(queue, "delayed"), job.id)
    record = json.loads(await raw.hget(key(queue, "state"), job.id))
    assert due == record["ts"] + 2 * 3600 * 1000
    stored = await queue.get_job(job.id)
    assert stored is not None and stored.state is JobState.DELAYED
    assert stored.delayed_until == job.delayed_until
    assert stored.delayed_until == stored.enqueued_at + timedelta(hours=2)


async def test_get_jobs_orders_by_run_order_and_ranges(queue: Queue) -> None:
    low = await queue.add("r", "low", priority=-5)
    normal = [await queue.add("r", f"n{i}") for i in range(3)]
    urgent = await queue.add("r", "urgent", priority=10)
    front = await queue.add("r", "front", lifo=True)
    waiting = await queue.get_jobs(JobState.WAITING)
    assert [j.data for j in waiting] == ["urgent", "front", "n0", "n1", "n2", "low"]
    assert [j.id for j in await queue.get_jobs("waiting", 1, 2)] == [front.id, normal[0].id]
    everything = await queue.get_jobs()
    assert {j.id for j in everything} == {low.id, urgent.id, front.id, *(j.id for j in normal)}
    with pytest.raises(InvalidOptionError, match="unknown job state"):
        await queue.get_jobs("sleeping")


async def test_get_job_of_unknown_id_is_none(queue: Queue) -> None:
    assert await queue.get_job("nope") is None


async def test_redis_down_raises_a_typed_error(queue_name: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with Queue(queue_name, redis=url) as q:
        with pytest.raises(RedisUnavailableError, match="add failed"):
            await q.add("x", 1)
        with pytest.raises(ConnectionError):  # also a builtin ConnectionError
            await q.get_counts()


async def test_warns_when_eviction_policy_is_unsafe(queue_name: str) -> None:
    server = RedisServer(extra=("--maxmemory-policy", "allkeys-lru")).start()
    try:
        async with Queue(queue_name, redis=server.url) as q:
            with capture_logs() as logs:
                await q.add("x", 1)
                await q.add("x", 2)
        warnings = [e for e in logs if e["event"] == "redis_eviction_policy_unsafe"]
        assert len(warnings) == 1  # once per queue, at connect
        assert warnings[0]["maxmemory_policy"] == "allkeys-lru"
        assert warnings[0]["log_level"] == "warning"
    finally:
        server.cleanup()


async def test_no_warning_with_noeviction(queue: Queue) -> None:
    with capture_logs() as logs:
        await queue.add("x", 1)
    assert not [e for e in logs if e["event"] == "redis_eviction_policy_unsafe"]
