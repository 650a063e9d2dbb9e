"""The job browser's read side (queue_core/ui/data.py) against a real private Redis:
discovery, the overview's summaries, paging in both orders, search and a job's page."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis.asyncio

from queue_core import (
    EnqueueEvent,
    FlowNode,
    FlowProducer,
    Hook,
    Job,
    JobSpec,
    Queue,
    Worker,
)
from queue_core.cli.common import Admin
from queue_core.discovery import discover_queues_sync
from queue_core.errors import InvalidOptionError
from queue_core.keys import QueueKeys
from queue_core.ui import data
from tests.conftest import wait_counts, wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def prefix() -> str:
    """A key prefix of the test's own: discovery sees only this test's queues."""
    return f"d{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def open_queue(redis_url: str) -> AsyncIterator[Callable[..., Queue]]:
    queues: list[Queue] = []

    def build(name: str, **options: Any) -> Queue:
        queue = Queue(name, redis=redis_url, **options)
        queues.append(queue)
        return queue

    yield build
    for queue in queues:
        await queue.close()


async def redis_now_ms(raw: redis.asyncio.Redis) -> int:
    seconds, micros = await raw.time()
    return int(seconds) * 1000 + int(micros) // 1000


# ----- discovery


async def test_discovery_finds_queues_and_ignores_foreign_keys(
    prefix: str, raw: redis.asyncio.Redis, open_queue: Callable[..., Queue], redis_url: str
) -> None:
    await open_queue("billing:invoices:eu", prefix=prefix).add("x")
    await open_queue("plain", prefix=prefix).pause()  # a queue with no job, only settings
    await open_queue("elsewhere", prefix=prefix + "x").add("x")  # a longer prefix
    foreign = {
        f"{prefix}:{{app}}:session": "1",  # not a queue key's suffix
        f"{prefix}:settings": "1",  # no hash tag
        f"{prefix}:{{a{{b}}:wait": "1",  # braces inside
        "other:{plain2}:wait": "1",
    }
    await raw.mset(foreign)
    try:
        assert await data.discover_queues(raw, prefix) == ["billing:invoices:eu", "plain"]
        sync_client = redis.Redis.from_url(redis_url)
        try:
            assert discover_queues_sync(sync_client, prefix) == ["billing:invoices:eu", "plain"]
        finally:
            sync_client.close()
        with Admin(redis_url, prefix) as admin:
            assert admin.discover() == ["billing:invoices:eu", "plain"]
    finally:
        await raw.delete(*foreign)


# ----- summaries


async def fail_bad(job: Job) -> str:
    if job.name == "bad":
        raise RuntimeError("bad job")
    return "ok"


async def test_summaries_count_states_workers_sparklines_and_waits(
    queue: Queue,
    queue_name: str,
    raw: redis.asyncio.Redis,
    make_worker: Callable[..., Worker],
    open_queue: Callable[..., Queue],
) -> None:
    await queue.add_bulk([JobSpec("good"), JobSpec("good"), JobSpec("good"), JobSpec("bad")])
    async with make_worker(fail_bad, heartbeat_interval=0.5):
        await wait_counts(queue, completed=3, failed=1)
        await queue.pause()
        await queue.add_bulk([JobSpec("later"), JobSpec("later")])
        await queue.add("due-later", delay=3600)
        keys = QueueKeys(queue_name)
        # One completed job finished five and a half minutes ago, by Redis's clock.
        moved = (await raw.zrange(keys["completed"], 0, 0))[0]
        now = await redis_now_ms(raw)
        await raw.zadd(keys["completed"], {moved: now - 330_000}, xx=True)
        empty = f"{queue_name}-empty"
        summary, blank = await data.queue_summaries(raw, "qc", [queue_name, empty])

    assert summary.name == queue_name
    assert summary.counts == {
        "waiting": 2,
        "active": 0,
        "delayed": 1,
        "completed": 3,
        "failed": 1,
        "waiting_children": 0,
    }
    assert summary.paused is True
    assert summary.workers == 1
    assert summary.oldest_waiting_age is not None and summary.oldest_waiting_age >= 0
    assert len(summary.completed_per_minute) == data.SPARK_MINUTES
    assert summary.completed_per_minute[-1] == 2  # oldest first: the last minute is now
    assert summary.completed_per_minute[-6] == 1  # 5.5 minutes ago: the sixth from the end
    assert sum(summary.completed_per_minute) == 3
    assert summary.failed_per_minute[-1] == 1 and sum(summary.failed_per_minute) == 1
    assert summary.failure_rate == pytest.approx(0.25)

    waits = []
    for raw_record in await raw.hmget(keys["state"], await raw.zrange(keys["completed"], 0, -1)):
        assert raw_record is not None
        record = json.loads(raw_record)
        waits.append((record["pon"] - record.get("rdy", record["ts"])) / 1000)
    assert summary.wait_p95 == pytest.approx(max(waits))  # 3 samples: the 95th is the top

    assert blank.name == empty
    assert set(blank.counts.values()) == {0}
    assert blank.paused is False and blank.workers == 0
    assert blank.completed_per_minute == [0] * data.SPARK_MINUTES
    assert blank.failure_rate is None and blank.wait_p95 is None
    assert blank.oldest_waiting_age is None


async def test_summaries_of_many_queues_keep_their_order(
    prefix: str, raw: redis.asyncio.Redis, open_queue: Callable[..., Queue], redis_url: str
) -> None:
    names = [f"many:{i}" for i in range(12)]
    for i, name in enumerate(names):
        if i:
            await open_queue(name, prefix=prefix).add_bulk([JobSpec("x")] * i)
    summaries = await data.queue_summaries(raw, prefix, names)
    assert [s.name for s in summaries] == names
    assert [s.counts["waiting"] for s in summaries] == list(range(12))
    # A client the direct path does not take (one connection, decoded replies): the same.
    single = redis.asyncio.Redis.from_url(redis_url, single_connection_client=True)
    decoding = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        for client in (single, decoding):
            again = await data.queue_summaries(client, prefix, names)
            assert [(s.name, s.counts, s.paused) for s in again] == [
                (s.name, s.counts, s.paused) for s in summaries
            ]
    finally:
        await single.aclose()
        await decoding.aclose()
    assert await data.queue_summaries(raw, prefix, []) == []


async def test_summaries_reload_scripts_that_redis_forgot(
    queue: Queue, queue_name: str, raw: redis.asyncio.Redis
) -> None:
    await queue.add("x")
    await raw.script_flush()
    (summary,) = await data.queue_summaries(raw, "qc", [queue_name])
    assert summary.counts["waiting"] == 1


# ----- list_jobs


async def all_pages(queue: Queue, state: str, order: str, per_page: int) -> list[str]:
    """Every page's ids, in order; checks each page's bookkeeping on the way."""
    ids: list[str] = []
    first = await data.list_jobs(queue, state, page=1, per_page=per_page, order=order)
    for number in range(1, first.pages + 2):  # and one page past the last: empty
        page = await data.list_jobs(queue, state, page=number, per_page=per_page, order=order)
        assert (page.queue, page.state, page.page, page.order) == (
            queue.name,
            state,
            number,
            order,
        )
        assert page.total == first.total and page.pages == first.pages
        assert len(page.jobs) <= per_page
        assert all(job.state.value == state for job in page.jobs)
        if number > first.pages:
            assert page.jobs == []
        ids += [job.id for job in page.jobs]
    assert len(ids) == first.total
    return ids


async def set_order(raw: redis.asyncio.Redis, key: str) -> list[str]:
    members: list[bytes] = await raw.execute_command("ZRANGE", key, 0, -1)
    return [member.decode() for member in members]


async def test_list_jobs_pages_both_orders_of_waiting_and_delayed(
    queue: Queue, queue_name: str, raw: redis.asyncio.Redis
) -> None:
    added = await queue.add_bulk([JobSpec(f"w{i}") for i in range(7)])
    run_order = [job.id for job in added]
    for i in range(5):
        await queue.add(f"d{i}", delay=3600 + i * 60)
    keys = QueueKeys(queue_name)

    assert await all_pages(queue, "waiting", "oldest", 3) == run_order
    assert await all_pages(queue, "waiting", "newest", 3) == run_order[::-1]
    first = await data.list_jobs(queue, "waiting", per_page=3)  # newest by default
    assert [job.name for job in first.jobs] == ["w6", "w5", "w4"]
    assert (first.total, first.pages, first.order) == (7, 3, "newest")
    last = await data.list_jobs(queue, "waiting", page=3, per_page=3, order="oldest")
    assert [job.name for job in last.jobs] == ["w6"]

    due_order = await set_order(raw, keys["delayed"])
    assert await all_pages(queue, "delayed", "oldest", 2) == due_order
    assert await all_pages(queue, "delayed", "newest", 2) == due_order[::-1]
    soonest = await data.list_jobs(queue, "delayed", per_page=2, order="oldest")
    assert [job.name for job in soonest.jobs] == ["d0", "d1"]


async def test_list_jobs_pages_both_orders_of_completed_and_failed(
    queue: Queue, queue_name: str, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    await queue.add_bulk([JobSpec("good") for _ in range(5)] + [JobSpec("bad")] * 4)
    async with make_worker(fail_bad, concurrency=3):
        await wait_counts(queue, completed=5, failed=4)
    keys = QueueKeys(queue_name)
    for state in ("completed", "failed"):
        finish_order = await set_order(raw, keys[state])
        assert await all_pages(queue, state, "oldest", 2) == finish_order
        assert await all_pages(queue, state, "newest", 2) == finish_order[::-1]


async def test_list_jobs_refuses_bad_arguments(queue: Queue) -> None:
    for kwargs in ({"order": "random"}, {"page": 0}, {"per_page": 0}, {"per_page": 10_000}):
        with pytest.raises(InvalidOptionError):
            await data.list_jobs(queue, "waiting", **kwargs)
    with pytest.raises(InvalidOptionError):
        await data.list_jobs(queue, "sleeping")


# ----- search


async def test_search_finds_an_id_then_names_within_the_scan_bound(queue: Queue) -> None:
    needles = await queue.add_bulk([JobSpec(f"Monthly-Report-{i}") for i in range(5)])
    await queue.add_bulk([JobSpec(f"email-{i}") for i in range(20)])  # newer: scanned first
    delayed = await queue.add("report-later", delay=3600)

    target = needles[2]
    by_id = await data.search_jobs(queue, "waiting", target.id)
    assert by_id[0].id == target.id and by_id[0].name == "Monthly-Report-2"
    # Then the names that hold the text (ids here are numbers: "3" is in "email-13")
    assert all(target.id in job.name for job in by_id[1:])
    assert len({job.id for job in by_id}) == len(by_id)
    # An id is found whatever the state asked for.
    assert [j.id for j in await data.search_jobs(queue, "failed", delayed.id)] == [delayed.id]

    found = await data.search_jobs(queue, "waiting", "REPORT")
    assert sorted(job.name for job in found) == sorted(job.name for job in needles)
    assert [j.name for j in await data.search_jobs(queue, "waiting", "report", limit=2)] == [
        "Monthly-Report-4",
        "Monthly-Report-3",
    ]
    # Newest first, the 20 newer jobs fill a scan of 20 ids: no report is reached.
    assert await data.search_jobs(queue, "waiting", "report", scan_limit=20) == []
    assert len(await data.search_jobs(queue, "waiting", "report", scan_limit=22)) == 2
    # Every state: the delayed report too.
    everywhere = await data.search_jobs(queue, None, "report")
    assert {job.name for job in everywhere} == {job.name for job in needles} | {"report-later"}
    assert await data.search_jobs(queue, None, "  ") == []
    assert await data.search_jobs(queue, None, "no-such-name") == []


# ----- job_detail


class TraceContext(Hook):
    """What an instrumentation hook does on enqueue: write a traceparent header."""

    def __init__(self, traceparent: str) -> None:
        self.traceparent = traceparent

    def around_enqueue(self, event: EnqueueEvent) -> Any:
        return self._write(event)

    @contextmanager
    def _write(self, event: EnqueueEvent) -> Iterator[None]:
        for job in event.jobs:
            job.headers["traceparent"] = self.traceparent
        yield


async def test_job_detail_has_logs_trace_id_and_no_flow(
    queue_name: str, open_queue: Callable[..., Queue]
) -> None:
    queue = open_queue(queue_name, hooks=[TraceContext(TRACEPARENT)])
    job = await queue.add("traced", {"n": 1})
    await job.log("first line")
    await job.log("second line")
    detail = await data.job_detail(queue, job.id)
    assert detail is not None
    assert detail.job.id == job.id and detail.job.data == {"n": 1}
    assert detail.job.headers["traceparent"] == TRACEPARENT
    assert detail.trace_id == TRACE_ID
    assert detail.logs == ["first line", "second line"]
    assert detail.flow is None and detail.scheduler is None
    assert await data.job_detail(queue, "no-such-job") is None


async def test_job_detail_shows_the_whole_flow_from_a_child(
    queue_name: str, redis_url: str, open_queue: Callable[..., Queue]
) -> None:
    children_queue = f"{queue_name}:children"
    async with FlowProducer(redis=redis_url) as producer:
        flow = await producer.add(
            FlowNode(
                "assemble",
                queue_name,
                children=[FlowNode("part-a", children_queue), FlowNode("part-b", children_queue)],
            )
        )
    parent = flow.job
    child = flow.children[0].job

    from_child = await data.job_detail(open_queue(children_queue), child.id)
    assert from_child is not None and from_child.job.parent is not None
    assert from_child.job.parent.id == parent.id
    assert from_child.flow is not None
    assert from_child.flow.job.id == parent.id  # the root, in the other queue
    assert {node.job.name for node in from_child.flow.children} == {"part-a", "part-b"}
    assert from_child.trace_id is None

    from_parent = await data.job_detail(open_queue(queue_name), parent.id)
    assert from_parent is not None and from_parent.job.state.value == "waiting_children"
    assert from_parent.flow is not None
    assert len(from_parent.flow.children) == 2


async def test_job_detail_of_a_scheduled_run_has_its_scheduler(queue: Queue) -> None:
    info = await queue.upsert_scheduler("nightly", every=3600, name="nightly-report")
    assert info.pending_job_id is not None
    run_id = info.pending_job_id

    async def made() -> bool:
        return await queue.get_job(run_id) is not None

    await wait_for(made, what="the first run")
    detail = await data.job_detail(queue, run_id)
    assert detail is not None and detail.job.scheduler_id == "nightly"
    assert detail.scheduler is not None and detail.scheduler.id == "nightly"
    assert detail.flow is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TRACEPARENT, TRACE_ID),
        (None, None),
        ("", None),
        ("garbage", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # an all-zero trace id
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),  # an all-zero span id
        (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None),  # the forbidden version
        (f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01", None),  # upper case is invalid
        (f"00-{TRACE_ID}-00f067aa0ba902b7", None),  # no flags
    ],
)
def test_trace_id_of(header: str | None, expected: str | None) -> None:
    assert data.trace_id_of(header) == expected
