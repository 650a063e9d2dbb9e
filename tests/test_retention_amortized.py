"""Amortized retention: a finished set is trimmed once it is a slack past its policy, then
back to the policy at once. Never fewer than the newest `count` are kept, at most count +
slack (slack: a tenth of count, from 10 to 1,000); every trace of a removed job goes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio

from queue_core import FlowNode, FlowProducer, Job, JobOptions, JobSpec, KeepJobs, Queue, Worker
from tests.conftest import wait_counts, wait_for

HASHES = ("jobs", "state", "results", "errors", "progress", "logs", "corrupt", "deps")
SETS = ("wait", "active", "delayed", "completed", "failed")


async def residue(raw: redis.asyncio.Redis, queue: Queue, job_id: str) -> list[str]:
    """Every hash or set of the queue that still mentions ``job_id``, incl. flow outcomes."""
    found = [name for name in HASHES if await raw.hexists(queue.keys[name], job_id)]
    found += [name for name in SETS if await raw.zscore(queue.keys[name], job_id) is not None]
    for field in await raw.hkeys(queue.keys["depout"]):
        if f'["{job_id}",' in field.decode():
            found.append("depout")
    return found


async def test_count_keeps_between_n_and_n_plus_slack(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    keep, slack, total = 20, 10, 45
    seen: list[int] = []

    async def record(job: Job) -> str:
        seen.append((await queue.get_counts())["completed"])
        return "result"

    jobs = await queue.add_bulk(
        [JobSpec("x", i, JobOptions(remove_on_complete=keep)) for i in range(total)]
    )
    async with make_worker(record, concurrency=1):
        await wait_for(lambda: len(seen) == total, 20, what="every job ran")
        await wait_counts(queue, waiting=0, active=0)
    # The model: a finish that leaves more than keep + slack trims back to keep.
    expected, completed = [], 0
    for _ in range(total):
        expected.append(completed)
        completed += 1
        if completed > keep + slack:
            completed = keep
    assert seen == expected
    for done, count in enumerate(seen):
        assert min(done, keep) <= count <= keep + slack
    kept = await queue.get_jobs("completed", 0, -1)
    assert len(kept) == completed == 23
    assert sorted(j.data for j in kept) == list(range(total - completed, total))
    for job in jobs[: total - completed]:
        assert await residue(raw, queue, job.id) == []


async def test_a_trim_removes_every_trace(
    queue: Queue,
    make_worker: Callable[..., Worker],
    raw: redis.asyncio.Redis,
    redis_url: str,
) -> None:
    """Errors, logs, progress, results, and a flow parent's deps and its children's
    outcomes all go with a trimmed job."""
    keep = JobOptions(remove_on_complete=1, attempts=2)
    async with FlowProducer(redis=redis_url) as flows:
        flow = await flows.add(
            FlowNode("parent", queue.name, "p", keep, children=[
                FlowNode("child", queue.name, "c1", keep),
                FlowNode("child", queue.name, "c2", keep),
            ])
        )  # fmt: skip
    retried = await queue.add("flaky", "f", attempts=2, remove_on_complete=1)
    runs: dict[str, int] = {}

    async def work(job: Job) -> str:
        await job.log("a line")
        await job.update_progress(50)
        runs[job.id] = runs.get(job.id, 0) + 1
        if job.name == "flaky" and runs[job.id] == 1:
            raise ValueError("first try")
        return "result"

    async with make_worker(work):
        await wait_counts(queue, completed=4, waiting=0, active=0, waiting_children=0)
        assert await raw.hlen(queue.keys["deps"]) == 1
        assert await raw.hlen(queue.keys["depout"]) == 2
        assert await raw.hexists(queue.keys["errors"], retried.id)
        # 12 finished is past 1 + a slack of 10: the 8th filler's finish trims to 1.
        fillers = [await queue.add("x", i, remove_on_complete=1) for i in range(8)]
        await wait_counts(queue, completed=1, waiting=0, active=0)
    assert [j.id for j in await queue.get_jobs("completed")] == [fillers[-1].id]
    gone = [flow.job.id, retried.id, *(c.job.id for c in flow.children)] + [
        f.id for f in fillers[:-1]
    ]
    for job_id in gone:
        assert await residue(raw, queue, job_id) == [], job_id
    assert await raw.hlen(queue.keys["deps"]) == 0
    assert await raw.hlen(queue.keys["depout"]) == 0


async def test_the_failed_set_and_quarantined_jobs(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    corrupt = await queue.add("x")
    await raw.hset(queue.keys["state"], corrupt.id, "garbage")

    async def broken(job: Job) -> None:
        raise ValueError("nope")

    async with make_worker(broken):
        await wait_counts(queue, failed=1, waiting=0, active=0)
        assert await raw.hexists(queue.keys["corrupt"], corrupt.id)
        failing = [await queue.add("x", i, remove_on_fail=KeepJobs(count=2)) for i in range(12)]
        await wait_counts(queue, failed=2, waiting=0, active=0)  # trimmed at 13 > 2 + 10
        tail = await queue.add("x", remove_on_fail=2)
        await wait_counts(queue, failed=3, waiting=0, active=0)
    assert {j.id for j in await queue.get_jobs("failed")} == {
        failing[-2].id, failing[-1].id, tail.id
    }  # fmt: skip
    for job_id in [corrupt.id, *(j.id for j in failing[:-2])]:
        assert await residue(raw, queue, job_id) == [], job_id


async def test_age_keeps_younger_jobs_and_trims_past_the_slack(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    policy = KeepJobs(age=1.0)  # slack: a tenth of the age, 100 ms

    async def ok(job: Job) -> str:
        return "result"

    async with make_worker(ok):
        first = await queue.add("x", remove_on_complete=policy)
        second = await queue.add("x", remove_on_complete=policy)
        await wait_counts(queue, completed=2, waiting=0, active=0)  # both younger than 1 s
        await asyncio.sleep(1.3)
        third = await queue.add("x", remove_on_complete=policy)
        await wait_counts(queue, completed=1, waiting=0, active=0)
    assert [j.id for j in await queue.get_jobs("completed")] == [third.id]
    for job in (first, second):
        assert await residue(raw, queue, job.id) == []


async def test_a_large_excess_goes_in_chunks(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    """More ids than one multi-field call takes (5,000): removed in chunks, at most
    10,000 per trim; the next finish removes the rest."""
    total = 11_000
    for low in range(0, total, 1000):
        await queue.add_bulk(
            [JobSpec("x", i, JobOptions(remove_on_complete=False)) for i in range(low, low + 1000)]
        )

    async def ok(job: Job) -> None:
        return None

    async with make_worker(ok, concurrency=50):
        await wait_counts(queue, 30, completed=total, waiting=0, active=0)
        oldest = (await queue.get_jobs("completed", 0, -1))[-1]
        await queue.add("x", remove_on_complete=10)
        await wait_counts(queue, completed=total + 1 - 10_000, waiting=0, active=0)
        await queue.add("x", remove_on_complete=10)
        await wait_counts(queue, completed=10, waiting=0, active=0)
    assert await residue(raw, queue, oldest.id) == []
    for name in ("jobs", "state", "results"):
        assert await raw.hlen(queue.keys[name]) == 10
