"""A fetch remembers the record it wrote, by its text, for the attempt's settle
(includes/record.lua, encode_record): the settle then skips decoding and checking it. The
memory is keyed by content, so a record changed in between is read the long way, and it
is bounded."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio

from queue_core import JobSpec, Queue
from queue_core.scripts import library, load_script, preload, run_script

LOCK_MS = 30_000
WRITTEN_MAX = 4096  # includes/record.lua


@pytest.fixture(autouse=True)
async def functions(raw: redis.asyncio.Redis) -> None:
    """The plain client calls the scripts as functions (FCALL), where the memory lives."""
    await preload(raw)


async def fetch(raw: redis.asyncio.Redis, queue: Queue, count: int, prefix: str) -> list[Any]:
    arguments = [count, prefix, LOCK_MS, 0, 0]
    reply = await run_script(raw, load_script("move_to_active"), queue.keys, arguments)
    jobs = reply[5:]
    return [jobs[i : i + 3] for i in range(0, len(jobs), 3)]


async def complete(raw: redis.asyncio.Redis, queue: Queue, job_id: str, token: str) -> int:
    arguments = [job_id, token, '"done"', 0, "next", LOCK_MS, 0, 0]
    reply = await run_script(raw, load_script("move_to_completed"), queue.keys, arguments)
    return int(reply[0])


def record_of(raw_record: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(raw_record)
    return parsed


async def test_the_settle_finishes_the_record_its_fetch_wrote(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("job", 1)
    ((job_id, _, fetched),) = await fetch(raw, queue, 1, "w1")
    assert job_id.decode() == job.id and record_of(fetched)["tok"] == "w1:1"
    assert await complete(raw, queue, job.id, "w1:1") == 1
    final = record_of(await raw.hget(queue.keys["state"], job.id))
    started = record_of(fetched)
    assert final == {**started, "atm": 1, "fon": final["fon"]}
    assert final["fon"] >= started["pon"]


async def test_a_record_changed_after_its_fetch_is_read_as_it_now_is(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    taken, corrupt = await queue.add("job", "taken"), await queue.add("job", "corrupt")
    fetched = {job_id.decode(): record for job_id, _, record in await fetch(raw, queue, 2, "w1")}
    # Another worker's token in a record of the right shape: had the settle used what the
    # fetch remembered, it would complete a job whose lock it no longer holds.
    record = record_of(fetched[taken.id])
    await raw.hset(queue.keys["state"], taken.id, json.dumps({**record, "tok": "w2:1"}))
    assert await complete(raw, queue, taken.id, "w1:1") == 0  # lock lost: nothing changed
    assert record_of(await raw.hget(queue.keys["state"], taken.id))["tok"] == "w2:1"
    assert await raw.zscore(queue.keys["active"], taken.id) is not None
    # A record made corrupt is checked, and quarantined.
    await raw.hset(queue.keys["state"], corrupt.id, b'{"ts": "yesterday", "tok": "w1:1"}')
    assert await complete(raw, queue, corrupt.id, "w1:1") == 3
    (failed,) = await queue.get_jobs("failed")
    assert failed.id == corrupt.id and failed.error_type == "CorruptJobError"


async def test_what_fetches_remember_is_bounded(queue: Queue, raw: redis.asyncio.Redis) -> None:
    """Jobs fetched and never settled (their workers died) leave at most WRITTEN_MAX
    records in the library's Lua state: ten times as many take no more memory."""
    total = 10 * WRITTEN_MAX
    for low in range(0, total, 2000):
        await queue.add_bulk([JobSpec("job", i) for i in range(low, min(low + 2000, total))])
    script = load_script("move_to_active")
    keys = queue.keys.select(script.keys)
    function = library().function("move_to_active")
    before = int((await raw.info("memory"))["used_memory_vm_functions"])
    # One job per call, each under its own token: records that differ (jobs fetched by one
    # call, enqueued in the same millisecond, have the same record text).
    for low in range(0, total, WRITTEN_MAX):
        calls = raw.pipeline(transaction=False)
        for i in range(low, low + WRITTEN_MAX):
            calls.execute_command("FCALL", function, len(keys), *keys, 1, f"w{i}", LOCK_MS, 0, 0)
        await calls.execute()
    grown = int((await raw.info("memory"))["used_memory_vm_functions"]) - before
    # Measured: about 2 MB; 30 MB when every one of the 40,960 records is kept.
    assert grown < 10 * 1024 * 1024, grown
    assert await raw.zcard(queue.keys["active"]) == total
    # Settling one of them still works: its record is read the long way.
    (first,) = await queue.get_jobs("active", 0, 0)
    token = record_of(await raw.hget(queue.keys["state"], first.id))["tok"]
    assert await complete(raw, queue, first.id, token) == 1
