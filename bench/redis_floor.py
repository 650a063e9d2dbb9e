"""What a no-op job costs Redis at the least in queue_core's data model, beside what
queue_core's own scripts cost: Redis CPU per job, split into what each call and each job
cost.

    python -m bench.redis_floor [--jobs 30000] [--rounds 2] [--per-call 1,2,10]

A private redis-server is started. Each run bulk-enqueues ``--jobs`` no-op jobs with
queue_core (its records, envelopes and wait order), then works through them without a
worker: one client makes the calls a worker's slots would make, one at a time (each
waits for its reply), each completing ``--per-call`` jobs and fetching one job for each
(a first call fetches 10). Three scripts do the same work on the same data:

- queue_core's ``move_to_completed``, with the events stream off, and on (its default);
- the least: ``bench/redis_floor.lua``, the same steps with nothing more (the lock token
  checked, the result stored, the record rewritten at the fetch and at the completion,
  the job moved wait -> active -> completed, completed trimmed past 1,000 as queue_core
  does), none of queue_core's checks or features (settings, events, delayed jobs, rate
  limits, flows, deduplication, schedulers, cancellation, error history, record checks).

Printed per script and jobs per call: Redis's CPU per job (``INFO cpu``, medians over
rounds), then a fit of ``per call / jobs per call + per job`` through the fewest and the
most jobs per call: what a call costs Redis whatever it carries (reading and parsing it,
waking up for it, replying) and what each job adds. A worker's pipeline makes its calls
overlap, which this does not: its Redis CPU per job (``bench.events_cost``) sits between
these rows, by how many jobs its calls carry and how often Redis sleeps between them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from bench.profile_worker import redis_cpu
from queue_core import JobSpec, Queue
from queue_core.keys import QueueKeys
from queue_core.scripts import library, load_script, preload_sync
from queue_core.testing import RedisServer

FLOOR = Path(__file__).with_name("redis_floor.lua")
FIRST_FETCH = 10  # a worker's slots, as at concurrency 10
LOCK_MS = "30000"
PREFIX = "floor:1"
SCRIPTS = ("queue_core, events off", "queue_core, events on", "the least")

# A fetched job: (id, lock token).
Fetched = list[tuple[bytes, str]]


def _jobs(reply: Sequence[Any], first: int) -> Fetched:
    """The jobs a reply fetched: id, envelope, record, from position ``first`` on."""
    return [(reply[i], json.loads(reply[i + 2])["tok"]) for i in range(first, len(reply) - 2, 3)]


async def _fill(url: str, name: str, jobs: int, events: bool) -> None:
    async with Queue(name, redis=url) as queue:
        if not events:
            await queue.set_events_max_length(0)
        for low in range(0, jobs, 1000):
            specs = [JobSpec("noop", {"i": i}) for i in range(low, min(low + 1000, jobs))]
            await queue.add_bulk(specs)


def _queue_core(client: redis.Redis, keys: QueueKeys) -> Callable[[Fetched, int], Fetched]:
    """A settle through queue_core's scripts: complete ``done``, fetch ``fetch`` per job
    (or ``fetch`` jobs when none is done)."""
    fetch_script, settle_script = load_script("move_to_active"), load_script("move_to_completed")
    fetch_name = library().function(fetch_script.name)
    settle_name = library().function(settle_script.name)
    fetch_keys, settle_keys = keys.select(fetch_script.keys), keys.select(settle_script.keys)

    def settle(done: Fetched, fetch: int) -> Fetched:
        if not done:
            reply = client.fcall(
                fetch_name, len(fetch_keys), *fetch_keys, str(fetch), PREFIX, LOCK_MS, "0", "0"
            )
            return _jobs(reply, 5)
        args: list[Any] = []
        for job_id, token in done:
            args += [job_id, token, "null", str(fetch), PREFIX, LOCK_MS, "0", "0"]
        replies = client.fcall(settle_name, len(settle_keys), *settle_keys, *args)
        fetched: Fetched = []
        for reply in [replies] if len(done) == 1 else replies:
            if reply[0] != 1:
                raise RuntimeError(f"a job was not completed: {reply[:6]!r}")
            fetched += _jobs(reply, 8)
        return fetched

    return settle


def _least(client: redis.Redis, keys: QueueKeys) -> Callable[[Fetched, int], Fetched]:
    names = ("jobs", "state", "results", "wait", "active", "completed")
    key_args = [keys[name] for name in names]

    def settle(done: Fetched, fetch: int) -> Fetched:
        args: list[Any] = []
        for job_id, token in done or [(b"", "")]:
            args += [job_id, token, "null", str(fetch), PREFIX]
        fetched: Fetched = []
        for reply in client.fcall("floor_settle", len(key_args), *key_args, *args):
            if done and reply[0] != 1:
                raise RuntimeError(f"a job was not completed: {reply[:2]!r}")
            fetched += _jobs(reply, 2)
        return fetched

    return settle


def one_run(server: RedisServer, script: str, jobs: int, per_call: int) -> float:
    """Redis's CPU per job (us) for ``jobs`` jobs completed ``per_call`` at a time."""
    client = redis.Redis.from_url(server.url)
    try:
        client.flushall()
        preload_sync(client)
        client.function_load(FLOOR.read_text(), replace=True)
        name = f"floor-{uuid.uuid4().hex[:8]}"
        asyncio.run(_fill(server.url, name, jobs, events=script != SCRIPTS[0]))
        keys = QueueKeys(name)
        settle = (_least if script == SCRIPTS[2] else _queue_core)(client, keys)
        before = redis_cpu(client)
        waiting = settle([], FIRST_FETCH)
        completed = 0
        while waiting:
            done, waiting = waiting[:per_call], waiting[per_call:]
            waiting += settle(done, 1)
            completed += len(done)
        used = redis_cpu(client) - before
        if completed != jobs:
            raise RuntimeError(f"{completed} jobs completed of {jobs}")
        return used / jobs * 1e6
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-call", default="1,2,10", help="jobs completed per call")
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(size) for size in args.per_call.split(",")})
    except ValueError:
        parser.error(f"--per-call takes whole numbers, comma-separated: {args.per_call!r}")
    if args.jobs < FIRST_FETCH or args.rounds < 1 or not sizes or sizes[0] < 1:
        parser.error(f"--jobs at least {FIRST_FETCH}, --rounds and --per-call at least 1")
    runs: dict[tuple[str, int], list[float]] = {}
    with RedisServer() as server:
        print(f"Redis: {server.description}", file=sys.stderr)
        for _ in range(args.rounds):
            for size in sizes:
                for script in SCRIPTS:
                    used = one_run(server, script, args.jobs, size)
                    runs.setdefault((script, size), []).append(used)
    cost = {key: statistics.median(values) for key, values in runs.items()}
    print(
        f"{args.jobs:,} no-op jobs x {args.rounds} rounds, calls made one at a time: "
        "Redis CPU per job (us)"
    )
    print("| jobs per call | " + " | ".join(SCRIPTS) + " | events off / the least |")
    print("|---:|" + "---:|" * (len(SCRIPTS) + 1))
    for size in sizes:
        cells = [f"{cost[script, size]:.1f}" for script in SCRIPTS]
        ratio = cost[SCRIPTS[0], size] / cost[SCRIPTS[2], size]
        print(f"| {size} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    if len(sizes) > 1:
        few, many = sizes[0], sizes[-1]
        print(f"fitted through {few} and {many} jobs per call: per call + per job (us)")
        for script in SCRIPTS:
            per_call = (cost[script, few] - cost[script, many]) / (1 / few - 1 / many)
            per_job = cost[script, many] - per_call / many
            print(f"  {script:24} {per_call:6.1f} + {per_job:5.1f}")
    print(f"reproduce: python -m bench.redis_floor {' '.join(argv or sys.argv[1:])}".strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
