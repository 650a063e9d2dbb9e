"""Jobs fetched by a call whose reply was lost go back to wait at once, not after their
lock expires: each fetch carries its own token prefix (release_orphans.lua)."""

from __future__ import annotations

import json

import redis.asyncio

from queue_core import Queue
from queue_core.scripts import load_script, run_script

FETCH = load_script("move_to_active")
RELEASE = load_script("release_orphans")


async def fetch(queue: Queue, count: int, prefix: str) -> list[str]:
    reply = await run_script(queue.client, FETCH, queue.keys, [count, prefix, 30_000, 0, 0])
    return [reply[i].decode() for i in range(5, len(reply), 3)]


async def test_release_puts_back_only_the_lost_calls_jobs_that_are_not_held(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    jobs = [await queue.add("job", i) for i in range(5)]
    lost = await fetch(queue, 2, "w1~7")  # a call whose reply never came back
    kept = await fetch(queue, 1, "w1~8")  # a call whose reply did
    other = await fetch(queue, 1, "w2~7")  # another worker's call with the same number
    held = lost[1]  # received after all (the retry of call 7 handed it over)
    released = await run_script(queue.client, RELEASE, queue.keys, [1, "w1~7:", held, *kept])
    assert [job_id.decode() for job_id in released] == [lost[0]]
    counts = await queue.get_counts()
    assert counts["waiting"] == 2 and counts["active"] == 3
    record = json.loads(await raw.hget(queue.keys["state"], lost[0]))
    assert "tok" not in record and record.get("ats", 0) == 0 and "stc" not in record
    # It goes first: the next fetch takes it before the job that waited behind it.
    assert (await fetch(queue, 1, "w3~1")) == [lost[0]]
    assert {*lost, *kept, *other} <= {job.id for job in jobs}
