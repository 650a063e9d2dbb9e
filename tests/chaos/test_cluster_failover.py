"""A Redis Cluster master dies under load (SIGKILL) and its replica takes over.

Three masters with a replica each; three queues A, B and C whose hash tags land on three
different masters. Workers for all three run in this process and share one
``redis.asyncio.cluster.RedisCluster`` client (the producer has its own). While jobs flow
into every queue, the master that serves A is killed. What must hold:

- no job is lost, none is stuck (waiting, active or delayed) once the dust settles;
- a job runs twice only if stalled recovery put it back (its worker lost contact with
  A's master mid-job); no worker slot crashes, no worker loop meets an unexpected error;
- B and C, whose masters are healthy, keep processing during A's outage: no pause longer
  than a second beyond the time Redis itself refused them (with Redis's default
  ``cluster-require-full-coverage yes`` every master answers CLUSTERDOWN from the moment
  the dead master is marked failed until its replica is promoted);
- once the replica is promoted, idle workers block in Redis normally again: after an idle
  spell longer than a blocking wait plus the worker's watchdog, no blocking call has
  overrun its timeout, and a new job is picked up within half a second.

Every check is evaluated and the failures are reported together, after a figures line
(which also shows how many jobs the producer managed to add to each queue during the
outage, and how long they waited to start), the Redis errors the workers logged, the
first error of each kind the producer met, and the tracebacks of worker crashes (``-s``
shows all this for passing runs too).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot

from queue_core import Hook, Job, JobEvent, Queue, Worker
from queue_core.keys import QueueKeys
from tests.log_capture import capture_logs
from tests.redis_server import RedisCluster

LETTERS = ("A", "B", "C")  # A's master is killed; B and C live on healthy masters
JOBS_PER_QUEUE = 500
PRODUCE_SECONDS = 10.0
KILL_AFTER = 3.0  # seconds into the production
JOB_SLEEP = 0.005
WORKER_OPTIONS: dict[str, Any] = {
    "concurrency": 5,
    "lock_duration": 2,
    "stalled_interval": 1,
    "shutdown_timeout": 5,
}
DRAIN_TIMEOUT = 25.0  # after the production, for every job to complete
# Longer than a worker's blocking wait (drain_delay, 5 s by default) plus its watchdog
# (3 s): an overrunning wait is reported as redis_blocking_call_stuck within it.
IDLE_SECONDS = 9.0
MAX_HEALTHY_PAUSE = 1.0  # seconds without a completion on B or C, beyond CLUSTERDOWN
MAX_PICKUP = 0.5  # seconds from an add to an idle worker starting the job
PICKUP_ROUNDS = 3
# An unexpected error in a worker: a slot that died (older engines), or a supervised loop
# that caught one (worker_loop_failed).
CRASH_EVENTS = ("worker_slot_crashed", "worker_loop_failed")


@pytest.fixture
def failover_cluster() -> Iterator[RedisCluster]:
    local = RedisCluster(masters=3, replicas=1)
    try:
        local.start()
        yield local
    finally:
        local.cleanup()


def cluster_client(cluster: RedisCluster) -> AsyncRedisCluster:
    nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
    return AsyncRedisCluster(startup_nodes=nodes, decode_responses=False)


@pytest.fixture
async def worker_client(failover_cluster: RedisCluster) -> AsyncIterator[AsyncRedisCluster]:
    client = cluster_client(failover_cluster)
    yield client
    await client.aclose()


@pytest.fixture
async def producer_client(failover_cluster: RedisCluster) -> AsyncIterator[AsyncRedisCluster]:
    client = cluster_client(failover_cluster)
    yield client
    await client.aclose()


def queues_on_three_masters(cluster: RedisCluster) -> dict[str, str]:
    """Letter -> a fresh queue name, each served by a different master."""
    ranges = cluster.slot_ranges()
    by_master: dict[int, str] = {}
    while len(by_master) < len(LETTERS):
        name = f"fo-{uuid.uuid4().hex[:10]}"
        slot = key_slot(QueueKeys(name)["wait"].encode())
        master = next(m for first, last, m, _ in ranges if first <= slot <= last)
        by_master.setdefault(master, name)
    return dict(zip(LETTERS, by_master.values(), strict=True))


def _list_map() -> MutableMapping[str, list[float]]:
    return defaultdict(list)


def _float_map() -> MutableMapping[str, float]:
    return defaultdict(float)


@dataclass
class Record:
    """What the processors, hooks and producers saw (time.monotonic() everywhere)."""

    starts: MutableMapping[str, list[float]] = field(default_factory=_list_map)
    added: dict[str, float] = field(default_factory=dict)  # job id -> when its add returned
    completed: MutableMapping[str, list[float]] = field(default_factory=_list_map)
    add_retries: Counter[str] = field(default_factory=Counter)
    add_errors: dict[str, str] = field(default_factory=dict)  # first traceback per kind
    add_latency: MutableMapping[str, float] = field(default_factory=_float_map)
    gave_up: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One failover under load, as observed: the input of the checks."""

    names: dict[str, str]  # letter -> queue name
    ids: dict[str, list[str]]  # letter -> job ids produced
    record: Record
    logs: list[MutableMapping[str, Any]]
    worker_letters: dict[str, str]  # worker id -> letter
    start: float = 0.0
    killed_at: float = 0.0
    promotion_s: float = 0.0
    down: tuple[float, float] | None = None  # when Redis reported the cluster down
    produced_at: float = 0.0
    drained: bool = False
    drain_s: float = 0.0
    settled: bool = False
    final_counts: dict[str, Any] = field(default_factory=dict)
    pickup: dict[str, float] = field(default_factory=dict)
    close_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def promoted_at(self) -> float:
        return self.killed_at + self.promotion_s

    def letter_of_queue(self, name: object) -> str:
        return {n: letter for letter, n in self.names.items()}.get(str(name), "-")


class CompletionHook(Hook):
    def __init__(self, record: Record) -> None:
        self.record = record

    def on_completed(self, event: JobEvent) -> None:
        self.record.completed[event.job.id].append(time.monotonic())


def processor(record: Record) -> Callable[[Job], Awaitable[None]]:
    async def process(job: Job) -> None:
        record.starts[job.id].append(time.monotonic())
        await asyncio.sleep(JOB_SLEEP)

    return process


def error_kind(exc: BaseException) -> str:
    """``Type`` or ``Type<-CauseType``: what reached the caller, and what redis-py raised."""
    cause = exc.__cause__ or exc.__context__
    return type(exc).__name__ + (f"<-{type(cause).__name__}" if cause is not None else "")


async def produce(queue: Queue, letter: str, ids: list[str], start: float, record: Record) -> None:
    """Add ``ids`` at a steady pace from ``start``; retry each add (same job_id, so the
    retry is idempotent) until it succeeds, for at most 30 s."""
    interval = PRODUCE_SECONDS / len(ids)
    for i, job_id in enumerate(ids):
        pause = start + i * interval - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        first_try = time.monotonic()
        while True:
            try:
                await queue.add("job", {"i": i}, job_id=job_id)
                record.added[job_id] = time.monotonic()
                break
            except Exception as exc:
                kind = f"{letter}:{error_kind(exc)}"
                record.add_retries[kind] += 1
                record.add_errors.setdefault(kind, "".join(traceback.format_exception(exc)))
                if time.monotonic() - first_try > 30:
                    record.gave_up.append(job_id)
                    break
                await asyncio.sleep(0.05)
        record.add_latency[letter] = max(record.add_latency[letter], time.monotonic() - first_try)


async def eventually(
    predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05
) -> bool:
    """Poll ``predicate`` (a Redis error counts as false) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await predicate():
                return True
        except Exception:  # noqa: S110 - a cluster mid-failover: ask again
            pass
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


async def nothing_pending(queues: Mapping[str, Queue]) -> bool:
    for queue in queues.values():
        counts = await queue.get_counts()
        if counts["waiting"] or counts["active"] or counts["delayed"]:
            return False
    return True


async def measure_pickup(run: Run, queues: Mapping[str, Queue]) -> None:
    """One job per queue at a time, timed from the add to its processor's start."""
    for round_ in range(PICKUP_ROUNDS):
        await asyncio.sleep(IDLE_SECONDS if round_ == 0 else 1.5)
        for letter, queue in queues.items():
            job_id = f"pickup-{letter}-{round_}"
            added = time.monotonic()
            try:
                await queue.add("pickup", {}, job_id=job_id)
            except Exception as exc:
                run.problems.append(f"pick-up add on {letter} failed: {error_kind(exc)}")
                continue

            async def started(job_id: str = job_id) -> bool:
                return job_id in run.record.starts

            if await eventually(started, 10, 0.002):
                latency = run.record.starts[job_id][0] - added
            else:
                latency = float("inf")
            run.pickup[letter] = max(run.pickup.get(letter, 0.0), latency)


async def fail_over_under_load(
    cluster: RedisCluster, run: Run, worker_client: AsyncRedisCluster, queues: dict[str, Queue]
) -> None:
    """Workers on the shared client, steady production, A's master killed mid-way; then
    drain, an idle spell and the pick-up rounds."""
    async with AsyncExitStack() as stack:
        workers = [
            Worker(
                name,
                processor(run.record),
                redis=worker_client,
                hooks=[CompletionHook(run.record)],
                **WORKER_OPTIONS,
            )
            for name in run.names.values()
        ]
        for letter, worker in zip(LETTERS, workers, strict=True):
            run.worker_letters[worker.id] = letter
            await stack.enter_async_context(worker)

        run.start = time.monotonic() + 0.2
        producers = [
            asyncio.create_task(produce(queues[x], x, run.ids[x], run.start, run.record))
            for x in LETTERS
        ]
        await asyncio.sleep(run.start + KILL_AFTER - time.monotonic())
        key_a = QueueKeys(run.names["A"])["wait"]
        killed = await asyncio.to_thread(cluster.kill_master_of, key_a)
        run.killed_at = cluster.killed_at[killed.port]
        slot_a = key_slot(key_a.encode())
        run.promotion_s = await asyncio.to_thread(cluster.wait_for_promotion, slot_a, 30.0)
        if cluster.down_since is not None:
            run.down = (cluster.down_since, cluster.down_until or run.promoted_at)
        await asyncio.gather(*producers)
        run.produced_at = time.monotonic()

        every_id = {job_id for batch in run.ids.values() for job_id in batch}

        async def all_completed() -> bool:
            return every_id <= run.record.completed.keys()

        run.drained = await eventually(all_completed, DRAIN_TIMEOUT)
        run.drain_s = time.monotonic() - run.produced_at

        # Stalled recovery needs lock_duration plus a stalled_interval at most.
        run.settled = await eventually(
            lambda: nothing_pending(queues), 2 * WORKER_OPTIONS["lock_duration"] + 4
        )
        for letter, queue in queues.items():
            try:
                run.final_counts[letter] = await queue.get_counts()
            except Exception as exc:
                run.final_counts[letter] = error_kind(exc)

        await measure_pickup(run, queues)

        closing = time.monotonic()
        for worker in workers:
            try:
                await asyncio.wait_for(worker.close(), 15)
            except TimeoutError:
                run.problems.append(f"worker {run.worker_letters[worker.id]} did not close")
                await worker.close(force=True)
        run.close_s = time.monotonic() - closing


def overlap(a: float, b: float, window: tuple[float, float] | None) -> float:
    if window is None:
        return 0.0
    return max(0.0, min(b, window[1]) - max(a, window[0]))


def longest_pause(
    times: list[float], start: float, end: float, down: tuple[float, float] | None
) -> tuple[float, float, float]:
    """The longest stretch in [start, end] without a time of ``times``, not counting the
    part of it Redis spent refusing commands (``down``): (that length, the raw length,
    where it began)."""
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max((b - a - overlap(a, b, down), b - a, a) for a, b in itertools.pairwise(points))


async def check_jobs(run: Run, queues: Mapping[str, Queue]) -> dict[str, Any]:
    """Lost, stuck, duplicated and crashed: the problems, and the figures."""
    record, logs = run.record, run.logs
    letter_of_job = {job_id: letter for letter, batch in run.ids.items() for job_id in batch}
    if record.gave_up:
        run.problems.append(f"{len(record.gave_up)} adds never succeeded: {record.gave_up[:5]}")
    lost = sorted(letter_of_job.keys() - record.completed.keys())
    if lost or not run.drained:
        where = {}
        for job_id in lost[:10]:
            try:
                job = await queues[letter_of_job[job_id]].get_job(job_id)
                where[job_id] = "absent from Redis" if job is None else job.state.value
            except Exception as exc:
                where[job_id] = f"unreadable: {error_kind(exc)}"
        run.problems.append(f"{len(lost)} jobs lost (never completed), e.g. {where}")
    if not run.settled:
        run.problems.append(f"jobs stuck in waiting/active/delayed: {run.final_counts}")

    requeued = {
        job_id
        for entry in logs
        if entry["event"] == "stalled_jobs_recovered"
        for job_id in [*entry.get("requeued", ()), *entry.get("failed", ())]
    }
    ran_twice = {job_id for job_id, runs in record.starts.items() if len(runs) > 1}
    unexplained = sorted(ran_twice - requeued)
    if unexplained:
        run.problems.append(
            f"{len(unexplained)} jobs ran twice without stalled recovery: {unexplained[:5]}"
        )
    hooked_twice = sorted(j for j, times in record.completed.items() if len(times) > 1)
    if hooked_twice:
        run.problems.append(f"{len(hooked_twice)} jobs completed twice: {hooked_twice[:5]}")
    crashes = [entry for entry in logs if entry["event"] in CRASH_EVENTS]
    if crashes:
        kinds = Counter(
            (
                run.worker_letters.get(str(e.get("worker_id")), "?"),
                str(e["event"]),
                type(e.get("exc_info")).__name__,
            )
            for e in crashes
        )
        run.problems.append(f"{len(crashes)} worker crashes (queue, event, error): {dict(kinds)}")
    return {
        "lost": len(lost),
        "duplicates": len(ran_twice),
        "stall_explained": len(ran_twice) - len(unexplained),
        "crashes": len(crashes),
    }


def check_healthy_queues(run: Run) -> dict[str, Any]:
    """B and C keep completing jobs while A's master is down."""
    completed = run.record.completed
    end = min(run.produced_at, max((t for ts in completed.values() for t in ts), default=0.0))
    pauses: dict[str, tuple[float, float, float]] = {}
    in_outage: dict[str, int] = {}
    added_in_outage: dict[str, int] = {}
    lag: dict[str, float] = {}  # the longest wait from an add to its start, in the outage
    for letter in LETTERS:
        times = [t for job_id in run.ids[letter] for t in completed.get(job_id, [])]
        pauses[letter] = longest_pause(times, min(times, default=run.start), end, run.down)
        in_outage[letter] = sum(run.killed_at <= t <= run.promoted_at for t in times)
        window = [
            job_id
            for job_id in run.ids[letter]
            if run.killed_at <= run.record.added.get(job_id, 0.0) <= run.promoted_at
        ]
        added_in_outage[letter] = len(window)
        lag[letter] = max(
            (
                run.record.starts[j][0] - run.record.added[j]
                for j in window
                if j in run.record.starts
            ),
            default=0.0,
        )
        if letter == "A":
            continue
        if in_outage[letter] == 0:
            run.problems.append(f"{letter} completed nothing between the kill and the promotion")
        excess, raw, at = pauses[letter]
        if excess > MAX_HEALTHY_PAUSE:
            run.problems.append(
                f"{letter} (healthy master) paused {raw:.2f}s from {at - run.killed_at:+.2f}s "
                f"after the kill, {excess:.2f}s of it while Redis reported the cluster ok"
            )
    return {
        "pauses": pauses,
        "in_outage": in_outage,
        "added_in_outage": added_in_outage,
        "lag": lag,
    }


def check_idle_workers(run: Run) -> dict[str, Any]:
    """After the promotion: no overrunning blocking call, a prompt pick-up."""
    stuck = [e for e in run.logs if e["event"] == "redis_blocking_call_stuck"]
    late = [e for e in stuck if e["t"] > run.promoted_at]
    if late:
        by_queue = Counter(run.letter_of_queue(e.get("queue")) for e in late)
        run.problems.append(
            f"{len(late)} redis_blocking_call_stuck after the promotion, by queue "
            f"{dict(sorted(by_queue.items()))}, from "
            f"{min(e['t'] for e in late) - run.promoted_at:+.1f}s after it"
        )
    slow = {letter: latency for letter, latency in run.pickup.items() if latency > MAX_PICKUP}
    if slow or len(run.pickup) < len(LETTERS):
        run.problems.append(f"idle pick-up after the failover is slow: {run.pickup}")
    return {"stuck": len(stuck), "stuck_late": len(late)}


def log_summary(run: Run) -> str:
    """Warning and error events by (event, queue, operation, error type), with when they
    happened relative to the kill, then one full message of each."""
    groups: dict[tuple[str, ...], list[float]] = defaultdict(list)
    messages: dict[tuple[str, ...], str] = {}
    for entry in run.logs:
        if entry.get("log_level") not in ("warning", "error"):
            continue
        error = str(entry.get("error", ""))
        queue = entry.get("queue")
        letter = (
            run.letter_of_queue(queue)
            if queue
            else run.worker_letters.get(str(entry.get("worker_id")), "-")
        )
        key = (str(entry["event"]), letter, str(entry.get("operation") or "-"), error[:40])
        groups[key].append(entry["t"] - run.killed_at)
        if error:
            messages.setdefault(key, error[:300])
    lines = [
        f"  {event} queue={letter} op={operation} x{len(times)} "
        f"[{min(times):+.2f}s .. {max(times):+.2f}s] {kind}"
        for (event, letter, operation, kind), times in sorted(groups.items())
    ]
    lines.append("first message of each:")
    lines += [f"  {' '.join(key[:3])}: {text}" for key, text in messages.items()]
    return "\n".join(lines)


def crash_tracebacks(logs: list[MutableMapping[str, Any]]) -> str:
    distinct: dict[str, str] = {}
    for entry in logs:
        exc = entry.get("exc_info")
        if entry["event"] in CRASH_EVENTS and isinstance(exc, BaseException):
            distinct.setdefault(repr(exc)[:120], "".join(traceback.format_exception(exc)))
    return "\n".join(distinct.values())


def report(run: Run, jobs: dict[str, Any], healthy: dict[str, Any], idle: dict[str, Any]) -> None:
    down = (
        f"{run.down[0] - run.killed_at:+.2f}s..{run.down[1] - run.killed_at:+.2f}s"
        if run.down
        else "not seen"
    )
    pauses = ",".join(
        f"{letter}:{raw:.2f}s@{at - run.killed_at:+.1f}(beyond down {excess:.2f}s)"
        for letter, (excess, raw, at) in healthy["pauses"].items()
    )
    record = run.record
    latency = record.add_latency
    print(
        f"\nFIGURES jobs={sum(map(len, run.ids.values()))} lost={jobs['lost']} "
        f"duplicates={jobs['duplicates']} (stall-explained {jobs['stall_explained']}) "
        f"promotion={run.promotion_s:.2f}s cluster_down={down} "
        f"drain_after_production={run.drain_s:.2f}s{'' if run.drained else '(timeout)'} "
        f"max_pause={pauses} "
        f"completions_in_outage={','.join(f'{k}:{v}' for k, v in healthy['in_outage'].items())} "
        f"adds_in_outage={','.join(f'{k}:{v}' for k, v in healthy['added_in_outage'].items())} "
        f"max_start_lag_in_outage={','.join(f'{k}:{v:.2f}s' for k, v in healthy['lag'].items())} "
        f"pickup_after_idle={','.join(f'{k}:{v:.3f}s' for k, v in run.pickup.items())} "
        f"add_retries={sum(record.add_retries.values())} "
        f"max_add_latency={','.join(f'{k}:{v:.2f}s' for k, v in sorted(latency.items()))} "
        f"blocking_stuck={idle['stuck']}(after promotion {idle['stuck_late']}) "
        f"crashes={jobs['crashes']} close={run.close_s:.2f}s"
    )
    print(f"add retries by kind: {dict(record.add_retries)}")
    print(f"worker warnings/errors, seconds from the kill (promotion +{run.promotion_s:.2f}s):")
    print(log_summary(run))
    for kind, text in record.add_errors.items():
        print(f"--- first add error {kind}:\n{text}")
    if jobs["crashes"]:
        print(f"--- worker crashes:\n{crash_tracebacks(run.logs)}")


@pytest.mark.chaos
async def test_master_failover_under_load(
    failover_cluster: RedisCluster,
    worker_client: AsyncRedisCluster,
    producer_client: AsyncRedisCluster,
) -> None:
    names = queues_on_three_masters(failover_cluster)
    ids = {
        letter: [f"{letter}-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(JOBS_PER_QUEUE)]
        for letter in LETTERS
    }
    queues = {letter: Queue(name, redis=producer_client) for letter, name in names.items()}

    def stamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
        event_dict["t"] = time.monotonic()
        return event_dict

    with capture_logs(processors=[stamp]) as logs:
        run = Run(names, ids, Record(), logs, {})
        await fail_over_under_load(failover_cluster, run, worker_client, queues)

    jobs = await check_jobs(run, queues)
    healthy = check_healthy_queues(run)
    idle = check_idle_workers(run)
    report(run, jobs, healthy, idle)
    if run.problems:
        pytest.fail("\n".join(run.problems), pytrace=False)
