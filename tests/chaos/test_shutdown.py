"""SIGTERM on a worker process: a graceful shutdown finishes the running job and starts
no other; a shutdown_timeout shorter than the job leaves it to stalled recovery."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from queue_core import JobState, SyncQueue
from tests.chaos.support import (
    WorkerProcess,
    count_by_job,
    event_time,
    plain_client,
    wait_for_hooks,
    wait_until,
)
from tests.chaos.worker_process import COMPLETED, FINISHED, RUNS
from tests.redis_server import RedisServer

TIMINGS = {"lock_duration": 1.0, "stalled_interval": 0.3, "drain_delay": 1.0}


@pytest.mark.chaos
def test_sigterm_finishes_the_running_job_and_starts_no_other(
    chaos_redis: RedisServer,
    chaos_queue: str,
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    with plain_client(chaos_redis.url) as client:
        queue = SyncQueue(chaos_queue, redis=client)
        first = queue.add("long", {"sleep": 1.5})
        rest = [queue.add("short", {"sleep": 0.05}).id for _ in range(4)]
        worker = spawn_worker(
            chaos_redis.url, chaos_queue, "A", concurrency=1, shutdown_timeout=10.0, **TIMINGS
        )
        worker.wait_ready()
        wait_until(
            lambda: count_by_job(client, chaos_queue, RUNS)[first.id] == 1,
            timeout=10,
            what="the long job to start",
            context=worker.describe,
        )
        signalled = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0, worker.describe()
        exit_s = time.monotonic() - signalled

        assert exit_s < 8.0, exit_s
        job = queue.get_job(first.id)
        assert job is not None
        # The worker waited for the job rather than abandoning it: the job finished (Redis
        # clock) after the signal arrived and before the worker stopped.
        assert job.finished_at is not None
        (signalled_at,) = [event_time(e) for e in worker.events("worker_signal")]
        (stopped_at,) = [event_time(e) for e in worker.events("worker_stopped")]
        assert signalled_at < job.finished_at <= stopped_at
        assert job.state is JobState.COMPLETED
        assert (job.attempts_started, job.attempts_made, job.stalled_count) == (1, 1, 0)
        assert job.return_value["pid"] == worker.pid
        runs = count_by_job(client, chaos_queue, RUNS)
        assert runs == {first.id: 1}, f"jobs started after SIGTERM: {runs}"
        assert count_by_job(client, chaos_queue, FINISHED) == {first.id: 1}
        assert count_by_job(client, chaos_queue, COMPLETED) == {first.id: 1}
        # The other jobs were neither started nor lost: they wait, untouched, in order.
        assert queue.get_counts() == {
            "waiting": 4,
            "active": 0,
            "delayed": 0,
            "completed": 1,
            "failed": 0,
            "waiting_children": 0,
        }
        waiting = queue.get_jobs(JobState.WAITING)
        assert [j.id for j in waiting] == rest
        assert all(j.attempts_started == 0 for j in waiting)
        names = [event["event"] for event in worker.log_events()]
        assert "worker_stopped" in names
        assert "worker_shutdown_timeout" not in names
        assert "stopped" in worker.stdout()

        # Another worker runs them.
        successor = spawn_worker(chaos_redis.url, chaos_queue, "B", concurrency=1, **TIMINGS)
        successor.wait_ready()
        wait_until(
            lambda: queue.get_counts()["completed"] == 5,
            timeout=10,
            what="worker B to run the waiting jobs",
            context=successor.describe,
        )
        assert count_by_job(client, chaos_queue, RUNS, "B") == dict.fromkeys(rest, 1)
        successor.signal(signal.SIGTERM)
        assert successor.wait(timeout=15) == 0, successor.describe()


@pytest.mark.chaos
def test_shutdown_timeout_leaves_the_job_to_stalled_recovery(
    chaos_redis: RedisServer,
    chaos_queue: str,
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    with plain_client(chaos_redis.url) as client:
        queue = SyncQueue(chaos_queue, redis=client)
        # 5 s on the first attempt; the retry after stalled recovery is quick.
        job_id = queue.add("long", {"sleep": 5.0, "later_sleep": 0.05}).id
        worker_a = spawn_worker(
            chaos_redis.url, chaos_queue, "A", concurrency=1, shutdown_timeout=0.5, **TIMINGS
        )
        worker_a.wait_ready()
        wait_until(
            lambda: count_by_job(client, chaos_queue, RUNS)[job_id] == 1,
            timeout=10,
            what="the long job to start",
            context=worker_a.describe,
        )
        signalled = time.monotonic()
        worker_a.signal(signal.SIGTERM)
        assert worker_a.wait(timeout=10) == 0, worker_a.describe()
        exit_s = time.monotonic() - signalled
        assert exit_s < 5.0, f"the worker took {exit_s:.2f}s to exit (shutdown_timeout 0.5 s)"
        # It gave up on the job after shutdown_timeout, not after the job's 5 s.
        (signalled_at,) = [event_time(e) for e in worker_a.events("worker_signal")]
        (gave_up_at,) = [event_time(e) for e in worker_a.events("worker_shutdown_timeout")]
        (stopped_at,) = [event_time(e) for e in worker_a.events("worker_stopped")]
        assert 0.45 <= (gave_up_at - signalled_at).total_seconds() < 2.0
        assert (stopped_at - signalled_at).total_seconds() < 2.5

        # A gave up on the job: it is still active under A's lock, not finished.
        job = queue.get_job(job_id)
        assert job is not None
        assert job.state is JobState.ACTIVE
        assert (job.attempts_started, job.attempts_made, job.stalled_count) == (1, 0, 0)
        assert count_by_job(client, chaos_queue, FINISHED) == {}
        assert count_by_job(client, chaos_queue, COMPLETED) == {}
        timeouts = worker_a.events("worker_shutdown_timeout")
        assert [event["left_to_stalled_recovery"] for event in timeouts] == [[job_id]]

        worker_b = spawn_worker(chaos_redis.url, chaos_queue, "B", concurrency=1, **TIMINGS)
        worker_b.wait_ready()
        wait_until(
            lambda: queue.get_counts()["completed"] == 1,
            timeout=15,
            what="worker B to recover and complete the job",
            context=lambda: f"counts {queue.get_counts()}\n{worker_b.describe()}",
        )
        wait_for_hooks(client, chaos_queue, [job_id])
        job = queue.get_job(job_id)
        assert job is not None
        assert job.state is JobState.COMPLETED
        assert (job.attempts_started, job.attempts_made, job.stalled_count) == (2, 1, 1)
        assert job.return_value == {"worker": "B", "pid": worker_b.pid, "attempt": 2}
        assert count_by_job(client, chaos_queue, RUNS, "A") == {job_id: 1}
        assert count_by_job(client, chaos_queue, RUNS, "B") == {job_id: 1}
        assert count_by_job(client, chaos_queue, COMPLETED) == {job_id: 1}
        assert queue.get_counts() == {
            "waiting": 0,
            "active": 0,
            "delayed": 0,
            "completed": 1,
            "failed": 0,
            "waiting_children": 0,
        }
        requeued = [e["requeued"] for e in worker_b.events("stalled_jobs_recovered")]
        assert requeued == [[job_id]]
        worker_b.signal(signal.SIGTERM)
        assert worker_b.wait(timeout=15) == 0, worker_b.describe()
