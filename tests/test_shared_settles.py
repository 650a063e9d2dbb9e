"""Completions that leave a worker in the same write share one move_to_completed call
(pipeline.SharedCall): each job is settled on its own terms (its own lock token, its own
fetch), and nothing about a job's outcome changes with the company it kept."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis.asyncio

from queue_core import Queue, Worker
from queue_core.commands import parse_fetch, parse_settle
from queue_core.scripts import load_script, run_script
from tests.conftest import wait_counts
from tests.test_queue import script_calls

_COMPLETE = load_script("move_to_completed")
_FETCH = load_script("move_to_active")


def _fetch_args(prefix: str, count: int) -> list[Any]:
    return [count, prefix, 60_000, 0, 0]


def _complete_all(fetched: Any, value: str) -> list[Any]:
    """One shared call's arguments: every fetched job completed with ``value`` under its
    own lock token, fetching nothing next."""
    return [
        x for job_id, _, record in fetched.jobs
        for x in (job_id, json.loads(record)["tok"], value, *_fetch_args("w", 0))
    ]  # fmt: skip


async def test_one_call_settles_several_jobs_each_on_its_own_terms(queue: Queue) -> None:
    for n in range(4):
        await queue.add("job", n)
    fetched = parse_fetch(await run_script(queue.client, _FETCH, queue.keys, _fetch_args("w", 3)))
    (a, token_a), (b, _), (c, token_c) = [
        (job_id, json.loads(record)["tok"]) for job_id, _, record in fetched.jobs
    ]
    groups = [
        [a, token_a, '"A"', *_fetch_args("first", 1)],
        [b, "w:stale", '"B"', *_fetch_args("second", 1)],  # another attempt's token
        [c, token_c, '"C"', *_fetch_args("third", 1)],
    ]
    replies = await run_script(queue.client, _COMPLETE, queue.keys, [x for g in groups for x in g])
    settled = [parse_settle(reply) for reply in replies]
    assert [s.status for s in settled] == [1, 0, 1]  # b's lock is not this caller's
    # The one job left waiting went to the first group that fetched; it carries that
    # group's own token prefix (what orphan release looks for after a lost reply).
    assert [len(s.fetched.jobs) for s in settled] == [1, 0, 0]
    assert json.loads(settled[0].fetched.jobs[0][2])["tok"].startswith("first:")
    assert await queue.client.hget(queue.keys["results"], a) == b'"A"'
    assert await queue.client.hget(queue.keys["results"], b) is None
    assert await queue.client.hget(queue.keys["results"], c) == b'"C"'
    counts = await queue.get_counts()
    assert counts["completed"] == 2 and counts["active"] == 2  # b, and the one fetched


async def test_a_shared_call_trims_as_single_calls_would(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    """Its jobs' retention is checked against a size the call keeps up to date: with a
    count of 3 (slack 10), 12 finished jobs and 3 more in one call, the second trims the
    set to 3 and the third makes it 4: the 4 that finished last."""
    ids = [(await queue.add("job", n, remove_on_complete=3)).id for n in range(15)]
    for _ in range(12):
        fetched = parse_fetch(
            await run_script(queue.client, _FETCH, queue.keys, _fetch_args("w", 1))
        )
        args = _complete_all(fetched, "null")
        assert parse_settle(await run_script(queue.client, _COMPLETE, queue.keys, args)).status == 1
    assert await raw.zcard(queue.keys["completed"]) == 12
    fetched = parse_fetch(await run_script(queue.client, _FETCH, queue.keys, _fetch_args("w", 3)))
    replies = await run_script(queue.client, _COMPLETE, queue.keys, _complete_all(fetched, "null"))
    assert [parse_settle(r).status for r in replies] == [1, 1, 1]
    assert await raw.zrange(queue.keys["completed"], 0, -1) == [i.encode() for i in ids[-4:]]
    for gone in ids[:-4]:
        assert await raw.hexists(queue.keys["state"], gone) == 0


async def test_a_retried_shared_call_reports_the_jobs_as_settled(queue: Queue) -> None:
    """A shared call whose reply was lost is sent again: each job answers 'already
    settled' (2), as a single settle does, and nothing is settled twice."""
    for n in range(2):
        await queue.add("job", n)
    fetched = parse_fetch(await run_script(queue.client, _FETCH, queue.keys, _fetch_args("w", 2)))
    args = _complete_all(fetched, '"ok"')
    first = await run_script(queue.client, _COMPLETE, queue.keys, args)
    again = await run_script(queue.client, _COMPLETE, queue.keys, args)
    assert [parse_settle(r).status for r in first] == [1, 1]
    assert [parse_settle(r).status for r in again] == [2, 2]
    assert (await queue.get_counts())["completed"] == 2


async def test_a_busy_worker_shares_settle_calls_and_completes_every_job_once(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    jobs = 400
    for n in range(jobs):
        await queue.add("double", n)
    done: list[int] = []

    async def double(job: Any) -> int:
        done.append(job.data)
        return int(job.data) * 2

    before = await script_calls(raw)
    async with make_worker(double, concurrency=20):
        await wait_counts(queue, timeout=30, completed=jobs)
    calls = await script_calls(raw) - before
    assert sorted(done) == list(range(jobs))  # each job ran once
    results = await raw.hgetall(queue.keys["results"])
    ids = await raw.zrange(queue.keys["completed"], 0, -1)
    assert len(ids) == jobs
    # Every job's return value stored under its own id (the data is its enqueue order).
    values = sorted(int(results[i]) for i in ids)
    assert values == [2 * n for n in range(jobs)]
    events = await raw.xrange(queue.keys["events"])
    assert sum(fields[b"event"] == b"completed" for _, fields in events) == jobs
    # Fewer calls than one per job: completions of one write went together.
    assert calls < jobs, calls
