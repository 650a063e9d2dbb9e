"""The process pool (``Worker(pool="process")``) against a real Redis: plain ``def``
processors run in child processes (tests/pool_jobs.py, importable by the children). A
child that dies fails or retries only its job and is replaced; a timeout or a cancel
kills its child; progress, job logs and ``logging`` records work from a child; closing
the worker leaves no child process behind.

Each new child imports queue_core and the processors' module (a second or more on a busy
machine), so each test starts few of them.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from queue_core import (
    InvalidOptionError,
    JobCancelledError,
    JobFailedError,
    JobState,
    Queue,
    Worker,
)
from tests import pool_jobs
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent

PROCESSORS = {
    "cpu": pool_jobs.cpu,
    "crash": pool_jobs.crash,
    "sleep": pool_jobs.sleep,
    "report": pool_jobs.report,
    "steer": pool_jobs.steer,
    "unpicklable": pool_jobs.unpicklable,
}


def alive(pid: int) -> bool:
    """A process that runs (a zombie, whose parent died without reaping it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def logged_pids(queue: Queue, job_id: str, count: int = 1) -> list[int]:
    """The pids a job's attempts logged ("pid N"), once ``count`` of them have."""
    job = await queue.get_job(job_id)
    assert job is not None

    async def logged() -> bool:
        return len(await queue.get_logs(job)) >= count

    await wait_for(logged, 30, what=f"{count} log line(s) of job {job_id}")
    return [int(line.split()[1]) for line in await queue.get_logs(job)]


@contextmanager
def records_of(name: str) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger, handler = logging.getLogger(name), Keep()
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


async def test_cpu_jobs_run_in_children_with_progress_logs_and_errors(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(PROCESSORS, pool="process", concurrency=2)
    assert worker.pool_size == 2
    with records_of("tests.pool_jobs") as records:
        async with worker:
            cpu = [await queue.add("cpu", {"n": 200_000}) for _ in range(4)]
            report = await queue.add("report")
            value = await queue.add("steer", {"kind": "value"}, attempts=1)
            unrecoverable = await queue.add("steer", {"kind": "unrecoverable"}, attempts=3)
            delayed = await queue.add("steer", {"kind": "delayed"})
            unpicklable = await queue.add("unpicklable")

            results = [await queue.wait_until_finished(job.id, 30) for job in cpu]
            assert {r["total"] for r in results} == {sum(i * i for i in range(200_000))}
            pids = {r["pid"] for r in results}
            assert os.getpid() not in pids
            assert len(pids) <= 2  # one job per child, pool_size children at most

            assert await queue.wait_until_finished(report.id, 30) == "kept 1"
            assert await queue.wait_until_finished(delayed.id, 30) == "delayed on attempt 2"
            for job in (value, unrecoverable, unpicklable):
                with pytest.raises(JobFailedError):
                    await queue.wait_until_finished(job.id, 30)

    stored = await queue.get_job(report.id)
    assert stored is not None
    assert stored.progress == {"done": True}
    assert await queue.get_logs(stored) == ["half way"]
    [record] = records  # the child's logging record, through the parent's logger
    assert record.getMessage().startswith("from the child ")
    assert record.process != os.getpid()
    assert record.job_id == report.id  # type: ignore[attr-defined]
    assert record.job_name == "report"  # type: ignore[attr-defined]

    failed = await queue.get_job(value.id)
    assert failed is not None
    assert (failed.error_type, failed.failed_reason) == ("ValueError", "bad input")
    assert failed.stacktrace is not None
    assert "pool_jobs.py" in failed.stacktrace  # the child's frames
    assert 'raise ValueError("bad input")' in failed.stacktrace

    given_up = await queue.get_job(unrecoverable.id)
    assert given_up is not None
    assert (given_up.error_type, given_up.attempts_made) == ("UnrecoverableError", 1)

    unsent = await queue.get_job(unpicklable.id)
    assert unsent is not None
    assert unsent.error_type == "SerializationError"
    assert "could not be sent" in (unsent.failed_reason or "")


async def test_a_crashed_child_fails_or_retries_only_its_job_and_is_replaced(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async with make_worker(PROCESSORS, pool="process", concurrency=2):
        # Dies 0.3 s in, while the other child is busy with `steady`.
        retried = await queue.add("crash", {"crash_on": [1], "sleep": 0.3}, attempts=2)
        steady = await queue.add("sleep", {"seconds": 1.5})
        [crashed_pid] = await logged_pids(queue, retried.id)
        [steady_pid] = await logged_pids(queue, steady.id)

        new_pid = await queue.wait_until_finished(retried.id, 30)
        assert new_pid not in (crashed_pid, steady_pid)  # a new child for the retry
        assert await logged_pids(queue, retried.id, 2) == [crashed_pid, new_pid]
        assert await queue.wait_until_finished(steady.id, 30) == steady_pid
        await wait_for(lambda: not alive(crashed_pid), 5, what="the crashed child reaped")

        failing = await queue.add("crash", {"crash_on": [1]}, attempts=1)
        with pytest.raises(JobFailedError) as failure:
            await queue.wait_until_finished(failing.id, 30)
        assert failure.value.error_type == "ProcessCrashedError"
        assert "exited with code 3" in failure.value.reason

        # The pool carries on with the children it has (and starts one for what died).
        after = await queue.add("cpu", {"n": 10})
        assert (await queue.wait_until_finished(after.id, 30))["pid"] != crashed_pid

    job = await queue.get_job(retried.id)
    assert job is not None
    assert (job.state, job.attempts_made) == (JobState.COMPLETED, 2)


async def test_a_timeout_or_a_cancel_kills_the_child(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async with make_worker(PROCESSORS, pool="process", concurrency=2):
        timed = await queue.add("sleep", {"seconds": 60}, timeout=1.0, attempts=1)
        cancelled = await queue.add("sleep", {"seconds": 60})
        [timed_pid] = await logged_pids(queue, timed.id)
        [cancelled_pid] = await logged_pids(queue, cancelled.id)
        started = time.monotonic()
        assert await queue.cancel(cancelled.id, "not needed") == "cancelling"

        with pytest.raises(JobCancelledError):
            await queue.wait_until_finished(cancelled.id, 10)
        assert time.monotonic() - started < 5
        with pytest.raises(JobFailedError) as failure:
            await queue.wait_until_finished(timed.id, 10)
        assert failure.value.error_type == "JobTimeoutError"
        assert "child process was killed" in failure.value.reason
        for pid in (timed_pid, cancelled_pid):
            await wait_for(lambda pid=pid: not alive(pid), 5, what=f"child {pid} killed")


async def test_close_waits_for_child_jobs_then_leaves_no_child_process(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(PROCESSORS, pool="process", concurrency=2, shutdown_timeout=2.5)
    async with worker:
        warm = [await queue.add("sleep", {"seconds": 0.3}) for _ in range(2)]  # both started
        pids = {await queue.wait_until_finished(job.id, 30) for job in warm}
        finishing = await queue.add("sleep", {"seconds": 1.0})
        stuck = await queue.add("sleep", {"seconds": 60})
        await logged_pids(queue, finishing.id)
        await logged_pids(queue, stuck.id)
        closing = datetime.now(UTC)
        started = time.monotonic()
    took = time.monotonic() - started
    assert 2.3 < took < 8  # waited shutdown_timeout for `stuck`, not its 60 s

    done = await queue.get_job(finishing.id)
    assert done is not None
    assert done.state is JobState.COMPLETED
    assert done.finished_at is not None
    assert done.finished_at > closing  # close() waited for it
    left = await queue.get_job(stuck.id)
    assert left is not None
    assert left.state is JobState.ACTIVE  # left to stalled recovery, as in a thread
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)
    assert multiprocessing.active_children() == []


async def test_children_exit_when_the_worker_process_is_killed(
    queue: Queue, queue_name: str, redis_url: str
) -> None:
    code = (
        "import asyncio\n"
        "from queue_core import Worker\n"
        "from tests import pool_jobs\n"
        f"worker = Worker({queue_name!r}, pool_jobs.sleep, redis={redis_url!r}, pool='process')\n"
        "asyncio.run(worker.run())\n"
    )
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT)
    try:
        job = await queue.add("sleep", {"seconds": 60})
        [pid] = await logged_pids(queue, job.id)
    finally:
        parent.kill()
        await parent.wait()
    await wait_for(lambda: not alive(pid), 5, what="the orphaned child to exit")


def test_pool_options_are_checked() -> None:
    with pytest.raises(InvalidOptionError, match="importable"):
        Worker("q", lambda job: None, pool="process")
    with pytest.raises(InvalidOptionError, match="pool must be"):
        Worker("q", pool_jobs.cpu, pool="fork")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="pool_size is for"):
        Worker("q", pool_jobs.cpu, pool_size=2)
    with pytest.raises(InvalidOptionError, match="pool_size"):
        Worker("q", pool_jobs.cpu, pool="process", pool_size=0)

    async def io(job: Any) -> None: ...

    # async processors stay on the loop: they need not be importable
    worker = Worker("q", {"io": io, "cpu": pool_jobs.cpu}, pool="process", pool_size=3)
    assert (worker.pool, worker.pool_size) == ("process", 3)
