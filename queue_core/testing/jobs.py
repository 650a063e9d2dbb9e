"""Run a queue's jobs to completion in-process (``queue_core.testing.run_jobs``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from queue_core.errors import JobNotFoundError, JobStateError, QueueError
from queue_core.hooks import Hook, JobEvent
from queue_core.job import Job, JobState
from queue_core.options import to_seconds
from queue_core.queue import Queue
from queue_core.worker import Processor, Worker

__all__ = ["JobsFailedError", "JobsNotFinishedError", "run_jobs"]


class JobsFailedError(QueueError):
    """``run_jobs(..., raise_on_failure=True)`` finished jobs, and some failed for good.

    ``failed``: those jobs (with ``failed_reason``, ``error_type`` and ``stacktrace``);
    ``jobs``: every job the run finished. The first failure's exception is the cause."""

    def __init__(self, queue: str, jobs: Sequence[Job], failed: Sequence[Job]) -> None:
        self.jobs = list(jobs)
        self.failed = list(failed)
        lines = [f"{len(self.failed)} of {len(self.jobs)} jobs of queue {queue!r} failed:"]
        for job in self.failed:
            lines.append(f"- {job.name} {job.id}: {job.error_type}: {job.failed_reason}")
            if job.stacktrace:
                lines += ["  " + line for line in job.stacktrace.rstrip().splitlines()]
        super().__init__("\n".join(lines))


class JobsNotFinishedError(QueueError, TimeoutError):
    """``run_jobs`` ran out of time with jobs left to run.

    ``counts``: the queue's pending jobs when it gave up (``waiting``, ``active``,
    ``delayed`` due within the timeout); ``finished``: the jobs it did finish."""

    def __init__(
        self, queue: str, timeout: float, counts: Mapping[str, int], finished: Sequence[Job]
    ) -> None:
        self.counts = dict(counts)
        self.finished = list(finished)
        left = ", ".join(f"{state} {n}" for state, n in self.counts.items() if n) or "none"
        super().__init__(
            f"the jobs of queue {queue!r} did not finish within {timeout:g} s; "
            f"left: {left}; finished: {len(self.finished)}"
        )


# Everything this queue still has to run, read at one instant: waiting, active, delayed
# due before now + ARGV[1] ms (by Redis's clock, the one due times are written with),
# paused (1/0), and undelivered outbox messages (a flow's parent
# being told of its child, which can make a job of this queue ready).
_PENDING: Final = """
local now = redis.call('TIME')
local horizon = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
return {
  redis.call('ZCARD', KEYS[1]),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCOUNT', KEYS[3], '-inf', horizon),
  redis.call('HEXISTS', KEYS[4], 'paused'),
  redis.call('ZCARD', KEYS[5]),
}
"""
_POLL_S: Final = 0.02


@dataclass(frozen=True, slots=True)
class _Pending:
    waiting: int
    active: int
    delayed_due: int
    paused: bool
    outbox: int

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> _Pending:
        waiting, active, delayed_due, paused, outbox = (int(n) for n in reply)
        return cls(waiting, active, delayed_due, bool(paused), outbox)

    def idle(self) -> bool:
        """Nothing this run may still take (a paused queue gives nothing)."""
        ready = 0 if self.paused else self.waiting
        return ready == 0 and self.active == 0 and self.delayed_due == 0 and self.outbox == 0

    def counts(self) -> dict[str, int]:
        return {"waiting": self.waiting, "active": self.active, "delayed": self.delayed_due}


class _Finished(Hook):
    """Records the jobs a worker finished (completed, failed for good, cancelled), in
    the order they finished, with the error of each failure."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.errors: dict[str, BaseException] = {}

    def _record(self, event: JobEvent) -> None:
        self.jobs.pop(event.job.id, None)  # keep the finishing order
        self.jobs[event.job.id] = event.job
        if event.error is not None:
            self.errors.setdefault(event.job.id, event.error)

    def on_completed(self, event: JobEvent) -> None:
        self._record(event)

    def on_failed(self, event: JobEvent) -> None:
        self._record(event)

    def on_cancelled(self, event: JobEvent) -> None:
        self._record(event)


async def run_jobs(
    queue: Queue,
    processor: Processor | Mapping[str, Processor],
    *,
    timeout: float | timedelta = 10.0,  # noqa: ASYNC109 - the whole run's bound
    run_delayed: bool = False,
    raise_on_failure: bool = False,
    **worker_options: Any,
) -> list[Job]:
    """Run ``queue``'s jobs with ``processor`` (one function, or ``{job name: function}``)
    in this event loop until none is left to run; return the jobs it finished (completed,
    failed for good, cancelled), in the order they finished, as stored at the end.

    A ``Worker`` on the queue's connection runs them (``concurrency`` 1 unless given;
    ``worker_options`` go to the ``Worker``). It stops once nothing is waiting or active
    and no delayed job (a retry's backoff, a ``delay``) is due within ``timeout``: a
    retry due in a second is waited for, a job delayed by a day is left delayed. With
    ``run_delayed=True`` every delayed job is promoted as soon as it appears, so retries
    and delays run at once. Jobs that processors add to this queue are run too. A paused
    queue runs nothing.

    Raises ``JobsNotFinishedError`` (a ``TimeoutError``) when jobs are left after
    ``timeout`` seconds (the worker is then stopped at once), and with
    ``raise_on_failure=True``, ``JobsFailedError`` when a job failed for good.
    """
    seconds = to_seconds(timeout, "timeout", allow_zero=False)
    worker_options.setdefault("drain_delay", 0.5)
    worker_options.setdefault("shutdown_timeout", 5.0)
    worker = Worker(
        queue.name,
        processor,
        redis=queue.client,
        prefix=queue.keys.prefix,
        serializer=queue.serializer,
        **worker_options,
    )
    finished = _Finished()
    worker.hooks.add(finished)
    keys = [queue.keys[name] for name in ("wait", "active", "delayed", "meta", "outboxat")]
    pending_script = queue.client.register_script(_PENDING)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        async with worker:
            idle_checks = 0
            while True:
                if run_delayed:
                    await _promote_delayed(queue)
                left_ms = max(0, int((deadline - loop.time()) * 1000))
                pending = _Pending.parse(await pending_script(keys, [left_ms]))
                # Twice in a row: a settled job's follow-up (its hooks, a flow's outbox
                # delivery) runs just after the script that settled it.
                idle = pending.idle() and worker.active_jobs == 0
                idle_checks = idle_checks + 1 if idle else 0
                if idle_checks >= 2:
                    break
                if loop.time() >= deadline:
                    await worker.close(force=True)
                    raise JobsNotFinishedError(
                        queue.name, seconds, pending.counts(), list(finished.jobs.values())
                    )
                await asyncio.sleep(_POLL_S)
    finally:
        worker.hooks.remove(finished)
    jobs = [await _stored(queue, job) for job in finished.jobs.values()]
    failed = [job for job in jobs if job.state is JobState.FAILED]
    if raise_on_failure and failed:
        raise JobsFailedError(queue.name, jobs, failed) from finished.errors.get(failed[0].id)
    return jobs


async def _promote_delayed(queue: Queue) -> None:
    for job in await queue.get_jobs(JobState.DELAYED):
        # It may have become ready, or been removed, meanwhile.
        with contextlib.suppress(JobStateError, JobNotFoundError):
            await queue.promote_job(job.id)


async def _stored(queue: Queue, job: Job) -> Job:
    """The job as stored now; as the worker last saw it if it is gone (retention)."""
    return await queue.get_job(job.id) or job
