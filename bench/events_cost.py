"""What the job events stream costs a no-op job: events on and off, alternated in one run.

    python -m bench.events_cost [--jobs 20000] [--rounds 5] [--concurrency 10]

A private redis-server is started. Each round runs twice, once with the queue's events
stream on (the default) and once off (``queue.set_events_max_length(0)``), in alternating
order: ``--jobs`` no-op jobs are bulk-enqueued (the enqueue's Redis CPU is counted too,
since each add appends an event), then one in-process ``Worker`` works through them.
Printed per setting, as medians over the rounds: jobs per second, the worker's CPU per job
(``time.process_time``), Redis's CPU per job (``INFO cpu``) and Redis commands per job
(``INFO commandstats``, the scripts' own commands included); then on / off as ratios.
Redis CPU and commands per job are the steadiest of these on a shared machine, where
throughput swings by tens of percent between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis
import structlog

from bench.profile_worker import fill, redis_cpu, work
from queue_core import Queue
from queue_core.testing import RedisServer


def _commands(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    # Scripts count once as EVALSHA and again for each command they call.
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("evalsha", "cmdstat_evalsha"))


async def _set_events(url: str, name: str, on: bool) -> None:
    async with Queue(name, redis=url) as queue:
        await queue.set_events_max_length(None if on else 0)


def one_run(
    url: str, client: redis.Redis, jobs: int, concurrency: int, on: bool
) -> dict[str, float]:
    name = f"events-{uuid.uuid4().hex[:8]}"
    client.flushall()
    asyncio.run(_set_events(url, name, on))
    client.config_resetstat()
    redis_before = redis_cpu(client)
    asyncio.run(fill(url, name, jobs))
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(work(url, name, jobs, concurrency))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    per_job = 1e6 / jobs
    return {
        "jobs_per_s": jobs / wall,
        "worker_us": cpu * per_job,
        "redis_us": (redis_cpu(client) - redis_before) * per_job,
        "commands": _commands(client) / jobs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        for round_ in range(args.rounds):
            for on in (True, False) if round_ % 2 == 0 else (False, True):
                results[on].append(one_run(server.url, client, args.jobs, args.concurrency, on))
        client.close()
    medians = {
        on: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for on, runs in results.items()
    }
    print(f"{args.jobs:,} no-op jobs x {args.rounds} rounds, concurrency {args.concurrency}")
    print("| figure | events off | events on | on / off |")
    print("|---|---:|---:|---:|")
    labels = {
        "jobs_per_s": "jobs/s (one worker)",
        "worker_us": "worker CPU per job (us)",
        "redis_us": "Redis CPU per job (us)",
        "commands": "Redis commands per job",
    }
    for key, label in labels.items():
        off, on_value = medians[False][key], medians[True][key]
        print(f"| {label} | {off:,.1f} | {on_value:,.1f} | {on_value / off:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
