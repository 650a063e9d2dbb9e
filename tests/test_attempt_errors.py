"""A job keeps the error of each failure (``Job.errors``), oldest first, the last 10:
across retries, cancels, stalls, operator retries and completion, and from values that
older versions stored (the latest error alone)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis.asyncio

from queue_core import AttemptError, Backoff, CorruptJobError, Job, JobState, Queue, Worker
from queue_core.scripts import load_script, run_script
from tests.conftest import wait_counts, wait_for

ERRORS_KEPT = 10  # ERRORS_KEPT in scripts/includes/error_history.lua


class FirstError(Exception):
    pass


class SecondError(Exception):
    pass


class ThirdError(Exception):
    pass


def failing_each_time(*errors: type[Exception]) -> Callable[[Job], Any]:
    """A processor whose n-th run raises ``errors[n - 1]`` (the last one after that)."""
    runs: list[int] = []

    async def process(job: Job) -> str:
        runs.append(job.attempt)
        error = errors[min(len(runs), len(errors)) - 1]
        raise error(f"run {len(runs)} failed")

    return process


async def fetched_job(queue: Queue, job_id: str) -> Job:
    job = await queue.get_job(job_id)
    assert job is not None
    return job


def summary(job: Job) -> list[tuple[int | None, str | None, str]]:
    return [(e.attempt, e.type, e.message) for e in job.errors]


async def test_each_failed_attempt_keeps_its_error_in_order(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    job = await queue.add("flaky", attempts=3)
    async with make_worker(failing_each_time(FirstError, SecondError, ThirdError)):
        await wait_counts(queue, failed=1)
    failed = await fetched_job(queue, job.id)

    assert summary(failed) == [
        (1, "FirstError", "run 1 failed"),
        (2, "SecondError", "run 2 failed"),
        (3, "ThirdError", "run 3 failed"),
    ]
    for error, raised in zip(
        failed.errors, ("FirstError", "SecondError", "ThirdError"), strict=True
    ):
        assert isinstance(error, AttemptError)
        assert error.stack is not None and error.stack.startswith("Traceback")
        assert f"{raised}: {error.message}" in error.stack
        assert error.failed_at is not None and error.failed_at >= before
    times = [e.failed_at for e in failed.errors]
    assert times == sorted(times)  # type: ignore[type-var]
    # The latest is also what failed_reason and friends describe, as before.
    latest = failed.errors[-1]
    assert (failed.failed_reason, failed.error_type, failed.stacktrace) == (
        latest.message, latest.type, latest.stack
    )  # fmt: skip
    assert failed.finished_at == latest.failed_at


async def test_a_job_that_fails_more_often_than_the_cap_keeps_the_newest_errors(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    attempts = ERRORS_KEPT + 3
    job = await queue.add("doomed", attempts=attempts)
    async with make_worker(failing_each_time(FirstError)):
        await wait_counts(queue, failed=1, timeout=30)
    failed = await fetched_job(queue, job.id)
    assert failed.attempts_made == attempts
    assert summary(failed) == [
        (n, "FirstError", f"run {n} failed")
        for n in range(attempts - ERRORS_KEPT + 1, attempts + 1)
    ]
    assert all(e.stack for e in failed.errors)


async def test_a_retrying_job_shows_the_errors_so_far(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("flaky", attempts=3, backoff=Backoff.fixed(600))
    async with make_worker(failing_each_time(FirstError)):
        delayed = await wait_state(queue, job.id, JobState.DELAYED)
    assert summary(delayed) == [(1, "FirstError", "run 1 failed")]
    assert delayed.failed_reason == "run 1 failed"  # unchanged: the latest attempt's error


async def test_an_operator_retry_and_a_completion_keep_the_history(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("flaky", attempts=2)
    async with make_worker(failing_each_time(FirstError, SecondError)):
        await wait_counts(queue, failed=1)

    await queue.retry_job(job.id)
    retried = await fetched_job(queue, job.id)
    assert retried.state is JobState.WAITING
    assert summary(retried) == [
        (1, "FirstError", "run 1 failed"),
        (2, "SecondError", "run 2 failed"),
    ]
    # It has no current error: failed_reason describes a failure since the retry only.
    assert (retried.failed_reason, retried.error_type, retried.stacktrace) == (None, None, None)

    async with make_worker(failing_each_time(ThirdError)):
        await wait_counts(queue, failed=1, waiting=0)
    again = await fetched_job(queue, job.id)
    assert [(e.attempt, e.type) for e in again.errors] == [
        (1, "FirstError"), (2, "SecondError"), (1, "ThirdError"), (2, "ThirdError")
    ]  # fmt: skip
    assert again.failed_reason == "run 2 failed"

    await again.retry()
    assert len(again.errors) == 4  # the snapshot keeps them too

    async def succeed(job: Job) -> str:
        return "done"

    async with make_worker(succeed):
        await wait_counts(queue, completed=1)
    done = await fetched_job(queue, job.id)
    assert (done.state, done.return_value, done.failed_reason) == (JobState.COMPLETED, "done", None)
    assert [e.type for e in done.errors] == [
        "FirstError",
        "SecondError",
        "ThirdError",
        "ThirdError",
    ]


async def test_a_job_that_completes_on_a_retry_keeps_its_failures_as_history_only(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    # A completion moves the current error into the history (move_to_completed.lua):
    # here the second attempt completes, after one failure.
    runs: list[int] = []

    async def second_time_lucky(job: Job) -> str:
        runs.append(job.attempt)
        if len(runs) == 1:
            raise FirstError("run 1 failed")
        return "done"

    job = await queue.add("flaky", attempts=3)
    async with make_worker(second_time_lucky):
        await wait_counts(queue, completed=1)
    done = await fetched_job(queue, job.id)
    assert runs == [1, 2]
    assert summary(done) == [(1, "FirstError", "run 1 failed")]
    assert (done.failed_reason, done.error_type, done.stacktrace) == (None, None, None)
    stored = orjson.loads(await raw.hget(queue.keys["errors"], job.id))
    assert set(stored) == {"prev"}  # history only: no current error


async def test_a_job_that_never_failed_has_no_errors(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    async def succeed(job: Job) -> str:
        return "ok"

    job = await queue.add("fine")
    assert (await fetched_job(queue, job.id)).errors == []
    async with make_worker(succeed):
        await wait_counts(queue, completed=1)
    assert (await fetched_job(queue, job.id)).errors == []
    assert not await raw.hexists(queue.keys["errors"], job.id)


async def test_an_error_stored_by_an_older_version_still_decodes(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("legacy", attempts=1)
    async with make_worker(failing_each_time(FirstError)):
        await wait_counts(queue, failed=1)
    old = {"type": "ValueError", "message": "old format", "stack": "Traceback: old\n"}
    await raw.hset(queue.keys["errors"], job.id, orjson.dumps(old))

    failed = await fetched_job(queue, job.id)
    assert failed.errors == [
        AttemptError(None, "ValueError", "old format", "Traceback: old\n", None)
    ]
    assert (failed.failed_reason, failed.error_type) == ("old format", "ValueError")
    listed = await queue.get_jobs(JobState.FAILED)
    assert [j.errors for j in listed] == [failed.errors]

    # The next failure keeps the old error as the first of the history.
    await queue.retry_job(job.id)
    async with make_worker(failing_each_time(SecondError)):
        await wait_counts(queue, failed=1, waiting=0)
    again = await fetched_job(queue, job.id)
    assert summary(again) == [
        (None, "ValueError", "old format"),
        (1, "SecondError", "run 1 failed"),
    ]
    assert again.errors[0].stack == "Traceback: old\n"


async def test_a_malformed_history_makes_the_job_unreadable_not_wrong(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("x")
    bad = {"type": "E", "message": "m", "stack": "", "a": 1, "t": 1, "prev": [{"message": 3}]}
    await raw.hset(queue.keys["errors"], job.id, orjson.dumps(bad))
    with pytest.raises(CorruptJobError, match="type, message and stack"):
        await queue.get_job(job.id)
    [listed] = await queue.get_jobs(JobState.WAITING)
    assert isinstance(listed.read_error, CorruptJobError) and listed.errors == []


async def test_a_cancelled_job_has_an_entry(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    waiting = await queue.add("idle")
    assert await queue.cancel(waiting.id, "not needed") == "cancelled"
    cancelled = await fetched_job(queue, waiting.id)
    [entry] = cancelled.errors
    assert (entry.attempt, entry.type, entry.message, entry.stack) == (
        None, "JobCancelledError", "not needed", None
    )  # fmt: skip
    assert entry.failed_at == cancelled.finished_at

    # A running job cancelled on its second attempt: the cancel ends that attempt.
    job = await queue.add("long", attempts=3)
    second_run = asyncio.Event()

    async def fail_then_hang(job: Job) -> None:
        if job.attempt == 1:
            raise FirstError("run 1 failed")
        second_run.set()
        await asyncio.Event().wait()

    async with make_worker(fail_then_hang):
        await asyncio.wait_for(second_run.wait(), 10)
        assert await queue.cancel(job.id, "operator stop") == "cancelling"
        stopped = await wait_state(queue, job.id, JobState.FAILED)
    assert summary(stopped) == [
        (1, "FirstError", "run 1 failed"), (2, "JobCancelledError", "operator stop")
    ]  # fmt: skip


async def test_a_job_failed_by_stalled_recovery_has_an_entry(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("poison", attempts=3, backoff=Backoff.fixed(600))
    async with make_worker(failing_each_time(FirstError)):
        await wait_state(queue, job.id, JobState.DELAYED)
    await queue.promote_job(job.id)
    # A worker that takes the job and dies: its lock (1 ms) expires at once.
    fetched = await run_script(
        raw, load_script("move_to_active"), queue.keys, [1, "ghost", 1, 0, 0]
    )
    assert fetched[5] == job.id.encode()

    async def never(job: Job) -> None:
        raise AssertionError("a job that stalled too often must not run again")

    async with make_worker(never, stalled_interval=0.1, max_stalled_count=0):
        failed = await wait_state(queue, job.id, JobState.FAILED)
    assert [(e.attempt, e.type) for e in failed.errors] == [
        (1, "FirstError"), (None, "StalledJobError")
    ]  # fmt: skip
    assert "stalled 1 times" in failed.errors[-1].message
    assert failed.errors[-1].failed_at == failed.finished_at
    assert failed.error_type == "StalledJobError"


async def test_an_error_message_that_is_not_valid_unicode_stays_readable(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def bad_name(job: Job) -> None:
        raise FirstError("no such file: /tmp/caf\udce9")  # a surrogate-escaped file name

    job = await queue.add("files", attempts=2)
    async with make_worker(bad_name):
        await wait_counts(queue, failed=1)
    failed = await fetched_job(queue, job.id)
    assert [e.message for e in failed.errors] == ["no such file: /tmp/caf?"] * 2
    assert failed.failed_reason == "no such file: /tmp/caf?"


async def wait_state(queue: Queue, job_id: str, state: JobState) -> Job:
    found: Job | None = None

    async def reached() -> bool:
        nonlocal found
        found = await queue.get_job(job_id)
        return found is not None and found.state is state

    await wait_for(reached, 10, what=f"job {job_id} {state}")
    assert found is not None
    return found
