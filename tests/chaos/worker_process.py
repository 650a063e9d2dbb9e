"""A worker process for the chaos tests: ``python -m tests.chaos.worker_process ...``.

It builds a ``queue_core.Worker`` and runs ``asyncio.run(worker.run())``, so SIGTERM and
SIGINT reach the worker's own handlers (the first signal shuts down gracefully, the second
forces). It prints ``ready`` on stdout once the worker has started and ``stopped`` once it
has stopped; the worker's structlog lines go to stderr (JSON with
``QUEUE_CORE_LOG_FORMAT=json``).

What the process did is written into Redis, next to the queue, with a separate client:

- ``runs``: the processor started an attempt of a job;
- ``finished``: the processor returned (the attempt ran to its end);
- ``completed``: the ``on_completed`` hook fired (the worker settled the job as completed).

Each is a hash whose fields are ``<job id>|<random event id>`` and whose values are
``<worker tag>:<pid>``. One event is one field, so a write retried after a lost reply (a
Redis restart) is written once, where HINCRBY would count it twice.

A job's data may set ``sleep`` (seconds the processor sleeps) and ``later_sleep`` (the
sleep of attempts after the first, e.g. once stalled recovery gave the job to another
worker).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from queue_core import Hook, Job, JobEvent, Worker, WorkerEvent, configure_logging

RUNS: Final = "runs"
FINISHED: Final = "finished"
COMPLETED: Final = "completed"
TRACKING_KINDS: Final = (RUNS, FINISHED, COMPLETED)

_TRACK_DEADLINE_S: Final = 60.0
_TRACK_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)


def tracking_key(queue: str, kind: str) -> str:
    """The hash where worker processes record events of ``kind`` for ``queue``."""
    assert kind in TRACKING_KINDS, kind
    return f"chaos:{{{queue}}}:{kind}"


class Tracker(Hook):
    """Records runs and completions in Redis; prints ``ready`` and ``stopped``."""

    def __init__(self, client: redis.asyncio.Redis, queue: str, tag: str) -> None:
        self.client = client
        self.queue = queue
        self.who = f"{tag}:{os.getpid()}"

    async def record(self, kind: str, job_id: str) -> None:
        """Write one event, retrying while Redis is down (the field makes it idempotent)."""
        key = tracking_key(self.queue, kind)
        field = f"{job_id}|{uuid.uuid4().hex}"
        # Shielded: a cancel of the job (queue.cancel) that lands during the write reaches
        # the processor at once. redis-py can swallow a task's cancellation in the middle of
        # a command (measured with 8.1.0: about half the time), which left the job running.
        await _retry(lambda: asyncio.shield(self.client.hset(key, field, self.who)))

    def on_worker_started(self, event: WorkerEvent) -> None:
        print(f"ready pid={os.getpid()} worker_id={event.worker_id}", flush=True)

    def on_worker_stopped(self, event: WorkerEvent) -> None:
        print(f"stopped pid={os.getpid()}", flush=True)

    async def on_completed(self, event: JobEvent) -> None:
        await self.record(COMPLETED, event.job.id)


async def _retry(call: Callable[[], Awaitable[Any]]) -> Any:
    deadline = time.monotonic() + _TRACK_DEADLINE_S
    while True:
        try:
            return await call()
        except _TRACK_ERRORS:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def make_processor(
    tracker: Tracker, tag: str, default_sleep: float
) -> Callable[[Job], Awaitable[dict[str, Any]]]:
    async def process(job: Job) -> dict[str, Any]:
        await tracker.record(RUNS, job.id)
        data: dict[str, Any] = job.data if isinstance(job.data, dict) else {}
        sleep = float(data.get("sleep", default_sleep))
        if job.attempts_started > 1:
            sleep = float(data.get("later_sleep", sleep))
        await asyncio.sleep(sleep)
        await tracker.record(FINISHED, job.id)
        return {"worker": tag, "pid": os.getpid(), "attempt": job.attempts_started}

    return process


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--tag", required=True, help="a label for this worker, e.g. A or B")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0, help="default processor sleep (s)")
    parser.add_argument("--lock-duration", type=float, default=1.0)
    parser.add_argument("--stalled-interval", type=float, default=0.3)
    parser.add_argument("--max-stalled-count", type=int, default=1)
    parser.add_argument("--drain-delay", type=float, default=1.0)
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    # The tracking client never retries by itself: _retry does, with idempotent writes.
    client = redis.asyncio.Redis.from_url(
        args.redis_url, retry=Retry(NoBackoff(), 0), socket_timeout=10.0
    )
    tracker = Tracker(client, args.queue, args.tag)
    worker = Worker(
        args.queue,
        make_processor(tracker, args.tag, args.sleep),
        redis=args.redis_url,
        concurrency=args.concurrency,
        lock_duration=args.lock_duration,
        stalled_interval=args.stalled_interval,
        max_stalled_count=args.max_stalled_count,
        drain_delay=args.drain_delay,
        shutdown_timeout=args.shutdown_timeout,
        hooks=[tracker],
        worker_id=f"{args.tag}:{os.getpid()}",
    )
    try:
        await worker.run()
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> None:
    configure_logging()
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
