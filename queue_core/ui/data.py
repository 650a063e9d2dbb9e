"""The read side of the job browser: everything its pages show, read straight from Redis.

Nothing here loads every job of a queue: counts come from the queues' scripts, pages from
ranges of the state sets, sparklines from ZCOUNTs over the finish-time scores, and the
overview of many queues from two pipelined round trips (Redis's clock and the ids to
sample, then everything else). Times are Redis's (TIME), never this host's clock.

Order: ``oldest`` is a state set's low-score end (next to run, soonest due, earliest
finished), ``newest`` its high-score end, on every state; a page read against a set's
natural order (``Queue.get_jobs``: completed and failed newest first, the others oldest
first) is read from the set's other end and reversed.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.exceptions import NoScriptError

from queue_core.commands import QueueStats, parse_stats, state_names
from queue_core.connection import AsyncClient, redis_errors
from queue_core.decoding import snapshot_to_job
from queue_core.discovery import discover_queues
from queue_core.errors import InvalidOptionError
from queue_core.flows import FlowJob
from queue_core.job import Job, JobRef, JobState
from queue_core.keys import QueueKeys
from queue_core.options import check_int
from queue_core.queue import Queue
from queue_core.schedulers import SchedulerInfo
from queue_core.scripts import LuaScript, load_script, send_commands

__all__ = [
    "ORDERS",
    "SPARK_MINUTES",
    "STATES",
    "WAIT_SAMPLE",
    "JobDetail",
    "JobPage",
    "QueueSummary",
    "discover_queues",
    "job_detail",
    "list_jobs",
    "queue_summaries",
    "search_jobs",
    "trace_id_of",
]

SPARK_MINUTES: Final = 30
WAIT_SAMPLE: Final = 100
STATES: Final = tuple(s.value for s in JobState if s is not JobState.UNKNOWN)
ORDERS: Final = ("newest", "oldest")
MAX_PER_PAGE: Final = 1000

_GET_STATS = load_script("get_stats")
_GET_JOB = load_script("get_job")
_SETS: Final = {
    "waiting": "wait",
    "active": "active",
    "delayed": "delayed",
    "completed": "completed",
    "failed": "failed",
    "waiting_children": "children",
}
_NEWEST_FIRST: Final = ("completed", "failed")  # get_jobs.lua reads these with ZREVRANGE
_SCAN_CHUNK: Final = 500
_MAX_FLOW_DEPTH: Final = 32  # parents followed up to a flow's root
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TIMEOUT: Final = 10.0  # an overview's two round trips, however many queues


@dataclass(frozen=True, slots=True)
class QueueSummary:
    name: str
    counts: dict[str, int]  # every JobState except unknown
    paused: bool
    oldest_waiting_age: float | None  # seconds
    workers: int  # live workers
    completed_per_minute: list[int]  # last SPARK_MINUTES minutes, oldest first
    failed_per_minute: list[int]
    failure_rate: float | None  # failed / (completed + failed) over that window
    wait_p95: float | None  # seconds, over the last WAIT_SAMPLE completed jobs


@dataclass(frozen=True, slots=True)
class JobPage:
    queue: str
    state: str
    jobs: list[Job]
    total: int
    page: int
    per_page: int
    order: str

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: Job
    logs: list[str]
    flow: FlowJob | None
    scheduler: SchedulerInfo | None
    trace_id: str | None  # from the job's traceparent header, if any


# ----- the overview


async def queue_summaries(
    client: AsyncClient, prefix: str, names: Sequence[str]
) -> list[QueueSummary]:
    """One summary per queue, in the order of ``names``, in two pipelined round trips
    whatever their number."""
    if not names:
        return []
    keys = [QueueKeys(name, prefix) for name in names]
    with redis_errors("queue_summaries", _TIMEOUT):
        async with asyncio.timeout(_TIMEOUT):
            first = [("TIME",)] + [("ZREVRANGE", k["completed"], 0, WAIT_SAMPLE - 1) for k in keys]
            now_reply, *samples = await _pipeline(client, first)
            now = int(now_reply[0]) * 1000 + int(now_reply[1]) // 1000
            commands: list[tuple[Any, ...]] = []
            for k, ids in zip(keys, samples, strict=True):
                commands += _summary_commands(k, now, ids)
            replies = iter(await _pipeline(client, commands))
    return [_summary(name, replies, bool(ids)) for name, ids in zip(names, samples, strict=True)]


def _summary_commands(keys: QueueKeys, now: int, sample: list[bytes]) -> list[tuple[Any, ...]]:
    stats = _GET_STATS
    commands: list[tuple[Any, ...]] = [
        ("EVALSHA", stats.sha, len(stats.keys), *keys.select(stats.keys)),
        ("HGET", keys["meta"], "paused"),  # what is_paused reads (get_settings.lua)
        # Live workers: a heartbeat expiry (score) still ahead, as get_workers.lua counts
        # them, without its clean-up writes.
        ("ZCOUNT", keys["workers"], f"({now}", "+inf"),
    ]
    for state in ("completed", "failed"):
        for low, high in _minutes(now):
            commands.append(("ZCOUNT", keys[state], low, high))
    if sample:
        commands.append(("HMGET", keys["state"], *sample))
    return commands


def _minutes(now: int) -> list[tuple[int, str]]:
    """ZCOUNT bounds of the last SPARK_MINUTES minutes ending at ``now``, oldest first; the
    newest is open-ended so that a job finished in the same millisecond counts."""
    bounds = []
    for age in range(SPARK_MINUTES, 0, -1):
        high = "+inf" if age == 1 else f"({now - (age - 1) * 60_000}"
        bounds.append((now - age * 60_000, high))
    return bounds


def _summary(name: str, replies: Any, sampled: bool) -> QueueSummary:
    stats: QueueStats = parse_stats(next(replies))
    paused = next(replies) in (b"1", "1")
    workers = int(next(replies))
    completed = [int(next(replies)) for _ in range(SPARK_MINUTES)]
    failed = [int(next(replies)) for _ in range(SPARK_MINUTES)]
    finished = sum(completed) + sum(failed)
    return QueueSummary(
        name=name,
        counts=stats.counts,
        paused=paused,
        oldest_waiting_age=stats.oldest_waiting_age,
        workers=workers,
        completed_per_minute=completed,
        failed_per_minute=failed,
        failure_rate=sum(failed) / finished if finished else None,
        wait_p95=_wait_p95(next(replies)) if sampled else None,
    )


def _wait_p95(records: list[bytes | None]) -> float | None:
    """The 95th percentile (nearest rank) of the time each job waited before its last
    start: from when it became ready (``rdy``: due, recovered, retried) or was enqueued
    (``ts``) to when it last started (``pon``)."""
    waits = []
    for raw in records:
        if raw is None:  # trimmed by retention since the sample was read
            continue
        try:
            record = orjson.loads(raw)
            started, ready = record.get("pon"), record.get("rdy", record.get("ts"))
            if isinstance(started, int | float) and isinstance(ready, int | float):
                waits.append(max(0.0, (started - ready) / 1000))
        except (orjson.JSONDecodeError, AttributeError):
            continue  # a corrupt record: the worker that meets it quarantines it
    if not waits:
        return None
    waits.sort()
    return waits[math.ceil(0.95 * len(waits)) - 1]


async def _pipeline(client: AsyncClient, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one round trip. Should Redis have forgotten a script (a
    restart), it is loaded and the whole batch sent again: every command here only reads."""
    for retry in (False, True):
        replies = await send_commands(client, commands)
        forgotten = {c[1] for c, r in zip(commands, replies, strict=True) if _is_noscript(r)}
        if forgotten and not retry:
            for script in (_GET_STATS, _GET_JOB):
                if script.sha in forgotten:
                    await client.script_load(script.source)
            continue
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
    raise AssertionError("unreachable")


def _is_noscript(reply: object) -> bool:
    return isinstance(reply, NoScriptError)


# ----- a queue's jobs


async def list_jobs(
    queue: Queue, state: str, *, page: int = 1, per_page: int = 50, order: str = "newest"
) -> JobPage:
    """One page of a state's jobs, read as a range of its set (never the whole set)."""
    state_names([state])
    if order not in ORDERS:
        raise InvalidOptionError(f"order must be one of {list(ORDERS)}, not {order!r}")
    check_int(page, "page", 1, 10**9)
    check_int(per_page, "per_page", 1, MAX_PER_PAGE)
    start, end = (page - 1) * per_page, page * per_page - 1
    natural = "newest" if state in _NEWEST_FIRST else "oldest"
    if order == natural:
        counts, jobs = await asyncio.gather(queue.get_counts(), queue.get_jobs(state, start, end))
    else:  # the same positions counted from the set's other end, read back to front
        counts, jobs = await asyncio.gather(
            queue.get_counts(), queue.get_jobs(state, -end - 1, -start - 1)
        )
        jobs.reverse()  # past the set's start, Redis returns nothing: no page past the end
    return JobPage(queue.name, state, jobs, counts[state], page, per_page, order)


async def search_jobs(
    queue: Queue,
    state: str | None,
    text: str,
    *,
    limit: int = 50,
    scan_limit: int = 10_000,
) -> list[Job]:
    """The job whose id is ``text`` (in any state), then jobs of ``state`` (every state if
    None) whose name contains ``text``, ignoring case, newest first: at most ``limit``
    jobs, looking at most ``scan_limit`` ids of the state set(s) in all."""
    states = list(STATES) if state is None else state_names([state])
    text = text.strip()
    if not text:
        return []
    found = await _read_jobs(queue, [text])
    needle = text.casefold()
    ids: list[str] = []
    budget = scan_limit
    for name in states:
        if len(found) + len(ids) >= limit or budget <= 0:
            break
        budget = await _scan_names(
            queue, _SETS[name], needle, budget=budget, wanted=limit - len(found), ids=ids
        )
    found += await _read_jobs(queue, [job_id for job_id in ids if job_id != text])
    return found[:limit]


async def _scan_names(
    queue: Queue, set_name: str, needle: str, *, budget: int, wanted: int, ids: list[str]
) -> int:
    """Walk one state set newest first, a chunk at a time, adding to ``ids`` the jobs whose
    name holds ``needle``, up to ``wanted``; returns the budget left. Only each envelope's
    header line is parsed (HMGET still reads the data with it: envelopes are one field)."""
    client, keys = queue.client, queue.keys
    start = 0
    while budget > 0 and len(ids) < wanted:
        size = min(_SCAN_CHUNK, budget)
        with redis_errors("search_jobs", queue.redis_timeout):
            chunk: list[bytes] = await client.execute_command(
                "ZREVRANGE", keys[set_name], start, start + size - 1
            )
            if not chunk:
                break
            envelopes: list[bytes | None] = await client.execute_command(
                "HMGET", keys["jobs"], *chunk
            )
        for raw_id, envelope in zip(chunk, envelopes, strict=True):
            if envelope is not None and needle in _name_of(envelope).casefold():
                ids.append(raw_id.decode())
                if len(ids) >= wanted:
                    break
        budget -= len(chunk)
        start += len(chunk)
        if len(chunk) < size:
            break
    return budget


def _name_of(envelope: bytes) -> str:
    try:
        name = orjson.loads(envelope.partition(b"\n")[0]).get("name")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""


async def _read_jobs(queue: Queue, ids: Sequence[str]) -> list[Job]:
    """The jobs of ``ids`` that exist, in one round trip (get_job.lua, pipelined); a job
    that cannot be read comes back with ``read_error`` set, as in a listing."""
    if not ids:
        return []
    script: LuaScript = _GET_JOB
    keys = queue.keys.select(script.keys)
    commands = [("EVALSHA", script.sha, len(keys), *keys, job_id) for job_id in ids]
    with redis_errors("get_job", queue.redis_timeout):
        replies = await _pipeline(queue.client, commands)
    return [
        snapshot_to_job(queue.name, job_id, snapshot, queue.serializer, queue, lenient=True)
        for job_id, snapshot in zip(ids, replies, strict=True)
        if snapshot
    ]


# ----- one job


async def job_detail(queue: Queue, job_id: str) -> JobDetail | None:
    """A job with its logs, its flow (from the flow's root, when it is in one), its
    scheduler (a scheduled run) and its trace id; None if it does not exist."""
    found = await _read_jobs(queue, [job_id])
    if not found:
        return None
    job = found[0]

    async def scheduler() -> SchedulerInfo | None:
        return await queue.get_scheduler(job.scheduler_id) if job.scheduler_id else None

    logs, children, info = await asyncio.gather(
        queue.get_logs(job), queue.get_dependencies(job), scheduler()
    )
    flow = await _flow(queue, job) if job.parent is not None or children else None
    return JobDetail(job, logs, flow, info, trace_id_of(job.headers.get("traceparent")))


async def _flow(queue: Queue, job: Job) -> FlowJob | None:
    """The whole flow a job is in: its parents are followed up to the root (or to the
    last one that still exists), whose tree is read."""
    root = JobRef(queue.name, job.id)
    parent = job.parent
    siblings: dict[str, Queue] = {queue.name: queue}
    try:
        for _ in range(_MAX_FLOW_DEPTH):
            if parent is None:
                break
            above = await _on(queue, parent.queue, siblings).get_job(parent.id)
            if above is None:
                break
            root, parent = parent, above.parent
        return await _on(queue, root.queue, siblings).get_flow(root.id)
    finally:
        for name, sibling in siblings.items():
            if name != queue.name:
                await sibling.close()  # the client is queue's: closing leaves it open


def _on(queue: Queue, name: str, siblings: dict[str, Queue]) -> Queue:
    if name not in siblings:
        sibling = Queue(
            name,
            redis=queue.client,
            prefix=queue.keys.prefix,
            serializer=queue.serializer,
            redis_timeout=queue.redis_timeout,
        )
        sibling._checked = queue._checked  # the server and scripts were checked: same client
        siblings[name] = sibling
    return siblings[name]


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (version-traceid-spanid-flags), or None when
    it is absent, malformed, of the forbidden version ff, or all zeros."""
    if not traceparent:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or match[1] == "ff" or match[2] == "0" * 32 or match[3] == "0" * 16:
        return None
    return match[2]
