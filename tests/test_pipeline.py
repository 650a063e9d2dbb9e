"""The worker's command pipeline: each caller gets its own reply, errors stay with their
call, a broken connection fails every waiter instead of leaving one hanging."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from hiredis import pack_command
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from queue_core import pipeline as pipeline_module
from queue_core.connection import create_async_client
from queue_core.pipeline import CommandPipeline, SharedCall
from tests.redis_server import RedisServer, free_port


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def test_each_caller_gets_its_own_reply(client: redis.asyncio.Redis, queue_name: str) -> None:
    pipeline = CommandPipeline(client)
    calls = [pipeline.call(pack_command(("INCRBY", queue_name, n))) for n in range(1, 201)]
    replies = await asyncio.gather(*calls)
    # INCRBY replies are running totals; sorted, they are the triangular numbers.
    assert sorted(replies) == [n * (n + 1) // 2 for n in range(1, 201)]
    assert int(await client.get(queue_name)) == 200 * 201 // 2
    await pipeline.close()


async def test_concurrent_calls_share_writes(client: redis.asyncio.Redis, queue_name: str) -> None:
    pipeline = CommandPipeline(client)
    before = (await client.info("clients"))["connected_clients"]
    await asyncio.gather(*(pipeline.call(pack_command(("PING",))) for _ in range(100)))
    after = (await client.info("clients"))["connected_clients"]
    assert after - before <= 1  # one pooled connection carried all of them
    await pipeline.close()


async def test_an_error_reply_stays_with_its_call(
    client: redis.asyncio.Redis, queue_name: str
) -> None:
    pipeline = CommandPipeline(client)
    good = pipeline.call(pack_command(("SET", queue_name, "v")))
    bad = pipeline.call(pack_command(("INCR", queue_name)))  # not an integer
    later = pipeline.call(pack_command(("GET", queue_name)))
    results = await asyncio.gather(good, bad, later, return_exceptions=True)
    assert results[0] is True or results[0] == b"OK"
    assert isinstance(results[1], ResponseError)
    assert results[2] == b"v"
    await pipeline.close()


async def test_unreachable_redis_fails_every_waiter() -> None:
    dead = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=1)
    pipeline = CommandPipeline(dead)
    results = await asyncio.gather(
        *(pipeline.call(pack_command(("PING",))) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    await pipeline.close()
    await dead.aclose()


async def test_a_restart_fails_the_batch_in_flight_then_recovers() -> None:
    server = RedisServer().start()
    client = redis.asyncio.Redis.from_url(server.url)
    pipeline = CommandPipeline(client)
    try:
        assert await pipeline.call(pack_command(("PING",))) in (True, b"PONG")
        blocked = asyncio.ensure_future(pipeline.call(pack_command(("BLPOP", "nothing", 5))))
        await asyncio.sleep(0.2)
        server.kill()
        with pytest.raises(RedisConnectionError):
            await blocked
        server.start()
        assert await pipeline.call(pack_command(("PING",))) in (True, b"PONG")
    finally:
        await pipeline.close()
        await client.aclose()
        server.cleanup()


async def test_closed_pipeline_refuses_calls(client: redis.asyncio.Redis) -> None:
    pipeline = CommandPipeline(client)
    await pipeline.close()
    with pytest.raises(RedisConnectionError, match="closed"):
        await pipeline.call(pack_command(("PING",)))


async def test_overlapping_batches_keep_replies_in_step(
    client: redis.asyncio.Redis, queue_name: str
) -> None:
    """Callers that come and go at random times make batches that overlap on the wire
    (written before the previous batch's replies were read): every reply still reaches
    the call it answers."""
    pipeline = CommandPipeline(client)
    rng = random.Random(7)

    async def counter(n: int) -> list[int]:
        key = f"{queue_name}:{n}"
        seen = []
        for _ in range(60):
            seen.append(await pipeline.call(pack_command(("INCRBY", key, 1))))
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random() / 1000)
        return seen

    results = await asyncio.gather(*(counter(n) for n in range(25)))
    assert all(seen == list(range(1, 61)) for seen in results)
    await pipeline.close()


async def test_a_cancelled_caller_does_not_shift_the_replies(
    client: redis.asyncio.Redis, queue_name: str
) -> None:
    pipeline = CommandPipeline(client)
    await client.rpush(queue_name, b"only")
    slow = asyncio.ensure_future(pipeline.call(pack_command(("BLPOP", f"{queue_name}:x", 1))))
    await asyncio.sleep(0.05)  # written: its reply is due first
    after = asyncio.ensure_future(pipeline.call(pack_command(("LPOP", queue_name))))
    await asyncio.sleep(0.05)
    slow.cancel()
    assert await after == b"only"  # the BLPOP's reply (nil, after 1 s) went to no one
    assert await pipeline.call(pack_command(("ECHO", "next"))) == b"next"
    await pipeline.close()


async def test_an_idle_connection_goes_back_to_the_pool(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that drops idle clients (Redis `timeout`, proxies, managed services) costs
    an idle worker nothing: its connection went back to the pool, whose checkout
    reconnects it. A connection held for good would fail the next call."""
    monkeypatch.setattr(pipeline_module, "IDLE_RELEASE_S", 0.05)
    client = create_async_client(redis_url)  # as a worker's, made by queue_core
    pipeline = CommandPipeline(client)
    first_id = await pipeline.call(pack_command(("CLIENT", "ID")))
    await asyncio.sleep(0.3)
    async with redis.asyncio.Redis.from_url(redis_url) as admin:  # the server drops it
        assert await admin.client_kill_filter(_id=first_id) == 1
    await asyncio.sleep(0.1)  # the close reaches this side while idle
    assert await pipeline.call(pack_command(("ECHO", "after"))) == b"after"
    second_id = await pipeline.call(pack_command(("CLIENT", "ID")))
    assert second_id != first_id  # a new connection, made by the pool's checkout
    await pipeline.close()
    await client.aclose()


async def test_a_busy_pipeline_keeps_its_connection(
    client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "IDLE_RELEASE_S", 0.05)
    pipeline = CommandPipeline(client)
    ids = set()
    for _ in range(20):  # never idle for as long as the threshold
        ids.add(await pipeline.call(pack_command(("CLIENT", "ID"))))
        await asyncio.sleep(0.01)
    assert len(ids) == 1
    await pipeline.close()


async def test_a_frozen_server_fails_calls_at_the_deadline_then_recovers() -> None:
    """The watchdog: calls in flight past the deadline fail with a TimeoutError and the
    connection is dropped; once the server answers again, so does the pipeline."""
    server = RedisServer().start()
    client = redis.asyncio.Redis.from_url(server.url)
    pipeline = CommandPipeline(client, timeout=0.5)
    try:
        assert await pipeline.call(pack_command(("PING",))) == b"PONG"
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            started = asyncio.get_running_loop().time()
            calls = [pipeline.call(pack_command(("INCR", "frozen"))) for _ in range(3)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            elapsed = asyncio.get_running_loop().time() - started
            assert all(isinstance(r, RedisTimeoutError) for r in results), results
            assert 0.4 < elapsed < 2.0
            # A new connection to a frozen server fails at the deadline too (its handshake).
            with pytest.raises(RedisTimeoutError):
                await pipeline.call(pack_command(("PING",)))
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert await pipeline.call(pack_command(("PING",))) == b"PONG"
        # The frozen INCRs were sent before the freeze's end: they ran once Redis woke up.
        assert int(await client.get("frozen")) == 3
    finally:
        await pipeline.close()
        await client.aclose()
        server.cleanup()


# A script that answers each group of two arguments with "<a>+<b>", and several groups with
# a list of those: the shape of a script that takes calls sharing one command.
_GROUPED = """
if #ARGV == 2 then return ARGV[1] .. '+' .. ARGV[2] end
local out = {}
for i = 1, #ARGV, 2 do out[#out + 1] = ARGV[i] .. '+' .. ARGV[i + 1] end
return out
"""


def _grouped_call(group: str, a: str, b: str, script: str = _GROUPED) -> SharedCall:
    return SharedCall(group, (a, b), lambda args: pack_command(("EVAL", script, 0, *args)))


async def _evals(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_eval", {}).get("calls", 0))


async def test_shared_calls_of_a_write_share_commands_and_keep_their_replies(
    client: redis.asyncio.Redis,
) -> None:
    pipeline = CommandPipeline(client)
    before = await _evals(client)
    calls = [pipeline.call(_grouped_call("g", str(n), "x")) for n in range(10)]
    other = pipeline.call(pack_command(("ECHO", "between")))
    calls += [pipeline.call(_grouped_call("h", str(n), "y")) for n in range(3)]
    replies = await asyncio.gather(*calls, other)
    assert replies[:10] == [f"{n}+x".encode() for n in range(10)]
    assert replies[10:13] == [f"{n}+y".encode() for n in range(3)]
    assert replies[13] == b"between"
    # Each group of one write goes as two commands (two halves, so that the worker handles
    # the first half's replies while Redis runs the second), not one per call.
    assert await _evals(client) - before == 4
    await pipeline.close()


async def test_a_lone_shared_call_goes_as_a_plain_command(client: redis.asyncio.Redis) -> None:
    pipeline = CommandPipeline(client)
    assert await pipeline.call(_grouped_call("g", "a", "b")) == b"a+b"
    await pipeline.close()


async def test_an_error_of_a_shared_command_reaches_each_of_its_calls(
    client: redis.asyncio.Redis,
) -> None:
    pipeline = CommandPipeline(client)
    failing = "return redis.error_reply('ERR no such luck')"
    results = await asyncio.gather(
        *(pipeline.call(_grouped_call("g", str(n), "x", failing)) for n in range(4)),
        pipeline.call(pack_command(("ECHO", "unharmed"))),
        return_exceptions=True,
    )
    assert all(isinstance(r, ResponseError) and "no such luck" in str(r) for r in results[:4])
    assert results[4] == b"unharmed"
    await pipeline.close()


async def test_a_shared_reply_of_the_wrong_shape_fails_its_calls(
    client: redis.asyncio.Redis,
) -> None:
    pipeline = CommandPipeline(client)
    results = await asyncio.gather(
        *(pipeline.call(_grouped_call("g", str(n), "x", "return 1")) for n in range(4)),
        return_exceptions=True,
    )
    assert all(isinstance(r, ResponseError) and "expected 2 replies" in str(r) for r in results)
    await pipeline.close()
