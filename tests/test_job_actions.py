"""An operator's actions on jobs: retry, promote, remove, update_data, and the bulk ones
(retry_jobs, drain, clean, obliterate), on Queue, SyncQueue and Job, against real Redis:
what each changes, what each refuses without changing anything, and the races with
workers and producers that matter."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any, Final

import pytest
import redis.asyncio

from queue_core import (
    Dedup,
    Hook,
    InvalidOptionError,
    Job,
    JobNotFoundError,
    JobOptions,
    JobSpec,
    JobState,
    JobStateError,
    OperationEvent,
    PayloadTooLargeError,
    Queue,
    QueueBusyError,
    SerializationError,
    SyncQueue,
    Worker,
)
from queue_core.commands import FetchSettings, parse_fetch
from queue_core.keys import KEY_NAMES
from queue_core.scripts import load_script, run_script
from tests.conftest import wait_counts

STATE_SETS: Final = ("wait", "active", "delayed", "completed", "failed")
JOB_HASHES: Final = ("jobs", "state", "results", "errors", "progress", "logs", "corrupt")
SET_STATES: Final = dict(zip(STATE_SETS, ("waiting", *STATE_SETS[1:]), strict=True))


# --------------------------------------------------------------------------- helpers


async def stored(raw: redis.asyncio.Redis, queue: Queue) -> dict[str, Any]:
    """Everything the queue holds in Redis, to show that a refused action changed nothing."""
    out: dict[str, Any] = {}
    for name in KEY_NAMES:
        key = queue.keys[name]
        kind = (await raw.type(key)).decode()
        if kind == "hash":
            out[name] = await raw.hgetall(key)
        elif kind == "zset":
            out[name] = await raw.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[name] = await raw.xrange(key)
        elif kind == "string":
            out[name] = await raw.get(key)
        else:
            assert kind == "none", (name, kind)
    return out


async def events(raw: redis.asyncio.Redis, queue: Queue) -> list[dict[str, str]]:
    entries = await raw.xrange(queue.keys["events"])
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def sets_holding(raw: redis.asyncio.Redis, queue: Queue, job_id: str) -> list[str]:
    return [n for n in STATE_SETS if await raw.zscore(queue.keys[n], job_id) is not None]


async def traces(raw: redis.asyncio.Redis, queue: Queue, job_id: str) -> list[str]:
    """Where the job still appears: its sets and hashes."""
    fields = [n for n in JOB_HASHES if await raw.hexists(queue.keys[n], job_id)]
    return await sets_holding(raw, queue, job_id) + fields


async def assert_every_job_whole(raw: redis.asyncio.Redis, queue: Queue) -> int:
    """Each job is in exactly one state set with its envelope and record, and no hash
    holds a field of an id that is in no set. Returns the number of jobs."""
    members = {n: set(await raw.zrange(queue.keys[n], 0, -1)) for n in STATE_SETS}
    fields = {n: set(await raw.hkeys(queue.keys[n])) for n in JOB_HASHES}
    every = set().union(*members.values())
    for job_id in every:
        holders = [n for n, ids in members.items() if job_id in ids]
        assert len(holders) == 1, (job_id, holders)
        assert job_id in fields["jobs"] and job_id in fields["state"], job_id
    for name, ids in fields.items():
        assert ids <= every, f"orphan fields in {name}: {sorted(ids - every)[:5]}"
    return len(every)


async def fetch_as_dead_worker(queue: Queue, lock_ms: int, count: int = 1) -> list[str]:
    """Take jobs as a worker would, through the real fetch script, and never renew nor
    settle them: a worker that froze (long lock) or died (short lock)."""
    settings = FetchSettings("frozen-worker", lock_ms)
    reply = await run_script(
        queue.client, load_script("move_to_active"), queue.keys, settings.args(count, 1)
    )
    return [job_id for job_id, _, _ in parse_fetch(reply).jobs]


async def fail_jobs(
    queue: Queue, make_worker: Callable[..., Worker], expected: int, **counts: int
) -> None:
    """Run the queue's jobs with a processor that fails those whose data says so."""

    async def process(job: Job) -> Any:
        if isinstance(job.data, dict) and job.data.get("fail"):
            raise ValueError(f"boom {job.id}")
        return {"ok": job.id}

    async with make_worker(process, concurrency=50):
        await wait_counts(queue, failed=expected, timeout=60, waiting=0, active=0, **counts)


# --------------------------------------------------------------------------- retry


async def test_retry_sends_a_failed_job_back_to_wait_with_its_attempts_reset(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    runs: list[int] = []

    async def process(job: Job) -> str:
        runs.append(job.attempt)
        await job.update_progress(50)
        await job.log(f"run {len(runs)}")
        if len(runs) == 1:
            raise ValueError("upstream down")
        return "sent"

    job = await queue.add("email", {"to": "ada"}, attempts=1, priority=4)
    async with make_worker(process):
        await wait_counts(queue, failed=1)
    failed = await job.refresh()
    assert (failed.state, failed.attempts_made, failed.failed_reason) == (
        JobState.FAILED, 1, "upstream down"
    )  # fmt: skip

    await failed.retry()
    # The snapshot follows what the script did, and Redis agrees with it.
    assert (failed.state, failed.attempts_made, failed.attempts_started) == (JobState.WAITING, 0, 0)
    assert (failed.failed_reason, failed.progress, failed.manual_retries) == (None, None, 1)
    fresh = await queue.get_job(job.id)
    assert fresh is not None
    assert (fresh.state, fresh.attempts_made, fresh.attempts_started, fresh.stalled_count) == (
        JobState.WAITING, 0, 0, 0
    )  # fmt: skip
    assert (fresh.failed_reason, fresh.error_type, fresh.progress) == (None, None, None)
    assert (fresh.started_at, fresh.finished_at, fresh.manual_retries) == (None, None, 1)
    assert (fresh.data, fresh.options.priority) == ({"to": "ada"}, 4)
    assert await fresh.get_logs() == ["run 1"]  # logs stay: the history of the job
    assert await queue.get_counts() == {
        "waiting": 1, "active": 0, "delayed": 0, "completed": 0, "failed": 0, "waiting_children": 0
    }  # fmt: skip
    assert (await events(raw, queue))[-1] == {"event": "waiting", "id": job.id, "retried": "1"}

    async with make_worker(process):
        await wait_counts(queue, completed=1)
    done = await job.refresh()
    assert (done.return_value, done.attempts_made, done.attempt) == ("sent", 1, 1)
    assert runs == [1, 1]  # the rerun is a first attempt again
    assert await done.get_logs() == ["run 1", "run 2"]


async def test_the_stable_job_id_story_a_failed_job_is_retried_and_completes(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    """The README's promise: adding an existing job_id returns the job (a failed one
    included); retry_job then runs it again under the same id."""
    healthy = False

    async def send_welcome_email(job: Job) -> dict[str, bool]:
        if not healthy:
            raise ConnectionError("smtp down")
        return {"delivered": True}

    await queue.add("welcome", {"to": "ada@example.com"}, job_id="welcome-ada", attempts=1)
    async with make_worker(send_welcome_email):
        await wait_counts(queue, failed=1)
    again = await queue.add("welcome", {"to": "ada@example.com"}, job_id="welcome-ada")
    assert again.state is JobState.FAILED  # the add wrote nothing

    healthy = True
    await queue.retry_job("welcome-ada")
    async with make_worker(send_welcome_email):
        await wait_counts(queue, completed=1, failed=0)
    job = await queue.get_job("welcome-ada")
    assert job is not None
    assert (job.state, job.return_value, job.attempts_made) == (
        JobState.COMPLETED, {"delivered": True}, 1
    )  # fmt: skip


async def test_retry_of_a_completed_job_drops_its_result(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("report", {"n": 1})
    await fail_jobs(queue, make_worker, 0, completed=1)
    await queue.retry_job(job.id)
    fresh = await queue.get_job(job.id)
    assert fresh is not None
    assert (fresh.state, fresh.return_value, fresh.attempts_made) == (JobState.WAITING, None, 0)


async def test_retry_refuses_jobs_that_are_not_finished_and_changes_nothing(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    waiting = await queue.add("a")
    delayed = await queue.add("b", delay=60)
    running = await queue.add("c")
    await queue.add("d")
    assert await fetch_as_dead_worker(queue, lock_ms=60_000, count=1) == [waiting.id]
    before = await stored(raw, queue)
    refusals = ((running.id, "waiting"), (delayed.id, "delayed"), (waiting.id, "active"))
    for job_id, state in refusals:
        message = f"cannot retry job '{job_id}': it is {state}"
        with pytest.raises(JobStateError, match=message) as err:
            await queue.retry_job(job_id)
        assert (err.value.job_id, err.value.state, err.value.operation) == (job_id, state, "retry")
    with pytest.raises(JobNotFoundError):
        await queue.retry_job("nope")
    for bad in ("", 42, None, "x" * 513):
        with pytest.raises(InvalidOptionError):
            await queue.retry_job(bad)  # type: ignore[arg-type]
    assert await stored(raw, queue) == before


async def test_a_quarantined_job_is_not_retried(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("x")
    await raw.hset(queue.keys["state"], job.id, b"{not json")
    async with make_worker(lambda j: None):
        await wait_counts(queue, failed=1)
    quarantined = await queue.get_job(job.id)
    assert quarantined is not None and quarantined.error_type == "CorruptJobError"
    before = await stored(raw, queue)
    with pytest.raises(JobStateError, match="quarantined as corrupt"):
        await queue.retry_job(job.id)
    assert await queue.retry_jobs() == 0  # the bulk retry leaves it too
    assert await stored(raw, queue) == before


# --------------------------------------------------------------------------- promote


async def test_promote_makes_a_delayed_job_ready_now(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("later", {"n": 1}, delay=3600)
    assert job.state is JobState.DELAYED
    await job.promote()
    assert (job.state, job.delayed_until) == (JobState.WAITING, None)
    assert (await queue.get_counts())["waiting"] == 1
    assert (await events(raw, queue))[-1] == {"event": "waiting", "id": job.id, "promoted": "1"}
    async with make_worker(lambda j: j.data["n"] + 1):
        await wait_counts(queue, completed=1)
    assert (await job.refresh()).return_value == 2


async def test_promote_refuses_a_job_that_is_not_delayed(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("now")
    before = await stored(raw, queue)
    with pytest.raises(JobStateError, match="it is waiting"):
        await queue.promote_job(job.id)
    with pytest.raises(JobNotFoundError):
        await queue.promote_job("nope")
    assert await stored(raw, queue) == before


# --------------------------------------------------------------------------- remove


async def test_remove_takes_every_trace_of_a_job_in_each_state(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    done = await queue.add("c", {"fail": False})
    dead = await queue.add("f", {"fail": True}, attempts=1)
    await fail_jobs(queue, make_worker, 1, completed=1)
    taken = await queue.add("w")
    await taken.log("a line")
    await taken.update_progress(10)
    await queue.add("w2")
    # A worker takes both and dies: their locks expire, and an expired job may be removed.
    expired = await fetch_as_dead_worker(queue, lock_ms=1, count=2)
    assert expired == [taken.id, "4"]
    waiting = await queue.add("w3")
    delayed = await queue.add("d", delay=60)
    await asyncio.sleep(0.01)
    for job_id in (*expired, waiting.id, delayed.id, done.id, dead.id):
        assert await traces(raw, queue, job_id)
        await queue.remove_job(job_id)
        assert await traces(raw, queue, job_id) == []
        assert await queue.get_job(job_id) is None
    assert await queue.get_counts() == dict.fromkeys([*SET_STATES.values(), "waiting_children"], 0)
    removed = [e for e in await events(raw, queue) if e["event"] == "removed"]
    assert [(e["id"], e["state"]) for e in removed] == [
        *((job_id, "active") for job_id in expired),
        (waiting.id, "waiting"),
        (delayed.id, "delayed"),
        (done.id, "completed"),
        (dead.id, "failed"),
    ]
    with pytest.raises(JobNotFoundError):
        await queue.remove_job(done.id)


async def test_remove_frees_the_dedup_key(queue: Queue) -> None:
    first = await queue.add("sync", {"v": 1}, dedup=Dedup("account-7"))
    blocked = await queue.add("sync", {"v": 2}, dedup=Dedup("account-7"))
    assert (blocked.id, blocked.deduplicated) == (first.id, True)
    await first.remove()
    assert first.state is JobState.UNKNOWN
    fresh = await queue.add("sync", {"v": 3}, dedup=Dedup("account-7"))
    assert fresh.id != first.id and not fresh.deduplicated


async def test_remove_of_a_running_job_is_refused(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def process(job: Job) -> str:
        started.set()
        await release.wait()
        return "done"

    job = await queue.add("long")
    async with make_worker(process):
        await started.wait()
        with pytest.raises(JobStateError, match="it is running; cancel it instead") as err:
            await queue.remove_job(job.id)
        assert err.value.state == "active"
        release.set()
        await wait_counts(queue, completed=1)
    assert (await job.refresh()).return_value == "done"

    # The same refusal with nothing moving (a frozen worker holds the lock): no change.
    frozen = await queue.add("frozen")
    assert await fetch_as_dead_worker(queue, lock_ms=60_000) == [frozen.id]
    before = await stored(raw, queue)
    with pytest.raises(JobStateError, match="cancel it instead"):
        await queue.remove_job(frozen.id)
    assert await stored(raw, queue) == before


# --------------------------------------------------------------------------- update_data


async def test_update_data_replaces_the_payload_and_keeps_the_header(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("resize", {"w": 100}, priority=3, attempts=2, delay=3600)
    await job.update_data({"w": 200, "note": "é"})
    assert job.data == {"w": 200, "note": "é"}
    fresh = await queue.get_job(job.id)
    assert fresh is not None
    assert (fresh.name, fresh.data, fresh.state) == ("resize", {"w": 200, "note": "é"}, "delayed")
    assert (fresh.options.priority, fresh.options.attempts) == (3, 2)
    await queue.promote_job(job.id)
    async with make_worker(lambda j: j.data["w"]):
        await wait_counts(queue, completed=1)
    done = await job.refresh()
    assert done.return_value == 200
    await queue.update_job_data(job.id, None)  # any state, a finished one too
    assert (await job.refresh()).data is None


async def test_update_data_is_validated_and_capped_like_an_add(
    redis_url: str, queue_name: str, raw: redis.asyncio.Redis
) -> None:
    async with Queue(queue_name, redis=redis_url, max_payload_bytes=200) as queue:
        job = await queue.add("x", {"n": 1})
        before = await stored(raw, queue)
        with pytest.raises(SerializationError):
            await queue.update_job_data(job.id, {1, 2})
        with pytest.raises(PayloadTooLargeError) as too_large:
            await queue.update_job_data(job.id, "a" * 300)  # too large on its own
        assert too_large.value.limit == 200
        # Small enough alone, too large with the job's header: only the script can tell.
        header = len(before["jobs"][job.id.encode()]) - len(b'{"n":1}')
        payload = "b" * (200 - header)  # its JSON quotes push the envelope over the cap
        with pytest.raises(PayloadTooLargeError) as guard:
            await queue.update_job_data(job.id, payload)
        assert (guard.value.size, guard.value.limit) == (header + len(payload) + 2, 200)
        with pytest.raises(JobNotFoundError):
            await queue.update_job_data("nope", 1)
        assert await stored(raw, queue) == before
        await queue.update_job_data(job.id, "b" * (198 - header))  # exactly the cap
        assert len(await raw.hget(queue.keys["jobs"], job.id)) == 200


async def test_a_processor_acts_on_its_job_through_the_worker(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    outcomes: list[str] = []

    async def process(job: Job) -> None:
        await job.update_data({"step": 2})
        other = await job.refresh()
        assert other.data == {"step": 2}
        try:
            await job.remove()
        except JobStateError as exc:
            outcomes.append(exc.state)

    job = await queue.add("x", {"step": 1})
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    assert outcomes == ["active"]
    assert (await job.refresh()).data == {"step": 2}


# --------------------------------------------------------------------------- retry_jobs


async def test_retry_jobs_in_chunks_with_a_name_filter_a_limit_and_progress(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    specs = [
        JobSpec("send" if i % 5 else "other", {"fail": True}, JobOptions(attempts=1))
        for i in range(2500)
    ]  # 2,000 "send", 500 "other", interleaved
    await queue.add_bulk(specs)
    await fail_jobs(queue, make_worker, 2500)
    stream_before = len(await events(raw, queue))

    progress: list[int] = []
    retried = await queue.retry_jobs(name="send", limit=1800, on_progress=progress.append)
    assert retried == 1800
    assert progress[-1] == 1800 and progress == sorted(progress) and len(progress) >= 2
    counts = await queue.get_counts()
    assert (counts["waiting"], counts["failed"]) == (1800, 700)
    waiting = await queue.get_jobs("waiting")
    assert {j.name for j in waiting} == {"send"}
    assert all(j.attempts_made == 0 and j.failed_reason is None for j in waiting)
    left = await queue.get_jobs("failed")
    assert Counter(j.name for j in left) == {"send": 200, "other": 500}
    retried_events = [e for e in (await events(raw, queue))[stream_before:] if "retried" in e]
    assert len(retried_events) == 1800

    assert await queue.retry_jobs(name="other") == 500
    assert await queue.retry_jobs(state=JobState.FAILED) == 200
    assert await queue.retry_jobs() == 0
    assert (await queue.get_counts())["waiting"] == 2500
    assert await assert_every_job_whole(raw, queue) == 2500


async def test_retry_jobs_of_the_completed_set(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    await queue.add_bulk([JobSpec("ok", {"fail": False}) for _ in range(3)])
    await fail_jobs(queue, make_worker, 0, completed=3)
    assert await queue.retry_jobs(state="completed", limit=2) == 2
    counts = await queue.get_counts()
    assert (counts["waiting"], counts["completed"]) == (2, 1)


async def test_retry_jobs_does_not_chase_jobs_that_fail_again_meanwhile(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    """A bulk retry while a worker fails the retried jobs at once ends: jobs that
    finished after it began are not part of it."""
    await queue.add_bulk([JobSpec("x", {"fail": True}, JobOptions(attempts=1))] * 1500)
    await fail_jobs(queue, make_worker, 1500)

    async def process(job: Job) -> None:
        raise ValueError("still broken")

    async with make_worker(process, concurrency=50):
        assert await queue.retry_jobs() == 1500
        await wait_counts(queue, failed=1500, timeout=60, waiting=0, active=0)
    assert {j.manual_retries for j in await queue.get_jobs("failed")} == {1}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"state": "active"}, "'failed' or 'completed'"),
        ({"state": "waiting"}, "'failed' or 'completed'"),
        ({"name": ""}, "job name"),
        ({"limit": 0}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"on_progress": 3}, "on_progress"),
    ],
)
async def test_retry_jobs_refuses_bad_arguments(
    queue: Queue, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        await queue.retry_jobs(**kwargs)


# --------------------------------------------------------------------------- drain


async def test_drain_removes_waiting_jobs_and_leaves_active_ones_alone(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def process(job: Job) -> str:
        started.set()
        await release.wait()
        return job.name

    running = await queue.add("running")
    async with make_worker(process, concurrency=1):
        await started.wait()
        waiting = await queue.add_bulk([JobSpec("w", {"i": i}) for i in range(2300)])
        await waiting[0].log("gone with it")
        delayed = await queue.add_bulk([JobSpec("d", options=JobOptions(delay=60))] * 3)
        assert await queue.drain() == 2300
        counts = await queue.get_counts()
        assert (counts["waiting"], counts["active"], counts["delayed"]) == (0, 1, 3)
        assert await traces(raw, queue, waiting[0].id) == []
        drained = [int(e["count"]) for e in await events(raw, queue) if e["event"] == "drained"]
        assert drained == [1000, 1000, 300]

        assert await queue.drain(include_delayed=True) == 3
        assert [await queue.get_job(j.id) for j in delayed] == [None] * 3
        release.set()
        await wait_counts(queue, completed=1)
    assert (await running.refresh()).return_value == "running"
    assert await queue.drain() == 0
    with pytest.raises(InvalidOptionError):
        await queue.drain(include_delayed="yes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- clean


async def test_clean_finished_jobs_by_their_finish_time(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    ok = await queue.add_bulk([JobSpec("ok", {"fail": False}) for _ in range(3)])
    bad = await queue.add("bad", {"fail": True}, attempts=1)
    await fail_jobs(queue, make_worker, 1, completed=3)
    assert await queue.clean("completed", timedelta(hours=1)) == []  # all too young
    assert sorted(await queue.clean("completed", 0, limit=2)) == sorted(j.id for j in ok[:2])
    assert await queue.clean("completed", 0) == [ok[2].id]
    assert await queue.clean("failed", 0) == [bad.id]
    assert await traces(raw, queue, bad.id) == []
    cleaned = [e for e in await events(raw, queue) if e["event"] == "cleaned"]
    assert [(e["state"], e["count"]) for e in cleaned] == [
        ("completed", "2"), ("completed", "1"), ("failed", "1")
    ]  # fmt: skip


async def test_clean_waiting_and_delayed_jobs_by_their_enqueue_time(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    # 1,100 old delayed jobs sit behind 1,000 young ones (due sooner): the scan keeps the
    # young ones chunk after chunk and still reaches the old.
    old = await queue.add_bulk([JobSpec("old", options=JobOptions(delay=3600))] * 1100)
    old_waiting = await queue.add("old-waiting")
    await asyncio.sleep(1.0)
    young = await queue.add_bulk([JobSpec("young", options=JobOptions(delay=60))] * 1000)
    young_waiting = await queue.add("young-waiting")
    removed = await queue.clean("delayed", 0.5)
    assert sorted(removed) == sorted(j.id for j in old)
    assert (await queue.get_counts())["delayed"] == 1000
    assert await queue.clean("waiting", 0.5) == [old_waiting.id]
    assert await queue.get_job(young_waiting.id) is not None
    assert None not in [await queue.get_job(j.id) for j in young[:10]]
    assert await assert_every_job_whole(raw, queue) == 1001


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("active", 0), "active jobs cannot be cleaned"),
        (("paused", 0), "clean takes a state"),
        (("failed", -1), "grace"),
        (("failed", "1h"), "grace"),
        (("failed", 0, 0), "limit"),
    ],
)
async def test_clean_refuses_bad_arguments(
    queue: Queue, raw: redis.asyncio.Redis, args: tuple[Any, ...], match: str
) -> None:
    await queue.add("x")
    before = await stored(raw, queue)
    with pytest.raises(InvalidOptionError, match=match):
        await queue.clean(*args)
    assert await stored(raw, queue) == before


# --------------------------------------------------------------------------- obliterate


def test_obliterate_deletes_every_stored_key_of_a_queue() -> None:
    """Its header lists every key name but the cancel channel, which is never stored: a key
    added to keys.py and not to obliterate.lua fails here."""
    assert set(load_script("obliterate").keys) == set(KEY_NAMES) - {"cancel"}


async def test_obliterate_removes_the_whole_queue(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    await queue.add_bulk([JobSpec("x", {"fail": i % 2}, JobOptions(attempts=1)) for i in range(10)])
    await fail_jobs(queue, make_worker, 5, completed=5)
    await queue.add_bulk([JobSpec("w", {"i": i}) for i in range(2100)])
    await queue.add("d", delay=60, dedup=Dedup("k"))
    await queue.pause()
    await queue.set_global_concurrency(3)
    assert await raw.keys(f"qc:{{{queue.name}}}:*")
    assert await queue.obliterate() == 2111
    assert await raw.keys(f"qc:{{{queue.name}}}:*") == []
    assert not await queue.is_paused()  # its settings went with it
    job = await queue.add("again", dedup=Dedup("k"))  # the queue starts afresh
    assert (job.id, job.deduplicated) == ("1", False)


async def test_obliterate_refuses_while_jobs_are_active_unless_forced(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def process(job: Job) -> str:
        started.set()
        await release.wait()
        return "late"

    await queue.add_bulk([JobSpec("x")] * 3)
    async with make_worker(process, concurrency=1) as worker:
        await started.wait()
        await queue.pause()  # nothing moves while we compare
        before = await stored(raw, queue)
        with pytest.raises(QueueBusyError, match=r"jobs are active \(1\)") as err:
            await queue.obliterate()
        assert err.value.active == 1
        assert await stored(raw, queue) == before
        with pytest.raises(InvalidOptionError):
            await queue.obliterate(force=1)  # type: ignore[arg-type]

        assert await queue.obliterate(force=True) == 3
        release.set()  # its settle finds the job gone; the worker carries on
        await asyncio.sleep(0.2)
        assert worker.running and worker.active_jobs == 0
    assert await assert_every_job_whole(raw, queue) == 0
    assert await queue.get_counts() == dict.fromkeys([*SET_STATES.values(), "waiting_children"], 0)


async def test_obliterate_while_another_task_keeps_adding_leaves_only_whole_jobs(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    await queue.add_bulk([JobSpec("seed", {"i": i}) for i in range(2500)])
    await queue.add_bulk([JobSpec("seed", options=JobOptions(delay=60))] * 500)
    stop = asyncio.Event()
    added = 0

    async def keep_adding() -> None:
        nonlocal added
        while not stop.is_set():
            job = await queue.add("late", {"n": added}, delay=random.choice((0, 0, 30)))
            added += 1
            with suppress(JobNotFoundError):  # obliterate may have removed it already
                await job.log("written")
                await job.update_progress(added)

    adders = [asyncio.create_task(keep_adding()) for _ in range(3)]
    try:
        await asyncio.sleep(0.05)
        added_before = added
        removed = await queue.obliterate()
        assert added > added_before  # adds ran between its chunks
        await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*adders)
    assert removed >= 3000
    survivors = await assert_every_job_whole(raw, queue)
    assert survivors < added  # most adds happened before the end and were removed


# --------------------------------------------------------------------------- races


async def test_retry_racing_a_worker_that_settles_the_job(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    """Each retry is refused while the job is waiting or active, or done once it failed:
    never anything else, and the job is always in exactly one set."""
    refused: Counter[str] = Counter()

    async def process(job: Job) -> None:
        await asyncio.sleep(random.random() * 0.005)
        raise ValueError("always")

    async def retry_when_failed(job_id: str) -> None:
        while True:
            try:
                await queue.retry_job(job_id)
                return
            except JobStateError as exc:
                refused[exc.state] += 1
                await asyncio.sleep(random.random() * 0.002)

    async with make_worker(process, concurrency=10):
        for round_ in range(5):
            jobs = await queue.add_bulk([JobSpec("race", {"round": round_})] * 60)
            await asyncio.gather(*(retry_when_failed(j.id) for j in jobs))
            await wait_counts(queue, failed=60 * (round_ + 1), waiting=0, active=0)
            for job in jobs:
                fresh = await job.refresh()
                assert (fresh.state, fresh.attempts_made, fresh.manual_retries) == (
                    JobState.FAILED, 1, 1
                )  # fmt: skip
                assert await sets_holding(raw, queue, job.id) == ["failed"]
    assert set(refused) <= {"waiting", "active"} and refused["active"] > 0
    assert await assert_every_job_whole(raw, queue) == 300


# --------------------------------------------------------------------------- hooks


async def test_hooks_see_one_job_actions_and_each_chunk_of_a_bulk_one(
    redis_url: str, queue_name: str
) -> None:
    seen: list[tuple[str, str | None, int | None, str | None]] = []

    class Record(Hook):
        @contextmanager
        def around_operation(self, event: OperationEvent) -> Iterator[None]:
            try:
                yield
            finally:
                error = type(event.error).__name__ if event.error else None
                seen.append((event.operation, event.job_id, event.count, error))

    async with Queue(queue_name, redis=redis_url, hooks=[Record()]) as queue:
        job = await queue.add("x", delay=60)
        await queue.promote_job(job.id)
        with pytest.raises(JobStateError):
            await queue.retry_job(job.id)
        await queue.add_bulk([JobSpec("y")] * 1500)
        assert await queue.drain() == 1501
    assert seen == [
        ("promote", job.id, 1, None),
        ("retry", job.id, None, "JobStateError"),
        ("drain", None, 1000, None),
        ("drain", None, 501, None),
    ]


# --------------------------------------------------------------------------- SyncQueue


async def test_sync_retry_job_and_retry_jobs(
    queue: Queue, make_worker: Callable[..., Worker], redis_url: str
) -> None:
    await queue.add_bulk([JobSpec(n, {"fail": True}, JobOptions(attempts=1)) for n in "abc"])
    await fail_jobs(queue, make_worker, 3)
    with SyncQueue(queue.name, redis=redis_url) as producer:
        producer.retry_job("1")
        assert producer.get_counts()["waiting"] == 1
        with pytest.raises(JobStateError):
            producer.retry_job("1")
        with pytest.raises(JobNotFoundError):
            producer.retry_job("nope")
        progress: list[int] = []
        assert producer.retry_jobs(name="b", on_progress=progress.append) == 1
        assert progress == [1]
        assert producer.retry_jobs() == 1
        job = producer.get_job("3")
        assert job is not None and (job.state, job.attempts_made) == (JobState.WAITING, 0)


async def test_sync_promote_remove_and_update_data(
    queue: Queue, redis_url: str, raw: redis.asyncio.Redis
) -> None:
    with SyncQueue(queue.name, redis=redis_url, max_payload_bytes=150) as producer:
        job = producer.add("later", {"n": 1}, delay=60)
        producer.update_job_data(job.id, {"n": 2})
        with pytest.raises(PayloadTooLargeError):
            producer.update_job_data(job.id, "x" * 150)
        producer.promote_job(job.id)
        fresh = producer.get_job(job.id)
        assert fresh is not None and (fresh.state, fresh.data) == (JobState.WAITING, {"n": 2})
        with pytest.raises(JobStateError):
            producer.promote_job(job.id)
        producer.remove_job(job.id)
        assert producer.get_job(job.id) is None
        assert await traces(raw, queue, job.id) == []
        with pytest.raises(JobNotFoundError):
            producer.remove_job(job.id)


async def test_sync_drain_clean_and_obliterate(
    queue: Queue, make_worker: Callable[..., Worker], redis_url: str, raw: redis.asyncio.Redis
) -> None:
    await queue.add_bulk([JobSpec("ok", {"fail": False}) for _ in range(2)])
    await fail_jobs(queue, make_worker, 0, completed=2)
    with SyncQueue(queue.name, redis=redis_url) as producer:
        producer.add_bulk([JobSpec("w")] * 4)
        producer.add("d", delay=60)
        assert producer.drain() == 4
        assert producer.drain(include_delayed=True) == 1
        assert sorted(producer.clean("completed", 0)) == ["1", "2"]
        with pytest.raises(InvalidOptionError):
            producer.clean("active", 0)
        producer.add("x")
        assert producer.obliterate() == 1
    assert await raw.keys(f"qc:{{{queue.name}}}:*") == []
