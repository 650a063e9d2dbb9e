"""Locks and stalled-job recovery, in one process (tests/chaos kills real processes)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from queue_core import Hook, Job, JobState, ProcessEvent, Queue, StalledEvent, Worker
from tests.conftest import wait_counts, wait_for


class Watch(Hook):
    def __init__(self) -> None:
        self.outcomes: list[str | None] = []
        self.stalled: list[StalledEvent] = []

    @contextmanager
    def around_process(self, event: ProcessEvent) -> Iterator[None]:
        yield
        self.outcomes.append(event.outcome)

    def on_stalled(self, event: StalledEvent) -> None:
        self.stalled.append(event)


async def test_job_of_a_vanished_worker_is_recovered(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    watch_a, watch_b = Watch(), Watch()
    started = asyncio.Event()

    async def hang(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    async def finish(job: Job) -> str:
        return "recovered"

    job = await queue.add("work")
    a = make_worker(hang, lock_duration=0.5, hooks=[watch_a])
    async with a:
        await started.wait()
        await a.close(force=True)  # gone without settling: the job stays active
    assert watch_a.outcomes == ["interrupted"]
    assert (await queue.get_counts())["active"] == 1

    async with make_worker(finish, stalled_interval=0.1, hooks=[watch_b]):
        await wait_counts(queue, completed=1)
    done = await queue.get_job(job.id)
    assert done is not None
    assert done.return_value == "recovered"
    assert (done.stalled_count, done.attempts_started, done.attempts_made) == (1, 2, 1)
    assert [e.requeued for e in watch_b.stalled] == [(job.id,)]


async def test_job_that_stalls_too_often_fails(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    watch = Watch()
    started = asyncio.Event()

    async def hang(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    job = await queue.add("poison", attempts=5)
    a = make_worker(hang, lock_duration=0.3)
    async with a:
        await started.wait()
        await a.close(force=True)
    async with make_worker(hang, stalled_interval=0.1, max_stalled_count=0, hooks=[watch]):
        await wait_counts(queue, failed=1)
    failed = await queue.get_job(job.id)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.error_type == "StalledJobError"
    assert "stalled 1 times (max_stalled_count is 0)" in (failed.failed_reason or "")
    assert (failed.stalled_count, failed.attempts_made) == (1, 0)
    assert [tuple(j.id for j in e.failed) for e in watch.stalled] == [(job.id,)]


async def test_lock_renewal_keeps_a_long_job_alive(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    runs = 0

    async def long_job(job: Job) -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(1.5)  # almost four lock durations
        return "done"

    async def idle(job: Job) -> None:
        raise AssertionError("the checker must never get the job")

    job = await queue.add("long")
    async with make_worker(long_job, lock_duration=0.4) as worker:
        await wait_for(lambda: worker.active_jobs == 1)
        # A second worker checks for stalled jobs every 0.1 s the whole time.
        async with make_worker(idle, stalled_interval=0.1, queue_name=queue.name):
            await wait_counts(queue, completed=1, timeout=10)
    done = await queue.get_job(job.id)
    assert done is not None
    assert (runs, done.stalled_count, done.attempts_started) == (1, 0, 1)


async def test_worker_that_lost_its_lock_cannot_settle_the_job(
    queue: Queue, make_worker: Callable[..., Worker], redis_url: str
) -> None:
    watch = Watch()

    started = asyncio.Event()

    async def blocks_the_loop(job: Job) -> str:
        started.set()
        await asyncio.sleep(0.05)  # let the test start the rescuer
        time.sleep(1.5)  # noqa: ASYNC251 - blocks the event loop: no lock renewal can happen
        return "stale"

    job = await queue.add("contested")

    async def rescuer() -> None:
        async def finish(job: Job) -> str:
            return "rescued"

        worker = Worker(queue.name, finish, redis=redis_url, stalled_interval=0.1, drain_delay=0.5)
        async with worker:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                rescued = await worker.client.zscore(queue.keys["completed"], job.id)
                if rescued is not None:
                    break
                await asyncio.sleep(0.05)

    # The rescuer runs its own event loop in a thread, so the blocked loop cannot stop it.
    thread = threading.Thread(target=asyncio.run, args=(rescuer(),))
    async with make_worker(blocks_the_loop, lock_duration=0.3, hooks=[watch]):
        await started.wait()
        thread.start()
        await wait_for(lambda: watch.outcomes == ["lock_lost"], timeout=10)
    thread.join(timeout=15)
    done = await queue.get_job(job.id)
    assert done is not None
    assert done.state is JobState.COMPLETED
    assert done.return_value == "rescued"
    assert (done.attempts_made, done.stalled_count) == (1, 1)
