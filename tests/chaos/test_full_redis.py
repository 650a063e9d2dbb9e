"""Redis full: ``maxmemory`` reached under the ``noeviction`` policy, so Redis refuses
writes (OOM) while it still answers reads. What must hold:

- an add raises ``RedisFullError`` (not a ``RedisUnavailableError``: Redis is up, it is
  full), writes nothing, and loses nothing already added; a bulk add that meets the limit
  writes none of its jobs; once memory is freed the same adds succeed;
- a worker drains a full queue of ``remove_on_complete=True`` jobs by itself, since
  finishing them frees memory, and adds then succeed again;
- a worker whose jobs finish while Redis is full settles them once memory frees: every
  job completes exactly once, none stays active.

Each test runs its own small server (``MAXMEMORY``) and fills it with jobs of a few KB
until an add is refused. Redis's used memory then still drifts a little on its own (idle
clients' buffers shrink, a large reply's buffer is freed), so a later write could slip
under the limit by chance: once full, the tests lower ``maxmemory`` to ``MARGIN`` below
what is used (``stay_full``), and Redis stays full until something frees more than that.
``BALLAST`` is a few plain keys that take room the tests give back with DEL, the way an
operator frees memory. Each test prints a FIGURES line.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from typing import Any

import pytest
import redis.asyncio

from queue_core import (
    Hook,
    Job,
    JobEvent,
    JobOptions,
    JobSpec,
    JobState,
    Queue,
    QueueError,
    RedisFullError,
    RedisUnavailableError,
    SyncQueue,
    Worker,
)
from tests.log_capture import capture_logs
from tests.redis_server import RedisServer

pytestmark = pytest.mark.chaos

MAXMEMORY = "4mb"
PAYLOAD = "x" * 4096  # each job's data: a few KB
BALLAST = [f"chaos:ballast:{i}" for i in range(32)]  # 32 keys of 16 KB: 512 KB
BALLAST_VALUE = b"\0" * 16 * 1024  # small values: a huge one inflates Redis's query buffer
BALLAST_KB = len(BALLAST) * len(BALLAST_VALUE) // 1024
MARGIN = 128 * 1024  # maxmemory below the used memory once full (see stay_full)
MAX_FILL = 5000  # adds before giving up on filling the server
BULK = 20
WORKER_OPTIONS: dict[str, Any] = {
    "concurrency": 5,
    "lock_duration": 15.0,  # longer than the time Redis stays full: no lock may expire
    "stalled_interval": 1.0,
    "drain_delay": 1.0,
    "shutdown_timeout": 2.0,
}
DRAIN_TIMEOUT = 20.0


@pytest.fixture
def full_server(make_redis: Callable[..., RedisServer]) -> RedisServer:
    return make_redis(extra=("--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction"))


@pytest.fixture
async def raw(full_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(full_server.url)
    yield client
    await client.aclose()


def data(i: int) -> dict[str, Any]:
    return {"i": i, "pad": PAYLOAD}


async def fill(queue: Queue, prefix: str) -> tuple[list[str], RedisFullError]:
    """Add jobs ``<prefix>-<i>`` one by one until Redis refuses one: the ids added, and
    the error of the refused add (whose id is ``<prefix>-<len(ids)>``)."""
    added: list[str] = []
    for i in range(MAX_FILL):
        try:
            await queue.add("fill", data(i), job_id=f"{prefix}-{i}")
        except RedisFullError as exc:
            return added, exc
        added.append(f"{prefix}-{i}")
    raise AssertionError(f"{MAX_FILL} adds and Redis ({MAXMEMORY}) is still not full")


async def add_ballast(raw: redis.asyncio.Redis) -> None:
    for key in BALLAST:
        await raw.set(key, BALLAST_VALUE)


async def stay_full(raw: redis.asyncio.Redis) -> None:
    """Keep Redis full: ``maxmemory`` MARGIN below the memory used now (see the module's
    docstring). Freeing more than MARGIN (the ballast, or finished jobs removed) ends it."""
    used = int((await raw.info("memory"))["used_memory"])
    await raw.config_set("maxmemory", used - MARGIN)


async def memory(raw: redis.asyncio.Redis) -> str:
    info = await raw.info("memory")
    return f"{info['used_memory'] / 2**20:.2f}/{info['maxmemory'] / 2**20:.2f}MB"


def check_full_error(error: BaseException) -> None:
    assert isinstance(error, RedisFullError), repr(error)
    assert isinstance(error, QueueError)
    assert not isinstance(error, RedisUnavailableError), "a full Redis is not an unavailable one"
    assert not isinstance(error, ConnectionError)
    assert "Redis is full" in str(error), str(error)


def stamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    event_dict["t"] = time.monotonic()
    return event_dict


def oom_refusals(logs: list[MutableMapping[str, Any]], operation: str) -> int:
    """The worker's calls of ``operation`` that Redis refused as out of memory."""
    return sum(
        1
        for e in logs
        if e["event"] == "redis_unavailable"
        and e.get("operation") == operation
        and "OutOfMemoryError" in str(e.get("error"))
    )


def warnings_summary(logs: list[MutableMapping[str, Any]]) -> dict[tuple[str, str], int]:
    return dict(
        Counter(
            (str(e["event"]), str(e.get("operation", "-")))
            for e in logs
            if e["log_level"] in ("warning", "error")
        )
    )


async def eventually(predicate: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


class Record(Hook):
    """Processor runs and completions (``on_completed``), per job id."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.completed: dict[str, list[float]] = {}

    def on_completed(self, event: JobEvent) -> None:
        self.completed.setdefault(event.job.id, []).append(time.monotonic())

    def twice(self) -> list[str]:
        ran = {job_id for job_id, n in self.runs.items() if n > 1}
        done = {job_id for job_id, times in self.completed.items() if len(times) > 1}
        return sorted(ran | done)


# ---------------------------------------------------------------------- producers


async def test_adds_to_a_full_redis_raise_redis_full_error_and_lose_nothing(
    full_server: RedisServer, raw: redis.asyncio.Redis, chaos_queue: str
) -> None:
    await add_ballast(raw)
    async with Queue(chaos_queue, redis=full_server.url) as queue:
        added, full = await fill(queue, "fill")
        check_full_error(full)
        used = await memory(raw)
        await stay_full(raw)
        refused = f"fill-{len(added)}"
        assert added, "not one add fitted"
        # Redis still answers reads; the refused add wrote nothing; nothing was lost.
        assert await queue.get_job(refused) is None
        counts = await queue.get_counts()
        assert counts == {"waiting": len(added), "active": 0, "delayed": 0, "completed": 0,
                          "failed": 0, "waiting_children": 0}  # fmt: skip
        stored = {job.id: job.data for job in await queue.get_jobs(JobState.WAITING)}
        assert stored == {job_id: data(int(job_id.split("-")[1])) for job_id in added}
        one = await queue.get_job(added[-1])
        assert one is not None and one.data == data(len(added) - 1)

        # A bulk add is one script: refused at its first write, it writes none of its jobs.
        bulk = [JobSpec("bulk", data(i), JobOptions(job_id=f"bulk-{i}")) for i in range(BULK)]
        with pytest.raises(RedisFullError) as caught:
            await queue.add_bulk(bulk)
        check_full_error(caught.value)
        assert await queue.get_counts() == counts
        assert all([await queue.get_job(f"bulk-{i}") is None for i in range(BULK)])

        # The blocking producer says the same.
        with SyncQueue(chaos_queue, redis=full_server.url) as sync:
            with pytest.raises(RedisFullError) as caught:
                sync.add("fill", data(len(added)), job_id=refused)
            check_full_error(caught.value)
            assert sync.get_counts() == counts

        # Memory freed: the same adds succeed, whole.
        await raw.delete(*BALLAST)
        await queue.add("fill", data(len(added)), job_id=refused)
        written = await queue.add_bulk(bulk)
        assert [job.id for job in written] == [f"bulk-{i}" for i in range(BULK)]
        final = await queue.get_counts()
        assert final["waiting"] == len(added) + 1 + BULK, final
        ids = [job.id for job in await queue.get_jobs(JobState.WAITING)]
        assert len(ids) == len(set(ids)) == len(added) + 1 + BULK
    print(
        f"\nFIGURES full redis ({MAXMEMORY}, {len(PAYLOAD) // 1024}KB jobs): jobs={len(added)} "
        f"added before RedisFullError at {used}; lost=0 duplicates=0; bulk of {BULK} refused "
        f"whole (0 written); after freeing {BALLAST_KB}KB the refused add and the bulk went "
        f"through: waiting={final['waiting']}"
    )
    print(f"RedisFullError: {full}")


# ---------------------------------------------------------------------- workers


async def test_a_worker_drains_a_full_redis_of_jobs_removed_on_completion(
    full_server: RedisServer, raw: redis.asyncio.Redis, chaos_queue: str
) -> None:
    """Finishing a ``remove_on_complete=True`` job frees its memory: a worker started
    against a full Redis must get through them all, and adds succeed again after."""
    record = Record()

    async def process(job: Job) -> None:
        record.runs[job.id] += 1

    options = JobOptions(remove_on_complete=True)
    problems: list[str] = []
    async with Queue(chaos_queue, redis=full_server.url, default_job_options=options) as queue:
        added, full = await fill(queue, "fill")
        check_full_error(full)
        full_at = await memory(raw)
        await stay_full(raw)
        with capture_logs(processors=[stamp]) as logs:
            worker = Worker(
                chaos_queue, process, redis=full_server.url, hooks=[record], **WORKER_OPTIONS
            )
            async with worker:
                started = time.monotonic()
                drained = await eventually(
                    lambda: set(added) <= record.completed.keys(), DRAIN_TIMEOUT
                )
                drain_s = time.monotonic() - started
                counts = await queue.get_counts()
                memory_after = await memory(raw)
                healthy = worker.healthy()
                try:
                    await queue.add("after", data(-1), job_id="after")
                    after: str = "added"
                    if await eventually(lambda: "after" in record.completed, 10):
                        after = "added and completed"
                except RedisFullError:
                    after = "RedisFullError"

    if not drained:
        done = len(set(added) & record.completed.keys())
        stuck = sorted(record.runs.keys() - record.completed.keys())
        problems.append(
            f"only {done} of the {len(added)} jobs completed within {DRAIN_TIMEOUT}s of the "
            f"worker's start; counts {counts}, memory {memory_after}; {len(stuck)} jobs ran "
            f"and never completed ({stuck[:5]}); the worker's settles refused as out of "
            f"memory: {oom_refusals(logs, 'settle')}"
        )
    if counts["waiting"] or counts["active"]:
        problems.append(f"jobs left waiting or active: {counts}")
    if record.twice():
        problems.append(f"{len(record.twice())} jobs ran or completed twice")
    if after != "added and completed":
        problems.append(f"the add after the drain: {after}")
    print(
        f"\nFIGURES full redis drained by a worker (remove_on_complete): jobs={len(added)} "
        f"(full at {full_at}) completed={len(record.completed)} "
        f"lost={len(set(added) - record.completed.keys())} duplicates={len(record.twice())} "
        f"drain={f'{drain_s:.2f}s' if drained else f'>{DRAIN_TIMEOUT:.0f}s (timeout)'} "
        f"memory_after={memory_after} settles_refused_oom={oom_refusals(logs, 'settle')} "
        f"healthy={healthy} add_after={after!r} counts={counts}"
    )
    print(f"worker warnings/errors: {warnings_summary(logs)}")
    assert not problems, "\n".join(problems)


async def test_settles_refused_while_redis_is_full_go_through_once_memory_frees(
    full_server: RedisServer, raw: redis.asyncio.Redis, chaos_queue: str
) -> None:
    """Five jobs run while the queue fills Redis up; they finish while it is full, so
    their settles may be refused; an operator frees memory; every job then completes
    exactly once and none stays active."""
    record = Record()
    gate = asyncio.Event()
    gated = [f"gated-{i}" for i in range(WORKER_OPTIONS["concurrency"])]

    async def process(job: Job) -> dict[str, int]:
        record.runs[job.id] += 1
        if job.name == "gated":
            await gate.wait()
        return {"i": job.data["i"]}

    await add_ballast(raw)
    problems: list[str] = []
    with capture_logs(processors=[stamp]) as logs:
        async with (
            Queue(chaos_queue, redis=full_server.url) as queue,
            Worker(
                chaos_queue, process, redis=full_server.url, hooks=[record], **WORKER_OPTIONS
            ) as worker,
        ):
            for i, job_id in enumerate(gated):
                await queue.add("gated", data(i), job_id=job_id)
            assert await eventually(lambda: set(gated) <= record.runs.keys(), 10)
            # Every slot holds a gated job: nothing else is fetched while Redis fills up.
            added, full = await fill(queue, "fill")
            check_full_error(full)
            full_at = await memory(raw)
            await stay_full(raw)

            gate.set()  # the gated jobs finish: their settles meet a full Redis
            released_at = time.monotonic()
            await asyncio.sleep(2.0)
            counts_full = await queue.get_counts()
            refused_while_full = oom_refusals(logs, "settle")
            done_while_full = len(record.completed)

            await raw.delete(*BALLAST)
            freed_at = time.monotonic()
            every = {*gated, *added}
            drained = await eventually(lambda: every <= record.completed.keys(), DRAIN_TIMEOUT)
            drained_at = time.monotonic()
            counts = await queue.get_counts()
            healthy = worker.healthy()
            try:
                await queue.add("after", data(-1), job_id="after")
                after = "added"
                if await eventually(lambda: "after" in record.completed, 10):
                    after = "added and completed"
            except RedisFullError:
                after = "RedisFullError"
            jobs = {job.id: job for job in await queue.get_jobs(JobState.COMPLETED)}

    gated_done = [t for job_id in gated for t in record.completed.get(job_id, [])]
    after_free = [t for times in record.completed.values() for t in times if t >= freed_at]
    if not drained:
        problems.append(
            f"{len(every - record.completed.keys())} of {len(every)} jobs never completed "
            f"after memory was freed; counts {counts}"
        )
    expected = {
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "completed": len(every),
        "failed": 0,
        "waiting_children": 0,
    }
    if counts != expected:
        problems.append(f"final counts {counts}, expected {expected}")
    if record.twice():
        problems.append(f"jobs ran or completed twice: {record.twice()[:10]}")
    stalled = sorted(job_id for job_id, job in jobs.items() if job.stalled_count)
    if stalled:
        problems.append(f"jobs recovered as stalled (a lock expired): {stalled[:10]}")
    for job_id in gated:
        job = jobs.get(job_id)
        if job is None or job.return_value != {"i": int(job_id.split("-")[1])}:
            problems.append(f"gated job {job_id} did not complete with its result: {job}")
    if after != "added and completed":
        problems.append(f"the add after memory was freed: {after}")
    if not healthy:
        problems.append("the worker is not healthy after memory was freed")
    print(
        f"\nFIGURES settles while full: jobs={len(every)} (gated {len(gated)}, filled "
        f"{len(added)} until full at {full_at}) lost={len(every - record.completed.keys())} "
        f"duplicates={len(record.twice())} settles_refused_oom={refused_while_full} "
        f"completed_while_full={done_while_full} counts_while_full={counts_full} "
        f"first_completion_after_free="
        + (f"{min(after_free) - freed_at:.3f}s" if after_free else "none")
        + f" all_done_after_free={drained_at - freed_at:.2f}s gated_settled_after_release="
        + (f"{max(gated_done) - released_at:.2f}s" if len(gated_done) == len(gated) else "no")
        + f" add_after={after!r} counts={counts}"
    )
    print(f"worker warnings/errors: {warnings_summary(logs)}")
    assert not problems, "\n".join(problems)
