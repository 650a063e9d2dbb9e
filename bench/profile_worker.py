"""Where a worker's CPU goes: one worker through a backlog of no-op jobs, sampled by
py-spy from outside the process, with the CPU that the worker and Redis spent per job.

    python -m bench.profile_worker [--jobs 30000] [--concurrency 10] [--otel] [--top 20]

A private redis-server is started; ``--jobs`` jobs are bulk-enqueued first (not
profiled), then a ``Worker`` works through them in this process while ``py-spy record``
samples it 1,000 times a second (idle samples, the event loop waiting on Redis, are left
out). Printed: jobs per second, the worker's CPU per job (``time.process_time``), Redis's
CPU per job (``INFO cpu`` before and after) and its busiest commands, the garbage
collector's runs per 1,000 jobs by generation and their CPU per job (``gc.callbacks``),
and the functions with the most self time as a share of the worker's busy samples.
py-spy needs ptrace rights over this process (root, or ``kernel.yama.ptrace_scope`` 0).

To profile another version of queue_core (e.g. before a change), put its checkout first
on the path: ``PYTHONPATH=/tmp/old python bench/profile_worker.py``; the file profiled is
printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import structlog

import queue_core
from queue_core import Job, JobSpec, Queue, Worker


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
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.otel:
        from bench.peers.queue_core import instrument  # noqa: PLC0415 - --otel only

        instrument()
    print(f"queue_core from {queue_core.__file__}")
    # Imported here: a child run of events_cost --before may import an older queue_core.
    from queue_core.testing import RedisServer  # noqa: PLC0415

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        name = f"profile-{uuid.uuid4().hex[:8]}"
        asyncio.run(fill(server.url, name, args.jobs))
        client.config_resetstat()
        redis_before, commands_before = redis_cpu(client), client.info("commandstats")
        with sampled() as samples, collections_counted() as collected:
            cpu, wall = time.process_time(), time.perf_counter()
            asyncio.run(work(server.url, name, args.jobs, args.concurrency))
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
    runs = " / ".join(f"{1000 * n / args.jobs:.1f}" for n in collected.runs)
    print(
        f"Garbage collections per 1,000 jobs (generations 0 / 1 / 2): {runs}; "
        f"their CPU {collected.cpu * per_job:.1f} us/job"
    )
    total = sum(samples.values())
    print(f"Worker self time, top {args.top} of {total:,} busy samples:")
    for frame, count in samples.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    return 0


class Collected:
    """The garbage collector's runs by generation, and the CPU they took (s)."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.cpu = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.runs[info["generation"]] += 1
            self.cpu += time.process_time() - self._started


@contextmanager
def collections_counted() -> Iterator[Collected]:
    collected = Collected()
    gc.callbacks.append(collected)
    try:
        yield collected
    finally:
        gc.callbacks.remove(collected)


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")


@contextmanager
def sampled() -> Iterator[collections.Counter[str]]:
    """py-spy samples this process while the block runs; the counter then holds the
    samples per innermost function (``function (file)``)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    counts: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "stacks.txt"
        spy = subprocess.Popen(  # noqa: S603 - py-spy on this very process
            [
                *(py_spy, "record", "--pid", str(os.getpid()), "--rate", "1000"),
                *("--format", "raw", "--output", str(output), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # attached and sampling
        try:
            yield counts
        finally:
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=60)
        if not output.exists():
            raise SystemExit(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
        for line in output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            innermost = stack.rsplit(";", 1)[-1]
            match = _FRAME.match(innermost)
            frame = f"{match['function']} ({_short(match['file'])})" if match else innermost
            counts[frame] += int(count)


def _short(path: str) -> str:
    """A file as its package path: site-packages and the checkout's root cut off."""
    for marker in ("site-packages/", "python3.11/", str(Path.cwd()) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _by_command(info: dict[str, Any]) -> dict[str, Any]:
    return {key.removeprefix("cmdstat_"): value for key, value in info.items()}


if __name__ == "__main__":
    raise SystemExit(main())
