"""Fuzz: one record of a running queue goes bad; that job alone pays for it.

Hypothesis picks a job, one of the per-job records the engine writes (its envelope, its
state record, its result, last error, progress or log), a way to spoil it (wrong type,
invalid JSON, valid JSON of the wrong shape, missing fields, a huge value, deleted) and
when (waiting, delayed or mid-run). With a worker running, the job ends failed with a
CorruptJobError when the engine still needed that record (its envelope before it ran,
its state record at any time); every other job completes exactly once with its own
result, the worker never reports a loop failure, and stalled recovery still works.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queue_core import CorruptJobError, Hook, Job, JobState, Queue, Worker, WorkerErrorEvent
from queue_core.scripts import load_script, run_script
from tests.conftest import wait_counts, wait_for

pytestmark = pytest.mark.chaos

JOBS = 8
HUGE = 200_000

# What a spoiled record becomes: None deletes it.
SPOILED_STATE = {
    "wrong type": b"[1, 2, 3]",
    "invalid JSON": b'{"v": 1, "ts": ',
    "wrong shape": b'{"v": 1, "ts": 1700000000000, "ats": "twice", "tok": 7}',
    "missing fields": b'{"v": 1, "ats": 0}',
    "huge value": b'{"v": 1, "ts": 1, "pad": "' + b"x" * HUGE + b'"}',
    "deleted": None,
}
SPOILED_ENVELOPE = {
    "wrong type": b'["welcome"]\n1',
    "invalid JSON": b'{"v": 1, "name": \n1',
    "wrong shape": b'{"v": 1, "name": "job", "opts": {"attempts": "many"}}\n1',
    "missing fields": b'{"v": 1, "opts": {}}\n1',
    "huge value": b"\xff" * HUGE,
    "deleted": None,
}
SPOILED_AUX = {  # result, error, progress, log: none of them is needed to run a job
    "wrong type": b"42",
    "invalid JSON": b"{{{",
    "wrong shape": b'{"lines": 3}',
    "missing fields": b"{}",
    "huge value": b'"' + b"y" * HUGE + b'"',
    "deleted": None,
}


@dataclass(frozen=True)
class Spoil:
    target: int  # which job, by position
    record: str  # the hash: jobs, state, results, errors, progress, logs
    kind: str
    when: str  # waiting, delayed, active

    def value(self) -> bytes | None:
        table = {"state": SPOILED_STATE, "jobs": SPOILED_ENVELOPE}.get(self.record, SPOILED_AUX)
        return table[self.kind]

    @property
    def fatal(self) -> bool:
        """The engine still needs this record: the job must end quarantined."""
        return self.record == "state" or (self.record == "jobs" and self.when != "active")


class Errors(Hook):
    def __init__(self) -> None:
        self.events: list[WorkerErrorEvent] = []

    def on_worker_error(self, event: WorkerErrorEvent) -> None:
        self.events.append(event)


async def scenario(redis_url: str, name: str, spoil: Spoil) -> dict[str, Any]:
    runs: Counter[str] = Counter()
    started: dict[str, asyncio.Event] = {}
    release = asyncio.Event()
    target_id = ""

    async def process(job: Job) -> dict[str, Any]:
        runs[job.id] += 1
        started.setdefault(job.id, asyncio.Event()).set()
        if job.id == target_id and spoil.when == "active":
            await release.wait()  # spoiled while it runs
        await job.update_progress(50)
        await job.log("working")
        return {"echo": job.data}

    errors = Errors()
    raw = redis.asyncio.Redis.from_url(redis_url)
    queue = Queue(name, redis=redis_url)
    worker = Worker(name, process, redis=redis_url, concurrency=4, lock_duration=1.0,
                    stalled_interval=0.3, drain_delay=0.5, hooks=[errors])  # fmt: skip
    try:
        jobs = []
        for i in range(JOBS):
            delay = 0.4 if spoil.when == "delayed" and i == spoil.target else 0
            # A failed first attempt leaves an error record to spoil, then a retry runs.
            jobs.append(await queue.add("job", i, delay=delay))
        target_id = jobs[spoil.target].id
        key = queue.keys[spoil.record]
        if spoil.record in {"errors", "progress", "logs"}:
            await raw.hset(key, target_id, b'"seed"' if spoil.record != "logs" else b'["seed"]')

        async def apply() -> None:
            value = spoil.value()
            if value is None:
                await raw.hdel(key, target_id)
            else:
                await raw.hset(key, target_id, value)

        if spoil.when != "active":
            await apply()
        async with worker:
            if spoil.when == "active":
                await wait_for(lambda: target_id in started, timeout=5, what="the target to run")
                await apply()
                release.set()
            await wait_counts(queue, completed=JOBS - spoil.fatal, failed=int(spoil.fatal))
            # Stalled recovery still works: a job taken by a worker that then died.
            orphan = await queue.add("job", "orphan")
            fetch = load_script("move_to_active")
            await run_script(raw, fetch, queue.keys, [1, "dead-worker", 100, 0, 0])
            await wait_for(lambda: runs[orphan.id] == 1, timeout=5, what="stalled recovery")
            healthy = worker.healthy()
        listed = {job.id: job for job in await queue.get_jobs()}
        return {
            "runs": runs,
            "jobs": [job.id for job in jobs],
            "target": target_id,
            "listed": listed,
            "errors": errors.events,
            "healthy": healthy,
            "orphan": orphan.id,
        }
    finally:
        await worker.close(force=True)
        await queue.close()
        await raw.aclose()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    spoil=st.builds(
        Spoil,
        target=st.integers(0, JOBS - 1),
        record=st.sampled_from(["jobs", "state", "results", "errors", "progress", "logs"]),
        kind=st.sampled_from(list(SPOILED_STATE)),
        when=st.sampled_from(["waiting", "delayed", "active"]),
    )
)
def test_one_spoiled_record_costs_one_job_at_most(redis_url: str, spoil: Spoil) -> None:
    name = f"poison-{uuid.uuid4().hex[:12]}"
    out = asyncio.run(asyncio.wait_for(scenario(redis_url, name, spoil), 30))
    target, runs, listed = out["target"], out["runs"], out["listed"]
    others = [job_id for job_id in out["jobs"] if job_id != target]
    assert all(runs[job_id] == 1 for job_id in [*others, out["orphan"]]), runs
    for position, job_id in enumerate(out["jobs"]):
        if job_id == target:
            continue
        job = listed[job_id]
        assert job.state is JobState.COMPLETED and job.read_error is None
        assert job.return_value == {"echo": position} and job.attempts_made == 1
    job = listed[target]
    if spoil.fatal:
        assert job.state is JobState.FAILED
        assert job.error_type == "CorruptJobError", job.failed_reason
        assert runs[target] <= 1  # never run twice; not run at all when spoiled before
    else:
        assert job.state is JobState.COMPLETED and runs[target] == 1
    if spoil.record == "jobs":  # still unreadable: listed with the reason, never hidden
        assert isinstance(job.read_error, CorruptJobError)
    else:  # a fresh record replaced the spoiled one, or the settle rewrote it
        assert job.read_error is None
    assert out["errors"] == [], [str(e.error) for e in out["errors"]]
    assert out["healthy"]
    print(f"poison {spoil}: target {job.state.value} ({job.error_type}), "
          f"{len(others)} others completed once, recovery ok")  # fmt: skip


def test_fuzz_values_are_what_they_claim() -> None:
    """The spoiled values themselves: what each kind is meant to be."""
    assert json.loads(SPOILED_STATE["wrong type"]) == [1, 2, 3]
    assert "ts" not in json.loads(SPOILED_STATE["missing fields"])
    assert len(SPOILED_STATE["huge value"] or b"") > 65536
