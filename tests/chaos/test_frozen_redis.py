"""Redis frozen with SIGSTOP: the process lives and the kernel still accepts connections,
but nothing answers. Every call has a deadline (``redis_timeout``), so:

- a producer's add, and a fresh producer's first call (its connect), raise
  ``RedisTimeoutError`` within the deadline instead of hanging; a timed-out add may or
  may not have happened, and retrying it with the same ``job_id`` after the thaw yields
  exactly one job;
- a worker started against a frozen server waits for it and starts once it answers;
- a worker under load rides out a 5 s freeze: after SIGCONT every job completes exactly
  once, nothing is left waiting or active, it logged ``redis_unavailable`` then
  ``redis_reconnected``, and ``healthy()`` is true again.

The server is always thawed (SIGCONT) in a ``finally``. Each test prints a FIGURES line.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import pytest

from queue_core import (
    Hook,
    Job,
    JobEvent,
    JobState,
    Queue,
    RedisTimeoutError,
    RedisUnavailableError,
    SyncQueue,
    Worker,
)
from tests.conftest import wait_counts, wait_for
from tests.log_capture import capture_logs
from tests.redis_server import RedisServer

pytestmark = pytest.mark.chaos

DEADLINE = 1.0  # redis_timeout of every queue and worker here
MAX_ELAPSED = 2.5  # a timed-out call must have raised by then
GUARD = 10.0  # an async call that hangs fails the test instead of hanging it

N_JOBS = 500
PRODUCE_SECONDS = 4.0  # the producer's pace: N_JOBS over this long, if nothing stalls it
FREEZE_AFTER = 150  # jobs added before the freeze
FREEZE_SECONDS = 5.0
# Each job's processor: the worker (5 x 20 jobs/s) is a little slower than the producer
# (125 jobs/s), so jobs wait when Redis freezes and the calls the freeze swallows fetch
# some of them.
JOB_SLEEP = 0.05
WORKER_OPTIONS: dict[str, Any] = {
    "redis_timeout": DEADLINE,
    "concurrency": 5,
    # Longer than the freeze: no lock of a running job can expire meanwhile, so no job may
    # run twice. A job fetched by a call whose reply the freeze swallowed (its connection
    # was dropped at the deadline, Redis ran the call on thawing) is released by the
    # worker a second after it reconnects (release_orphans), never by stalled recovery.
    "lock_duration": 10.0,
    "stalled_interval": 1.0,
    "drain_delay": 1.0,
    "shutdown_timeout": 5.0,
}
STRICT_PROBE = FREEZE_SECONDS / 2  # healthy(max_silence=...): a probe the freeze trips
DRAIN_TIMEOUT = 10.0 + 12.0  # after the thaw: lock_duration, a stalled check, and slack


@contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """SIGSTOP the server for the block; SIGCONT it whatever happens."""
    process = server.process
    assert process is not None and process.poll() is None, "the server is not running"
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def check_timeout_error(error: BaseException) -> None:
    assert isinstance(error, RedisTimeoutError), repr(error)
    assert isinstance(error, RedisUnavailableError)
    assert isinstance(error, TimeoutError)
    assert f"{DEADLINE}" in str(error), str(error)  # the message names the deadline


def assert_single(jobs: list[Job], job_id: str, data: Any) -> None:
    """Exactly one job with ``job_id``, holding ``data``."""
    matching = [job for job in jobs if job.id == job_id]
    assert len(matching) == 1, f"{len(matching)} jobs with id {job_id!r}: {matching}"
    assert matching[0].data == data


# ---------------------------------------------------------------------- producers


async def test_async_add_to_a_frozen_redis_times_out_and_its_retry_is_idempotent(
    chaos_redis: RedisServer, chaos_queue: str
) -> None:
    data = {"what": "during the freeze"}
    async with Queue(chaos_queue, redis=chaos_redis.url, redis_timeout=DEADLINE) as queue:
        await queue.add("before", {"what": "before"}, job_id="before")  # connected already
        with frozen(chaos_redis):
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError) as caught:
                await asyncio.wait_for(queue.add("during", data, job_id="during"), GUARD)
            elapsed = time.monotonic() - started
        check_timeout_error(caught.value)
        assert elapsed < MAX_ELAPSED, f"the add raised after {elapsed:.2f}s"

        # Redis runs what it had received once thawed: the add may or may not exist.
        happened = await queue.get_job("during") is not None
        retried = await queue.add("during", data, job_id="during")
        assert retried.id == "during"
        jobs = await queue.get_jobs()
        assert_single(jobs, "during", data)
        assert_single(jobs, "before", {"what": "before"})
        assert await queue.get_counts() == {
            "waiting": 2, "active": 0, "delayed": 0, "completed": 0, "failed": 0,
            "waiting_children": 0,
        }  # fmt: skip
    print(
        f"\nFIGURES frozen async add: RedisTimeoutError after {elapsed:.2f}s (deadline "
        f"{DEADLINE}s); the timed-out add happened={happened}; after the retry jobs=2 "
        f"lost=0 duplicates=0"
    )


def test_sync_add_to_a_frozen_redis_times_out_and_its_retry_is_idempotent(
    chaos_redis: RedisServer, chaos_queue: str
) -> None:
    data = {"what": "during the freeze"}
    with SyncQueue(chaos_queue, redis=chaos_redis.url, redis_timeout=DEADLINE) as queue:
        queue.add("before", {"what": "before"}, job_id="before")  # connected already
        with frozen(chaos_redis):
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError) as caught:
                queue.add("during", data, job_id="during")
            elapsed = time.monotonic() - started
        check_timeout_error(caught.value)
        assert elapsed < MAX_ELAPSED, f"the add raised after {elapsed:.2f}s"

        happened = queue.get_job("during") is not None
        retried = queue.add("during", data, job_id="during")
        assert retried.id == "during"
        jobs = queue.get_jobs()
        assert_single(jobs, "during", data)
        assert_single(jobs, "before", {"what": "before"})
        assert queue.get_counts()["waiting"] == 2
    print(
        f"\nFIGURES frozen sync add: RedisTimeoutError after {elapsed:.2f}s (deadline "
        f"{DEADLINE}s); the timed-out add happened={happened}; after the retry jobs=2 "
        f"lost=0 duplicates=0"
    )


async def test_first_call_of_a_fresh_queue_to_a_frozen_redis_times_out(
    chaos_redis: RedisServer, chaos_queue: str
) -> None:
    """A fresh Queue / SyncQueue connects on its first call (server checks, script
    loading): that connect has the deadline too, and the same object works after the thaw."""
    data = {"what": "first call"}
    async with Queue(chaos_queue, redis=chaos_redis.url, redis_timeout=DEADLINE) as queue:
        with SyncQueue(chaos_queue, redis=chaos_redis.url, redis_timeout=DEADLINE) as sync:
            with frozen(chaos_redis):
                started = time.monotonic()
                with pytest.raises(RedisTimeoutError) as caught:
                    await asyncio.wait_for(queue.add("first", data, job_id="async-1"), GUARD)
                async_elapsed = time.monotonic() - started
                check_timeout_error(caught.value)

                started = time.monotonic()
                with pytest.raises(RedisTimeoutError) as caught:
                    sync.add("first", data, job_id="sync-1")
                sync_elapsed = time.monotonic() - started
                check_timeout_error(caught.value)

                started = time.monotonic()
                with pytest.raises(RedisTimeoutError) as caught:
                    await asyncio.wait_for(queue.get_counts(), GUARD)  # a read, too
                read_elapsed = time.monotonic() - started
                check_timeout_error(caught.value)
            for what, elapsed in [
                ("async add", async_elapsed),
                ("sync add", sync_elapsed),
                ("async get_counts", read_elapsed),
            ]:
                assert elapsed < MAX_ELAPSED, f"the first {what} raised after {elapsed:.2f}s"

            happened = {
                "async-1": await queue.get_job("async-1") is not None,
                "sync-1": sync.get_job("sync-1") is not None,
            }
            await queue.add("first", data, job_id="async-1")
            sync.add("first", data, job_id="sync-1")
            jobs = await queue.get_jobs()
            assert_single(jobs, "async-1", data)
            assert_single(jobs, "sync-1", data)
            assert len(jobs) == 2
    print(
        f"\nFIGURES frozen first call (connect): RedisTimeoutError after async "
        f"{async_elapsed:.2f}s, sync {sync_elapsed:.2f}s, read {read_elapsed:.2f}s (deadline "
        f"{DEADLINE}s); the timed-out adds happened={happened}; after the retries jobs=2 "
        f"lost=0 duplicates=0"
    )


# ---------------------------------------------------------------------- workers


def stamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    event_dict["t"] = time.monotonic()
    return event_dict


def assert_reconnected(logs: list[MutableMapping[str, Any]], after: float) -> None:
    """The worker logged ``redis_unavailable``, and a ``redis_reconnected`` after the last
    one, after the thaw."""
    names = [entry["event"] for entry in logs]
    unavailable = [i for i, name in enumerate(names) if name == "redis_unavailable"]
    assert unavailable, f"the worker never reported Redis unavailable: {Counter(names)}"
    assert all(logs[i]["log_level"] == "warning" for i in unavailable)
    back = [
        entry
        for entry in logs[unavailable[-1] :]
        if entry["event"] == "redis_reconnected" and entry["t"] >= after
    ]
    assert back, f"no redis_reconnected after the last redis_unavailable: {Counter(names)}"


async def test_worker_started_against_a_frozen_redis_waits_for_it(
    chaos_redis: RedisServer, chaos_queue: str
) -> None:
    done: list[str] = []

    async def process(job: Job) -> None:
        done.append(job.id)

    worker = Worker(chaos_queue, process, redis=chaos_redis.url, **WORKER_OPTIONS)
    with capture_logs(processors=[stamp]) as logs:
        async with AsyncExitStack() as stack:
            with frozen(chaos_redis):
                starting = asyncio.create_task(stack.enter_async_context(worker))
                await asyncio.sleep(2.5 * DEADLINE)
                assert not starting.done(), "the worker started against a frozen Redis"
                assert not worker.healthy()
                thawed_at = time.monotonic()
            await asyncio.wait_for(starting, GUARD)
            started_s = time.monotonic() - thawed_at
            connects = [e for e in logs if e["event"] == "redis_unavailable"]
            assert connects and {e["operation"] for e in connects} == {"connect"}, connects
            assert_reconnected(logs, thawed_at)
            async with Queue(chaos_queue, redis=chaos_redis.url, redis_timeout=DEADLINE) as queue:
                await queue.add("after", {}, job_id="after")
                await wait_counts(queue, completed=1, waiting=0, active=0)
            await wait_for(worker.healthy, timeout=5, what="worker.healthy()")
    assert done == ["after"]
    print(
        f"\nFIGURES worker started frozen: {len(connects)} connect attempts timed out, "
        f"started {started_s:.2f}s after SIGCONT; jobs=1 lost=0 duplicates=0"
    )


class Completions(Hook):
    def __init__(self) -> None:
        self.at: dict[str, list[float]] = {}

    def on_completed(self, event: JobEvent) -> None:
        self.at.setdefault(event.job.id, []).append(time.monotonic())


async def test_worker_rides_out_a_frozen_redis_under_load(
    chaos_redis: RedisServer, chaos_queue: str
) -> None:
    ids = [f"job-{i:04d}" for i in range(N_JOBS)]
    runs: Counter[str] = Counter()
    completions = Completions()
    added: list[str] = []
    add_timeouts: Counter[str] = Counter()  # job id -> timed-out tries

    async def process(job: Job) -> dict[str, int]:
        runs[job.id] += 1
        await asyncio.sleep(JOB_SLEEP)
        return {"i": job.data["i"]}

    async def produce(queue: Queue) -> None:
        """Add at a steady pace; retry a timed-out add with its job_id until it succeeds."""
        start = time.monotonic()
        for i, job_id in enumerate(ids):
            pause = start + i * PRODUCE_SECONDS / N_JOBS - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            while True:
                try:
                    await queue.add("work", {"i": i}, job_id=job_id)
                    break
                except RedisTimeoutError:
                    add_timeouts[job_id] += 1
                    assert add_timeouts[job_id] < 30, f"adding {job_id} never succeeded"
                    await asyncio.sleep(0.05)
            added.append(job_id)

    worker = Worker(
        chaos_queue, process, redis=chaos_redis.url, hooks=[completions], **WORKER_OPTIONS
    )
    with capture_logs(processors=[stamp]) as logs:
        async with (
            Queue(chaos_queue, redis=chaos_redis.url, redis_timeout=DEADLINE) as queue,
            worker,
        ):
            producer = asyncio.create_task(produce(queue))
            try:
                await wait_for(
                    lambda: len(added) >= FREEZE_AFTER and not producer.done(),
                    timeout=15,
                    interval=0.005,
                    what=f"{FREEZE_AFTER} jobs added",
                )
                in_flight = worker.active_jobs
                with frozen(chaos_redis):
                    frozen_at = time.monotonic()
                    await asyncio.sleep(FREEZE_SECONDS)
                    # Silent for the whole freeze: a probe stricter than the freeze sees it.
                    silent = not worker.healthy(max_silence=STRICT_PROBE)
                    healthy_during = worker.healthy()
                    thawed_at = time.monotonic()
                await wait_for(
                    lambda: worker.healthy() and worker.healthy(max_silence=STRICT_PROBE),
                    timeout=5,
                    interval=0.005,
                    what="worker.healthy() after the thaw",
                )
                healthy_at = time.monotonic()
                completed_in_freeze = sum(
                    frozen_at + 0.1 < t < thawed_at for ts in completions.at.values() for t in ts
                )
                await asyncio.wait_for(producer, 30)
            finally:
                producer.cancel()
            produced_at = time.monotonic()

            drained = await eventually(lambda: len(completions.at) == N_JOBS, DRAIN_TIMEOUT)
            drained_at = time.monotonic()
            # The hook runs just after the settle: the counts are final by now.
            counts = await queue.get_counts()
            healthy_at_end = worker.healthy()
            jobs = {job.id: job for job in await queue.get_jobs(JobState.COMPLETED)}

    # ------------------------------------------------------------------ the checks
    problems: list[str] = []
    expected = {
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "completed": N_JOBS,
        "failed": 0,
        "waiting_children": 0,
    }
    if not drained or counts != expected:
        problems.append(
            f"not every job completed within {DRAIN_TIMEOUT}s of the thaw: {counts}, "
            f"{len(completions.at)} completions seen"
        )
    if not healthy_at_end:
        problems.append("the worker is not healthy at the end")
    lost = sorted(set(ids) - set(jobs))
    if lost or set(added) != set(ids):
        problems.append(f"{len(lost)} jobs lost: {lost[:10]}; added {len(set(added))}")
    wrong = [job for job_id, job in jobs.items() if job.return_value != {"i": int(job_id[4:])}]
    if wrong or any(job.attempts_made != 1 for job in jobs.values()):
        problems.append(f"jobs with a wrong result or attempts_made != 1: {wrong[:3]}")
    ran_twice = sorted(job_id for job_id, n in runs.items() if n > 1)
    completed_twice = sorted(job_id for job_id, ts in completions.at.items() if len(ts) > 1)
    if ran_twice or completed_twice:
        problems.append(
            f"jobs ran twice {ran_twice[:10]} or completed twice {completed_twice[:10]}"
        )
    if not silent:
        problems.append("healthy(max_silence) did not notice that Redis was silent")
    if not sum(add_timeouts.values()):
        problems.append("the producer never met the freeze")
    try:
        assert_reconnected(logs, thawed_at)
    except AssertionError as exc:
        problems.append(str(exc))
    errors = [e for e in logs if e["log_level"] in ("error", "critical")]
    if errors:
        problems.append(f"the worker logged errors: {errors[:5]}")
    met = Counter(
        (e["event"], e.get("operation", "-")) for e in logs if frozen_at <= e["t"] <= thawed_at + 1
    )
    if not any(op in ("settle", "fetch") for (name, op) in met if name == "redis_unavailable"):
        problems.append(f"no settle or fetch met the freeze: {dict(met)}")

    after_thaw = sorted(t for ts in completions.at.values() for t in ts if t > thawed_at)
    reconnected = [
        e["t"] for e in logs if e["event"] == "redis_reconnected" and e["t"] >= thawed_at
    ]
    stalled = sorted(job_id for job_id, job in jobs.items() if job.stalled_count)
    print(
        f"\nFIGURES frozen {FREEZE_SECONDS:.0f}s under load: jobs={N_JOBS} lost={len(lost)} "
        f"duplicates={len(ran_twice)} in_flight_at_freeze={in_flight} "
        f"completed_while_frozen={completed_in_freeze} "
        f"first_completion_after_SIGCONT={since(after_thaw, thawed_at)} "
        f"reconnected_after_SIGCONT={since(reconnected, thawed_at)} "
        f"healthy_after_SIGCONT={healthy_at - thawed_at:.3f}s "
        f"all_done_after_SIGCONT={drained_at - thawed_at:.2f}s{'' if drained else '(timeout)'} "
        f"(production ended {produced_at - thawed_at:.2f}s after) "
        f"recovered_as_stalled={len(stalled)} add_timeouts={sum(add_timeouts.values())} "
        f"healthy()_at_end_of_freeze={healthy_during} final_counts={counts}"
    )
    print(f"worker events from the freeze to 1 s after it: {dict(met)}")
    if stalled:
        problems.append(f"jobs waited for stalled recovery instead of being released: {stalled}")
    assert not problems, "\n".join(problems)


async def eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def since(times: list[float], origin: float) -> str:
    return f"{min(times) - origin:.3f}s" if times else "never"
