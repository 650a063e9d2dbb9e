"""Deduplication by a key of one's own (``Dedup``): while its key is held, an add returns
the holding job (``deduplicated``) and writes nothing, except a ttl's restart (extend) or a
delayed job's replacement (replace, a debounce)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import orjson
import pytest
import redis.asyncio

from queue_core import (
    Dedup,
    EnqueueEvent,
    Hook,
    InvalidOptionError,
    Job,
    JobOptions,
    JobSpec,
    JobState,
    Queue,
    SyncQueue,
    Worker,
)
from tests.conftest import wait_counts


def _key(queue: Queue, name: str) -> str:
    return queue.keys[name]


async def _entry(raw: redis.asyncio.Redis, queue: Queue, key: str) -> dict[str, Any] | None:
    stored = await raw.hget(_key(queue, "dedup"), key)
    return None if stored is None else orjson.loads(stored)


async def _held_job(queue: Queue, make_worker: Callable[..., Worker]) -> tuple[Worker, Any]:
    """A worker whose processor holds each job until the returned event is set."""
    release = asyncio.Event()

    async def process(job: Job) -> Any:
        await release.wait()
        return job.data

    return make_worker(process, concurrency=2), release


async def test_key_blocks_while_waiting_and_active_and_frees_after_completion(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    first = await queue.add("sync", {"n": 1}, dedup=Dedup("user-42"))
    assert first.state is JobState.WAITING
    assert not first.deduplicated

    again = await queue.add("sync", {"n": 2}, dedup=Dedup("user-42"))
    assert again.deduplicated
    assert again.id == first.id
    assert again.data == {"n": 1}  # the holder's data: nothing of the new add was written
    assert again.state is JobState.WAITING
    assert (await queue.get_counts())["waiting"] == 1

    other = await queue.add("sync", {"n": 3}, dedup=Dedup("user-43"))
    assert not other.deduplicated
    assert other.id != first.id

    worker, release = await _held_job(queue, make_worker)
    async with worker:
        await wait_counts(queue, active=2)
        during = await queue.add("sync", {"n": 4}, dedup=Dedup("user-42"))
        assert during.deduplicated
        assert during.id == first.id
        assert during.state is JobState.ACTIVE
        release.set()
        await wait_counts(queue, completed=2)

    assert await _entry(raw, queue, "user-42") is None
    after = await queue.add("sync", {"n": 5}, dedup=Dedup("user-42"))
    assert not after.deduplicated
    assert after.id != first.id
    assert after.state is JobState.WAITING
    assert await _entry(raw, queue, "user-42") == {"id": after.id}
    stored = await queue.get_job(after.id)
    assert stored is not None
    assert stored.options.dedup == Dedup("user-42")


async def test_key_is_free_again_after_a_failure(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def fail(job: Job) -> None:
        raise ValueError("boom")

    first = await queue.add("sync", 1, dedup=Dedup("k"), attempts=2)
    async with make_worker(fail):
        await wait_counts(queue, failed=1)
    again = await queue.add("sync", 2, dedup=Dedup("k"))
    assert not again.deduplicated
    assert again.id != first.id


async def test_a_retrying_job_keeps_its_key(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def fail(job: Job) -> None:
        raise ValueError("boom")

    first = await queue.add("sync", 1, dedup=Dedup("k"), attempts=2, backoff=60)
    async with make_worker(fail):
        await wait_counts(queue, delayed=1)
    again = await queue.add("sync", 2, dedup=Dedup("k"))
    assert again.deduplicated
    assert again.id == first.id
    assert again.state is JobState.DELAYED


async def test_ttl_holds_after_completion_then_frees(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    ttl = 1.5
    added = time.monotonic()
    first = await queue.add("sync", 1, dedup=Dedup("k", ttl=timedelta(seconds=ttl)))
    entry = await _entry(raw, queue, "k")
    assert entry is not None
    assert entry["id"] == first.id
    assert await raw.zscore(_key(queue, "dedupexp"), "k") == entry["exp"]

    async with make_worker(lambda job: job.data):
        await wait_counts(queue, completed=1)
    held = await queue.add("sync", 2, dedup=Dedup("k", ttl=ttl))
    assert held.deduplicated
    assert held.id == first.id
    assert held.state is JobState.COMPLETED
    assert held.return_value == 1

    await asyncio.sleep(added + ttl + 0.1 - time.monotonic())
    fresh = await queue.add("sync", 3, dedup=Dedup("k", ttl=ttl))
    assert not fresh.deduplicated
    assert fresh.id != first.id
    assert fresh.data == 3


async def test_ttl_holds_whatever_the_job_state_even_once_it_is_gone(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    first = await queue.add("sync", 1, dedup=Dedup("k", ttl=60), remove_on_complete=True)
    async with make_worker(lambda job: None):
        await wait_counts(queue, completed=0, waiting=0, active=0)  # done, and removed
    held = await queue.add("sync", 2, dedup=Dedup("k", ttl=60))
    assert held.deduplicated
    assert held.id == first.id
    assert held.state is JobState.UNKNOWN
    assert held.data is None
    assert await queue.get_job(first.id) is None


async def test_extend_restarts_the_ttl_on_each_blocked_add(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    ttl = 1.0
    dedup = Dedup("k", ttl=ttl, extend=True)
    first = await queue.add("sync", 1, dedup=dedup)
    entry = await _entry(raw, queue, "k")
    assert entry is not None

    await asyncio.sleep(0.6)
    extended = time.monotonic()
    assert (await queue.add("sync", 2, dedup=dedup)).deduplicated
    later = await _entry(raw, queue, "k")
    assert later is not None
    assert later["id"] == first.id
    assert later["exp"] - entry["exp"] >= 500  # restarted from the second add
    assert await raw.zscore(_key(queue, "dedupexp"), "k") == later["exp"]

    # Past the first add's ttl, within the restarted one: still held (and restarted).
    await asyncio.sleep(extended + 0.6 - time.monotonic())
    blocked = await queue.add("sync", 3, dedup=dedup)
    last_restart = time.monotonic()
    assert blocked.deduplicated
    assert blocked.id == first.id

    # Without extend, a blocked add leaves the ttl alone.
    unchanged = await _entry(raw, queue, "k")
    assert (await queue.add("sync", 4, dedup=Dedup("k", ttl=ttl))).deduplicated
    assert await _entry(raw, queue, "k") == unchanged

    await asyncio.sleep(last_restart + ttl + 0.1 - time.monotonic())
    fresh = await queue.add("sync", 5, dedup=dedup)
    assert not fresh.deduplicated
    assert fresh.id != first.id


async def test_replace_debounces_rapid_adds_into_one_run_with_the_last_data(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    dedup = Dedup("search-index", replace=True)
    jobs = []
    for n in range(5):
        jobs.append(await queue.add("reindex", {"n": n}, dedup=dedup, delay=0.4))
        await asyncio.sleep(0.003)  # due times are in ms: five adds could share one
    assert {job.id for job in jobs} == {jobs[0].id}
    assert [job.deduplicated for job in jobs] == [False, True, True, True, True]
    assert [job.data for job in jobs] == [{"n": n} for n in range(5)]
    assert all(job.state is JobState.DELAYED for job in jobs)
    due = [job.delayed_until for job in jobs]
    assert all(d is not None for d in due)
    assert due == sorted(due)  # type: ignore[type-var]
    assert due[-1] > due[0]  # type: ignore[operator]
    stored = await queue.get_job(jobs[0].id)
    assert stored is not None
    assert stored.data == {"n": 4}
    assert stored.delayed_until == due[-1]
    assert stored.enqueued_at == jobs[0].enqueued_at  # the same job, its enqueue time kept

    seen: list[Any] = []

    async def process(job: Job) -> None:
        seen.append(job.data)

    async with make_worker(process):
        await wait_counts(queue, completed=1)
    assert seen == [{"n": 4}]
    assert await queue.get_counts() == {
        "waiting": 0, "active": 0, "delayed": 0, "completed": 1, "failed": 0, "waiting_children": 0
    }  # fmt: skip


async def test_replace_takes_the_new_adds_name_options_and_delay(queue: Queue) -> None:
    first = await queue.add("a", 1, dedup=Dedup("k", replace=True), delay=60)
    second = await queue.add(
        "b", 2, dedup=Dedup("k", replace=True), delay=120, priority=7, attempts=3
    )
    assert second.deduplicated
    assert second.id == first.id
    assert second.name == "b"
    assert second.options.priority == 7
    assert second.options.attempts == 3
    assert first.delayed_until is not None
    assert second.delayed_until is not None
    assert second.delayed_until - first.delayed_until >= timedelta(seconds=59)


async def test_replace_on_a_holder_that_is_not_delayed_just_deduplicates(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    waiting = await queue.add("sync", "old", dedup=Dedup("k"))
    blocked = await queue.add("sync", "new", dedup=Dedup("k", replace=True), delay=5)
    assert blocked.deduplicated
    assert blocked.id == waiting.id
    assert blocked.state is JobState.WAITING
    assert blocked.data == "old"

    worker, release = await _held_job(queue, make_worker)
    async with worker:
        await wait_counts(queue, active=1)
        during = await queue.add("sync", "newer", dedup=Dedup("k", replace=True), delay=5)
        assert during.deduplicated
        assert during.state is JobState.ACTIVE
        assert during.data == "old"
        release.set()
        await wait_counts(queue, completed=1)
    done = await queue.get_job(waiting.id)
    assert done is not None
    assert done.return_value == "old"


async def test_replace_leaves_a_job_that_already_ran_alone(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def fail(job: Job) -> None:
        raise ValueError("boom")

    first = await queue.add("sync", "old", dedup=Dedup("k"), attempts=2, backoff=60)
    async with make_worker(fail):
        await wait_counts(queue, delayed=1)  # waiting for its retry
    blocked = await queue.add("sync", "new", dedup=Dedup("k", replace=True), delay=1)
    assert blocked.deduplicated
    assert blocked.id == first.id
    assert blocked.data == "old"
    assert blocked.attempts_made == 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Dedup(""), "Dedup.key"),
        (lambda: Dedup("k" * 257), "Dedup.key"),
        (lambda: Dedup(42), "Dedup.key"),
        (lambda: Dedup("k", ttl=0), "Dedup.ttl"),
        (lambda: Dedup("k", ttl=-1), "Dedup.ttl"),
        (lambda: Dedup("k", ttl="1"), "Dedup.ttl"),
        (lambda: Dedup("k", ttl=float("nan")), "Dedup.ttl"),
        (lambda: Dedup("k", extend=1), "Dedup.extend"),
        (lambda: Dedup("k", replace="yes"), "Dedup.replace"),
        (lambda: Dedup("k", extend=True), "Dedup.extend"),
        (lambda: JobOptions(dedup=Dedup("k", replace=True)), "Dedup.replace"),
        (lambda: JobOptions(dedup="k"), "dedup must be a Dedup"),
    ],
)
def test_bad_dedup_arguments_are_refused(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        build()


async def test_a_refused_add_writes_nothing(queue: Queue, raw: redis.asyncio.Redis) -> None:
    with pytest.raises(InvalidOptionError):
        await queue.add("sync", 1, dedup=Dedup("k", replace=True))
    with pytest.raises(InvalidOptionError):
        await queue.add("sync", 1, dedup="k")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError):
        await queue.add_bulk(
            [
                JobSpec("sync", 1, JobOptions(dedup=Dedup("k"))),
                JobSpec("sync", 2, JobOptions(dedup=Dedup("k")).replace(dedup=Dedup(""))),
            ]
        )
    assert await raw.keys(f"*{queue.name}*") == []
    assert Dedup("k", ttl=timedelta(milliseconds=1500)).ttl == 1.5


async def test_bulk_add_deduplicates_the_second_job_into_the_first(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    options = JobOptions(dedup=Dedup("k"))
    jobs = await queue.add_bulk(
        [JobSpec("a", 1, options), JobSpec("a", 2, options), JobSpec("a", 3)]
    )
    assert jobs[1].id == jobs[0].id
    assert [job.deduplicated for job in jobs] == [False, True, False]
    assert jobs[1].data == 1
    assert (await queue.get_counts())["waiting"] == 2

    events = [fields for _, fields in await raw.xrange(_key(queue, "events"))]
    deduplicated = [f for f in events if f[b"event"] == b"deduplicated"]
    assert deduplicated == [{b"event": b"deduplicated", b"id": jobs[0].id.encode(), b"key": b"k"}]


async def test_hooks_see_a_deduplicated_add_as_a_duplicate(queue_name: str, redis_url: str) -> None:
    seen: list[tuple[bool, str | None]] = []

    class Recorder(Hook):
        @contextmanager
        def around_enqueue(self, event: EnqueueEvent) -> Iterator[None]:
            yield
            seen.extend((job.duplicate, job.job_id) for job in event.jobs)

    async with Queue(queue_name, redis=redis_url, hooks=[Recorder()]) as queue:
        first = await queue.add("a", 1, dedup=Dedup("k"))
        await queue.add("a", 2, dedup=Dedup("k"))
        by_id = await queue.add("a", 3, job_id="fixed")
        again = await queue.add("a", 4, job_id="fixed")
    assert again.deduplicated  # a job_id duplicate is reported the same way
    assert not by_id.deduplicated
    assert seen == [(False, first.id), (True, first.id), (False, "fixed"), (True, "fixed")]


async def test_expired_entries_are_dropped_by_later_adds(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    for n in range(5):
        await queue.add("a", n, dedup=Dedup(f"short-{n}", ttl=0.05))
    assert await raw.hlen(_key(queue, "dedup")) == 5
    await asyncio.sleep(0.1)
    await queue.add("a", "other", dedup=Dedup("other"))
    assert await raw.hkeys(_key(queue, "dedup")) == [b"other"]
    assert await raw.zcard(_key(queue, "dedupexp")) == 0


async def test_the_sync_queue_deduplicates_alike(queue_name: str, redis_url: str) -> None:
    with SyncQueue(queue_name, redis=redis_url) as queue:
        first = queue.add("a", 1, dedup=Dedup("k"))
        again = queue.add("a", 2, dedup=Dedup("k"))
    assert again.deduplicated
    assert again.id == first.id
    assert again.data == 1


def test_the_dedup_option_travels_in_the_envelope_and_old_jobs_decode_as_before() -> None:
    options = JobOptions(dedup=Dedup("k", ttl=2, extend=True, replace=True), delay=1)
    wire = options.to_wire()
    assert wire["dedup"] == {"key": "k", "ttl": 2.0, "extend": True, "replace": True}
    assert JobOptions.from_wire(wire) == options
    assert "dedup" not in JobOptions().to_wire()
    assert JobOptions.from_wire({"attempts": 2}).dedup is None
    assert JobOptions().replace(dedup=Dedup("k")).dedup == Dedup("k")


async def test_removing_the_job_releases_its_key(queue: Queue, raw: redis.asyncio.Redis) -> None:
    remove = getattr(queue, "remove_job", None)
    if remove is None:
        pytest.skip("queue.remove_job is not built yet (another part of issue 10)")
    first = await queue.add("a", 1, dedup=Dedup("k", ttl=60))
    await remove(first.id)
    assert await _entry(raw, queue, "k") is None
    again = await queue.add("a", 2, dedup=Dedup("k", ttl=60))
    assert not again.deduplicated
