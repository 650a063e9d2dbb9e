"""Flows in telemetry, against real Redis and real workers: a flow is one trace (with an
ambient span or without), a parent's spans link to each child's job span with the
child's outcome, and a parent's wait (like a scheduler run's) starts when it became ready,
not when it was added."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from queue_core import FlowJob, FlowNode, FlowProducer, Job, JobSpec, Queue, Worker
from queue_otel import semconv as sc
from tests.conftest import wait_counts, wait_for
from tests.otel.conftest import Telemetry


@pytest.fixture
def names() -> tuple[str, str]:
    """Queue A holds the parents (and the grandchild), queue B the children."""
    tag = uuid.uuid4().hex[:10]
    return f"albums-{tag}", f"images-{tag}"


@pytest.fixture
async def producer(redis_url: str) -> AsyncIterator[FlowProducer]:
    async with FlowProducer(redis=redis_url) as flows:
        yield flows


async def child(job: Job) -> Any:
    await asyncio.sleep(job.data.get("sleep", 0))
    if job.data.get("fail"):
        raise RuntimeError("broken image")
    return job.data["key"]


async def parent(job: Job) -> Any:
    return len(await job.get_children_values())


def _tree(a: str, b: str, **child_data: Any) -> FlowNode:
    """root (A) <- images a, b (B) and mid (B) <- grandchild g (A)."""
    return FlowNode("album", a, {"key": "root"}, children=[
        FlowNode("resize", b, {"key": "a", **child_data}),
        FlowNode("resize", b, {"key": "b", **child_data}),
        FlowNode("album", b, {"key": "mid"}, children=[FlowNode("resize", a, {"key": "g"})]),
    ])  # fmt: skip


async def _run(
    flow: FlowJob,
    producer: FlowProducer,
    names: tuple[str, str],
    make_worker: Callable[..., Worker],
    telemetry: Telemetry,
) -> None:
    """Run the flow to its end with a worker per queue; wait for every job span."""
    for name in names:
        await make_worker({"album": parent, "resize": child}, queue_name=name).__aenter__()
    await producer.queue(flow.job.queue_name).wait_until_finished(flow.job.id, timeout=15)
    total = len(flow.walk())
    await wait_for(
        lambda: len([s for s in telemetry.spans() if s.name.startswith("job ")]) == total,
        what="every job span",
    )


def _job_span(telemetry: Telemetry, job: Job) -> ReadableSpan:
    (span,) = [
        s
        for s in telemetry.spans(f"job {job.queue_name}")
        if s.attributes is not None and s.attributes[sc.MESSAGE_ID] == job.id
    ]
    return span


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def _wait(span: ReadableSpan) -> float:
    """The span's queue_core.job.wait_time attribute."""
    wait = (span.attributes or {})[sc.JOB_WAIT]
    assert isinstance(wait, float)
    return wait


def _process_spans(telemetry: Telemetry, job: Job) -> list[ReadableSpan]:
    return [
        s
        for s in telemetry.spans(f"process {job.queue_name}")
        if s.attributes is not None and s.attributes[sc.MESSAGE_ID] == job.id
    ]


def _dependency_links(span: ReadableSpan) -> dict[int, dict[str, Any]]:
    """A span's links to children: child job span id -> the link's attributes."""
    return {
        link.context.span_id: dict(link.attributes or {})
        for link in span.links
        if link.attributes and sc.DEPENDENCY_STATUS in link.attributes
    }


def _by_key(flow: FlowJob, key: str) -> FlowJob:
    (node,) = [n for n in flow.walk() if n.job.data["key"] == key]
    return node


def _trace_ids(telemetry: Telemetry) -> set[int]:
    return {s.context.trace_id for s in telemetry.spans() if s.context is not None}


async def test_a_flow_added_in_a_request_is_one_trace(
    telemetry: Telemetry,
    producer: FlowProducer,
    names: tuple[str, str],
    make_worker: Callable[..., Worker],
) -> None:
    a, b = names
    app = telemetry.tracer_provider.get_tracer("app")
    with app.start_as_current_span("POST /albums") as request:
        flow = await producer.add(_tree(a, b))
    await _run(flow, producer, names, make_worker, telemetry)

    spans = telemetry.spans()
    kinds = {s.name.split(" ")[0] for s in spans}
    assert {"create", "send", "process", "job", "POST"} <= kinds
    assert len(telemetry.spans(f"create {a}")) == 2  # root and the grandchild
    assert len(telemetry.spans(f"create {b}")) == 3
    assert _trace_ids(telemetry) == {request.get_span_context().trace_id}
    for node in flow.walk():
        assert len(_process_spans(telemetry, node.job)) == 1
        _job_span(telemetry, node.job)


async def test_a_flow_without_an_ambient_span_is_one_trace(
    telemetry: Telemetry,
    producer: FlowProducer,
    names: tuple[str, str],
    make_worker: Callable[..., Worker],
) -> None:
    a, b = names
    flow = await producer.add(_tree(a, b))
    await _run(flow, producer, names, make_worker, telemetry)
    assert len(_trace_ids(telemetry)) == 1
    (root,) = [s for s in telemetry.spans() if s.parent is None]
    assert root.name == f"send {a}"  # the first queue's add roots the trace
    for node in flow.walk():
        assert len(_process_spans(telemetry, node.job)) == 1


async def test_a_parent_links_to_each_childs_job_span_with_its_status(
    telemetry: Telemetry,
    producer: FlowProducer,
    names: tuple[str, str],
    make_worker: Callable[..., Worker],
) -> None:
    a, b = names
    tree = _tree(a, b)
    broken = FlowNode("resize", b, {"key": "x", "fail": True}, on_failure="ignore")
    flow = await producer.add(
        FlowNode(tree.name, tree.queue, tree.data, children=[*tree.children, broken])
    )
    await _run(flow, producer, names, make_worker, telemetry)

    def expected(node: FlowJob) -> dict[int, dict[str, Any]]:
        return {
            _span_id(_job_span(telemetry, c.job)): {
                sc.DESTINATION: c.job.queue_name,
                sc.MESSAGE_ID: c.job.id,
                sc.DEPENDENCY_STATUS: "ignored" if c.job.data["key"] == "x" else "completed",
            }
            for c in node.children
        }

    parents = [n for n in flow.walk() if n.children]
    assert [n.job.data["key"] for n in parents] == ["root", "mid"]
    for node in parents:
        (attempt,) = _process_spans(telemetry, node.job)
        job_span = _job_span(telemetry, node.job)
        assert _dependency_links(attempt) == expected(node), node.job.data["key"]
        assert _dependency_links(job_span) == expected(node), node.job.data["key"]
    # Leaves link to nothing of the kind.
    for node in flow.walk():
        if not node.children:
            assert _dependency_links(_job_span(telemetry, node.job)) == {}
    failed = _job_span(telemetry, _by_key(flow, "x").job)
    assert failed.attributes is not None and failed.attributes[sc.JOB_OUTCOME] == "failed"


async def test_a_bulk_add_without_an_ambient_span_is_one_trace(
    telemetry: Telemetry, queue: Queue
) -> None:
    jobs = await queue.add_bulk([JobSpec("row", i) for i in range(3)])
    (send,) = telemetry.spans(f"send {queue.name}")
    creates = telemetry.spans(f"create {queue.name}")
    assert send.parent is None and send.context is not None
    assert [c.parent.span_id for c in creates if c.parent] == [send.context.span_id] * 3
    assert {link.context.span_id for link in send.links} == {
        c.context.span_id for c in creates if c.context
    }
    for create, job in zip(creates, jobs, strict=True):
        assert job.headers["traceparent"].split("-")[1] == f"{send.context.trace_id:032x}"
        assert create.attributes is not None and create.attributes[sc.MESSAGE_ID] == job.id


async def test_a_parents_wait_excludes_its_wait_for_its_children(
    telemetry: Telemetry,
    producer: FlowProducer,
    names: tuple[str, str],
    make_worker: Callable[..., Worker],
) -> None:
    a, b = names
    flow = await producer.add(
        FlowNode(
            "album",
            a,
            {"key": "root"},
            children=[FlowNode("resize", b, {"key": k, "sleep": 0.5}) for k in "ab"],
        )
    )
    await _run(flow, producer, names, make_worker, telemetry)

    done = await producer.queue(a).get_job(flow.job.id)
    assert done is not None and done.started_at is not None
    assert (done.started_at - done.enqueued_at).total_seconds() >= 0.5  # children's time
    (attempt,) = _process_spans(telemetry, flow.job)
    assert 0 <= _wait(attempt) < 0.25
    where = {sc.DESTINATION: a, sc.JOB_NAME: "album"}
    (point,) = [
        p
        for p in telemetry.points(sc.WAIT_DURATION)
        if all(p.attributes.get(k) == v for k, v in where.items())
    ]
    assert point.count == 1 and point.sum < 0.25


async def test_a_scheduler_runs_wait_starts_at_its_tick(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> None:
        return None

    every = 0.6
    await queue.upsert_scheduler("tick", every=every, limit=2)
    async with make_worker(process):
        await wait_counts(queue, completed=2, timeout=10)

    attempts = telemetry.spans(f"process {queue.name}")
    assert len(attempts) == 2
    for attempt in attempts:
        assert 0 <= _wait(attempt) < every / 3  # not the wait for its tick
    waits = [
        p
        for p in telemetry.points(sc.WAIT_DURATION)
        if p.attributes.get(sc.DESTINATION) == queue.name
    ]
    assert sum(p.count for p in waits) == 2
    assert max(p.max for p in waits) < every / 3
