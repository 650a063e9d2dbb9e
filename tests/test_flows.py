"""Flows against real Redis and real workers: a three-level tree across two queues, each
failure policy, retries, removal and cancellation of parents and children, get_flow, the
outbox sweep after a crash, events, hooks, bad input. Redis Cluster is covered in
tests/test_cluster.py, a worker SIGKILLed while it holds a child in
tests/chaos/test_flow_kill.py."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import redis.asyncio

from queue_core import (
    CorruptJobError,
    Dedup,
    DependencyFailedError,
    EnqueueEvent,
    FlowJob,
    FlowNode,
    FlowProducer,
    Hook,
    InvalidOptionError,
    Job,
    JobOptions,
    JobState,
    PayloadTooLargeError,
    Queue,
    QueueEvents,
    SyncQueue,
    Worker,
)
from queue_core import outbox as outbox_module
from queue_core.worker_context import WorkerContext
from tests.conftest import wait_for


@pytest.fixture
def names() -> tuple[str, str]:
    """Two queue names for a flow: parents and children."""
    tag = uuid.uuid4().hex[:10]
    return f"albums-{tag}", f"images-{tag}"


@pytest.fixture
async def producer(redis_url: str) -> AsyncIterator[FlowProducer]:
    async with FlowProducer(redis=redis_url) as flows:
        yield flows


class Runs:
    """Processors that record each run; ``fail`` names jobs (by data "key") that raise."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.seen: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, int] = {}  # key -> attempts that fail before one succeeds

    async def child(self, job: Job) -> Any:
        key = job.data["key"]
        self.runs[key] += 1
        if self.runs[key] <= self.fail.get(key, 0):
            raise RuntimeError(f"{key} broke")
        return {"key": key, "size": job.data.get("size", 1)}

    async def parent(self, job: Job) -> Any:
        key = job.data["key"]
        self.runs[key] += 1
        values = await job.get_children_values()
        self.seen[key] = {
            "values": values,
            "deps": {str(d.ref): d.status for d in await job.get_dependencies()},
            "at_start": {str(d.ref): d.status for d in job.dependencies or []},
        }
        return sum(v["size"] if isinstance(v, dict) else v for v in values.values())


def _node(queue: str, key: str, *children: FlowNode, **extra: Any) -> FlowNode:
    name = "parent" if children else "child"
    return FlowNode(name, queue, {"key": key, **extra.pop("data", {})}, children=children, **extra)


def _by_key(tree: FlowJob) -> dict[str, FlowJob]:
    return {node.job.data["key"]: node for node in tree.walk()}


async def _start(
    make_worker: Callable[..., Worker], names: tuple[str, str], runs: Runs
) -> list[Worker]:
    parents, children = names
    workers = [
        make_worker({"parent": runs.parent, "child": runs.child}, queue_name=parents),
        make_worker({"child": runs.child, "parent": runs.parent}, queue_name=children),
    ]
    for worker in workers:
        await worker.__aenter__()
    return workers


async def test_a_three_level_tree_across_two_queues_runs_each_parent_once(
    producer: FlowProducer, names: tuple[str, str], make_worker: Callable[..., Worker]
) -> None:
    albums, images = names
    flow = await producer.add(
        _node(albums, "root",
              _node(images, "a", data={"size": 1}),
              _node(images, "b", data={"size": 2}),
              _node(albums, "mid", _node(images, "c", data={"size": 4}),
                    _node(images, "d", data={"size": 8}))),
    )  # fmt: skip
    nodes = _by_key(flow)
    assert [n.job.state for n in flow.walk()] == [
        JobState.WAITING_CHILDREN, JobState.WAITING, JobState.WAITING,
        JobState.WAITING_CHILDREN, JobState.WAITING, JobState.WAITING,
    ]  # fmt: skip
    assert nodes["a"].job.parent == flow.job.ref and nodes["c"].job.parent == nodes["mid"].job.ref
    parents = producer.queue(albums)
    assert (await parents.get_counts())["waiting_children"] == 2

    # Before any worker: get_flow shows the tree and who waits.
    before = await parents.get_flow(flow.job.id)
    assert before is not None
    assert {n.job.data["key"]: n.job.state for n in before.walk()} == {
        "root": JobState.WAITING_CHILDREN, "a": JobState.WAITING, "b": JobState.WAITING,
        "mid": JobState.WAITING_CHILDREN, "c": JobState.WAITING, "d": JobState.WAITING,
    }  # fmt: skip

    runs = Runs()
    await _start(make_worker, names, runs)
    assert await parents.wait_until_finished(flow.job.id, timeout=15) == 1 + 2 + 12
    assert runs.runs == {"root": 1, "mid": 1, "a": 1, "b": 1, "c": 1, "d": 1}
    assert runs.seen["mid"]["values"] == {
        str(nodes["c"].job.ref): {"key": "c", "size": 4},
        str(nodes["d"].job.ref): {"key": "d", "size": 8},
    }
    assert runs.seen["root"]["values"][str(nodes["mid"].job.ref)] == 12
    assert set(runs.seen["root"]["deps"].values()) == {"completed"}
    assert runs.seen["root"]["at_start"] == runs.seen["root"]["deps"]  # read as it started

    after = await producer.get_flow(albums, flow.job.id)
    assert after is not None
    states = {n.job.data["key"]: (n.job.state, n.job.return_value) for n in after.walk()}
    assert states["root"] == (JobState.COMPLETED, 15)
    assert states["c"] == (JobState.COMPLETED, {"key": "c", "size": 4})
    assert [len(n.children) for n in after.walk()] == [3, 0, 0, 2, 0, 0]
    assert (await parents.get_counts())["waiting_children"] == 0
    # Every outcome was delivered and acknowledged.
    for name in names:
        assert await producer.queue(name).deliver_outbox() == 0


async def test_a_child_retried_then_completing_completes_its_parent_once(
    producer: FlowProducer, names: tuple[str, str], make_worker: Callable[..., Worker]
) -> None:
    albums, images = names
    flow = await producer.add(
        _node(albums, "root", _node(images, "flaky", options=JobOptions(attempts=3)))
    )
    runs = Runs()
    runs.fail["flaky"] = 2
    await _start(make_worker, names, runs)
    assert await producer.queue(albums).wait_until_finished(flow.job.id, timeout=15) == 1
    assert runs.runs == {"flaky": 3, "root": 1}


async def test_by_default_a_failed_child_keeps_its_parent_waiting_until_retried(
    producer: FlowProducer, names: tuple[str, str], make_worker: Callable[..., Worker]
) -> None:
    albums, images = names
    flow = await producer.add(_node(albums, "root", _node(images, "ok"), _node(images, "bad")))
    runs = Runs()
    runs.fail["bad"] = 1
    await _start(make_worker, names, runs)
    parents, children = producer.queue(albums), producer.queue(images)
    bad = _by_key(flow)["bad"].job

    async def failure_seen() -> bool:
        deps = {d.ref: d for d in await flow.job.get_dependencies()}
        return deps[bad.ref].status == "failed"

    await wait_for(failure_seen, what="the child's failure to reach its parent")
    (dependency,) = [d for d in await flow.job.get_dependencies() if d.ref == bad.ref]
    assert dependency.failed_reason == "bad broke" and dependency.error_type == "RuntimeError"
    await asyncio.sleep(0.3)  # the parent does not move on
    assert (await parents.get_job(flow.job.id)).state is JobState.WAITING_CHILDREN  # type: ignore[union-attr]
    assert "root" not in runs.runs
    tree = await parents.get_flow(flow.job.id)
    assert tree is not None
    assert {n.job.data["key"]: n.job.state for n in tree.walk()}["bad"] is JobState.FAILED

    await children.retry_job(bad.id)  # the operator fixes it: the parent goes on
    assert await parents.wait_until_finished(flow.job.id, timeout=10) == 2
    assert runs.runs == {"ok": 1, "bad": 2, "root": 1}


async def test_fail_parent_on_failure_fails_the_parent_and_its_own_parent(
    producer: FlowProducer, names: tuple[str, str], make_worker: Callable[..., Worker]
) -> None:
    albums, images = names
    flow = await producer.add(
        _node(albums, "root",
              _node(albums, "mid", _node(images, "bad", on_failure="fail_parent"),
                    on_failure="fail_parent"),
              _node(images, "slow", data={"sleep": 0})),
    )  # fmt: skip
    runs = Runs()
    runs.fail["bad"] = 1
    await _start(make_worker, names, runs)
    parents = producer.queue(albums)
    with pytest.raises(DependencyFailedError) as failed:
        await parents.wait_until_finished(flow.job.id, timeout=10)
    assert failed.value.error_type == "DependencyFailedError"
    mid = _by_key(flow)["mid"].job
    assert f"child {mid.ref} failed" in failed.value.reason
    mid_job = await parents.get_job(mid.id)
    assert mid_job is not None and mid_job.state is JobState.FAILED
    assert mid_job.failed_reason is not None and "bad broke" in mid_job.failed_reason
    assert mid_job.attempts_made == 0  # it never ran
    assert "root" not in runs.runs and "mid" not in runs.runs


@pytest.mark.parametrize("policy", ["ignore", "remove"])
async def test_ignore_and_remove_let_the_parent_go_on(
    producer: FlowProducer,
    names: tuple[str, str],
    make_worker: Callable[..., Worker],
    policy: Any,
) -> None:
    albums, images = names
    flow = await producer.add(
        _node(albums, "root", _node(images, "ok"), _node(images, "bad", on_failure=policy))
    )
    runs = Runs()
    runs.fail["bad"] = 1
    await _start(make_worker, names, runs)
    assert await producer.queue(albums).wait_until_finished(flow.job.id, timeout=10) == 1
    bad = _by_key(flow)["bad"].job
    ok = _by_key(flow)["ok"].job
    expected = "ignored" if policy == "ignore" else "removed"
    assert runs.seen["root"]["deps"] == {str(ok.ref): "completed", str(bad.ref): expected}
    assert runs.seen["root"]["values"] == {str(ok.ref): {"key": "ok", "size": 1}}
    (dependency,) = [d for d in await flow.job.get_dependencies() if d.ref == bad.ref]
    assert dependency.failed_reason == "bad broke"  # kept either way, for the operator


async def test_removing_a_child_lets_its_parent_go_on_without_it(
    producer: FlowProducer, names: tuple[str, str], make_worker: Callable[..., Worker]
) -> None:
    albums, images = names
    flow = await producer.add(
        _node(albums, "root", _node(images, "ok"),
              _node(images, "never", options=JobOptions(delay=600))),
    )  # fmt: skip
    runs = Runs()
    await _start(make_worker, names, runs)
    await producer.queue(images).remove_job(_by_key(flow)["never"].job.id)
    assert await producer.queue(albums).wait_until_finished(flow.job.id, timeout=10) == 1
    assert set(runs.seen["root"]["deps"].values()) == {"completed", "removed"}


async def test_cancelling_a_parent_cancels_its_pending_children_down_the_tree(
    producer: FlowProducer, names: tuple[str, str], redis_url: str
) -> None:
    albums, images = names
    flow = await producer.add(
        _node(albums, "root", _node(images, "a"),
              _node(albums, "mid", _node(images, "b", options=JobOptions(delay=600)))),
    )  # fmt: skip
    nodes = _by_key(flow)
    assert await producer.queue(albums).cancel(flow.job.id, "customer left") == "cancelled"
    tree = await producer.get_flow(albums, flow.job.id)
    assert tree is not None
    found = {n.job.data["key"]: n.job for n in tree.walk()}
    assert {k: j.state for k, j in found.items()} == dict.fromkeys(found, JobState.FAILED)
    assert (
        found["a"].error_type == "JobCancelledError" and found["a"].failed_reason == "customer left"
    )
    assert found["b"].failed_reason == "customer left"  # the grandchild, through "mid"
    assert nodes["b"].job.id in {j.id for j in await producer.queue(images).get_jobs("failed")}


async def test_removing_a_parent_cancels_its_children_with_a_sync_queue(
    producer: FlowProducer, names: tuple[str, str], redis_url: str
) -> None:
    albums, images = names
    flow = await producer.add(_node(albums, "root", _node(images, "a"), _node(images, "b")))
    with SyncQueue(albums, redis=redis_url) as parents:
        parents.remove_job(flow.job.id)
    assert await producer.queue(albums).get_job(flow.job.id) is None
    children = await producer.queue(images).get_jobs()
    assert [(j.state, j.failed_reason) for j in children] == [
        (JobState.FAILED, "its parent was removed")
    ] * 2
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:  # nothing of the parent's bookkeeping is left
        assert not await raw.hexists(f"qc:{{{albums}}}:deps", flow.job.id)
        assert await raw.hlen(f"qc:{{{albums}}}:depout") == 0
    finally:
        await raw.aclose()


async def test_a_child_whose_worker_died_before_delivering_is_swept_up(
    producer: FlowProducer,
    names: tuple[str, str],
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that settles a child and dies before it delivers the outcome (here: its
    delivery does nothing) leaves the message in the outbox; another worker's sweep
    delivers it."""
    albums, images = names
    flow = await producer.add(_node(albums, "root", _node(images, "a")))
    runs = Runs()
    monkeypatch.setattr(WorkerContext, "deliver_outbox", lambda self: None)
    doomed = make_worker({"child": runs.child}, queue_name=images)
    async with doomed:
        await wait_for(lambda: runs.runs["a"] == 1, what="the child to run")
        await asyncio.sleep(0.2)
    assert (await producer.queue(albums).get_job(flow.job.id)).state is JobState.WAITING_CHILDREN  # type: ignore[union-attr]
    monkeypatch.undo()
    monkeypatch.setattr(outbox_module, "SWEEP_INTERVAL_S", 0.1)
    monkeypatch.setattr(outbox_module, "SWEEP_MIN_AGE_MS", 100)
    sweeper = make_worker({"child": runs.child}, queue_name=images)
    await sweeper.__aenter__()
    parent_worker = make_worker({"parent": runs.parent}, queue_name=albums)
    await parent_worker.__aenter__()
    assert await producer.queue(albums).wait_until_finished(flow.job.id, timeout=10) == 1
    assert runs.runs == {"a": 1, "root": 1}


async def test_flow_events_and_enqueue_hooks(
    redis_url: str, names: tuple[str, str], make_worker: Callable[..., Worker]
) -> None:
    albums, images = names

    class Stamp(Hook):
        def __init__(self) -> None:
            self.events: list[EnqueueEvent] = []

        @contextmanager
        def _around(self, event: EnqueueEvent) -> Any:
            self.events.append(event)
            for job in event.jobs:
                job.headers["flow"] = "yes"
            yield

        def around_enqueue(self, event: EnqueueEvent) -> AbstractContextManager[object]:
            return self._around(event)

    stamp = Stamp()
    async with FlowProducer(redis=redis_url, hooks=[stamp]) as producer:
        events = QueueEvents(albums, redis=redis_url, last_id="0-0", block=0.2)
        flow = await producer.add(_node(albums, "root", _node(images, "a")))
        assert sorted(e.queue for e in stamp.events) == [albums, images]
        assert all(e.error is None and e.jobs[0].job_id for e in stamp.events)
        assert flow.job.headers == {"flow": "yes"} == flow.children[0].job.headers
        runs = Runs()
        await _start(make_worker, names, runs)
        await producer.queue(albums).wait_until_finished(flow.job.id, timeout=10)
        seen = []
        async with events:
            async for event in events:
                seen.append((event.event, event.fields.get("state") or event.fields.get("outcome")))
                if event.event == "completed":
                    break
        assert seen == [
            ("added", "waiting_children"),
            ("dependency", "completed"),
            ("waiting", None),
            ("active", None),
            ("completed", None),
        ]
        child = await producer.queue(images).get_job(flow.children[0].job.id)
        assert child is not None and child.headers == {"flow": "yes"}
        # The parent sees each child's headers (its trace context) with its outcome.
        (dependency,) = await flow.job.get_dependencies()
        assert dependency.headers == {"flow": "yes"}


async def test_bad_flows_are_refused_before_anything_is_written(
    producer: FlowProducer, names: tuple[str, str], redis_url: str
) -> None:
    albums, images = names
    keyed = Dedup("k")
    bad: list[Any] = [
        FlowNode("p", albums, options=JobOptions(delay=5), children=[FlowNode("c", images)]),
        FlowNode("p", albums, children=[FlowNode("c", images, options=JobOptions(dedup=keyed))]),
        FlowNode("p", albums, children=[FlowNode("c", images, on_failure="explode")]),  # type: ignore[arg-type]
        FlowNode("p", albums, children=[FlowNode("c", images, options=JobOptions(job_id="x")),
                                        FlowNode("c", images, options=JobOptions(job_id="x"))]),
        FlowNode("p", "bad{name}", children=[FlowNode("c", images)]),
        FlowNode("p", albums, children=["not a node"]),  # type: ignore[list-item]
    ]  # fmt: skip
    for flow in bad:
        with pytest.raises(InvalidOptionError):
            await producer.add(flow)
    small = FlowProducer(redis=redis_url, max_payload_bytes=200)
    try:
        with pytest.raises(PayloadTooLargeError):
            await small.add(FlowNode("p", albums, children=[FlowNode("c", images, "x" * 500)]))
    finally:
        await small.close()
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await raw.keys(f"qc:{{{albums}}}:*") == []
        assert await raw.keys(f"qc:{{{images}}}:*") == []
    finally:
        await raw.aclose()


async def test_a_job_id_that_exists_is_kept_and_reported(
    producer: FlowProducer, names: tuple[str, str]
) -> None:
    albums, images = names
    first = await producer.add(
        _node(albums, "root", _node(images, "a"), options=JobOptions(job_id="album-1"))
    )
    again = await producer.add(
        _node(albums, "root", _node(images, "b"), options=JobOptions(job_id="album-1"))
    )
    assert not first.job.deduplicated and again.job.deduplicated
    deps = await first.job.get_dependencies()
    assert [d.ref for d in deps] == [first.children[0].job.ref]  # the first tree's child


async def test_a_parent_ready_in_a_paused_queue_waits_for_resume(
    producer: FlowProducer, names: tuple[str, str], make_worker: Callable[..., Worker]
) -> None:
    albums, images = names
    parents: Queue = producer.queue(albums)
    await parents.pause()
    flow = await producer.add(_node(albums, "root", _node(images, "a")))
    runs = Runs()
    await _start(make_worker, names, runs)
    await wait_for(
        lambda: _state(parents, flow.job.id, JobState.WAITING), what="the parent to be ready"
    )
    await asyncio.sleep(0.3)
    assert "root" not in runs.runs
    await parents.resume()
    assert await parents.wait_until_finished(flow.job.id, timeout=10) == 1


async def _state(queue: Queue, job_id: str, state: JobState) -> bool:
    job = await queue.get_job(job_id)
    return job is not None and job.state is state


async def test_a_sync_queue_reads_a_flow_and_its_dependencies(
    producer: FlowProducer, names: tuple[str, str], redis_url: str
) -> None:
    albums, images = names
    flow = await producer.add(_node(albums, "root", _node(albums, "mid", _node(images, "a"))))
    with SyncQueue(albums, redis=redis_url) as parents:
        tree = parents.get_flow(flow.job.id)
        assert tree is not None
        assert [(n.job.queue_name, n.job.data["key"], n.job.state) for n in tree.walk()] == [
            (albums, "root", JobState.WAITING_CHILDREN),
            (albums, "mid", JobState.WAITING_CHILDREN),
            (images, "a", JobState.WAITING),
        ]
        (mid,) = parents.get_dependencies(flow.job.id)
        assert (mid.ref, mid.status) == (flow.children[0].job.ref, "pending")
        assert parents.get_dependencies(flow.children[0].children[0].job.id) == []
        assert parents.get_flow("no-such-job") is None


async def test_a_parent_whose_record_is_corrupt_is_quarantined_not_left_waiting(
    producer: FlowProducer,
    names: tuple[str, str],
    make_worker: Callable[..., Worker],
    redis_url: str,
) -> None:
    """A parent is never fetched while it waits, so no worker would meet its corrupt
    record: the delivery of its child's outcome quarantines it (failed, CorruptJobError)."""
    albums, images = names
    flow = await producer.add(_node(albums, "root", _node(images, "a")))
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        await raw.hset(f"qc:{{{albums}}}:state", flow.job.id, "{not json")
    finally:
        await raw.aclose()
    runs = Runs()
    await _start(make_worker, names, runs)
    parents = producer.queue(albums)

    async def quarantined() -> bool:
        try:
            return await _state(parents, flow.job.id, JobState.FAILED)
        except CorruptJobError:  # read before its quarantine: its record cannot be read
            return False

    await wait_for(quarantined, what="quarantine")
    job = await parents.get_job(flow.job.id)
    assert job is not None and job.error_type == "CorruptJobError"
    assert job.corrupt_record == b"{not json"
    assert (await parents.get_counts())["waiting_children"] == 0
    assert runs.runs == {"a": 1}  # the child ran; the corrupt parent never did
