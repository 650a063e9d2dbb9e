"""A worker's edges: close() at once whatever it is doing, typed errors out of run() when
Redis is away at start (a running worker rides outages out), and clients created with
``decode_responses=True`` accepted by Queue, SyncQueue and Worker."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import NoPermissionError

from queue_core import (
    Hook,
    InternalEvent,
    InvalidOptionError,
    Job,
    JobState,
    Queue,
    QueueError,
    RedisTimeoutError,
    RedisUnavailableError,
    SyncQueue,
    Worker,
)
from tests.conftest import wait_counts, wait_for
from tests.redis_server import REDIS_SERVER, RedisServer, free_port

IDLE_BLOCK_S = 5.0  # drain_delay: what a close used to wait for
AT_ONCE_S = 1.0
# Retries back off 0.1 s doubling (with jitter, 50-100%): this long after the first fault,
# the sleep under way has more than AT_ONCE_S left whatever the jitter.
BACKED_OFF_S = 3.5


async def noop(job: Job) -> None:
    return None


async def timed_close(worker: Worker) -> float:
    started = time.monotonic()
    await asyncio.wait_for(worker.close(), timeout=3 * IDLE_BLOCK_S)
    return time.monotonic() - started


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A Redis URL whose server accepts TCP connections and never answers (a frozen one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


# ---------------------------------------------------------------------- close at once


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.2])
async def test_close_soon_after_start_returns_at_once(
    queue_name: str, redis_url: str, delay: float
) -> None:
    """Before the fix, a close that came while the first fetch was in flight waited for
    the idle block that followed it (drain_delay, 5 s)."""
    for _ in range(3):  # the fetch takes well under a millisecond: try each delay a few times
        worker = Worker(queue_name, noop, redis=redis_url, drain_delay=IDLE_BLOCK_S)
        async with worker:
            await asyncio.sleep(delay)
            assert await timed_close(worker) < AT_ONCE_S
        assert not worker.running


class CloseAt(Hook):
    """Requests the worker's close at one point of its bookkeeping calls, once."""

    def __init__(self, operation: str, when: str) -> None:
        self.operation, self.when = operation, when
        self.worker: Worker | None = None
        self.closed_at: float | None = None

    @contextmanager
    def around_internal(self, event: InternalEvent) -> Iterator[None]:
        self._maybe_close(event, "before")
        yield
        self._maybe_close(event, "after")

    def _maybe_close(self, event: InternalEvent, when: str) -> None:
        if (event.operation, when) != (self.operation, self.when) or self.closed_at is not None:
            return
        assert self.worker is not None
        self.closed_at = time.monotonic()
        self.worker.request_close()


@pytest.mark.parametrize(
    ("operation", "when"),
    [
        ("fetch", "after"),  # the fetch's reply is read: the worker is about to block
        ("wait", "before"),  # the blocking wait is about to start
        ("fetch", "before"),  # the fetch is about to be sent
    ],
)
async def test_close_requested_around_a_fetch_returns_at_once(
    queue_name: str, redis_url: str, operation: str, when: str
) -> None:
    hook = CloseAt(operation, when)
    worker = Worker(queue_name, noop, redis=redis_url, drain_delay=IDLE_BLOCK_S, hooks=[hook])
    hook.worker = worker
    runner = asyncio.create_task(worker.run(handle_signals=False))
    await asyncio.wait_for(runner, timeout=3 * IDLE_BLOCK_S)
    assert hook.closed_at is not None
    assert time.monotonic() - hook.closed_at < AT_ONCE_S
    assert runner.exception() is None


async def test_close_while_blocked_on_the_marker_returns_at_once(
    queue_name: str, redis_url: str
) -> None:
    worker = Worker(queue_name, noop, redis=redis_url, drain_delay=IDLE_BLOCK_S)
    async with worker:
        await asyncio.sleep(0.3)  # idle: blocked in BZPOPMIN
        assert await timed_close(worker) < AT_ONCE_S


async def test_close_while_connecting_to_a_silent_redis_returns_at_once(
    queue_name: str, silent_url: str
) -> None:
    """No deadline anywhere: the connection attempt would wait forever. close() ends it."""
    worker = Worker(queue_name, noop, redis=silent_url, redis_timeout=None, start_timeout=None)
    runner = asyncio.create_task(worker.run(handle_signals=False))
    await asyncio.sleep(0.5)
    assert not runner.done() and not worker.running
    assert await timed_close(worker) < AT_ONCE_S
    assert runner.done() and runner.exception() is None


async def test_close_while_retrying_an_unreachable_redis_returns_at_once(
    queue_name: str,
) -> None:
    worker = Worker(queue_name, noop, redis=f"redis://127.0.0.1:{free_port()}/0")
    runner = asyncio.create_task(worker.run(handle_signals=False))
    # Refused attempts, backing off: by now a backoff sleep of at least 1.25 s is under way.
    await asyncio.sleep(BACKED_OFF_S)
    assert not runner.done()
    assert await timed_close(worker) < AT_ONCE_S
    assert runner.exception() is None


async def test_close_while_a_running_worker_waits_out_an_outage_returns_at_once(
    queue_name: str, private_redis: RedisServer
) -> None:
    worker = Worker(queue_name, noop, redis=private_redis.url, drain_delay=IDLE_BLOCK_S)
    runner = asyncio.create_task(worker.run(handle_signals=False))
    await wait_for(lambda: worker.running, what="worker started")
    private_redis.kill()
    await asyncio.sleep(BACKED_OFF_S)  # its fetch is retried with backoff
    assert await timed_close(worker) < AT_ONCE_S
    assert runner.exception() is None


# ---------------------------------------------------------------------- run() and outages


async def test_run_raises_redis_unavailable_when_redis_is_down_at_start(
    queue_name: str,
) -> None:
    worker = Worker(queue_name, noop, redis=f"redis://127.0.0.1:{free_port()}/0", start_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="start_timeout") as caught:
        await asyncio.wait_for(worker.run(handle_signals=False), timeout=10)
    assert time.monotonic() - started < 5.0  # bounded by start_timeout, not retried forever
    assert not isinstance(caught.value, RedisTimeoutError)
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
    assert not worker.running


async def test_async_with_raises_the_typed_error_too(queue_name: str) -> None:
    worker = Worker(queue_name, noop, redis=f"redis://127.0.0.1:{free_port()}/0", start_timeout=0.5)
    with pytest.raises(RedisUnavailableError):
        async with worker:
            pytest.fail("the worker started without Redis")


async def test_a_silent_redis_at_start_is_a_redis_timeout(queue_name: str, silent_url: str) -> None:
    worker = Worker(queue_name, noop, redis=silent_url, redis_timeout=None, start_timeout=1.0)
    with pytest.raises(RedisTimeoutError, match="did not answer"):
        await asyncio.wait_for(worker.run(handle_signals=False), timeout=10)


async def test_a_down_cluster_at_start_is_redis_unavailable(queue_name: str) -> None:
    """redis-py's cluster client raises its own RedisClusterException (not even a
    RedisError) when no node answers: it used to escape run() at once."""
    client = AsyncRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", free_port())])
    try:
        worker = Worker(queue_name, noop, redis=client, start_timeout=1.0)
        with pytest.raises(RedisUnavailableError):
            await asyncio.wait_for(worker.run(handle_signals=False), timeout=10)
    finally:
        await client.aclose()


async def test_refused_credentials_fail_the_start_at_once(
    queue_name: str, private_redis: RedisServer
) -> None:
    private_redis.client().config_set("requirepass", "right")
    worker = Worker(
        queue_name, noop, redis=f"redis://:wrong@127.0.0.1:{private_redis.port}/0"
    )  # default start_timeout (30 s): not waited for
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="refused its credentials"):
        await asyncio.wait_for(worker.run(handle_signals=False), timeout=10)
    assert time.monotonic() - started < 5.0
    assert not worker.running


async def test_a_redis_error_at_start_is_a_queue_error(
    queue_name: str, private_redis: RedisServer
) -> None:
    """Any other refusal of Redis at start (here an ACL user that may not run INFO) comes
    out of run() as a QueueError carrying redis-py's error as its cause."""
    admin = private_redis.client()
    admin.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["*"],
                      commands=["+@all", "-info"])  # fmt: skip
    admin.close()
    worker = Worker(queue_name, noop, redis=f"redis://limited:pw@127.0.0.1:{private_redis.port}/0")
    with pytest.raises(QueueError, match="cannot start") as caught:
        await asyncio.wait_for(worker.run(handle_signals=False), timeout=10)
    assert isinstance(caught.value.__cause__, NoPermissionError)


async def test_a_running_worker_rides_out_an_outage_longer_than_start_timeout(
    queue_name: str, private_redis: RedisServer
) -> None:
    """start_timeout bounds the start only: once running, the worker waits for Redis as
    long as it takes, then carries on."""
    done: list[str] = []

    async def process(job: Job) -> None:
        done.append(job.id)

    worker = Worker(queue_name, process, redis=private_redis.url, start_timeout=0.5,
                    drain_delay=1.0)  # fmt: skip
    runner = asyncio.create_task(worker.run(handle_signals=False))
    await wait_for(lambda: worker.running, what="worker started")
    private_redis.kill()
    await asyncio.sleep(2.0)  # four times start_timeout
    assert not runner.done(), runner
    private_redis.start()
    async with Queue(queue_name, redis=private_redis.url) as queue:
        job = await queue.add("after", {})
        await wait_counts(queue, completed=1, timeout=15)
    assert done == [job.id]
    await worker.close()
    assert runner.exception() is None


def test_a_bad_start_timeout_is_refused() -> None:
    for bad in (0, -1, "5", float("nan")):
        with pytest.raises(InvalidOptionError, match="start_timeout"):
            Worker("q", noop, redis="redis://127.0.0.1:1/0", start_timeout=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- decode_responses=True


def connections_named(url: str, name: str) -> int:
    admin = redis.Redis.from_url(url)
    try:
        return sum(1 for entry in admin.client_list() if entry["name"] == name)
    finally:
        admin.close()


@pytest.fixture
async def decoding(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """The user's own client: decoding, on database 3, with a name to find its connections."""
    url = redis_url.rsplit("/", 1)[0] + "/3"
    client = redis.asyncio.Redis.from_url(
        url, decode_responses=True, client_name=f"user-{uuid.uuid4().hex[:8]}"
    )
    yield client
    await client.aclose()


def db3(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")


async def test_a_decoding_client_works_for_a_queue_and_a_worker(
    queue_name: str, redis_url: str, decoding: redis.asyncio.Redis
) -> None:
    name = decoding.connection_pool.connection_kwargs["client_name"]
    assert await decoding.ping() is True  # one connection of the user's

    async def process(job: Job) -> dict[str, Any]:
        await job.update_progress(50)
        return {"echo": job.data}

    async with Queue(queue_name, redis=decoding) as queue:
        job = await queue.add("x", {"text": "héllo", "n": 1})
        fetched = await queue.get_job(job.id)
        assert fetched is not None and fetched.data == {"text": "héllo", "n": 1}
        async with Worker(queue_name, process, redis=decoding, drain_delay=1.0):
            await wait_counts(queue, completed=1)
        done = await queue.get_job(job.id)
        assert done is not None and done.state is JobState.COMPLETED
        assert done.return_value == {"echo": {"text": "héllo", "n": 1}}
        assert done.progress == 50
        # Same settings as the user's client: its database, its client name.
        raw = db3(redis_url)
        assert raw.exists(queue.keys["jobs"]) == 1
        raw.close()
        assert connections_named(redis_url, name) >= 2  # the user's and the queue's twin
    # The twins (queue's and worker's) are closed; the user's client is not.
    await wait_for(lambda: connections_named(redis_url, name) == 1, what="twins closed")
    assert await decoding.get("absent") is None
    assert await decoding.set("k", "v") and await decoding.get("k") == "v"  # still decoding


async def test_a_client_that_does_not_decode_is_used_as_is(queue_name: str, redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    async with (
        Queue(queue_name, redis=client) as queue,
        Worker(queue_name, noop, redis=client) as worker,
    ):
        assert queue.client is client and worker.client is client
        await queue.add("x", 1)
        await wait_counts(queue, completed=1)
    assert await client.ping() is True  # not closed by either
    await client.aclose()


async def test_a_blocking_pool_keeps_its_class_and_size(queue_name: str, redis_url: str) -> None:
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        redis_url, decode_responses=True, max_connections=7, timeout=3
    )
    client = redis.asyncio.Redis(connection_pool=pool)
    async with Queue(queue_name, redis=client) as queue:
        twin = queue.client
        assert isinstance(twin, redis.asyncio.Redis) and twin is not client
        assert isinstance(twin.connection_pool, redis.asyncio.BlockingConnectionPool)
        assert twin.connection_pool.max_connections == 7
        assert twin.connection_pool.timeout == 3
        job = await queue.add("x", [1])
        assert (await queue.get_job(job.id)).data == [1]  # type: ignore[union-attr]
    await client.aclose()


def test_a_decoding_sync_client_works_for_a_sync_queue(queue_name: str, redis_url: str) -> None:
    name = f"user-{uuid.uuid4().hex[:8]}"
    url = redis_url.rsplit("/", 1)[0] + "/3"
    client = redis.Redis.from_url(url, decode_responses=True, client_name=name, socket_timeout=4)
    try:
        assert client.ping() is True
        with SyncQueue(queue_name, redis=client) as queue:
            assert queue.client is not client
            # The twin keeps the client's settings: its socket timeout (the sync deadline).
            assert isinstance(queue.client, redis.Redis)
            assert queue.client.connection_pool.connection_kwargs["socket_timeout"] == 4
            job = queue.add("x", {"text": "héllo"})
            fetched = queue.get_job(job.id)
            assert fetched is not None and fetched.data == {"text": "héllo"}
            assert queue.get_counts()["waiting"] == 1
            raw = db3(redis_url)
            assert raw.exists(queue.keys["jobs"]) == 1
            raw.close()
            assert connections_named(redis_url, name) == 2
        assert connections_named(redis_url, name) == 1  # the twin is closed, not the user's
        assert client.set("k", "v") and client.get("k") == "v"
    finally:
        client.close()


@pytest.fixture
def sentinel_port(private_redis: RedisServer, tmp_path: Path) -> Iterator[int]:
    """A Sentinel watching the private Redis as ``main``."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 {private_redis.port} 1\n"
    )
    process = subprocess.Popen(
        [REDIS_SERVER, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.sentinel.Sentinel([("127.0.0.1", port)], socket_timeout=1)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.discover_master("main")  # type: ignore[no-untyped-call]
                break
            except (redis.exceptions.ConnectionError, redis.sentinel.MasterNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            finally:
                probe.sentinels[0].close()
        yield port
    finally:
        process.kill()
        process.wait()


async def test_a_decoding_sentinel_client_keeps_finding_its_master(
    queue_name: str, sentinel_port: int
) -> None:
    """The twin of a Sentinel client asks the same Sentinels for the same service."""
    sentinels = [("127.0.0.1", sentinel_port)]
    manager = redis.asyncio.sentinel.Sentinel(sentinels, decode_responses=True)  # type: ignore[no-untyped-call]
    client = manager.master_for("main")
    try:
        async with Queue(queue_name, redis=client) as queue:
            assert isinstance(queue.client, redis.asyncio.Redis)
            pool = queue.client.connection_pool
            assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
            assert pool is not client.connection_pool and pool.service_name == "main"
            job = await queue.add("x", {"text": "héllo"})
            async with Worker(queue_name, noop, redis=client, drain_delay=1.0):
                await wait_counts(queue, completed=1)
        assert await client.set("k", "v") and await client.get("k") == "v"
    finally:
        await client.aclose()
        await manager.sentinels[0].aclose()
    sync_manager = redis.sentinel.Sentinel(sentinels, decode_responses=True)  # type: ignore[no-untyped-call]
    sync_client = sync_manager.master_for("main")  # type: ignore[no-untyped-call]
    try:
        with SyncQueue(queue_name, redis=sync_client) as sync_queue:
            stored = sync_queue.get_job(job.id)
            assert stored is not None and stored.state is JobState.COMPLETED
        assert sync_client.get("k") == "v"
    finally:
        sync_client.close()
        sync_manager.sentinels[0].close()


def test_a_decoding_client_that_cannot_be_copied_is_refused() -> None:
    class Odd:  # decodes, and has no connection pool to copy
        def get_encoder(self) -> SimpleNamespace:
            return SimpleNamespace(decode_responses=True)

    with pytest.raises(InvalidOptionError, match="decode_responses=False"):
        Queue("q", redis=Odd())  # type: ignore[arg-type]
