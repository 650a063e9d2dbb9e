"""remove_on_complete / remove_on_fail: True, a count, an age, or KeepJobs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import redis.asyncio

from queue_core import Job, KeepJobs, Queue, Worker
from tests.conftest import wait_counts


async def residue(raw: redis.asyncio.Redis, queue: Queue, job_id: str) -> list[str]:
    """Every hash or set of the queue that still mentions ``job_id``."""
    found = []
    for name in ("jobs", "state", "results", "errors", "progress", "logs"):
        if await raw.hexists(queue.keys[name], job_id):
            found.append(name)
    for name in ("wait", "active", "delayed", "completed", "failed"):
        if await raw.zscore(queue.keys[name], job_id) is not None:
            found.append(name)
    return found


async def ok(job: Job) -> str:
    await job.log("a line")
    await job.update_progress(100)
    return "result"


async def broken(job: Job) -> None:
    raise ValueError("nope")


async def test_remove_on_complete_true_leaves_nothing(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("x", remove_on_complete=True)
    kept = await queue.add("x", remove_on_complete=False)
    async with make_worker(ok):
        await wait_counts(queue, completed=1, waiting=0, active=0)
    assert await queue.get_job(job.id) is None
    assert await residue(raw, queue, job.id) == []
    assert set(await residue(raw, queue, kept.id)) == {
        "jobs", "state", "results", "progress", "logs", "completed"
    }  # fmt: skip


async def test_remove_on_complete_count_keeps_the_newest(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    # Trimming waits for a slack of 10 past the count: the 14th finish trims to 3.
    jobs = [await queue.add("x", i, remove_on_complete=3) for i in range(14)]
    async with make_worker(ok):
        await wait_counts(queue, completed=3, waiting=0, active=0)
    assert sorted(j.data for j in await queue.get_jobs("completed")) == [11, 12, 13]
    for old in jobs[:11]:
        assert await residue(raw, queue, old.id) == []


async def test_remove_on_complete_age(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    first = await queue.add("x", remove_on_complete=timedelta(milliseconds=200))
    async with make_worker(ok):
        await wait_counts(queue, completed=1)
        await asyncio.sleep(0.3)
        await queue.add("x", remove_on_complete=KeepJobs(age=0.2))  # its finish trims
        await wait_counts(queue, completed=1, waiting=0, active=0)
    assert await queue.get_job(first.id) is None


async def test_failed_jobs_are_kept_by_default_and_trimmed_on_request(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    kept = [await queue.add("x", i) for i in range(3)]
    async with make_worker(broken):
        await wait_counts(queue, failed=3)
        gone = await queue.add("x", remove_on_fail=True)
        await wait_counts(queue, failed=3, waiting=0, active=0)
        # 13 failed is past 2 + a slack of 10: trimmed to the newest 2.
        trimmed = [await queue.add("x", remove_on_fail=2) for _ in range(10)]
        await wait_counts(queue, failed=2, waiting=0, active=0)
    assert await residue(raw, queue, gone.id) == []
    assert {j.id for j in await queue.get_jobs("failed")} == {t.id for t in trimmed[-2:]}
    for job in [*kept, *trimmed[:-2]]:
        assert await residue(raw, queue, job.id) == []


async def test_default_keeps_the_last_thousand_completed(queue: Queue) -> None:
    job = await queue.add("x")
    assert job.options.remove_on_complete == KeepJobs(count=1000)
    assert job.options.remove_on_fail == KeepJobs()


async def finish_order_check(queue: Queue, worker: Worker, raw: redis.asyncio.Redis) -> None:
    """Twenty no-op jobs, run one at a time (several finish in one millisecond), with ids
    that sort the other way round as text: the completed set orders them as they
    finished, so that "the newest N" are the last to finish, not the last ids as text."""
    ids = [f"job-{99 - i}" for i in range(20)]
    for job_id in ids:
        await queue.add("x", None, job_id=job_id)
    async with worker:
        await wait_counts(queue, completed=20, waiting=0, active=0)
    ranked = await raw.zrange(queue.keys["completed"], 0, -1, withscores=True)
    assert [member.decode() for member, _ in ranked] == ids
    scores = [score for _, score in ranked]
    assert len(set(scores)) == len(scores)


async def test_jobs_finished_in_the_same_millisecond_keep_their_order(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    await finish_order_check(queue, make_worker(ok, concurrency=1), raw)
