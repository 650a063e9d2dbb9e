"""The worker processes of the example application.

    queue-core worker examples.app.worker:workers        (compose.yaml, the Dockerfile)
    python -m examples.app.worker [--queues emails,webhooks] [--concurrency N]
                                  [--shutdown-timeout SECONDS]

``workers`` is a factory target of ``queue-core worker``: it yields one ``Worker`` per
queue of ``$WORKER_QUEUES`` (comma-separated; default: all five), each with the settings
that suit its work (``QUEUE_PLANS``): many concurrent emails and webhooks, two images at
a time under a rate limit shared by every image worker, one report at a time.
``$WORKER_CONCURRENCY`` overrides the concurrency of every queue of the process and
``$WORKER_SHUTDOWN_TIMEOUT_S`` (30) is how long running jobs may take to finish after
SIGTERM. Around the workers it sets up telemetry, opens the clients the processors
share (the users' Redis, an HTTP client) and, in a process that works on ``reports``,
upserts the app's job schedulers (``examples.app.schedules``); it closes them once the
workers have stopped, telemetry last.

The command does the rest: both signals (SIGTERM or SIGINT stops gracefully, a second
one at once), ``--processes N`` (process i serves ``/metrics`` on ``METRICS_PORT + i``),
``--health-port`` (``/livez``, ``/readyz``), exit codes.
``python -m examples.app.worker`` is the same command with the environment taken from
its flags (``examples/demo.py`` starts it so). Other settings come from the environment
(``examples.app.config``, ``examples.app.telemetry``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final, NoReturn

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
from queue_core import Queue, RateLimit, RedisUnavailableError, Worker
from queue_core.cli import main as run_command
from queue_core.cli.supervisor import INDEX_ENV

log = structlog.get_logger("examples.app.worker")

TARGET: Final = "examples.app.worker:workers"
QUEUES_ENV: Final = "WORKER_QUEUES"
CONCURRENCY_ENV: Final = "WORKER_CONCURRENCY"
SHUTDOWN_TIMEOUT_ENV: Final = "WORKER_SHUTDOWN_TIMEOUT_S"
DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 30.0
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


def parse_queues(text: str) -> tuple[str, ...]:
    """``emails,webhooks`` -> the queues, in order, once each; SettingsError if unknown."""
    queues = tuple(dict.fromkeys(q.strip() for q in text.split(",") if q.strip()))
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise SettingsError(f"unknown queue(s) {unknown}; the queues are {','.join(QUEUES)}")
    return queues


@dataclass(frozen=True)
class ProcessSettings:
    """What one worker process runs, from ``$WORKER_*``."""

    queues: tuple[str, ...] = QUEUES
    concurrency: int | None = None  # None: each queue's own (QUEUE_PLANS)
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProcessSettings:
        env = os.environ if environ is None else environ
        queues = env.get(QUEUES_ENV, "").strip()
        concurrency = env.get(CONCURRENCY_ENV, "").strip()
        timeout = env.get(SHUTDOWN_TIMEOUT_ENV, "").strip()
        try:
            count = int(concurrency) if concurrency else None
            seconds = float(timeout) if timeout else DEFAULT_SHUTDOWN_TIMEOUT_S
        except ValueError as exc:
            raise SettingsError(f"{CONCURRENCY_ENV} or {SHUTDOWN_TIMEOUT_ENV}: {exc}") from None
        if count is not None and count < 1:
            raise SettingsError(f"{CONCURRENCY_ENV} must be 1 or more, not {concurrency}")
        if seconds < 0:
            raise SettingsError(f"{SHUTDOWN_TIMEOUT_ENV} must be 0 or more, not {timeout}")
        return cls(
            queues=parse_queues(queues) if queues else QUEUES,
            concurrency=count,
            shutdown_timeout=seconds,
        )


def build_workers(
    queues: Sequence[str],
    jobs: Jobs,
    settings: Settings,
    *,
    concurrency: int | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
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
                prefix=settings.key_prefix,
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
    async with Queue(REPORTS, redis=settings.redis_url, prefix=settings.key_prefix) as queue:
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


@asynccontextmanager
async def workers() -> AsyncIterator[list[Worker]]:
    """The factory ``queue-core worker examples.app.worker:workers`` runs (see above).

    A bad setting raises ``SettingsError``, a bad cron expression ``InvalidScheduleError``:
    the command prints the traceback and exits 7."""
    process = ProcessSettings.from_env()
    settings = Settings.from_env()
    index = int(os.environ.get(INDEX_ENV) or 0)
    if index and settings.metrics_port:
        # Under --processes N, process i serves /metrics on METRICS_PORT + i, as its probe
        # does on --health-port + i.
        settings = replace(settings, metrics_port=settings.metrics_port + index)
    telemetry = setup_telemetry("worker", settings)
    try:
        await start_schedules(process.queues, settings)
        users = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
        try:
            async with httpx.AsyncClient() as http:
                built = build_workers(
                    process.queues,
                    Jobs(settings, users, http),
                    settings,
                    concurrency=process.concurrency,
                    shutdown_timeout=process.shutdown_timeout,
                )
                log.info(
                    "worker_process_started",
                    queues=list(process.queues),
                    concurrency={w.name: w.concurrency for w in built},
                    metrics=telemetry.metrics_url,
                )
                yield built  # the command runs them until a signal stops them
        finally:
            await users.aclose()
        log.info("worker_process_stopped", queues=list(process.queues))
    finally:
        telemetry.shutdown()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.app.worker",
        description="Run the example application's workers for some queues: "
        f"queue-core worker {TARGET}, with the environment set from these flags.",
    )
    parser.add_argument(
        "--queues",
        help=f"comma-separated queues to work on (default: ${QUEUES_ENV}, else all: "
        f"{','.join(QUEUES)})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help=f"jobs run at once per queue (default: ${CONCURRENCY_ENV}, else each queue's own)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        help=f"seconds running jobs may take to finish after SIGTERM (default: "
        f"${SHUTDOWN_TIMEOUT_ENV}, else {DEFAULT_SHUTDOWN_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)
    if args.queues is not None:
        try:
            args.queues = parse_queues(args.queues)
        except SettingsError as exc:
            parser.error(str(exc))
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be 1 or more")
    if args.shutdown_timeout is not None and args.shutdown_timeout < 0:
        parser.error("--shutdown-timeout must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Set ``$WORKER_*`` from the flags, then run ``queue-core worker`` on ``workers``."""
    args = parse_args(argv)
    if args.queues is not None:
        os.environ[QUEUES_ENV] = ",".join(args.queues)
    if args.concurrency is not None:
        os.environ[CONCURRENCY_ENV] = str(args.concurrency)
    if args.shutdown_timeout is not None:
        os.environ[SHUTDOWN_TIMEOUT_ENV] = repr(args.shutdown_timeout)
    # The command reads its arguments from sys.argv, as its console script does.
    sys.argv = ["queue-core", "worker", TARGET]
    run_command()
    sys.exit(0)  # not reached: the command exits with its own code


if __name__ == "__main__":
    main()
