"""Corrupt and foreign records: each bad job is quarantined, nothing else is touched.

The three repros of the poison-record issue are here as regression tests: a corrupt
record among waiting jobs, a corrupt record of an active job, and valid JSON of the wrong
shape. Then the readers (get_job, get_jobs), format versions, the rule parity of the Lua
and Python record checks, and a worker whose loops meet a key of the wrong type.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queue_core import (
    CorruptJobError,
    Hook,
    Job,
    JobOptions,
    JobSpec,
    JobState,
    QuarantineEvent,
    Queue,
    RateLimit,
    UnsupportedFormatError,
    Worker,
    WorkerErrorEvent,
)
from queue_core.envelope import FORMAT_VERSION, MalformedError, NewerFormatError, check_record
from queue_core.scripts import load_script, run_script
from tests.conftest import wait_counts, wait_for
from tests.log_capture import capture_logs


class Events(Hook):
    """Records the worker's error and quarantine notifications."""

    def __init__(self) -> None:
        self.errors: list[WorkerErrorEvent] = []
        self.quarantined: list[QuarantineEvent] = []
        self.failed: list[str] = []

    def on_worker_error(self, event: WorkerErrorEvent) -> None:
        self.errors.append(event)

    def on_quarantined(self, event: QuarantineEvent) -> None:
        self.quarantined.append(event)

    def on_failed(self, event: Any) -> None:
        self.failed.append(event.job.id)


def recorder() -> tuple[Counter[str], Callable[[Job], Any]]:
    runs: Counter[str] = Counter()

    async def process(job: Job) -> str:
        runs[job.id] += 1
        return f"done {job.data}"

    return runs, process


async def assert_quarantined(queue: Queue, job_id: str, reason: str) -> Job:
    """The job is in the failed set with a CorruptJobError naming ``reason``."""
    (failed,) = [job for job in await queue.get_jobs("failed") if job.id == job_id]
    assert failed.state is JobState.FAILED
    assert failed.error_type == "CorruptJobError"
    assert reason in (failed.failed_reason or "")
    return failed


async def test_a_corrupt_waiting_record_fails_only_its_job(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    """Repro 1: 5 jobs, HSET state 2 garbage, a worker with concurrency 5."""
    jobs = [await queue.add("job", i) for i in range(5)]
    await raw.hset(queue.keys["state"], jobs[1].id, b"garbage")
    runs, process = recorder()
    events = Events()
    worker = make_worker(process, concurrency=5, hooks=[events])
    async with worker:
        await wait_counts(queue, completed=4, failed=1)
        assert worker.running and worker.healthy()
    assert sorted(runs) == sorted(j.id for j in jobs if j.id != jobs[1].id)
    assert set(runs.values()) == {1}
    failed = await assert_quarantined(queue, jobs[1].id, "not valid JSON")
    assert failed.corrupt_record == b"garbage"  # kept for inspection
    assert failed.data == 1  # the envelope was fine, so the job can still be read
    assert [e.jobs for e in events.quarantined] == [((jobs[1].id, "its record is not valid JSON"),)]
    assert events.errors == []


async def test_a_corrupt_active_record_is_quarantined_and_recovery_goes_on(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    """Repro 2: an active job's record goes bad; renewal and recovery keep working."""
    release = asyncio.Event()
    runs: Counter[str] = Counter()

    async def process(job: Job) -> None:
        runs[job.id] += 1
        await release.wait()

    events = Events()
    worker = make_worker(
        process, concurrency=3, lock_duration=0.6, stalled_interval=0.3, hooks=[events]
    )
    victim, healthy = await queue.add("job", "victim"), await queue.add("job", "healthy")
    async with worker:
        await wait_counts(queue, active=2)
        await raw.hset(queue.keys["state"], victim.id, b'{"ts": "yesterday"}')
        # The renewal loop meets it first and quarantines it; the healthy job keeps its lock.
        await wait_counts(queue, active=1, failed=1, timeout=5)
        await asyncio.sleep(1.5)  # two lock periods: nothing else may be recovered
        assert runs == Counter({victim.id: 1, healthy.id: 1})
        release.set()
        await wait_counts(queue, completed=1, failed=1)
        # Stalled recovery still works: a job taken by a worker that then died.
        orphan = await queue.add("job", "orphan")
        fetch = load_script("move_to_active")
        await run_script(raw, fetch, queue.keys, [1, "dead-worker", 200, 0, 0])
        await wait_for(lambda: runs[orphan.id] == 1, timeout=5, what="the orphan to be recovered")
        await wait_counts(queue, completed=2, failed=1)
        assert worker.healthy()
    await assert_quarantined(queue, victim.id, '"ts" is not a finite number')
    assert events.errors == []
    assert [e.jobs[0][0] for e in events.quarantined] == [victim.id]


async def test_valid_json_of_the_wrong_shape_fails_at_once_with_a_clear_reason(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    """Repro 3: an option of the wrong type, a record without its timestamp."""
    bad_option, no_ts, good = [await queue.add("job", i) for i in range(3)]
    envelope = await raw.hget(queue.keys["jobs"], bad_option.id)
    header, _, payload = envelope.partition(b"\n")
    fields = json.loads(header)
    fields["opts"]["attempts"] = "many"
    envelope = json.dumps(fields).encode() + b"\n" + payload
    await raw.hset(queue.keys["jobs"], bad_option.id, envelope)
    await raw.hset(queue.keys["state"], no_ts.id, b'{"v": 1, "ats": 0}')

    # Readers: get_job names what is wrong; get_jobs lists every job, marking the bad ones.
    with pytest.raises(CorruptJobError, match="attempts") as caught:
        await queue.get_job(bad_option.id)
    assert caught.value.job_id == bad_option.id and caught.value.raw["envelope"] == envelope
    listed = {job.id: job for job in await queue.get_jobs()}
    assert set(listed) == {bad_option.id, no_ts.id, good.id}
    assert listed[good.id].read_error is None and listed[good.id].data == 2
    assert isinstance(listed[no_ts.id].read_error, CorruptJobError)
    assert listed[no_ts.id].data == 1  # what could be read was
    assert "attempts" in str(listed[bad_option.id].read_error)

    runs, process = recorder()
    async with make_worker(process, concurrency=3, lock_duration=1, stalled_interval=0.5):
        await wait_counts(queue, completed=1, failed=2, timeout=5)
    assert runs == Counter({good.id: 1})
    await assert_quarantined(queue, no_ts.id, 'no enqueue time "ts"')
    with pytest.raises(CorruptJobError, match="attempts"):  # its envelope is still bad
        await queue.get_job(bad_option.id)
    (failed,) = [j for j in await queue.get_jobs("failed") if j.id == bad_option.id]
    assert failed.state is JobState.FAILED and failed.error_type == "CorruptJobError"
    assert failed.stalled_count == 0  # failed at once, not as a StalledJobError


async def test_missing_parts_and_a_missing_record_are_quarantined(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    no_envelope, no_record, good = [await queue.add("job", i) for i in range(3)]
    await raw.hdel(queue.keys["jobs"], no_envelope.id)
    await raw.hdel(queue.keys["state"], no_record.id)
    with pytest.raises(CorruptJobError, match="envelope is missing"):
        await queue.get_job(no_envelope.id)
    runs, process = recorder()
    async with make_worker(process, concurrency=3):
        await wait_counts(queue, completed=1, failed=2)
    assert runs == Counter({good.id: 1})
    await assert_quarantined(queue, no_envelope.id, "envelope is missing")
    await assert_quarantined(queue, no_record.id, "record is missing")


async def test_a_corrupt_delayed_record_is_quarantined_when_due(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    delayed = await queue.add("job", "later", delay=0.3)
    ready = await queue.add("job", "now")
    await raw.hset(queue.keys["state"], delayed.id, b"[1, 2, 3]")
    runs, process = recorder()
    async with make_worker(process, concurrency=2):
        await wait_counts(queue, completed=1, failed=1, timeout=5)
    assert runs == Counter({ready.id: 1})
    await assert_quarantined(queue, delayed.id, "not a JSON object")


async def test_a_corrupt_log_is_replaced_not_fatal(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("job", 1)
    await raw.hset(queue.keys["logs"], job.id, b'{"not": "a list"}')

    async def process(running: Job) -> int:
        return await running.log("after")

    async with make_worker(process):
        await wait_counts(queue, completed=1)
    done = await queue.get_job(job.id)
    assert done is not None and done.return_value == 2
    lines = await done.get_logs()
    assert lines[1] == "after" and "could not be read" in lines[0]


async def test_jobs_of_a_newer_format_are_left_for_newer_workers(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    newer, current = await queue.add("job", "v2"), await queue.add("job", "v1")
    record = json.loads(await raw.hget(queue.keys["state"], newer.id))
    record["v"] = FORMAT_VERSION + 1
    await raw.hset(queue.keys["state"], newer.id, json.dumps(record))
    await raw.hset(queue.keys["meta"], "fmt", FORMAT_VERSION + 1)
    with pytest.raises(UnsupportedFormatError):
        await queue.get_job(newer.id)
    runs, process = recorder()
    with capture_logs() as logs:
        async with make_worker(process, concurrency=1):
            await wait_counts(queue, completed=1)
            await asyncio.sleep(0.5)
            counts = await queue.get_counts()
    assert counts["waiting"] == 1 and counts["failed"] == 0  # refused, not corrupt
    assert runs == Counter({current.id: 1})
    names = [entry["event"] for entry in logs]
    assert "queue_format_newer" in names and "jobs_need_newer_worker" in names
    (listed,) = await queue.get_jobs("waiting")
    assert isinstance(listed.read_error, UnsupportedFormatError)


async def test_records_carry_the_format_version(queue: Queue, raw: redis.asyncio.Redis) -> None:
    job = await queue.add("job", 1)
    assert json.loads(await raw.hget(queue.keys["state"], job.id))["v"] == FORMAT_VERSION
    assert json.loads((await raw.hget(queue.keys["jobs"], job.id)).partition(b"\n")[0])["v"] == 1
    assert int(await raw.hget(queue.keys["meta"], "fmt")) == FORMAT_VERSION


async def test_a_loop_that_keeps_failing_turns_the_worker_unhealthy_then_recovers(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    """A key of the wrong type breaks every fetch: the loop goes on, reports, recovers."""
    events = Events()
    runs, process = recorder()
    worker = make_worker(process, hooks=[events], drain_delay=0.2)
    async with worker:
        await wait_for(worker.healthy, what="the worker to be healthy")
        await raw.delete(queue.keys["wait"])
        await raw.set(queue.keys["wait"], b"not a sorted set")
        await raw.zadd(queue.keys["marker"], {"0": 0})  # wake it up
        await wait_for(lambda: not worker.healthy(), timeout=15, what="the worker to be unhealthy")
        assert worker.running
        assert {e.loop for e in events.errors} == {"fetch"}
        assert "WRONGTYPE" in str(events.errors[-1].error)
        assert events.errors[-1].failures >= 3
        await raw.delete(queue.keys["wait"])
        job = await queue.add("job", 1)
        await wait_for(lambda: runs[job.id] == 1, timeout=20, what="the worker to recover")
        await wait_for(worker.healthy, what="the worker to be healthy again")


# The same record rules in Lua (what the scripts enforce) and Python (what readers check).
_DECODE = """
local rec, reason, version = decode_record(ARGV[1])
return {rec and 1 or 0, reason or '', version or 0}
"""
_NUMBER_FIELDS = ("v", "ts", "ats", "atm", "stc", "pon", "fon", "p", "tok")
_values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(st.integers(-5, 5), max_size=2),
)


@pytest.fixture(scope="module")
def lua_decode() -> str:
    include = resources.files("queue_core.scripts").joinpath("includes/record.lua")
    return include.read_text(encoding="utf-8") + _DECODE


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    record=st.dictionaries(st.sampled_from(_NUMBER_FIELDS), _values, max_size=5),
    with_ts=st.booleans(),
)
def test_lua_and_python_agree_on_what_a_valid_record_is(
    redis_url: str, lua_decode: str, record: dict[str, Any], with_ts: bool
) -> None:
    if with_ts:
        record.setdefault("ts", 1_700_000_000_000)
    raw = orjson.dumps(record)
    client = redis.Redis.from_url(redis_url)
    try:
        accepted, reason, version = client.eval(lua_decode, 0, raw)
    finally:
        client.close()
    try:
        check_record(raw)
        python = "ok"
    except NewerFormatError:
        python = "newer"
    except MalformedError:
        python = "corrupt"
    lua = "ok" if accepted else "newer" if version else "corrupt"
    assert lua == python, (record, reason)


async def test_corrupt_queue_counters_lose_no_job(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    """The ordering counters and the rate-limit counter are repaired, not fatal; a bad job
    id counter stops adds before anything is written."""
    delayed = await queue.add("job", "delayed", delay=0.2)
    await raw.hset(queue.keys["meta"], mapping={"fifo": "x", "lifo": "[]"})
    await raw.set(queue.keys["limiter"], b"lots")
    ready = await queue.add("job", "ready")
    runs, process = recorder()
    async with make_worker(process, limiter=RateLimit(max=100, duration=1)):
        await wait_counts(queue, completed=2, timeout=5)
    assert runs == Counter({delayed.id: 1, ready.id: 1})

    await raw.hset(queue.keys["meta"], "id", "seven")
    before = await queue.get_counts()
    with pytest.raises(redis.exceptions.ResponseError, match="job id counter"):
        await queue.add_bulk([JobSpec("job", 1, JobOptions(job_id="mine")), JobSpec("job", 2)])
    assert await queue.get_counts() == before
    assert await queue.get_job("mine") is None
