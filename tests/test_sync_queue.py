"""SyncQueue: the blocking producer runs the same scripts and validation as Queue."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from queue_core import (
    EnqueueEvent,
    Hook,
    InvalidOptionError,
    Job,
    JobOptions,
    JobSpec,
    JobState,
    PayloadTooLargeError,
    Queue,
    QueueError,
    RedisUnavailableError,
    SerializationError,
    SyncQueue,
    Worker,
)
from tests.conftest import wait_counts
from tests.redis_server import free_port


async def test_jobs_from_sync_code_run_on_an_async_worker(
    queue: Queue, redis_url: str, make_worker: Callable[..., Worker]
) -> None:
    with SyncQueue(queue.name, redis=redis_url) as producer:
        job = producer.add("welcome", {"to": "ada"}, attempts=2, priority=3)
        assert (job.id, job.state, job.options.priority) == ("1", JobState.WAITING, 3)
        bulk = producer.add_bulk([JobSpec("welcome", {"to": n}) for n in ("bob", "cy")])
        assert [j.id for j in bulk] == ["2", "3"]

        async def process(job: Job) -> str:
            return job.data["to"]

        async with make_worker(process):
            await wait_counts(queue, completed=3)
        done = producer.get_job(job.id)
        assert done is not None
        assert (done.state, done.return_value, done.attempts_made) == (
            JobState.COMPLETED, "ada", 1
        )  # fmt: skip
        assert producer.get_counts()["completed"] == 3
        assert {j.return_value for j in producer.get_jobs("completed")} == {"ada", "bob", "cy"}


def test_sync_producer_validates_like_the_async_one(redis_url: str, queue_name: str) -> None:
    with SyncQueue(queue_name, redis=redis_url, max_payload_bytes=200) as q:
        with pytest.raises(InvalidOptionError, match="attempts"):
            q.add("x", attempts=0)
        with pytest.raises(SerializationError):
            q.add("x", {1})
        with pytest.raises(PayloadTooLargeError):
            q.add("x", "y" * 500)
        with pytest.raises(SerializationError):
            q.add_bulk([JobSpec("x", 1), JobSpec("x", object())])
        assert q.get_counts()["waiting"] == 0
        first = q.add("x", 1, job_id="idem-1")
        again = q.add("x", 2, job_id="idem-1")
        assert (again.id, again.data) == (first.id, 1)
        assert q.get_job("missing") is None


def test_sync_producer_raises_a_typed_error_when_redis_is_down(queue_name: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with SyncQueue(queue_name, redis=url) as q, pytest.raises(RedisUnavailableError):
        q.add("x", 1)


async def test_sync_jobs_are_detached_snapshots(redis_url: str, queue_name: str) -> None:
    with SyncQueue(queue_name, redis=redis_url) as q:
        job = q.add("x")
    with pytest.raises(QueueError, match="detached snapshot"):
        await job.update_progress(5)


def test_sync_enqueue_hooks_and_threads(redis_url: str, queue_name: str) -> None:
    class Stamp(Hook):
        @contextmanager
        def around_enqueue(self, event: EnqueueEvent) -> Iterator[None]:
            for job in event.jobs:
                job.headers["request-id"] = threading.current_thread().name
            yield

    with SyncQueue(queue_name, redis=redis_url, hooks=[Stamp()]) as q:
        # A web server calls the producer from many threads at once.
        threads = [
            threading.Thread(target=q.add, args=("x", i), name=f"request-{i}") for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        jobs = q.get_jobs("waiting")
        assert len(jobs) == 8
        assert {j.headers["request-id"] for j in jobs} == {f"request-{i}" for i in range(8)}
        assert q.add("x", 1, job_id="defaults").options == JobOptions(job_id="defaults")
