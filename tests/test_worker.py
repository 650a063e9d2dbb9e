"""The worker: processing, concurrency, thread processors, timeouts, idle blocking."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio
import structlog

from queue_core import (
    InvalidOptionError,
    Job,
    JobState,
    Queue,
    QueueError,
    UnrecoverableError,
    Worker,
)
from tests.conftest import wait_counts, wait_for
from tests.redis_server import free_port
from tests.test_queue import script_calls


async def test_async_processor_result_and_timestamps(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> dict[str, Any]:
        return {"sent_to": job.data["to"]}

    job = await queue.add("welcome", {"to": "ada@example.com"})
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    done = await queue.get_job(job.id)
    assert done is not None
    assert done.state is JobState.COMPLETED
    assert done.return_value == {"sent_to": "ada@example.com"}
    assert (done.attempts_started, done.attempts_made) == (1, 1)
    assert done.started_at is not None and done.finished_at is not None
    assert done.enqueued_at <= done.started_at <= done.finished_at
    assert done.failed_reason is None


async def test_sync_processor_runs_in_a_thread_with_context(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    seen: dict[str, Any] = {}

    def process(job: Job) -> str:
        seen["thread"] = threading.current_thread()
        seen["context"] = structlog.contextvars.get_contextvars()
        time.sleep(0.05)  # blocking is fine: this is not the event loop's thread
        return job.data.upper()

    job = await queue.add("shout", "hello")
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    assert seen["thread"] is not threading.main_thread()
    assert seen["thread"].daemon
    assert seen["context"]["job_id"] == job.id
    assert seen["context"]["queue"] == queue.name
    assert seen["context"]["attempt"] == 1
    done = await queue.get_job(job.id)
    assert done is not None and done.return_value == "HELLO"


async def test_processor_mapping_dispatches_by_job_name(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def email(job: Job) -> str:
        return "email"

    def resize(job: Job) -> str:
        return "resize"

    a = await queue.add("email")
    b = await queue.add("resize")
    c = await queue.add("unknown", attempts=5)
    async with make_worker({"email": email, "resize": resize}):
        await wait_counts(queue, completed=2, failed=1)
    results = {j.id: j for j in await queue.get_jobs()}
    assert results[a.id].return_value == "email"
    assert results[b.id].return_value == "resize"
    assert results[c.id].error_type == "UnrecoverableError"
    assert "no processor for job name 'unknown'" in (results[c.id].failed_reason or "")
    assert results[c.id].attempts_made == 1  # unrecoverable: no retry despite attempts=5


async def test_concurrency_is_respected(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    running = 0
    peak = 0
    release = asyncio.Event()

    async def process(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    for i in range(12):
        await queue.add("slow", i)
    async with make_worker(process, concurrency=5):
        await wait_for(lambda: running == 5, what="5 jobs running")
        await asyncio.sleep(0.2)  # give the worker every chance to overshoot
        assert running == 5
        assert (await queue.get_counts())["active"] == 5
        release.set()
        await wait_counts(queue, completed=12)
    assert peak == 5


async def test_finishing_a_job_fetches_the_next_in_the_same_call(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    async def process(job: Job) -> None:
        return None

    for i in range(40):
        await queue.add("noop", i)
    before = await script_calls(raw)
    async with make_worker(process):
        await wait_counts(queue, completed=40)
    calls = await script_calls(raw) - before
    # One settle-and-fetch per job, plus a first fetch, an empty fetch, the stalled
    # check and the polling of get_counts above: far fewer than two calls per job.
    assert calls < 40 + 25, calls


async def test_idle_worker_blocks_in_redis_instead_of_polling(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    async def process(job: Job) -> None:
        return None

    async with make_worker(process, drain_delay=0.5):
        await asyncio.sleep(0.3)
        stats_before = await raw.info("commandstats")
        await asyncio.sleep(2.0)
        stats_after = await raw.info("commandstats")

    def calls(stats: dict[str, Any], name: str) -> int:
        return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))

    blocking = calls(stats_after, "bzpopmin") - calls(stats_before, "bzpopmin")
    scripts = sum(calls(stats_after, c) - calls(stats_before, c) for c in ("fcall", "evalsha"))
    # Each 0.5 s block ends with one empty fetch: a handful of calls in 2 s, not hundreds.
    assert 2 <= blocking <= 6, blocking
    assert scripts <= blocking + 2, scripts


async def test_idle_worker_wakes_on_enqueue_not_on_its_timeout(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> str:
        return "done"

    async with make_worker(process, drain_delay=60.0) as worker:
        await asyncio.sleep(0.3)  # the worker is now blocked for up to 30 s
        assert worker.active_jobs == 0
        await queue.add("wake", 1)
        await wait_counts(queue, timeout=5.0, completed=1)


async def test_unserializable_return_value_fails_without_retry(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> object:
        return object()

    job = await queue.add("bad-result", attempts=3)
    async with make_worker(process):
        await wait_counts(queue, failed=1)
    failed = await queue.get_job(job.id)
    assert failed is not None
    assert failed.error_type == "SerializationError"
    assert failed.attempts_made == 1


async def test_timeout_fails_the_attempt_and_retries(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    starts = 0

    async def process(job: Job) -> None:
        nonlocal starts
        starts += 1
        await asyncio.sleep(30)

    job = await queue.add("hang", attempts=2, timeout=0.2)
    async with make_worker(process):
        await wait_counts(queue, failed=1)
    failed = await queue.get_job(job.id)
    assert failed is not None
    assert failed.error_type == "JobTimeoutError"
    assert "longer than its 0.2 s timeout" in (failed.failed_reason or "")
    assert (starts, failed.attempts_made) == (2, 2)


async def test_timeout_of_a_sync_processor(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    def process(job: Job) -> None:
        time.sleep(1.0)

    job = await queue.add("hang", timeout=0.1)
    async with make_worker(process):
        await wait_counts(queue, failed=1)
    failed = await queue.get_job(job.id)
    assert failed is not None and failed.error_type == "JobTimeoutError"


async def test_own_timeout_error_is_not_mistaken_for_the_job_timeout(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> None:
        raise TimeoutError("upstream timed out")

    job = await queue.add("x", timeout=10)
    async with make_worker(process):
        await wait_counts(queue, failed=1)
    failed = await queue.get_job(job.id)
    assert failed is not None
    assert (failed.error_type, failed.failed_reason) == ("TimeoutError", "upstream timed out")


async def test_unrecoverable_error_fails_at_once(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> None:
        raise UnrecoverableError("card declined")

    job = await queue.add("charge", attempts=5)
    async with make_worker(process):
        await wait_counts(queue, failed=1)
    failed = await queue.get_job(job.id)
    assert failed is not None
    assert (failed.attempts_made, failed.error_type) == (1, "UnrecoverableError")
    assert failed.stacktrace is not None and "card declined" in failed.stacktrace


async def test_worker_settings_are_validated(redis_url: str) -> None:
    async def process(job: Job) -> None:
        return None

    with pytest.raises(InvalidOptionError, match="concurrency"):
        Worker("q", process, redis=redis_url, concurrency=0)
    with pytest.raises(InvalidOptionError, match="lock_duration"):
        Worker("q", process, redis=redis_url, lock_duration=0)
    with pytest.raises(InvalidOptionError, match="not callable"):
        Worker("q", "process", redis=redis_url)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="limiter"):
        Worker("q", process, redis=redis_url, limiter=5)  # type: ignore[arg-type]


async def test_worker_runs_once_and_reports_health(
    make_worker: Callable[..., Worker],
) -> None:
    async def process(job: Job) -> None:
        return None

    worker = make_worker(process)
    assert not worker.healthy()
    async with worker:
        assert worker.running
        assert worker.healthy()
        assert worker.id.count(":") == 2  # host:pid:random
    assert not worker.running and not worker.healthy()
    with pytest.raises(QueueError, match="runs once"):
        await worker.run()


async def test_close_of_an_idle_worker_does_not_wait_for_its_block(
    make_worker: Callable[..., Worker],
) -> None:
    async def process(job: Job) -> None:
        return None

    worker = make_worker(process, drain_delay=60.0)
    async with worker:
        await asyncio.sleep(0.2)
        started = time.monotonic()
    assert time.monotonic() - started < 5.0


async def test_close_while_redis_is_unreachable_at_start(queue_name: str) -> None:
    async def process(job: Job) -> None:
        return None

    worker = Worker(queue_name, process, redis=f"redis://127.0.0.1:{free_port()}/0")
    runner = asyncio.create_task(worker.run(handle_signals=False))
    await asyncio.sleep(0.5)  # retrying the connection with backoff, logging each failure
    assert not runner.done() and not worker.running
    await asyncio.wait_for(worker.close(), timeout=10)
    assert runner.done() and not worker.running


async def test_force_interrupts_a_graceful_shutdown_in_progress(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    started = asyncio.Event()

    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    await queue.add("slow")
    worker = make_worker(slow, shutdown_timeout=60)
    async with worker:
        await started.wait()
        graceful = asyncio.create_task(worker.close())
        await asyncio.sleep(0.2)
        assert not graceful.done()  # waiting for the job, as it should
        await asyncio.wait_for(worker.close(force=True), timeout=5)
        await graceful
    assert (await queue.get_counts())["active"] == 1  # left to stalled recovery
