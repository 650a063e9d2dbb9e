"""A worker process of the example application.

    python -m examples.app.worker [--queues emails,webhooks] [--concurrency N]
                                  [--shutdown-timeout SECONDS]

Runs one ``Worker`` per queue named (default: all five) in one process, each with the
settings that suit its work (``QUEUE_PLANS``): many concurrent emails and webhooks, two
images at a time under a rate limit shared by every image worker, one report at a time.
``--concurrency`` overrides the concurrency of every queue of this process. A process
that works on ``reports`` first upserts the app's job schedulers (the weekly report and
the cleanup, ``examples.app.schedules``).

SIGTERM or SIGINT stops gracefully: no new job is fetched and running jobs get
``--shutdown-timeout`` seconds to finish (what is still running then is recovered by
another worker as stalled); a second signal stops at once. Telemetry is flushed last.
Settings come from the environment (``examples.app.config``, ``examples.app.telemetry``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import httpx
import redis.asyncio
import structlog

from examples.app.config import (
    EMAILS,
    IMAGES,
    QUEUES,
    REMINDERS,
    REPORTS,
    WEBHOOKS,
    Settings,
    SettingsError,
)
from examples.app.jobs import Jobs
from examples.app.schedules import upsert_schedules
from examples.app.telemetry import setup_telemetry
from queue_core import InvalidScheduleError, Queue, RateLimit, RedisUnavailableError, Worker

log = structlog.get_logger("examples.app.worker")

SCHEDULES_START_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class QueuePlan:
    """How the workers of one queue run."""

    concurrency: int
    limiter: RateLimit | None = None
    lock_duration: float = 30.0


QUEUE_PLANS: dict[str, QueuePlan] = {
    EMAILS: QueuePlan(concurrency=10),  # waiting on SMTP, not on the CPU
    # CPU-bound (Pillow, in threads), and the image CDN takes at most 3 uploads a second:
    # the limiter counts job starts in Redis, so it holds across every image worker.
    IMAGES: QueuePlan(concurrency=2, limiter=RateLimit(max=3, duration=1.0)),
    REPORTS: QueuePlan(concurrency=1, lock_duration=60.0),  # heavy, low priority
    WEBHOOKS: QueuePlan(concurrency=8),  # waiting on the receivers
    REMINDERS: QueuePlan(concurrency=5),
}


def build_workers(
    queues: Sequence[str],
    jobs: Jobs,
    settings: Settings,
    *,
    concurrency: int | None = None,
    shutdown_timeout: float = 30.0,
) -> list[Worker]:
    processors = jobs.processors()
    workers = []
    for name in queues:
        plan = QUEUE_PLANS[name]
        workers.append(
            Worker(
                name,
                processors[name],
                redis=settings.redis_url,
                concurrency=concurrency or plan.concurrency,
                limiter=plan.limiter,
                lock_duration=plan.lock_duration,
                shutdown_timeout=shutdown_timeout,
            )
        )
    return workers


async def start_schedules(queues: Sequence[str], settings: Settings) -> None:
    """Upsert the schedulers when this process works on their queue (``reports``).

    The workers do it rather than the API: see ``examples.app.schedules``. Each worker
    process of ``reports`` repeats it at each start, which upsert allows; so does a retry
    after a timeout. Redis gets 30 s to answer, as it does at a Worker's start."""
    if REPORTS not in queues:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SCHEDULES_START_TIMEOUT_S
    async with Queue(REPORTS, redis=settings.redis_url) as queue:
        while True:
            try:
                schedulers = await upsert_schedules(queue, settings)
                break
            except RedisUnavailableError as exc:
                if loop.time() >= deadline:
                    raise
                log.warning("schedules_waiting_for_redis", error=str(exc))
                await asyncio.sleep(1.0)
        for info in schedulers:
            log.info(
                "scheduler_upserted",
                scheduler=info.id,
                schedule=info.cron or str(info.every),
                tz=info.tz,
                next_run_at=info.next_run_at.isoformat() if info.next_run_at else None,
            )


async def run(queues: Sequence[str], concurrency: int | None, shutdown_timeout: float) -> None:
    settings = Settings.from_env()
    telemetry = setup_telemetry("worker", settings)
    try:
        await start_schedules(queues, settings)
        users = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
        async with httpx.AsyncClient() as http:
            jobs = Jobs(settings, users, http)
            workers = build_workers(
                queues,
                jobs,
                settings,
                concurrency=concurrency,
                shutdown_timeout=shutdown_timeout,
            )
            loop = asyncio.get_running_loop()
            signals = {"count": 0}

            def on_signal(sig: signal.Signals) -> None:
                signals["count"] += 1
                force = signals["count"] > 1  # a second signal means "now"
                log.info("worker_process_signal", signal=sig.name, force=force)
                for worker in workers:
                    worker.request_close(force=force)

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig)
            log.info(
                "worker_process_started",
                queues=list(queues),
                concurrency={w.name: w.concurrency for w in workers},
                metrics=telemetry.metrics_url,
            )
            try:
                # Worker.run() handles the signals itself when it runs alone; several
                # workers in one process share the handler above instead.
                await asyncio.gather(*(w.run(handle_signals=False) for w in workers))
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                await users.aclose()
        log.info("worker_process_stopped", queues=list(queues))
    finally:
        telemetry.shutdown()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.app.worker",
        description="Run the example application's workers for some queues.",
    )
    parser.add_argument(
        "--queues",
        default=",".join(QUEUES),
        help=f"comma-separated queues to work on (default: {','.join(QUEUES)})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobs run at once per queue (default: each queue's own setting)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds running jobs may take to finish after SIGTERM (30)",
    )
    args = parser.parse_args(argv)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        parser.error(f"unknown queue(s) {unknown}; the queues are {list(QUEUES)}")
    args.queues = list(dict.fromkeys(queues))
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be 1 or more")
    if args.shutdown_timeout < 0:
        parser.error("--shutdown-timeout must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(run(args.queues, args.concurrency, args.shutdown_timeout))
    except (SettingsError, InvalidScheduleError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
