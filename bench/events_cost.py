"""What the job events stream costs a no-op job: events on and off, alternated in one run.

    python -m bench.events_cost [--jobs 20000] [--rounds 5] [--concurrency 10]
        [--before DIR] [--by-command]

A private redis-server is started. Each round runs twice, once with the queue's events
stream on (the default) and once off (``queue.set_events_max_length(0)``), in alternating
order: ``--jobs`` no-op jobs are bulk-enqueued (the enqueue's Redis CPU is counted too,
since each add appends an event), then one in-process ``Worker`` works through them.
Printed per setting, as medians over the rounds: jobs per second, the worker's CPU per job
(``time.process_time``), Redis's CPU per job (``INFO cpu``) and Redis commands per job
(``INFO commandstats``, the scripts' own commands included); then on / off as ratios.
Redis CPU and commands per job are the steadiest of these on a shared machine, where
throughput swings by tens of percent between runs.

``--before DIR`` compares two versions of queue_core side by side in the same run and on
the same redis-server (a version from before the events stream runs its one setting in
both columns): DIR is another checkout (e.g. ``git archive HEAD --prefix=before/ |
tar -x -C /tmp`` gives /tmp/before), and this checkout is "after". Every run then happens
in a child process whose ``PYTHONPATH`` puts its version first (the file it imported is
printed), the four settings of a round in rotating order; the ratios are after / before.
The "worker only" figures leave the enqueue out. ``--by-command`` adds Redis's calls and
time per job for its busiest commands while the worker ran, summed over the rounds (``INFO
commandstats``; a script's time includes its commands').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
import structlog

from bench.profile_worker import fill, redis_cpu, work
from queue_core import Queue

ROOT = Path(__file__).resolve().parent.parent


def _commands(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    # Scripts count once as FCALL (or EVALSHA) and again for each command they call.
    scripts = ("fcall", "cmdstat_fcall", "evalsha", "cmdstat_evalsha")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in scripts)


def _by_command(client: redis.Redis) -> dict[str, list[float]]:
    stats: dict[str, Any] = client.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): [float(v["calls"]), float(v["usec"])] for k, v in stats.items()
    }


async def _set_events(url: str, name: str, on: bool) -> None:
    async with Queue(name, redis=url) as queue:
        if not hasattr(queue, "set_events_max_length"):
            return  # a version from before the events stream: on and off run the same code
        await queue.set_events_max_length(None if on else 0)


def one_run(url: str, client: redis.Redis, jobs: int, concurrency: int, on: bool) -> dict[str, Any]:
    name = f"events-{uuid.uuid4().hex[:8]}"
    client.flushall()
    asyncio.run(_set_events(url, name, on))
    client.config_resetstat()
    redis_before = redis_cpu(client)
    asyncio.run(fill(url, name, jobs))
    redis_filled, commands_filled = redis_cpu(client), _commands(client)
    by_command_filled = _by_command(client)
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(work(url, name, jobs, concurrency))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    per_job = 1e6 / jobs
    redis_done, commands_done = redis_cpu(client), _commands(client)
    by_command = {
        name: [calls - by_command_filled.get(name, [0, 0])[0],
               usec - by_command_filled.get(name, [0, 0])[1]]
        for name, (calls, usec) in _by_command(client).items()
    }  # fmt: skip
    return {
        "jobs_per_s": jobs / wall,
        "worker_us": cpu * per_job,
        "redis_us": (redis_done - redis_before) * per_job,
        "commands": commands_done / jobs,
        "redis_us_work": (redis_done - redis_filled) * per_job,
        "commands_work": (commands_done - commands_filled) / jobs,
        "by_command": by_command,
        "events_stream": hasattr(Queue, "set_events_max_length"),
    }


def _child(url: str, jobs: int, concurrency: int, on: bool) -> int:
    """One run in this process, for --before: its figures as JSON on stdout."""
    import queue_core  # noqa: PLC0415 - the version PYTHONPATH chose

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    client = redis.Redis.from_url(url)
    result = one_run(url, client, jobs, concurrency, on)
    client.close()
    result["queue_core"] = queue_core.__file__
    print(json.dumps(result))
    return 0


def _in_child(tree: Path, url: str, jobs: int, concurrency: int, on: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)])}
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", url]
    argv += ["--jobs", str(jobs), "--concurrency", str(concurrency), "--on" if on else "--off"]
    out = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True, check=False)  # noqa: S603
    if out.returncode != 0:
        raise SystemExit(f"run of {tree} failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--before", type=Path, help="another checkout, run side by side")
    parser.add_argument("--by-command", action="store_true", help="busiest commands per job")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--on", dest="on", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--off", dest="on", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.jobs, args.concurrency, args.on)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    trees: list[tuple[str, Path | None]] = [("", None)]
    if args.before:
        trees = [("before", args.before.resolve()), ("after", ROOT)]
    settings = [(label, tree, on) for label, tree in trees for on in (False, True)]
    results: dict[tuple[str, bool], list[dict[str, Any]]] = {(s[0], s[2]): [] for s in settings}
    # Imported here: a child run of events_cost --before may import an older queue_core.
    from queue_core.testing import RedisServer  # noqa: PLC0415

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        for round_ in range(args.rounds):
            # Rotate the order, so that no setting always runs first (or after another).
            shift = round_ % len(settings)
            for label, tree, on in settings[shift:] + settings[:shift]:
                if tree is None:
                    run = one_run(server.url, client, args.jobs, args.concurrency, on)
                else:
                    run = _in_child(tree, server.url, args.jobs, args.concurrency, on)
                results[label, on].append(run)
        client.close()
    print(f"{args.jobs:,} no-op jobs x {args.rounds} rounds, concurrency {args.concurrency}")
    _print_table(results, [label for label, _ in trees])
    if args.by_command:
        _print_by_command(results, args.jobs)
    return 0


LABELS = {
    "jobs_per_s": "jobs/s (one worker)",
    "worker_us": "worker CPU per job (us)",
    "redis_us": "Redis CPU per job (us)",
    "commands": "Redis commands per job",
    "redis_us_work": "Redis CPU per job, worker only (us)",
    "commands_work": "Redis commands per job, worker only",
}


def _print_table(results: dict[tuple[str, bool], list[dict[str, Any]]], trees: list[str]) -> None:
    medians = {
        setting: {key: statistics.median(run[key] for run in runs) for key in LABELS}
        for setting, runs in results.items()
    }
    if trees == [""]:
        print("| figure | events off | events on | on / off |")
        print("|---|---:|---:|---:|")
        for key, text in LABELS.items():
            off, on_value = medians["", False][key], medians["", True][key]
            print(f"| {text} | {off:,.1f} | {on_value:,.1f} | {on_value / off:.2f}x |")
        return
    for label in trees:
        print(f"{label}: queue_core from {results[label, True][0]['queue_core']}")
        if not results[label, True][0]["events_stream"]:
            print(f"  ({label} has no events stream: its 'events on' and 'off' run the same code)")
    print("| figure | before, events off | after, events off | after / before "
          "| before, events on | after, events on | after / before |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, text in LABELS.items():
        cells = []
        for on in (False, True):
            old, new = medians["before", on][key], medians["after", on][key]
            cells += [f"{old:,.1f}", f"{new:,.1f}", f"{new / old:.2f}x"]
        print(f"| {text} | " + " | ".join(cells) + " |")


def _print_by_command(results: dict[tuple[str, bool], list[dict[str, Any]]], jobs: int) -> None:
    for (label, on), runs in results.items():
        total: dict[str, list[float]] = {}
        for run in runs:
            for name, (calls, usec) in run["by_command"].items():
                entry = total.setdefault(name, [0.0, 0.0])
                entry[0] += calls
                entry[1] += usec
        count = jobs * len(runs)
        print(f"{label or 'this tree'}, events {'on' if on else 'off'}: calls, us per job")
        for name, (calls, usec) in sorted(total.items(), key=lambda kv: -kv[1][1])[:14]:
            print(f"  {name:18} {calls / count:6.2f}  {usec / count:7.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
