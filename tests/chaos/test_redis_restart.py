"""Redis restarts under a running worker process (AOF on): the worker reconnects by
itself, and jobs enqueued or running across the restart complete, none lost."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from queue_core import JobSpec, JobState, SyncQueue
from tests.chaos.support import (
    WorkerProcess,
    count_by_job,
    plain_client,
    wait_for_hooks,
    wait_until,
)
from tests.chaos.worker_process import COMPLETED, RUNS
from tests.redis_server import RedisServer

TIMINGS = {"stalled_interval": 0.3, "drain_delay": 1.0}
NOTHING_LEFT = {"waiting": 0, "active": 0, "delayed": 0, "failed": 0, "waiting_children": 0}


def assert_reconnected(worker: WorkerProcess) -> None:
    """The worker logged that Redis was unavailable, and that it is back since."""
    unavailable = worker.events("redis_unavailable")
    assert unavailable, f"the worker never reported Redis down\n{worker.describe()}"
    assert all(event["level"] == "warning" for event in unavailable)

    def back() -> bool:
        # A pooled connection that predates the restart can still fail once, later on:
        # what matters is that every "unavailable" is followed by a "reconnected".
        names = [event["event"] for event in worker.log_events()]
        last_down = max(i for i, name in enumerate(names) if name == "redis_unavailable")
        return "redis_reconnected" in names[last_down:]

    wait_until(
        back, timeout=10, what="redis_reconnected in the worker's log", context=worker.describe
    )


@pytest.mark.chaos
def test_idle_worker_survives_a_redis_restart(
    make_redis: Callable[..., RedisServer],
    chaos_queue: str,
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    server = make_redis(appendonly=True, appendfsync="everysec")
    with plain_client(server.url) as client:
        queue = SyncQueue(chaos_queue, redis=client)
        worker = spawn_worker(server.url, chaos_queue, "A", concurrency=4, **TIMINGS)
        worker.wait_ready()
        before = queue.add("before", {"sleep": 0.01})
        wait_until(
            lambda: queue.get_counts()["completed"] == 1,
            timeout=10,
            what="the job enqueued before the restart",
            context=worker.describe,
        )

        # The worker is idle, blocked on the queue's marker.
        server.restart(graceful=True)
        wait_until(
            lambda: worker.events("redis_unavailable"),
            timeout=10,
            what="the worker to notice the restart",
            context=worker.describe,
        )
        assert worker.alive(), worker.describe()
        # The data written before the restart survived it (AOF).
        survivor = queue.get_job(before.id)
        assert survivor is not None and survivor.state is JobState.COMPLETED

        ids = [
            job.id for job in queue.add_bulk(JobSpec("after", {"sleep": 0.01}) for _ in range(20))
        ]
        wait_until(
            lambda: queue.get_counts()["completed"] == 21,
            timeout=20,
            what="the worker to complete the jobs enqueued after the restart",
            context=lambda: f"counts {queue.get_counts()}\n{worker.describe()}",
        )
        wait_for_hooks(client, chaos_queue, [before.id, *ids])
        assert queue.get_counts() == {**NOTHING_LEFT, "completed": 21}
        assert worker.alive(), worker.describe()
        for job_id in ids:
            job = queue.get_job(job_id)
            assert job is not None
            assert job.state is JobState.COMPLETED
            assert job.return_value["pid"] == worker.pid  # the very same process
            assert (job.attempts_started, job.attempts_made, job.stalled_count) == (1, 1, 0)
        completed = count_by_job(client, chaos_queue, COMPLETED, "A")
        assert all(completed[job_id] == 1 for job_id in [before.id, *ids])
        assert_reconnected(worker)

        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0, worker.describe()


@pytest.mark.chaos
@pytest.mark.parametrize(
    ("graceful", "appendfsync"),
    [
        pytest.param(True, "everysec", id="graceful-stop"),
        pytest.param(False, "always", id="sigkill"),
    ],
)
def test_jobs_in_flight_survive_a_redis_restart(
    make_redis: Callable[..., RedisServer],
    chaos_queue: str,
    spawn_worker: Callable[..., WorkerProcess],
    graceful: bool,
    appendfsync: str,
) -> None:
    n_jobs, concurrency = 40, 5
    server = make_redis(appendonly=True, appendfsync=appendfsync)
    with plain_client(server.url) as client:
        queue = SyncQueue(chaos_queue, redis=client)
        ids = [job.id for job in queue.add_bulk(JobSpec("slow", {"i": i}) for i in range(n_jobs))]
        # The lock outlives the outage (about a second), so no job has to stall: every job
        # must run exactly once. A job fetched by a call whose reply the outage swallowed
        # is still recovered, after lock_duration.
        worker = spawn_worker(
            server.url,
            chaos_queue,
            "A",
            concurrency=concurrency,
            sleep=0.2,
            lock_duration=8.0,
            **TIMINGS,
        )
        worker.wait_ready()
        wait_until(
            lambda: queue.get_counts()["completed"] >= 10,
            timeout=20,
            what="the first jobs to complete",
            context=worker.describe,
        )

        def running() -> set[str]:
            """Jobs whose processor started and that have not completed yet."""
            started = count_by_job(client, chaos_queue, RUNS).keys()
            return started - count_by_job(client, chaos_queue, COMPLETED).keys()

        in_flight = wait_until(running, timeout=10, what="a job in flight", context=worker.describe)
        counts = queue.get_counts()
        assert counts["active"] >= 1 and counts["waiting"] >= 1, counts

        started = time.monotonic()
        server.restart(graceful=graceful, downtime=0.5)
        wait_until(
            lambda: queue.get_counts()["completed"] == n_jobs,
            timeout=40,
            interval=0.05,
            what="every job to complete after the restart",
            context=lambda: f"counts {queue.get_counts()}\n{worker.describe()}",
        )
        elapsed = time.monotonic() - started
        wait_for_hooks(client, chaos_queue, ids)

        assert worker.alive(), worker.describe()
        assert queue.get_counts() == {**NOTHING_LEFT, "completed": n_jobs}
        runs = count_by_job(client, chaos_queue, RUNS)
        completed = count_by_job(client, chaos_queue, COMPLETED)
        jobs = {job.id: job for job in queue.get_jobs(JobState.COMPLETED)}
        assert set(jobs) == set(ids)
        for job_id, job in jobs.items():
            assert job.attempts_made == 1, job
            assert job.return_value["pid"] == worker.pid, job
            assert runs[job_id] == 1, f"job {job_id} ran {runs[job_id]} times"
            assert completed[job_id] == 1, f"on_completed ran {completed[job_id]}x for {job_id}"
        assert_reconnected(worker)
        settle_errors = [
            e for e in worker.events("redis_unavailable") if e["operation"] == "settle"
        ]
        assert settle_errors, "no settle call met the outage: nothing was in flight"
        stalled = sorted(job_id for job_id, job in jobs.items() if job.stalled_count)

        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0, worker.describe()
        print(
            f"restart ({'graceful' if graceful else 'SIGKILL'}) with {len(in_flight)} in flight: "
            f"all {n_jobs} done {elapsed:.2f}s later; recovered as stalled: {stalled}"
        )
