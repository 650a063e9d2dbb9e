"""Where a no-op job's Redis time goes inside the scripts: a settle clocked step by step.

    python -m bench.lua_steps [--jobs 20000] [--concurrency 10]

A copy of this checkout's ``queue_core`` is made in a temporary directory, and the scripts
of a worker's settle (``move_to_completed`` and the fetch it makes: ``includes/lock``,
``includes/finish``, ``includes/fetch_jobs``) get a mark between their steps: Redis's
``TIME``, read inside the script, the microseconds since the previous mark added to a hash
under the step's name. One worker then runs ``--jobs`` no-op jobs from that copy on a
private redis-server, the queue's events stream on (its default).

Printed per step: Redis's time per job, less what a mark costs (measured by a step with
nothing in it but a mark), and its share of all the steps. Marks cost more than most steps
and disturb Redis's caches: read the shares, not the absolute figures; Redis's CPU per job
outside the scripts (parsing, replies, the event loop) is not in them. The steps follow the
scripts' text (``STEPS``): a mark whose anchor line is gone stops the run with its name.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis
import structlog

from bench.profile_worker import fill, redis_cpu, work

ROOT = Path(__file__).resolve().parent.parent
US_KEY, COUNT_KEY = "bench:steps:us", "bench:steps:n"
ALONE = "(a mark alone)"

STEP_CLOCK: Final = f"""-- bench.lua_steps: the us since the last mark, added under `name`.
local STEP_LAST = nil --@per-call
local function step_clock(name)
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if STEP_LAST and name then
    redis.call('HINCRBY', '{US_KEY}', name, us - STEP_LAST)
    redis.call('HINCRBY', '{COUNT_KEY}', name, 1)
  end
  STEP_LAST = us
end
"""


@dataclass(frozen=True, slots=True)
class Mark:
    """``step_clock(name)`` on a line of its own, before or after the one line of ``file``
    that reads ``anchor`` (stripped), at that line's indent. The step named is the code
    between the previous mark and this one."""

    file: str
    anchor: str
    name: str | None
    after: bool = True


SETTLE, LOCK = "move_to_completed.lua", "includes/lock.lua"
FINISH, FETCH = "includes/finish.lua", "includes/fetch_jobs.lua"
READ = "local rec, reason, version = read_record(K, id)"

STEPS: Final = (
    Mark(SETTLE, "allow_when_full(K)", None, after=False),  # the start
    Mark(SETTLE, "local now = now_ms()", "call: guard, clock"),
    Mark(SETTLE, "local now = now_ms()", ALONE),
    Mark(LOCK, READ, "complete: read and check the record"),
    Mark(SETTLE, "rec.cxr = nil", "complete: token, ZREM active", after=False),
    Mark(SETTLE, "redis.call('HSET', K.results, id, value)", "complete: HSET result"),
    Mark(
        SETTLE,
        "archive_errors(K, id) -- the errors of its failed attempts stay, as history",
        "complete: error history",
    ),
    Mark(
        FINISH,
        "local encoded = cjson.encode(rec)",
        "finish: dedup, counts, flow parent",
        after=False,
    ),
    Mark(FINISH, "local encoded = cjson.encode(rec)", "finish: encode the record"),
    Mark(FINISH, "redis.call('HSET', K.state, id, encoded)", "finish: HSET record"),
    Mark(FINISH, "redis.call('ZADD', set_key, finish_score(now), id)", "finish: ZADD completed"),
    Mark(FINISH, "trim_finished(K, set_key, count, age_ms, now)", "finish: retention"),
    Mark(
        SETTLE,
        "return settle_reply(K, status, 0, final or rec, now, ARGV, first + 3)",
        "complete: completed event",
        after=False,
    ),
    Mark(FETCH, "local delayed_changed = false", "fetch: earliest delayed"),
    Mark(FETCH, "local allowed = max_jobs", "fetch: settings"),
    Mark(FETCH, "local fetched, refused = 0, 0", "fetch: concurrency, rate limit", after=False),
    Mark(FETCH, "if #ids == 0 then", "fetch: ZRANGE wait", after=False),
    Mark(FETCH, READ, "fetch: loop", after=False),
    Mark(FETCH, READ, "fetch: read and check the record"),
    Mark(FETCH, "redis.call('ZREM', K.wait, id)", "fetch: ZREM wait"),
    Mark(FETCH, "local envelope = redis.call('HGET', K.jobs, id)", "fetch: HGET envelope"),
    Mark(FETCH, "local encoded = encode_record(rec)", "fetch: attempt fields, encode the record"),
    Mark(FETCH, "redis.call('HSET', K.state, id, encoded)", "fetch: HSET record"),
    Mark(FETCH, "redis.call('ZADD', K.active, now + lock_ms, id)", "fetch: ZADD active"),
    Mark(FETCH, "if rec.sch then", "fetch: reply, active event", after=False),
    Mark(FETCH, "out[4] = refused", "fetch: loop end", after=False),
    Mark(FETCH, "if delayed_changed then", "fetch: limiter, wake", after=False),
    Mark(FETCH, "return out", "fetch: next due", after=False),
    Mark(FETCH, "table.insert(reply, 1, status)", "settle: wake if room", after=False),
    Mark(FETCH, "return reply", "settle: reply", after=False),
)


class AnchorError(Exception):
    """A mark's anchor line is not in its script (once): the scripts changed."""


def mark_scripts(scripts: Path, steps: Sequence[Mark] = STEPS) -> None:
    """Insert ``steps`` into the scripts under ``scripts`` (a copy), and the clock they call."""
    (scripts / "includes" / "step_clock.lua").write_text(STEP_CLOCK)
    by_file: dict[str, list[str]] = {}
    for step in steps:
        lines = by_file.setdefault(step.file, (scripts / step.file).read_text().splitlines())
        found = [i for i, line in enumerate(lines) if line.strip() == step.anchor]
        if len(found) != 1:
            raise AnchorError(f"{step.file}: {len(found)} lines read {step.anchor!r} ({step.name})")
        at = found[0]
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        call = f"{indent}step_clock({'nil' if step.name is None else repr(step.name)})"
        if step.after:  # after the anchor and after the marks put there before this one
            at += 1
            while at < len(lines) and lines[at].strip().startswith("step_clock("):
                at += 1
        lines.insert(at, call)
    for file, lines in by_file.items():
        first_include = next(i for i, line in enumerate(lines) if line.startswith("--@include"))
        lines.insert(first_include, "--@include step_clock")
        (scripts / file).write_text("\n".join(lines) + "\n")


def _child(url: str, jobs: int, concurrency: int) -> int:
    """Fill and work a queue with the marked copy (first on PYTHONPATH)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    name = f"steps-{uuid.uuid4().hex[:8]}"
    asyncio.run(fill(url, name, jobs))
    client = redis.Redis.from_url(url)
    client.delete(US_KEY, COUNT_KEY)
    before = redis_cpu(client)
    asyncio.run(work(url, name, jobs, concurrency))
    print(f"{(redis_cpu(client) - before) * 1e6 / jobs:.1f}")
    client.close()
    return 0


def steps_table(us: dict[str, float], counts: dict[str, float], jobs: int) -> list[str]:
    """One line per step, largest first: us per job less the marks' cost, share of all."""
    mark = us[ALONE] / counts[ALONE]
    net = {name: max(us[name] - mark * counts[name], 0.0) / jobs for name in us if name != ALONE}
    total = sum(net.values())
    lines = [f"a mark costs {mark:.2f} us; the steps add up to {total:.1f} us per job"]
    for name, value in sorted(net.items(), key=lambda item: -item[1]):
        lines.append(
            f"  {name:42} {value:6.2f} us/job {100 * value / total:5.1f} %"
            f"  ({counts[name] / jobs:.2f} per job)"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.jobs, args.concurrency)
    from queue_core.testing import RedisServer  # noqa: PLC0415 - the parent only

    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        copy = Path(tmp) / "queue_core"
        shutil.copytree(ROOT / "queue_core", copy, ignore=shutil.ignore_patterns("__pycache__"))
        mark_scripts(copy / "scripts")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, str(ROOT)])}
        command = [sys.executable, "-m", "bench.lua_steps", "--child", server.url]
        command += ["--jobs", str(args.jobs), "--concurrency", str(args.concurrency)]
        # cwd: `python -m` puts it first on sys.path, so the marked copy is imported.
        done = subprocess.run(  # noqa: S603
            command, env=env, cwd=tmp, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"the marked run failed:\n{done.stderr[-3000:]}")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        us = {str(k): float(v) for k, v in client.hgetall(US_KEY).items()}
        counts = {str(k): float(v) for k, v in client.hgetall(COUNT_KEY).items()}
        client.close()
    print(
        f"{args.jobs:,} no-op jobs, concurrency {args.concurrency}, events on; Redis CPU "
        f"{done.stdout.strip()} us/job with the marks"
    )
    print(*steps_table(us, counts, args.jobs), sep="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
