"""queue_core on a real Redis Cluster: three masters, queues spread over their slots.

A queue's keys share the hash tag ``{queue}``, so each queue lives in one slot (one node)
and every script call is a single-slot call. Several queues are used so that they land on
different nodes, and one ``redis.asyncio.cluster.RedisCluster`` client serves them all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import ResponseError as RedisResponseError

from queue_core import (
    Backoff,
    ClusterClientRequiredError,
    Dedup,
    FlowNode,
    FlowProducer,
    Job,
    JobCancelledError,
    JobFailedError,
    JobOptions,
    JobSpec,
    JobState,
    Queue,
    RateLimit,
    SyncQueue,
    UnrecoverableError,
    Worker,
)
from queue_core.keys import QueueKeys
from queue_core.scripts import _FUNCTIONS, load_script, preload, run_script
from tests.conftest import wait_counts
from tests.redis_server import RedisCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    local = RedisCluster(masters=3)
    try:
        local.start()
        yield local
    finally:
        local.cleanup()


@pytest.fixture
def admin(cluster: RedisCluster) -> Iterator[redis.Redis]:
    """A plain client to one node, for CLUSTER KEYSLOT and CLUSTER SLOTS."""
    client = cluster.nodes[0].client()
    yield client
    client.close()


@pytest.fixture
async def client(cluster: RedisCluster) -> AsyncIterator[AsyncRedisCluster]:
    nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
    cluster_client = AsyncRedisCluster(startup_nodes=nodes, decode_responses=False)
    yield cluster_client
    await cluster_client.aclose()


def command(client: redis.Redis, *args: str) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def keyslot(admin: redis.Redis, key: str) -> int:
    return int(command(admin, "CLUSTER", "KEYSLOT", key))


def slot_owners(admin: redis.Redis) -> list[tuple[int, int, int]]:
    """(first slot, last slot, master port) for every slot range."""
    ranges = []
    for entry in command(admin, "CLUSTER", "SLOTS"):
        ranges.append((int(entry[0]), int(entry[1]), int(entry[2][1])))
    return ranges


def owner_of(admin: redis.Redis, key: str) -> int:
    slot = keyslot(admin, key)
    for first, last, port in slot_owners(admin):
        if first <= slot <= last:
            return port
    raise AssertionError(f"slot {slot} has no owner")


def queue_names_on_every_node(admin: redis.Redis, masters: int) -> dict[int, str]:
    """One fresh queue name per master (its keys' slot is served by that master)."""
    names: dict[int, str] = {}
    while len(names) < masters:
        name = f"cq-{uuid.uuid4().hex[:10]}"
        names.setdefault(owner_of(admin, QueueKeys(name)["wait"]), name)
    return names


async def run_lifecycle(client: AsyncRedisCluster, name: str) -> list[Job]:
    """add, add_bulk, a delayed job, a job that fails once and retries; all complete."""
    runs: dict[str, int] = {}

    async def process(job: Job) -> Any:
        runs[job.id] = runs.get(job.id, 0) + 1
        if job.name == "flaky" and runs[job.id] == 1:
            raise RuntimeError("first attempt fails")
        return {"queue": name, "job": job.name, "data": job.data}

    queue = Queue(name, redis=client)
    single = await queue.add("single", {"n": 1})
    bulk = await queue.add_bulk(
        [JobSpec("bulk", {"i": i}, JobOptions(priority=i)) for i in range(3)]
    )
    delayed = await queue.add("delayed", {"n": 2}, delay=timedelta(milliseconds=300))
    flaky = await queue.add("flaky", {"n": 3}, attempts=2, backoff=Backoff.fixed(0.1))
    assert delayed.state is JobState.DELAYED
    assert await queue.get_counts() == {
        "waiting": 5,
        "active": 0,
        "delayed": 1,
        "completed": 0,
        "failed": 0,
        "waiting_children": 0,
    }
    waiting = await queue.get_jobs("waiting")
    # Run order: the highest priority first, then FIFO within priority 0.
    assert [j.id for j in waiting] == [bulk[2].id, bulk[1].id, single.id, bulk[0].id, flaky.id]

    worker = Worker(name, process, redis=client, drain_delay=1, shutdown_timeout=5)
    async with worker:
        await wait_counts(queue, completed=6, timeout=20)
    await queue.close()

    assert runs[flaky.id] == 2
    assert all(runs[job.id] == 1 for job in [single, *bulk, delayed])
    done = await queue.get_jobs("completed")
    assert await queue.get_counts() == {
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "completed": 6,
        "failed": 0,
        "waiting_children": 0,
    }
    return done


async def test_queues_on_every_node_complete_their_jobs(
    cluster: RedisCluster, admin: redis.Redis, client: AsyncRedisCluster
) -> None:
    names = queue_names_on_every_node(admin, len(cluster.nodes))
    assert len(set(names)) >= 2, "the queues should be spread over at least two nodes"

    results = await asyncio.gather(*(run_lifecycle(client, name) for name in names.values()))

    for (port, name), done in zip(names.items(), results, strict=True):
        assert len(done) == 6
        assert all(job.state is JobState.COMPLETED for job in done)
        assert all(job.return_value["queue"] == name for job in done)
        by_name = {job.name: job for job in done}
        flaky = by_name["flaky"]
        assert (flaky.attempts_made, flaky.attempts_started) == (2, 2)
        assert flaky.failed_reason is None  # completing clears the first attempt's error
        delayed = by_name["delayed"]
        assert delayed.started_at is not None
        assert delayed.started_at - delayed.enqueued_at >= timedelta(milliseconds=290)

        # Every key of the queue is in one slot, on the master that owns that slot.
        keys = QueueKeys(name)
        slots = {keyslot(admin, k) for k in keys.all()}
        assert len(slots) == 1, f"{name}'s keys span slots {slots}"
        assert {owner_of(admin, k) for k in keys.all()} == {port}
        for node in cluster.nodes:
            node_client = node.client()
            try:
                found = node_client.keys(f"qc:{{{name}}}:*")
                stored = [k.decode() if isinstance(k, bytes) else k for k in found]
            finally:
                node_client.close()
            if node.port == port:
                assert stored, f"{name} wrote nothing on its own node"
                assert set(stored) <= set(keys.all())
            else:
                assert stored == [], f"{name} has keys on node {node.port}: {stored}"


def connections_named(cluster: RedisCluster, name: str) -> int:
    total = 0
    for node in cluster.nodes:
        with node.client() as admin:
            total += sum(1 for entry in admin.client_list() if entry["name"] == name)
    return total


async def test_a_decoding_cluster_client_is_accepted(cluster: RedisCluster) -> None:
    """A cluster client created with decode_responses=True (async, and sync for SyncQueue)
    gets a byte twin with its startup nodes and options, which queue_core opens and closes;
    the user's own client stays open and decoding."""
    queue_name = f"decoding-{uuid.uuid4().hex[:8]}"
    client_name = f"user-{uuid.uuid4().hex[:8]}"
    user_key = f"{{{queue_name}}}:mine"
    nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
    decoding = AsyncRedisCluster(
        startup_nodes=nodes, decode_responses=True, client_name=client_name, socket_timeout=7
    )

    async def echo(job: Job) -> Any:
        return job.data

    try:
        assert await decoding.set(user_key, "v")
        own = connections_named(cluster, client_name)
        async with Queue(queue_name, redis=decoding) as queue:
            twin = queue.client
            assert isinstance(twin, AsyncRedisCluster) and twin is not decoding
            assert twin.get_connection_kwargs()["socket_timeout"] == 7
            job = await queue.add("x", {"text": "héllo"})
            async with Worker(queue_name, echo, redis=decoding, drain_delay=1.0):
                await wait_counts(queue, completed=1)
            done = await queue.get_job(job.id)
            assert done is not None and done.return_value == {"text": "héllo"}
            assert connections_named(cluster, client_name) > own
        for _ in range(100):  # the twins' connections close as the server notices
            if connections_named(cluster, client_name) == own:
                break
            await asyncio.sleep(0.05)
        assert connections_named(cluster, client_name) == own
        assert await decoding.get(user_key) == "v"  # open, and still decoding
    finally:
        await decoding.aclose()

    sync_nodes = [
        redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
        for host, port in cluster.startup_nodes
    ]
    sync_decoding = redis.cluster.RedisCluster(startup_nodes=sync_nodes, decode_responses=True)
    try:
        with SyncQueue(queue_name, redis=sync_decoding) as sync_queue:
            assert sync_queue.client is not sync_decoding
            stored = sync_queue.get_job(job.id)
            assert stored is not None and stored.return_value == {"text": "héllo"}
            sync_queue.add("y", [1])
            assert sync_queue.get_counts()["waiting"] == 1
        assert sync_decoding.get(user_key) == "v"
    finally:
        sync_decoding.close()


async def test_server_address_is_the_node_serving_the_queue(
    cluster: RedisCluster, client: AsyncRedisCluster, admin: redis.Redis
) -> None:
    queue = Queue(f"addr-{uuid.uuid4().hex[:8]}", redis=client)
    await queue.add("x", 1)
    assert queue.server_address == "127.0.0.1"
    assert queue.server_port == owner_of(admin, queue.keys["wait"])


async def test_a_plain_client_to_the_wrong_node_gets_a_clear_error(
    cluster: RedisCluster, admin: redis.Redis
) -> None:
    """MOVED to a non-cluster client names the fix, from the producer (async and sync) and
    at a worker's start, and nothing is written."""
    node = cluster.nodes[0]
    names = queue_names_on_every_node(admin, len(cluster.nodes))
    elsewhere = next(name for port, name in names.items() if port != node.port)
    url = f"redis://127.0.0.1:{node.port}/0"
    async with Queue(elsewhere, redis=url) as queue:
        with pytest.raises(ClusterClientRequiredError, match="cluster client"):
            await queue.add("job", 1)
    with (
        SyncQueue(elsewhere, redis=url) as sync_queue,
        pytest.raises(ClusterClientRequiredError, match="RedisCluster"),
    ):
        sync_queue.get_counts()

    async def process(job: Job) -> None:
        return None

    worker = Worker(elsewhere, process, redis=url)
    with pytest.raises(ClusterClientRequiredError, match=elsewhere):
        await worker.run(handle_signals=False)
    owner = next(
        n for n in cluster.nodes if n.port == owner_of(admin, QueueKeys(elsewhere)["wait"])
    )
    with owner.client() as client:
        assert client.keys(f"*{elsewhere}*") == []


async def operate(client: AsyncRedisCluster, name: str) -> dict[str, Any]:
    """Every operator action of a queue through the cluster client, with a worker running."""
    release = asyncio.Event()

    async def process(job: Job) -> Any:
        if job.name == "fails":
            raise UnrecoverableError("no")
        if job.name == "hangs":
            await release.wait()
        return job.data

    queue = Queue(name, redis=client)
    seen: dict[str, Any] = {}
    await queue.pause()
    seen["paused"] = await queue.is_paused()
    await queue.set_global_concurrency(2)
    await queue.set_rate_limit(RateLimit(100, 1))
    await queue.set_events_max_length(1000)
    config = await queue.get_config()
    seen["config"] = (config.global_concurrency, config.rate_limit, config.events_max_length)
    later = await queue.add("later", {"n": 1}, delay=60)
    await queue.update_job_data(later.id, {"n": 2})
    await queue.promote_job(later.id)
    unwanted = await queue.add("unwanted", None, delay=60)
    seen["cancel_waiting"] = await queue.cancel(unwanted.id, "not needed")
    dropped = await queue.add("dropped", None)
    await queue.remove_job(dropped.id)
    first = await queue.add("deduped", {"v": 1}, dedup=Dedup("key"))
    second = await queue.add("deduped", {"v": 2}, dedup=Dedup("key"))
    seen["dedup"] = (second.id == first.id, second.deduplicated)
    fails = await queue.add("fails", None)
    hangs = await queue.add("hangs", None)
    await queue.resume()
    async with Worker(name, process, redis=client, drain_delay=1, heartbeat_interval=0.5):
        seen["later"] = await queue.wait_until_finished(later.id, timeout=10)
        with pytest.raises(JobFailedError):
            await queue.wait_until_finished(fails.id, timeout=10)
        await wait_counts(queue, active=1)
        seen["workers"] = len(await queue.get_workers())
        seen["cancel_running"] = await queue.cancel(hangs.id, "stop")
        with pytest.raises(JobCancelledError):
            await queue.wait_until_finished(hangs.id, timeout=10)
        await queue.retry_job(fails.id)
        with pytest.raises(JobFailedError):
            await queue.wait_until_finished(fails.id, timeout=10)
        seen["retried"] = await queue.retry_jobs(state="completed")
        await wait_counts(queue, completed=2)
    seen["cleaned"] = len(await queue.clean("completed", 0))
    await queue.add("left", None, delay=60)
    seen["drained"] = await queue.drain(include_delayed=True)
    await queue.obliterate()
    seen["counts"] = await queue.get_counts()
    await queue.close()
    return seen


async def test_operator_actions_on_queues_on_every_node(
    cluster: RedisCluster, admin: redis.Redis, client: AsyncRedisCluster
) -> None:
    names = queue_names_on_every_node(admin, len(cluster.nodes))
    results = await asyncio.gather(*(operate(client, name) for name in names.values()))
    empty = {
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "completed": 0,
        "failed": 0,
        "waiting_children": 0,
    }
    for seen in results:
        assert seen == {
            "paused": True,
            "config": (2, RateLimit(100, 1), 1000),
            "cancel_waiting": "cancelled",
            "dedup": (True, True),
            "later": {"n": 2},
            "workers": 1,
            "cancel_running": "cancelling",
            "retried": 2,
            "cleaned": 2,
            "drained": 1,
            "counts": empty,
        }
    for name in names.values():  # obliterate left nothing behind on any node
        for node in cluster.nodes:
            with node.client() as node_client:
                assert node_client.keys(f"qc:{{{name}}}:*") == []


async def test_a_flow_across_every_node_completes_each_parent_once(
    client: AsyncRedisCluster, admin: redis.Redis, cluster: RedisCluster
) -> None:
    """A three-level tree whose queues live on three masters: added parents first, one
    call per queue and depth; each child's outcome reaches its parent's slot through the
    outbox."""
    top, middle, leaves = queue_names_on_every_node(admin, len(cluster.nodes)).values()
    runs: dict[str, int] = {}

    async def process(job: Job) -> Any:
        runs[job.id] = runs.get(job.id, 0) + 1
        if job.dependencies is None:
            return job.data["n"]
        return sum((await job.get_children_values()).values())

    async with FlowProducer(redis=client) as flows:
        flow = await flows.add(
            FlowNode("sum", top, children=[
                FlowNode("sum", middle, children=[FlowNode("n", leaves, {"n": n}) for n in (1, 2)]),
                FlowNode("n", leaves, {"n": 4}),
            ])
        )  # fmt: skip
        workers = [
            Worker(name, process, redis=client, drain_delay=0.5) for name in (top, middle, leaves)
        ]
        async with workers[0], workers[1], workers[2]:
            assert await flows.queue(top).wait_until_finished(flow.job.id, timeout=15) == 7
        tree = await flows.get_flow(top, flow.job.id)
    assert tree is not None
    assert [(n.job.queue_name, n.job.state) for n in tree.walk()] == [
        (top, JobState.COMPLETED), (middle, JobState.COMPLETED), (leaves, JobState.COMPLETED),
        (leaves, JobState.COMPLETED), (leaves, JobState.COMPLETED),
    ]  # fmt: skip
    assert sorted(runs.values()) == [1] * 5


async def test_a_flow_add_that_fails_half_way_on_a_cluster_leaves_nothing(
    client: AsyncRedisCluster, admin: redis.Redis, cluster: RedisCluster
) -> None:
    """The leaves' queue refuses its call (a key of the wrong type, as a corrupt or
    foreign key would): the parent added before it is removed, and the error raised."""
    parents, children = list(queue_names_on_every_node(admin, len(cluster.nodes)).values())[:2]
    blocker = QueueKeys(children)["jobs"]
    await client.set(blocker, "not a hash")
    try:
        async with FlowProducer(redis=client) as flows:
            with pytest.raises(RedisResponseError, match="WRONGTYPE"):
                await flows.add(FlowNode("p", parents, children=[FlowNode("c", children)]))
            counts = await flows.queue(parents).get_counts()
            assert counts == dict.fromkeys(counts, 0)
            await client.delete(blocker)
            # The same tree added again (a retry) goes through whole.
            flow = await flows.add(FlowNode("p", parents, children=[FlowNode("c", children)]))
            assert flow.job.state is JobState.WAITING_CHILDREN
            assert (await flows.queue(children).get_counts())["waiting"] == 1
    finally:
        await client.delete(blocker)


async def test_a_cluster_client_calls_scripts_by_evalsha(client: AsyncRedisCluster) -> None:
    """redis-py asks a node for an FCALL's keys at every call (COMMAND GETKEYS), a node
    that may be the dead one after a failover: a Cluster client keeps EVALSHA."""
    await preload(client)
    assert not _FUNCTIONS.get(client)
    reply = await run_script(client, load_script("get_counts"), QueueKeys("evalsha-check"), [])
    assert [int(count) for count in reply] == [0] * len(reply)
