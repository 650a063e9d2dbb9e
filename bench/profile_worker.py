"""Where a worker's time goes: one worker process through a backlog of no-op jobs,
sampled by pyinstrument, with the CPU that the worker and Redis spent per job.

    python -m bench.profile_worker [--jobs 30000] [--concurrency 10] [--otel] [--top 20]

A private redis-server is started; ``--jobs`` jobs are bulk-enqueued first (not
profiled), then a ``Worker`` works through them in this process under the profiler.
Printed: jobs per second, the worker's CPU per job (``time.process_time``), Redis's CPU
per job (``INFO cpu`` before and after) and its busiest commands, and the frames with the
most self time (pyinstrument's flat view, every frame shown, the event loop's own wait
in ``select`` included: that is time spent waiting on Redis).

To profile another version of queue_core (e.g. before a change), put its checkout first
on the path: ``PYTHONPATH=/tmp/old python bench/profile_worker.py``; the file profiled is
printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis
import structlog
from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer

import queue_core
from queue_core import Job, JobSpec, Queue, Worker
from queue_core.embedded import resolve_redis


def redis_cpu(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def busiest_commands(before: dict[str, Any], after: dict[str, Any], jobs: int) -> list[str]:
    """Redis's own time per command (scripts and the commands they call), per job."""
    lines = []
    for name, stats in after.items():
        usec = stats["usec"] - before.get(name, {}).get("usec", 0)
        calls = stats["calls"] - before.get(name, {}).get("calls", 0)
        if calls:
            lines.append((usec, f"{name}: {calls / jobs:.2f} calls, {usec / jobs:.1f} us per job"))
    return [text for _, text in sorted(lines, reverse=True)[:8]]


async def fill(url: str, name: str, jobs: int) -> None:
    async with Queue(name, redis=url) as queue:
        for low in range(0, jobs, 1000):
            await queue.add_bulk(
                [JobSpec("noop", {"i": i}) for i in range(low, min(low + 1000, jobs))]
            )


async def work(url: str, name: str, jobs: int, concurrency: int) -> None:
    done = asyncio.Event()
    count = 0

    async def noop(job: Job) -> None:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()

    async with Worker(name, noop, redis=url, concurrency=concurrency):
        await done.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--otel", action="store_true", help="queue_otel on, as in bench.run")
    parser.add_argument("--top", type=int, default=20, help="frames shown")
    parser.add_argument("--interval", type=float, default=0.0002, help="sampling interval, s")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.otel:
        from bench.peers.queue_core import instrument  # noqa: PLC0415 - --otel only

        instrument()
    print(f"queue_core from {queue_core.__file__}")
    with resolve_redis(skip=("REDIS_URL", "localhost:6379")) as server:
        client = redis.Redis.from_url(server.url)
        name = f"profile-{uuid.uuid4().hex[:8]}"
        asyncio.run(fill(server.url, name, args.jobs))
        client.config_resetstat()
        redis_before, commands_before = redis_cpu(client), client.info("commandstats")
        profiler = Profiler(interval=args.interval, async_mode="disabled")
        cpu, wall = time.process_time(), time.perf_counter()
        profiler.start()
        asyncio.run(work(server.url, name, args.jobs, args.concurrency))
        profiler.stop()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        redis_used = redis_cpu(client) - redis_before
        commands = busiest_commands(
            _by_command(commands_before), _by_command(client.info("commandstats")), args.jobs
        )
        client.close()
    per_job = 1e6 / args.jobs
    print(
        f"{args.jobs:,} no-op jobs, concurrency {args.concurrency}"
        f"{', queue_otel on' if args.otel else ''}: {args.jobs / wall:,.0f} jobs/s (profiled); "
        f"worker CPU {cpu * per_job:.0f} us/job, Redis CPU {redis_used * per_job:.0f} us/job"
    )
    print("Redis time by command:", *commands, sep="\n  ")
    renderer = ConsoleRenderer(
        unicode=False, color=False, show_all=True, flat=True, time="percent_of_total"
    )
    session = profiler.last_session
    assert session is not None  # the profiler ran
    lines = renderer.render(session).splitlines()
    body = [line for line in lines if line.strip() and not line.lstrip().startswith("_")]
    print("\n".join(body[: args.top + 6]))
    return 0


def _by_command(info: dict[str, Any]) -> dict[str, Any]:
    return {key.removeprefix("cmdstat_"): value for key, value in info.items()}


if __name__ == "__main__":
    raise SystemExit(main())
