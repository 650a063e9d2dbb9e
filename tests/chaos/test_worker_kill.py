"""SIGKILL a worker in the middle of a batch: another worker finishes the batch, the jobs
the dead worker held come back through stalled recovery, and nothing completes twice."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from queue_core import JobOptions, JobSpec, JobState, SyncQueue
from tests.chaos.support import (
    WorkerProcess,
    count_by_job,
    plain_client,
    wait_for_hooks,
    wait_until,
    wait_until_disconnected,
)
from tests.chaos.worker_process import COMPLETED, RUNS
from tests.redis_server import RedisServer

N_JOBS = 1200
CONCURRENCY = 20
JOB_SLEEP = 0.01
KILL_AFTER = 300  # completed jobs before worker A is killed
TIMINGS = {"lock_duration": 1.0, "stalled_interval": 0.3, "drain_delay": 1.0}


@pytest.mark.chaos
def test_sigkill_mid_batch_loses_nothing_and_repeats_only_the_active_jobs(
    chaos_redis: RedisServer,
    chaos_queue: str,
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    with plain_client(chaos_redis.url) as client:
        queue = SyncQueue(
            chaos_queue,
            redis=client,
            # Keep every completed job (the default keeps the newest 1000).
            default_job_options=JobOptions(remove_on_complete=False),
        )
        ids = [job.id for job in queue.add_bulk(JobSpec("work", {"i": i}) for i in range(N_JOBS))]
        assert len(set(ids)) == N_JOBS

        worker_a = spawn_worker(
            chaos_redis.url,
            chaos_queue,
            "A",
            concurrency=CONCURRENCY,
            sleep=JOB_SLEEP,
            **TIMINGS,
        )
        worker_a.wait_ready()

        def frozen_mid_job() -> bool:
            """Freeze A (SIGSTOP) and keep it frozen if one of its active jobs is running
            (its processor started, its settle not sent); else let it go on. A kill that
            happens to land between a fetch and the processor's start proves less, and
            under load that can be every moment the test looks."""
            worker_a.signal(signal.SIGSTOP)
            time.sleep(0.05)  # what A sent before it froze reaches Redis
            active = {job.id for job in queue.get_jobs(JobState.ACTIVE)}
            runs = count_by_job(client, chaos_queue, RUNS, "A")
            if any(runs[job_id] == 1 for job_id in active):
                return True
            worker_a.signal(signal.SIGCONT)
            return False

        wait_until(
            lambda: queue.get_counts()["completed"] >= KILL_AFTER and frozen_mid_job(),
            timeout=30,
            interval=0.005,
            what=f"worker A to complete {KILL_AFTER} jobs and be frozen in the middle of one",
            context=worker_a.describe,
        )
        worker_a.kill()
        # The kill is only over once Redis has dropped A's connections: until then it may
        # still run a command A sent before it died.
        wait_until_disconnected(client)

        active_at_kill = {job.id for job in queue.get_jobs(JobState.ACTIVE)}
        waiting_at_kill = {job.id for job in queue.get_jobs(JobState.WAITING)}
        completed_at_kill = {job.id for job in queue.get_jobs(JobState.COMPLETED)}
        runs_a = count_by_job(client, chaos_queue, RUNS, "A")
        assert active_at_kill, "no job was active when worker A was killed"
        assert len(active_at_kill) <= CONCURRENCY
        assert any(runs_a[job_id] == 1 for job_id in active_at_kill), (
            "worker A was not in the middle of any job when it was killed"
        )
        assert waiting_at_kill, "worker A finished the batch before it was killed"
        assert KILL_AFTER <= len(completed_at_kill) < N_JOBS
        assert active_at_kill | waiting_at_kill | completed_at_kill == set(ids)
        assert len(active_at_kill) + len(waiting_at_kill) + len(completed_at_kill) == N_JOBS
        for job in queue.get_jobs(JobState.ACTIVE):
            assert (job.attempts_started, job.stalled_count, job.attempts_made) == (1, 0, 0)

        started = time.monotonic()
        worker_b = spawn_worker(
            chaos_redis.url,
            chaos_queue,
            "B",
            concurrency=CONCURRENCY,
            sleep=JOB_SLEEP,
            **TIMINGS,
        )
        worker_b.wait_ready()
        wait_until(
            lambda: queue.get_counts()["completed"] == N_JOBS,
            timeout=45,
            interval=0.05,
            what="worker B to complete the batch",
            context=lambda: f"counts {queue.get_counts()}\n{worker_b.describe()}",
        )
        recovery_s = time.monotonic() - started
        wait_for_hooks(client, chaos_queue, active_at_kill | waiting_at_kill)

        assert queue.get_counts() == {
            "waiting": 0,
            "active": 0,
            "delayed": 0,
            "completed": N_JOBS,
            "failed": 0,
            "waiting_children": 0,
        }
        jobs = {job.id: job for job in queue.get_jobs(JobState.COMPLETED)}
        assert set(jobs) == set(ids)
        completed_hook = count_by_job(client, chaos_queue, COMPLETED)
        runs_a = count_by_job(client, chaos_queue, RUNS, "A")
        runs_b = count_by_job(client, chaos_queue, RUNS, "B")
        by_b = {job_id for job_id, job in jobs.items() if job.return_value["worker"] == "B"}
        by_a = {job_id for job_id, job in jobs.items() if job.return_value["worker"] == "A"}

        # A's results are the ones settled before the kill; B ran everything else, once.
        assert by_a == completed_at_kill
        assert by_b == active_at_kill | waiting_at_kill
        for job_id, job in jobs.items():
            assert job.state is JobState.COMPLETED
            assert job.attempts_made == 1, job
            assert completed_hook[job_id] <= 1, f"job {job_id} completed twice"
            assert runs_a[job_id] <= 1 and runs_b[job_id] <= 1
            if job_id in by_b:
                assert completed_hook[job_id] == 1, f"B's on_completed missed job {job_id}"
                assert runs_b[job_id] == 1
            else:
                assert runs_a[job_id] == 1 and runs_b[job_id] == 0
            if job_id in active_at_kill:
                assert (job.stalled_count, job.attempts_started) == (1, 2), job_id
            else:
                assert (job.stalled_count, job.attempts_started) == (0, 1), job_id
        for job_id in waiting_at_kill:
            assert runs_a[job_id] == 0
        # A may have died between settling a job and its on_completed hook, for at most
        # one job per slot; every other job of A has its hook call.
        missed_by_a = [job_id for job_id in by_a if completed_hook[job_id] == 0]
        assert len(missed_by_a) <= CONCURRENCY

        # B's stalled recovery put back exactly the jobs A held.
        requeued = {
            job_id
            for event in worker_b.events("stalled_jobs_recovered")
            for job_id in event["requeued"]
        }
        assert requeued == active_at_kill

        worker_b.signal(signal.SIGTERM)
        assert worker_b.wait(timeout=15) == 0, worker_b.describe()
        print(
            f"killed A with {len(active_at_kill)} active, {len(waiting_at_kill)} waiting, "
            f"{len(completed_at_kill)} completed ({len(missed_by_a)} without hook); "
            f"B finished in {recovery_s:.2f}s"
        )
        # No attempt of B lost its lock: B's jobs were all fetched after A died, B never
        # stalled, so a lock-loss report would be false (it claims the attempt's outcome
        # is discarded).
        lock_lost = worker_b.events("job_lock_lost")
        assert not lock_lost, [event["job_id"] for event in lock_lost]
