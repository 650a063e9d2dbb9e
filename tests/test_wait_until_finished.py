"""wait_until_finished: a job's return value, or the typed error that says why there is
none, waited for on the events stream (async, shared by every wait of a Queue, and the
blocking twin on SyncQueue)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from queue_core import (
    EventsDisabledError,
    InvalidOptionError,
    Job,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobSpec,
    Queue,
    QueueError,
    SyncQueue,
    Worker,
)
from queue_core.waiting import RECHECK, JobWatch, Outcome
from tests.conftest import wait_counts, wait_for
from tests.redis_server import RedisServer


async def blocked_readers(raw: redis.asyncio.Redis) -> int:
    """Connections blocked in XREAD (a waiting reader of the events stream)."""
    return sum(1 for client in await raw.client_list() if client["cmd"] == "xread")


async def test_returns_the_return_value(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    job = await queue.add("double", 21)
    other = await queue.add("double", 4)
    worker = make_worker(lambda j: {"doubled": j.data * 2})
    async with worker:
        assert await job.wait_until_finished(timeout=10) == {"doubled": 42}
        assert await queue.wait_until_finished(other.id, timeout=10) == {"doubled": 8}
        assert await worker.wait_until_finished(other.id, timeout=10) == {"doubled": 8}


async def test_several_waits_on_one_job_end_together(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("x", 1)
    waits = [asyncio.create_task(job.wait_until_finished(timeout=10)) for _ in range(3)]
    await asyncio.sleep(0.1)
    async with make_worker(lambda j: "done"):
        assert await asyncio.gather(*waits) == ["done"] * 3


async def test_a_job_that_fails_for_good_raises_its_reason_and_type(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("flaky", attempts=3)

    def fail(j: Job) -> None:
        raise ValueError(f"boom {j.attempt}")

    async with make_worker(fail):
        with pytest.raises(JobFailedError) as caught:
            await job.wait_until_finished(timeout=10)
    error = caught.value
    assert not isinstance(error, JobCancelledError)
    assert (error.job_id, error.reason, error.error_type) == (job.id, "boom 3", "ValueError")
    assert (await job.refresh()).attempts_made == 3  # it waited through the retries


async def test_a_cancelled_job_raises_job_cancelled_error(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    waiting = await queue.add("never-started")
    running = await queue.add("long")
    started = asyncio.Event()

    async def hang(j: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    wait_waiting = asyncio.create_task(waiting.wait_until_finished(timeout=10))
    wait_running = asyncio.create_task(running.wait_until_finished(timeout=10))
    await asyncio.sleep(0.1)
    try:
        await queue.cancel(waiting.id, "not needed any more")
    except AttributeError:  # pragma: no cover - queue.cancel comes with cancellation
        wait_waiting.cancel()
        wait_running.cancel()
        pytest.skip("queue.cancel is not there yet")
    with pytest.raises(JobCancelledError) as caught:
        await wait_waiting
    assert (caught.value.job_id, caught.value.reason) == (waiting.id, "not needed any more")

    async with make_worker(hang):
        await started.wait()
        await queue.cancel(running.id, "stop")
        with pytest.raises(JobCancelledError) as caught:
            await wait_running
    assert (caught.value.job_id, caught.value.reason) == (running.id, "stop")
    # Looked at afterwards, the failed job's error type says it was cancelled.
    with pytest.raises(JobCancelledError, match="stop"):
        await running.wait_until_finished(timeout=0)


async def test_a_timeout_raises_timeout_error_and_leaves_the_job(
    queue: Queue, raw: redis.asyncio.Redis
) -> None:
    job = await queue.add("x")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.3 s"):
        await job.wait_until_finished(timeout=0.3)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(TimeoutError):
        await job.wait_until_finished(timeout=0)
    assert (await job.refresh()).state == "waiting"


async def test_a_finished_job_answers_at_once(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    done = await queue.add("ok", 1)
    failed = await queue.add("bad", 2)

    def process(j: Job) -> int:
        if j.name == "bad":
            raise RuntimeError("no")
        return 10

    async with make_worker(process):
        await wait_counts(queue, completed=1, failed=1)
    assert await blocked_readers(raw) == 0
    # A timeout of 0: the first look at the job answers, without waiting for events.
    assert await done.wait_until_finished(timeout=0) == 10
    with pytest.raises(JobFailedError, match="RuntimeError: no"):
        await failed.wait_until_finished(timeout=0)
    assert await blocked_readers(raw) == 0  # no reader was started for them


async def test_an_unknown_or_removed_job_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFoundError):
        await queue.wait_until_finished("no-such-job", timeout=5)
    job = await queue.add("x")
    waiting = asyncio.create_task(job.wait_until_finished(timeout=10))
    await asyncio.sleep(0.1)
    try:
        await queue.remove_job(job.id)
    except AttributeError:  # pragma: no cover - remove_job comes with the job actions
        waiting.cancel()
        pytest.skip("queue.remove_job is not there yet")
    with pytest.raises(JobNotFoundError):
        await waiting


async def test_a_drain_ends_the_waits_of_the_jobs_it_removed(queue: Queue) -> None:
    """A drain's event names no job: the waits look at their jobs again."""
    job = await queue.add("x")
    waiting = asyncio.create_task(job.wait_until_finished(timeout=10))
    await asyncio.sleep(0.1)
    try:
        await queue.drain()
    except AttributeError:  # pragma: no cover - drain comes with the job actions
        waiting.cancel()
        pytest.skip("queue.drain is not there yet")
    with pytest.raises(JobNotFoundError):
        await waiting


async def test_events_off_is_a_typed_error(queue: Queue, queue_name: str, redis_url: str) -> None:
    job = await queue.add("x")
    await queue.set_events_max_length(0)
    with pytest.raises(EventsDisabledError, match="set_events_max_length"):
        await job.wait_until_finished(timeout=1)
    with (
        SyncQueue(queue_name, redis=redis_url) as sync_queue,
        pytest.raises(EventsDisabledError, match="set_events_max_length"),
    ):
        sync_queue.wait_until_finished(job.id, timeout=1)
    assert isinstance(EventsDisabledError("x"), QueueError)


async def test_a_large_result_is_read_from_the_results(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    """A result above 16 KiB is not copied into the stream: the wait reads it from the job,
    or says it was not kept when the job's retention removed it at once."""
    kept = await queue.add("big")
    gone = await queue.add("big", remove_on_complete=True)
    waits = [asyncio.create_task(job.wait_until_finished(timeout=10)) for job in (kept, gone)]
    await asyncio.sleep(0.1)
    async with make_worker(lambda j: "x" * 20_000):
        assert await waits[0] == "x" * 20_000
        with pytest.raises(QueueError, match="result was not kept"):
            await waits[1]


async def test_a_thousand_waits_share_one_connection(
    queue_name: str, redis_url: str, make_worker: Callable[..., Worker]
) -> None:
    admin = redis.Redis.from_url(redis_url)
    client = redis.asyncio.Redis.from_url(redis_url, client_name="waits-under-test")

    def connections() -> int:
        return sum(1 for c in admin.client_list() if c["name"] == "waits-under-test")

    try:
        async with Queue(queue_name, redis=client) as queue:
            jobs = await queue.add_bulk([JobSpec("n", i) for i in range(1000)])
            before = connections()
            waits = [
                asyncio.create_task(queue.wait_until_finished(job.id, timeout=60)) for job in jobs
            ]
            await wait_for(
                lambda: any(
                    c["cmd"] == "xread" and c["name"] == "waits-under-test"
                    for c in admin.client_list()
                ),
                what="the shared reader to block on the stream",
            )
            async with make_worker(lambda j: j.data * 2, concurrency=50):
                assert await asyncio.gather(*waits) == [i * 2 for i in range(1000)]
            assert before == 1
            assert connections() == before + 1  # the pool never held more at once
    finally:
        await client.aclose()
        admin.close()


async def test_waits_look_again_when_redis_lost_the_stream(queue_name: str) -> None:
    """Redis restarted without its data: the stream the waits read from is gone (a gap),
    so they look at their jobs again, which are gone too, instead of waiting forever."""
    server = RedisServer().start()  # no persistence
    try:
        async with Queue(queue_name, redis=server.url) as queue:
            job = await queue.add("x")
            waiting = asyncio.create_task(job.wait_until_finished(timeout=30))
            admin = server.client()
            await wait_for(
                lambda: any(c["cmd"] == "xread" for c in admin.client_list()),
                what="the reader to block on the stream",
            )
            admin.close()
            server.restart(graceful=False)
            with pytest.raises(JobNotFoundError):
                await waiting
    finally:
        server.cleanup()


async def test_closing_the_queue_ends_its_waits(queue_name: str, redis_url: str) -> None:
    queue = Queue(queue_name, redis=redis_url)
    job = await queue.add("x")
    waiting = asyncio.create_task(job.wait_until_finished())
    await asyncio.sleep(0.1)
    await queue.close()
    with pytest.raises(QueueError, match="closed"):
        await waiting


@pytest.mark.parametrize(("job_id", "timeout"), [(5, None), ("", None), ("x", -1), ("x", "1")])
async def test_bad_arguments_are_refused(queue: Queue, job_id: Any, timeout: Any) -> None:
    with pytest.raises(InvalidOptionError):
        await queue.wait_until_finished(job_id, timeout=timeout)


async def test_the_blocking_twin(
    queue_name: str, redis_url: str, make_worker: Callable[..., Worker]
) -> None:
    def process(j: Job) -> str:
        if j.name == "bad":
            raise ValueError("sync boom")
        return f"hello {j.data}"

    with SyncQueue(queue_name, redis=redis_url) as sync_queue:
        good = sync_queue.add("good", "world")
        bad = sync_queue.add("bad")
        stuck = sync_queue.add("good", "later", delay=60)
        async with make_worker(process):
            value = await asyncio.to_thread(sync_queue.wait_until_finished, good.id, 10)
            assert value == "hello world"
            with pytest.raises(JobFailedError) as caught:
                await asyncio.to_thread(sync_queue.wait_until_finished, bad.id, 10)
            assert (caught.value.reason, caught.value.error_type) == ("sync boom", "ValueError")
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(sync_queue.wait_until_finished, stuck.id, 0.5)
            assert time.monotonic() - started >= 0.5
        # Finished already: the first look answers, even with a timeout of 0.
        assert sync_queue.wait_until_finished(good.id, timeout=0) == "hello world"
        with pytest.raises(JobNotFoundError):
            sync_queue.wait_until_finished("no-such-job")


# ----- the decisions of one wait, without Redis


def test_a_watch_weighs_entries_that_came_before_its_status() -> None:
    watch = JobWatch("7")
    completed = Outcome("completed", b"1")
    assert watch.seen((5, 0), Outcome("failed", reason="old")) is None  # kept for later
    assert watch.seen((9, 0), completed) is None
    # The status was read at 6-0: the failure at 5-0 is in it, the completion is not.
    assert watch.checked("6-0", None) == completed


def test_a_watch_ignores_what_its_status_already_saw_and_rechecks_after_a_gap() -> None:
    watch = JobWatch("7")
    assert watch.checked("6-0", None) is None
    assert watch.seen((6, 0), Outcome("failed")) is None
    assert watch.seen((8, 0), RECHECK) is RECHECK
    assert watch.checked("9-0", Outcome("missing")) == Outcome("missing")
