"""Cancellation (``queue.cancel``) against a real Redis, with real workers.

A waiting or delayed job ends at once as failed with ``JobCancelledError``. A running job
is signalled to the worker that holds it through pub/sub (in any process), or, should
that message be lost, through the worker's next lock renewal; the scripts that settle a
job honour a request the worker did not see in time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from queue_core import (
    DelayedError,
    Hook,
    InvalidOptionError,
    Job,
    JobEvent,
    JobNotFoundError,
    JobSpec,
    JobState,
    JobStateError,
    KeepJobs,
    ProcessEvent,
    Queue,
    RateLimitError,
    StalledEvent,
    SyncQueue,
    UnrecoverableError,
    Worker,
)
from queue_core.cancellation import MAX_REASON_CHARS
from queue_core.errors import JobCancelledError
from queue_core.keys import QueueKeys
from queue_core.options import Dedup
from queue_core.scripts import load_script, run_script
from tests.chaos.support import WorkerProcess, event_time
from tests.conftest import wait_counts, wait_for
from tests.log_capture import capture_logs
from tests.redis_server import RedisCluster

_CANCEL_JOB = load_script("cancel_job")
_MOVE_TO_ACTIVE = load_script("move_to_active")


class Outcomes(Hook):
    """Records the notifications and the ProcessEvent outcomes of a worker."""

    def __init__(self) -> None:
        self.notified: list[tuple[str, str, str | None]] = []  # (hook, job id, error type)
        self.outcomes: list[tuple[str, str | None, str | None]] = []  # (id, outcome, error)

    def _note(self, hook: str, event: JobEvent) -> None:
        error = type(event.error).__name__ if event.error is not None else None
        self.notified.append((hook, event.job.id, error))

    @contextmanager
    def around_process(self, event: ProcessEvent) -> Iterator[None]:
        yield
        error = type(event.error).__name__ if event.error is not None else None
        self.outcomes.append((event.job.id, event.outcome, error))

    def on_completed(self, event: JobEvent) -> None:
        self._note("on_completed", event)

    def on_failed(self, event: JobEvent) -> None:
        self._note("on_failed", event)

    def on_cancelled(self, event: JobEvent) -> None:
        self._note("on_cancelled", event)

    def on_retry_scheduled(self, event: JobEvent) -> None:
        self._note("on_retry_scheduled", event)

    def on_delayed(self, event: JobEvent) -> None:
        self._note("on_delayed", event)


def unheard_keys(queue: Queue) -> QueueKeys:
    """The queue's keys, but for a cancel channel nobody listens to: a request published
    there is as good as a message lost while the listener reconnected."""
    keys = QueueKeys(queue.name, queue.keys.prefix)
    keys._keys["cancel"] += ":nowhere"
    return keys


async def events_of(raw: redis.asyncio.Redis, queue: Queue, job_id: str) -> list[dict[str, str]]:
    """The job's entries in the queue's events stream, oldest first."""
    entries: Any = await raw.xrange(queue.keys["events"])
    out = []
    for _, fields in entries:
        item = {k.decode(): v.decode() for k, v in fields.items()}
        if item.get("id") == job_id:
            out.append(item)
    return out


async def subscribers(raw: redis.asyncio.Redis, queue: Queue) -> int:
    reply = await raw.pubsub_numsub(queue.keys["cancel"])
    return int(reply[0][1])


async def wait_subscribed(raw: redis.asyncio.Redis, queue: Queue, count: int = 1) -> None:
    async def subscribed() -> bool:
        return await subscribers(raw, queue) >= count

    await wait_for(subscribed, what=f"{count} cancel listener(s) subscribed")


async def wait_state(queue: Queue, job_id: str, state: JobState, timeout: float = 10.0) -> Job:
    job: Job | None = None

    async def reached() -> bool:
        nonlocal job
        job = await queue.get_job(job_id)
        return job is not None and job.state is state

    await wait_for(reached, timeout, what=f"job {job_id} {state.value}")
    assert job is not None
    return job


def assert_cancelled(job: Job, reason: str) -> None:
    assert job.state is JobState.FAILED
    assert job.error_type == "JobCancelledError"
    assert job.failed_reason == reason
    assert job.stacktrace in ("", None)


# ----- waiting and delayed jobs: cancelled at once


async def test_cancel_a_waiting_job(queue: Queue, raw: redis.asyncio.Redis) -> None:
    job = await queue.add("email", {"to": "a@example.com"})
    other = await queue.add("email", {"to": "b@example.com"})

    assert await queue.cancel(job.id, "user unsubscribed") == "cancelled"

    cancelled = await queue.get_job(job.id)
    assert cancelled is not None
    assert_cancelled(cancelled, "user unsubscribed")
    assert cancelled.attempts_made == 0 and cancelled.attempts_started == 0
    assert cancelled.finished_at is not None
    assert await queue.get_counts() == {
        "waiting": 1, "active": 0, "delayed": 0, "completed": 0, "failed": 1, "waiting_children": 0
    }  # fmt: skip
    assert [e["event"] for e in await events_of(raw, queue, job.id)] == ["added", "cancelled"]
    assert (await events_of(raw, queue, job.id))[-1]["reason"] == "user unsubscribed"
    still = await queue.get_job(other.id)
    assert still is not None and still.state is JobState.WAITING


async def test_a_cancelled_waiting_job_never_runs(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    ran: list[str] = []

    async def process(job: Job) -> None:
        ran.append(job.id)

    cancelled = await queue.add("task", attempts=5)
    kept = await queue.add("task")
    assert await queue.cancel(cancelled.id) == "cancelled"
    async with make_worker(process):
        await wait_counts(queue, completed=1, failed=1)
    assert ran == [kept.id]
    job = await queue.get_job(cancelled.id)
    assert job is not None
    assert_cancelled(job, "cancelled")  # no reason given


async def test_cancel_a_delayed_job(queue: Queue, raw: redis.asyncio.Redis) -> None:
    job = await queue.add("reminder", delay=3600)
    assert await queue.cancel(job.id) == "cancelled"

    cancelled = await queue.get_job(job.id)
    assert cancelled is not None
    assert_cancelled(cancelled, "cancelled")
    assert (await queue.get_counts())["delayed"] == 0
    events = await events_of(raw, queue, job.id)
    assert events[-1] == {"event": "cancelled", "id": job.id, "reason": "cancelled"}


async def test_cancelling_a_waiting_job_applies_its_retention_and_frees_its_dedup_key(
    queue: Queue,
) -> None:
    gone = await queue.add("task", remove_on_fail=KeepJobs(count=0))
    assert await queue.cancel(gone.id) == "cancelled"
    assert await queue.get_job(gone.id) is None  # removed at once, as a failure would be

    held = await queue.add("task", dedup=Dedup("report-42"))
    assert (await queue.add("task", dedup=Dedup("report-42"))).id == held.id
    assert await queue.cancel(held.id) == "cancelled"
    fresh = await queue.add("task", dedup=Dedup("report-42"))
    assert fresh.id != held.id and not fresh.deduplicated


# ----- running jobs: signalled to their worker


async def test_cancel_a_running_async_job(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()
    seen_at: list[float] = []
    runs: list[int] = []

    async def process(job: Job) -> str:
        runs.append(job.attempt)
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen_at.append(time.monotonic())
            raise
        return "finished"

    outcomes = Outcomes()
    worker = make_worker(process, hooks=[outcomes], lock_duration=30.0)
    job = await queue.add("long", attempts=5, backoff=0.01)
    async with worker:
        await wait_subscribed(raw, queue)
        await asyncio.wait_for(started.wait(), 10)
        asked_at = time.monotonic()
        assert await queue.cancel(job.id, "operator stop") == "cancelling"
        cancelled = await wait_state(queue, job.id, JobState.FAILED)
        await asyncio.sleep(0.3)  # a retry, were there one, would start now

    latency_ms = (seen_at[0] - asked_at) * 1000
    print(f"async processor saw the cancel {latency_ms:.1f} ms after queue.cancel()")
    assert latency_ms < 1000  # about 1 ms here; bound loosely for slow machines

    assert_cancelled(cancelled, "operator stop")
    assert cancelled.attempts_made == 1 and cancelled.attempts_started == 1
    assert runs == [1]  # never retried, although attempts=5
    assert (await queue.get_counts())["failed"] == 1
    assert outcomes.notified == [("on_cancelled", job.id, "JobCancelledError")]
    assert outcomes.outcomes == [(job.id, "cancelled", "JobCancelledError")]
    events = [e["event"] for e in await events_of(raw, queue, job.id)]
    assert events == ["added", "active", "cancelled"]
    state = await raw.hget(queue.keys["state"], job.id)
    assert state is not None and b"cxr" not in state  # the request is not kept


async def test_cancel_a_running_sync_job(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    started = threading.Event()
    seen_at: list[float] = []

    def process(job: Job) -> str:
        started.set()
        while not job.cancelled.wait(0.01):
            pass
        seen_at.append(time.monotonic())
        return "stopped early"  # whatever it returns, the attempt ends as cancelled

    outcomes = Outcomes()
    job = await queue.add("crunch", attempts=3)
    async with make_worker(process, hooks=[outcomes], lock_duration=30.0):
        await wait_subscribed(raw, queue)
        await wait_for(started.is_set, what="the processor to start")
        asked_at = time.monotonic()
        assert await queue.cancel(job.id, "too slow") == "cancelling"
        cancelled = await wait_state(queue, job.id, JobState.FAILED)

    latency_ms = (seen_at[0] - asked_at) * 1000
    print(f"sync processor saw job.cancelled {latency_ms:.1f} ms after queue.cancel()")
    assert latency_ms < 1000
    assert_cancelled(cancelled, "too slow")
    assert cancelled.return_value is None
    assert outcomes.notified == [("on_cancelled", job.id, "JobCancelledError")]
    assert outcomes.outcomes == [(job.id, "cancelled", "JobCancelledError")]


async def test_an_async_processor_that_swallows_the_cancellation_still_ends_cancelled(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()

    async def process(job: Job) -> str:
        started.set()
        with suppress(asyncio.CancelledError):  # cleans up and returns
            await asyncio.sleep(60)
        await asyncio.sleep(0.01)  # the task is usable again: not cancelled twice
        return "partial"

    async with make_worker(process, lock_duration=30.0):
        await wait_subscribed(raw, queue)
        job = await queue.add("x")
        await asyncio.wait_for(started.wait(), 10)
        assert await queue.cancel(job.id) == "cancelling"
        cancelled = await wait_state(queue, job.id, JobState.FAILED)
    assert_cancelled(cancelled, "cancelled")


async def test_a_cancellation_the_processor_lost_is_delivered_again_at_a_lock_renewal(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    # redis-py's asyncio client can swallow a task's cancellation that lands mid-command
    # (redis/redis-py#2028): the processor then runs on as if nothing had been asked.
    # Here it swallows the first one outright, then sleeps for a minute.
    started = asyncio.Event()
    cancels: list[float] = []

    async def process(job: Job) -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancels.append(time.monotonic())  # lost, as inside a redis-py command
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancels.append(time.monotonic())
            raise
        return "ran to its end"

    outcomes = Outcomes()
    async with make_worker(process, hooks=[outcomes], lock_duration=1.0):  # renewed every 0.5 s
        await wait_subscribed(raw, queue)
        job = await queue.add("x", attempts=3)
        await asyncio.wait_for(started.wait(), 10)
        assert await queue.cancel(job.id, "stop now") == "cancelling"
        cancelled = await wait_state(queue, job.id, JobState.FAILED, timeout=10.0)
    assert len(cancels) == 2
    again_after = cancels[1] - cancels[0]
    print(f"cancellation delivered again {again_after:.2f} s after the first")
    assert 0.4 <= again_after < 5.0  # not before a renewal interval (0.5 s), at a renewal after
    assert_cancelled(cancelled, "stop now")
    assert cancelled.attempts_started == 1  # never retried
    assert outcomes.outcomes == [(job.id, "cancelled", "JobCancelledError")]


async def test_a_processor_still_cleaning_up_is_not_cancelled_again_before_an_interval(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    # A processor that catches the cancellation on purpose and cleans up for a moment:
    # a renewal during the cleanup (one every 0.5 s here; the request is reported at
    # each) must not cut it short, as it would without the interval.
    started = asyncio.Event()
    cleaned: list[str] = []

    async def process(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # shorter than the interval
            cleaned.append(job.id)
            raise

    async with make_worker(process, lock_duration=1.0):
        await wait_subscribed(raw, queue)
        job = await queue.add("x")
        await asyncio.wait_for(started.wait(), 10)
        assert await queue.cancel(job.id) == "cancelling"
        cancelled = await wait_state(queue, job.id, JobState.FAILED)
    assert cleaned == [job.id]
    assert_cancelled(cancelled, "cancelled")


async def test_only_the_cancelled_job_stops(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    started: set[str] = set()
    release = asyncio.Event()

    async def process(job: Job) -> str:
        started.add(job.id)
        await release.wait()
        return job.id

    async with make_worker(process, concurrency=3, lock_duration=30.0):
        await wait_subscribed(raw, queue)
        jobs = [await queue.add("x") for _ in range(3)]
        await wait_for(lambda: len(started) == 3, what="three jobs running")
        assert await queue.cancel(jobs[1].id) == "cancelling"
        await wait_state(queue, jobs[1].id, JobState.FAILED)
        release.set()
        await wait_counts(queue, completed=2, failed=1)


async def test_a_job_cancelled_before_it_starts_is_not_run(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    ran: list[str] = []
    second: list[Job] = []

    class CancelTheNext(Hook):
        async def on_completed(self, event: JobEvent) -> None:
            # The settle of the first job handed the second one to this slot: it is
            # active and held by this worker, but its processor has not started yet.
            if event.job.id == first.id:
                assert await queue.cancel(second[0].id, "too early") == "cancelling"
                await wait_for(
                    lambda: any(log["event"] == "job_cancel_requested" for log in logs),
                    what="the worker to hear the cancel",
                )

    async def process(job: Job) -> str:
        ran.append(job.id)
        return "ok"

    outcomes = Outcomes()
    with capture_logs() as logs:
        async with make_worker(process, hooks=[CancelTheNext(), outcomes], lock_duration=30.0):
            await wait_subscribed(raw, queue)
            first, after = await queue.add_bulk([JobSpec("x"), JobSpec("x")])
            second.append(after)
            cancelled = await wait_state(queue, after.id, JobState.FAILED)
    assert ran == [first.id]
    assert_cancelled(cancelled, "too early")
    assert (second[0].id, "cancelled", "JobCancelledError") in outcomes.outcomes


async def test_a_cancel_heard_before_the_fetch_reply_still_stops_the_job(
    queue: Queue,
    raw: redis.asyncio.Redis,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race behind a flaky README example: the fetch script makes the job active, the
    cancel script sees it active and publishes, and the worker hears the message before the
    fetch's reply tells it that it holds the job. The request is kept for a moment and
    applied when the job turns up; an old one (past its few seconds) is not."""
    ran: list[str] = []

    async def process(job: Job) -> str:
        ran.append(job.id)
        return "ok"

    import queue_core.attempts  # noqa: PLC0415 - its constant, shortened for the stale case

    monkeypatch.setattr(queue_core.attempts, "_UNCLAIMED_S", 0.5)
    channel = QueueKeys(queue.name)["cancel"]
    async with make_worker(process, drain_delay=0.2):
        await wait_subscribed(raw, queue)
        await raw.publish(channel, "early")  # heard while no job "early" is held here
        await raw.publish(channel, "stale")
        await asyncio.sleep(0.8)  # "stale" is forgotten by now; "early" is heard again:
        await raw.publish(channel, "early")
        await queue.add("x", job_id="early")
        await queue.add("x", job_id="stale")
        cancelled = await wait_state(queue, "early", JobState.FAILED)
        done = await wait_state(queue, "stale", JobState.COMPLETED)
    assert ran == ["stale"] and done.return_value == "ok"
    assert cancelled.error_type == "JobCancelledError"


async def test_a_cancel_reaches_a_worker_in_another_process(
    queue: Queue, redis_url: str, raw: redis.asyncio.Redis, tmp_path: Path
) -> None:
    # A long lock_duration: only the pub/sub message can reach the worker quickly.
    worker = WorkerProcess(tmp_path, redis_url, queue.name, "remote", lock_duration=30.0)
    try:
        worker.start()
        worker.wait_ready()
        await wait_subscribed(raw, queue)
        job = await queue.add("sleepy", {"sleep": 60}, attempts=3)
        await wait_state(queue, job.id, JobState.ACTIVE)
        asked_at = time.time()
        assert await queue.cancel(job.id, "from afar") == "cancelling"
        cancelled = await wait_state(queue, job.id, JobState.FAILED, timeout=5.0)
        assert_cancelled(cancelled, "from afar")
        await wait_for(lambda: bool(worker.events("job_cancelled")), what="the remote log")
        [heard] = worker.events("job_cancel_requested")
        latency_ms = (event_time(heard).timestamp() - asked_at) * 1000
        print(f"the worker process heard the cancel {latency_ms:.1f} ms after queue.cancel()")
        assert latency_ms < 1000
        assert worker.events("job_cancelled")[0]["reason"] == "from afar"
        worker.check_alive()
    finally:
        worker.cleanup()


async def test_a_lost_cancel_message_is_caught_by_the_lock_renewal(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()
    seen: list[float] = []

    async def process(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append(time.monotonic())
            raise

    async with make_worker(process, lock_duration=0.6):  # renewed every 0.3 s
        await wait_subscribed(raw, queue)
        job = await queue.add("x")
        await asyncio.wait_for(started.wait(), 10)
        # The request as queue.cancel stores it, its message published where nobody
        # listens: as if it had been sent while the listener reconnected.
        asked_at = time.monotonic()
        reply = await run_script(raw, _CANCEL_JOB, unheard_keys(queue), [job.id, "lost"])
        assert int(reply[0]) == 1
        cancelled = await wait_state(queue, job.id, JobState.FAILED, timeout=5.0)
    assert_cancelled(cancelled, "lost")
    print(f"lock renewal delivered the lost cancel after {seen[0] - asked_at:.3f} s")
    assert seen[0] - asked_at < 2.0


async def test_the_listener_subscribes_again_after_its_connection_is_killed(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()

    async def process(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    worker = make_worker(process, lock_duration=30.0)
    with capture_logs() as logs:
        async with worker:
            await wait_subscribed(raw, queue)
            killed = await raw.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "TYPE", "pubsub"
            )
            assert int(killed) >= 1
            await wait_for(
                lambda: any(log["event"] == "cancel_listener_resubscribed" for log in logs),
                what="the listener to subscribe again",
            )
            job = await queue.add("x")
            await asyncio.wait_for(started.wait(), 10)
            asked_at = time.monotonic()
            assert await queue.cancel(job.id) == "cancelling"
            await wait_state(queue, job.id, JobState.FAILED, timeout=5.0)
            assert time.monotonic() - asked_at < 5.0  # not the lock renewal, 15 s away
            assert worker.healthy()
    [disconnected] = [log for log in logs if log["event"] == "cancel_listener_disconnected"]
    assert "ConnectionError" in disconnected["error"]


# ----- a request the worker did not see in time: the settling scripts keep the rule


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("retry", "cancelled"),  # a failed attempt with attempts left
        ("fail", "cancelled"),  # UnrecoverableError: no retry
        ("delayed_error", "cancelled"),
        ("rate_limited", "cancelled"),
        ("move_to_delayed", "cancelled"),
        ("complete", "completed"),  # the work was done: the result is kept
    ],
)
async def test_a_settle_honours_a_cancel_the_worker_did_not_see(
    behaviour: str,
    expected: str,
    queue: Queue,
    raw: redis.asyncio.Redis,
    make_worker: Callable[..., Worker],
) -> None:
    saw: list[str] = []

    async def process(job: Job) -> str:
        # The request lands while the job runs, its message lost (published nowhere);
        # the lock renewal is 15 s away: the worker goes on unaware.
        await run_script(raw, _CANCEL_JOB, unheard_keys(queue), [job.id, "late"])
        assert not job.cancelled.is_set()
        if behaviour == "retry":
            raise RuntimeError("boom")
        if behaviour == "fail":
            raise UnrecoverableError("bad input")
        if behaviour == "delayed_error":
            raise DelayedError(60)
        if behaviour == "rate_limited":
            raise RateLimitError(0.05)
        if behaviour == "move_to_delayed":
            try:
                await job.move_to_delayed(60)
            except JobCancelledError as exc:
                saw.append(str(exc))
                raise
        return "done"

    outcomes = Outcomes()
    job = await queue.add("x", attempts=5, backoff=0.01)
    async with make_worker(process, hooks=[outcomes], lock_duration=30.0):
        final = await wait_state(
            queue, job.id, JobState.COMPLETED if expected == "completed" else JobState.FAILED
        )
        await asyncio.sleep(0.2)  # let the hooks finish
    state = await raw.hget(queue.keys["state"], job.id)
    assert state is not None and b"cxr" not in state
    assert final.attempts_started == 1
    if expected == "completed":
        assert final.return_value == "done"
        assert outcomes.notified == [("on_completed", job.id, None)]
        assert outcomes.outcomes == [(job.id, "completed", None)]
        return
    assert_cancelled(final, "late")
    # A failed attempt counts as made; a delay or a rate limit does not.
    assert final.attempts_made == (1 if behaviour in ("retry", "fail") else 0)
    assert outcomes.notified == [("on_cancelled", job.id, "JobCancelledError")]
    assert outcomes.outcomes == [(job.id, "cancelled", "JobCancelledError")]
    events = [e["event"] for e in await events_of(raw, queue, job.id)]
    assert events == ["added", "active", "cancelled"]
    if behaviour == "move_to_delayed":
        assert saw == ["late"]


async def test_stalled_recovery_fails_a_cancel_requested_job_as_cancelled(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("x", attempts=3)
    # A worker that took the job and died: its lock (1 ms) expires at once.
    fetched = await run_script(raw, _MOVE_TO_ACTIVE, queue.keys, [1, "ghost", 1, 0, 0])
    assert fetched[5] == job.id.encode()
    assert await queue.cancel(job.id, "abandoned") == "cancelling"

    ran: list[str] = []
    stalled: list[StalledEvent] = []

    class Stalls(Hook):
        def on_stalled(self, event: StalledEvent) -> None:
            stalled.append(event)

    async def process(job: Job) -> None:
        ran.append(job.id)

    async with make_worker(process, stalled_interval=0.1, hooks=[Stalls()]):
        cancelled = await wait_state(queue, job.id, JobState.FAILED)
        await asyncio.sleep(0.3)
    assert ran == []  # not run again
    assert_cancelled(cancelled, "abandoned")
    assert cancelled.attempts_made == 0 and cancelled.stalled_count == 1
    events = [e["event"] for e in await events_of(raw, queue, job.id)]
    assert events == ["added", "active", "stalled", "cancelled"]
    assert all(not e.requeued and not e.failed for e in stalled)


# ----- refused and bad input: typed errors, nothing changed


async def test_cancelling_a_finished_job_is_refused(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> str:
        if job.data == "bad":
            raise UnrecoverableError("no")
        return "ok"

    done = await queue.add("x", "good")
    failed = await queue.add("x", "bad")
    async with make_worker(process):
        await wait_counts(queue, completed=1, failed=1)
    before = await raw.hgetall(queue.keys["state"])

    with pytest.raises(JobStateError) as completed_error:
        await queue.cancel(done.id)
    assert completed_error.value.state == "completed"
    assert completed_error.value.operation == "cancel"
    with pytest.raises(JobStateError) as failed_error:
        await queue.cancel(failed.id, "too late")
    assert failed_error.value.state == "failed"
    assert await raw.hgetall(queue.keys["state"]) == before
    job = await queue.get_job(failed.id)
    assert job is not None and job.error_type == "UnrecoverableError"


async def test_cancelling_an_unknown_job_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFoundError):
        await queue.cancel("no-such-job")


@pytest.mark.parametrize(
    ("job_id", "reason"),
    [("", ""), (42, ""), ("x" * 513, ""), ("a", "r" * (MAX_REASON_CHARS + 1)), ("a", None)],
)
async def test_bad_arguments_are_refused_before_anything_is_sent(
    queue: Queue, raw: redis.asyncio.Redis, job_id: Any, reason: Any
) -> None:
    job = await queue.add("x", job_id="a")
    with pytest.raises(InvalidOptionError):
        await queue.cancel(job_id, reason)
    still = await queue.get_job(job.id)
    assert still is not None and still.state is JobState.WAITING


async def test_a_job_with_a_corrupt_record_is_quarantined_not_cancelled(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("x")
    await raw.hset(queue.keys["state"], job.id, b"not json")
    with pytest.raises(JobStateError, match="corrupt"):
        await queue.cancel(job.id)
    quarantined = await queue.get_job(job.id)
    assert quarantined is not None and quarantined.error_type == "CorruptJobError"


# ----- the blocking twin


async def test_sync_queue_cancel(
    queue: Queue, redis_url: str, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()

    async def process(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    waiting = await queue.add("x", delay=60)
    with SyncQueue(queue.name, redis=redis_url) as sync_queue:
        assert await asyncio.to_thread(sync_queue.cancel, waiting.id, "nope") == "cancelled"
        with pytest.raises(JobNotFoundError):
            await asyncio.to_thread(sync_queue.cancel, "missing")
        with pytest.raises(JobStateError):
            await asyncio.to_thread(sync_queue.cancel, waiting.id)
        async with make_worker(process, lock_duration=30.0):
            await wait_subscribed(raw, queue)
            running = await queue.add("x")
            await asyncio.wait_for(started.wait(), 10)
            assert await asyncio.to_thread(sync_queue.cancel, running.id) == "cancelling"
            cancelled = await wait_state(queue, running.id, JobState.FAILED)
    assert_cancelled(cancelled, "cancelled")
    first = await queue.get_job(waiting.id)
    assert first is not None
    assert_cancelled(first, "nope")


# ----- Redis Cluster: the listener subscribes on the node that serves the queue


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    local = RedisCluster(masters=3)
    try:
        local.start()
        yield local
    finally:
        local.cleanup()


@pytest.fixture
async def cluster_client(cluster: RedisCluster) -> AsyncIterator[AsyncRedisCluster]:
    nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
    client = AsyncRedisCluster(startup_nodes=nodes, decode_responses=False)
    yield client
    await client.aclose()


async def test_cancel_a_running_job_on_a_cluster(
    cluster_client: AsyncRedisCluster, queue_name: str
) -> None:
    started = asyncio.Event()
    seen_at: list[float] = []

    async def process(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen_at.append(time.monotonic())
            raise

    queue = Queue(queue_name, redis=cluster_client)
    worker = Worker(
        queue_name, process, redis=cluster_client, lock_duration=30.0, shutdown_timeout=5.0
    )
    async with worker:
        delayed = await queue.add("later", delay=60)
        assert await queue.cancel(delayed.id) == "cancelled"
        node = cluster_client.get_node_from_key(queue.keys["meta"])
        assert node is not None
        plain = redis.asyncio.Redis(host=node.host, port=int(node.port))
        try:

            async def subscribed() -> bool:
                reply = await plain.pubsub_numsub(queue.keys["cancel"])
                return int(reply[0][1]) >= 1

            await wait_for(subscribed, what="the listener on the queue's node")
        finally:
            await plain.aclose()
        job = await queue.add("x")
        await asyncio.wait_for(started.wait(), 10)
        asked_at = time.monotonic()
        assert await queue.cancel(job.id, "cluster") == "cancelling"
        cancelled = await wait_state(queue, job.id, JobState.FAILED, timeout=5.0)
    print(f"cluster: the processor saw the cancel {(seen_at[0] - asked_at) * 1000:.1f} ms later")
    assert seen_at[0] - asked_at < 1.0
    assert_cancelled(cancelled, "cluster")
    first = await queue.get_job(delayed.id)
    assert first is not None
    assert_cancelled(first, "cancelled")
    await queue.close()


async def test_a_cancel_heard_while_the_processor_delays_its_job_is_told_once(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    """The request is published for real: the listener may cancel the processor's task
    in the middle of its move_to_delayed settle, which the script turns into the
    cancellation; the hooks hear it once, as a cancellation."""

    async def process(job: Job) -> str:
        await run_script(raw, _CANCEL_JOB, queue.keys, [job.id, "late"])
        await job.move_to_delayed(60)
        return "never recorded"

    outcomes = Outcomes()
    job = await queue.add("x", attempts=5)
    async with make_worker(process, hooks=[outcomes]):
        await wait_subscribed(raw, queue)
        final = await wait_state(queue, job.id, JobState.FAILED)
        await asyncio.sleep(0.3)  # a second notification would come now
    assert_cancelled(final, "late")
    assert outcomes.notified == [("on_cancelled", job.id, "JobCancelledError")]
    assert outcomes.outcomes == [(job.id, "cancelled", "JobCancelledError")]
