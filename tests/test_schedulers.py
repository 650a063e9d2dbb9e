"""Job schedulers against real Redis and real workers: runs on the grid, limit, end, start,
remove, upsert while running, catch-up after a downtime, paused queues, cron ticks across
DST (a pure function with an injected clock), refills of cron ticks, bad input, events,
hooks and Redis Cluster. The process-level test (three worker processes, a SIGKILL) is
tests/chaos/test_scheduler_kill.py."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis.asyncio
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from queue_core import (
    Hook,
    InvalidOptionError,
    InvalidScheduleError,
    Job,
    JobOptions,
    OperationEvent,
    Queue,
    SchedulerInfo,
    SyncQueue,
    Worker,
)
from queue_core.schedulers import REFILL_BELOW, TICKS, cron_ticks
from tests.conftest import wait_for
from tests.redis_server import RedisCluster

PARIS = ZoneInfo("Europe/Paris")


def _ms(moment: datetime | None) -> int:
    assert moment is not None
    return round(moment.timestamp() * 1000)


class Runs:
    """A processor that records each run it gets."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    async def __call__(self, job: Job) -> str:
        self.jobs.append(job)
        return job.id

    @property
    def dues(self) -> list[int]:
        return [_ms(job.scheduled_for) for job in self.jobs]


async def _scheduled_jobs(queue: Queue) -> list[Job]:
    jobs = await queue.get_jobs(["waiting", "delayed", "active"])
    return [job for job in jobs if job.scheduler_id is not None]


async def _dump(raw: redis.asyncio.Redis, queue: str) -> dict[bytes, Any]:
    dump = {}
    for key in await raw.keys(f"*{{{queue}}}*"):
        dump[key] = await raw.dump(key)
    return dump


async def test_every_runs_on_its_grid(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    info = await queue.upsert_scheduler("tick", every=0.2, data={"n": 1})
    assert info.pending_job_id == f"sched:tick:{_ms(info.next_run_at)}"
    runs = Runs()
    worker = make_worker(runs)
    await worker.__aenter__()  # closed by the fixture
    await wait_for(lambda: len(runs.jobs) >= 5)
    first = runs.dues[0]
    assert all((due - first) % 200 == 0 for due in runs.dues)
    assert runs.dues == sorted(set(runs.dues))
    job = runs.jobs[1]
    assert job.scheduler_id == "tick" and job.name == "tick" and job.data == {"n": 1}
    assert job.id == f"sched:tick:{_ms(job.scheduled_for)}"
    assert job.started_at is not None and job.scheduled_for is not None
    assert job.started_at >= job.scheduled_for
    assert len(await _scheduled_jobs(queue)) <= 2  # the pending run, and one running


async def test_limit_stops_after_that_many_runs(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    await queue.upsert_scheduler("three", every=0.05, limit=3)
    runs = Runs()
    await make_worker(runs).__aenter__()  # closed by the fixture
    await wait_for(lambda: len(runs.jobs) == 3)
    await asyncio.sleep(0.3)
    assert len(runs.jobs) == 3
    info = await queue.get_scheduler("three")
    assert info is not None and info.count == 3 and info.next_run_at is None
    assert await _scheduled_jobs(queue) == []


async def test_end_bounds_the_runs(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    end = datetime.now(UTC) + timedelta(seconds=0.5)
    await queue.upsert_scheduler("ends", every=0.1, end=end)
    runs = Runs()
    await make_worker(runs).__aenter__()  # closed by the fixture
    await wait_for(lambda: bool(runs.jobs))
    await asyncio.sleep(0.8)
    assert 2 <= len(runs.jobs) <= 6  # ticks at 0, 0.1 ... 0.5 s; a slow fetch skips some
    assert all(due <= _ms(end) for due in runs.dues)
    info = await queue.get_scheduler("ends")
    assert info is not None and info.pending_job_id is None
    assert await _scheduled_jobs(queue) == []


async def test_start_in_the_future(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    start = datetime.now(UTC) + timedelta(seconds=0.6)
    info = await queue.upsert_scheduler("later", every=0.1, start=start)
    assert info.next_run_at == datetime.fromtimestamp(_ms(start) / 1000, UTC)
    runs = Runs()
    await make_worker(runs).__aenter__()  # closed by the fixture
    await wait_for(lambda: len(runs.jobs) >= 2)
    assert runs.dues[0] == _ms(start)
    assert all((due - _ms(start)) % 100 == 0 for due in runs.dues)
    first = runs.jobs[0]
    assert first.started_at is not None and first.started_at >= start - timedelta(milliseconds=1)


async def test_remove_stops_it_and_removes_its_pending_run(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    await queue.upsert_scheduler("gone", every=0.1)
    runs = Runs()
    worker = make_worker(runs)
    await worker.__aenter__()  # closed by the fixture
    await wait_for(lambda: len(runs.jobs) >= 2)
    pending = (await queue.get_scheduler("gone")).pending_job_id  # type: ignore[union-attr]
    assert pending is not None
    assert await queue.remove_scheduler("gone") is True
    assert await queue.get_scheduler("gone") is None
    assert await queue.get_job(pending) is None or pending in {j.id for j in runs.jobs}
    await asyncio.sleep(0.1)
    count = len(runs.jobs)
    await asyncio.sleep(0.4)
    assert len(runs.jobs) == count
    assert await _scheduled_jobs(queue) == []
    assert await queue.remove_scheduler("gone") is False


async def test_remove_takes_a_delayed_pending_run(queue: Queue) -> None:
    info = await queue.upsert_scheduler("idle", every=60, start=_later(30))
    assert info.pending_job_id is not None
    assert await queue.get_job(info.pending_job_id) is not None
    assert await queue.remove_scheduler("idle") is True
    assert await queue.get_job(info.pending_job_id) is None
    assert (await queue.get_counts())["delayed"] == 0


def _later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_upsert_while_running_changes_the_period_without_an_extra_run(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    await queue.upsert_scheduler("period", every=0.2)
    runs = Runs()
    await make_worker(runs).__aenter__()  # closed by the fixture
    await wait_for(lambda: len(runs.jobs) >= 3)
    before = len(runs.jobs)
    old_pending = await queue.get_scheduler("period")
    info = await queue.upsert_scheduler("period", every=0.5)
    assert info.every == timedelta(seconds=0.5)
    pending = await _scheduled_jobs(queue)
    assert [job.id for job in pending if job.state == "delayed"] == [info.pending_job_id]
    new_grid = _ms(info.next_run_at)
    await wait_for(lambda: len([due for due in runs.dues if due >= new_grid]) >= 3, timeout=5)
    # The new config's first run replaces the old pending one, at its time (unless that
    # was taken just before the upsert): no run of the old grid is left behind, but one
    # already taken, and the later ones are 0.5 s apart.
    assert old_pending is not None
    first = _ms(info.next_run_at)
    if info.pending_job_id != old_pending.pending_job_id:  # taken before the upsert
        assert first > _ms(old_pending.next_run_at)
    assert len([due for due in runs.dues[before:] if due < first]) <= 1
    after = [due for due in runs.dues if due >= first]
    assert after[0] == first
    assert [b - a for a, b in itertools.pairwise(after)] == [500] * (len(after) - 1)
    assert len(runs.dues) == len(set(runs.dues))


async def test_upsert_again_keeps_the_grid_and_the_pending_run(queue: Queue) -> None:
    first = await queue.upsert_scheduler("same", every=60, data=1)
    again = await queue.upsert_scheduler("same", every=60, data=2)
    assert again.pending_job_id == first.pending_job_id and again.count == 1
    job = await queue.get_job(first.pending_job_id or "")
    assert job is not None and job.data == 2 and job.state == "delayed"
    assert (await queue.get_counts())["delayed"] == 1


@pytest.mark.parametrize("catch_up", [False, True])
async def test_catch_up_after_a_downtime(
    queue: Queue, make_worker: Callable[..., Worker], catch_up: bool
) -> None:
    info = await queue.upsert_scheduler("down", every=0.1, catch_up=catch_up)
    first = _ms(info.next_run_at)
    await asyncio.sleep(0.75)  # no worker for 7 periods
    restart = _ms(datetime.now(UTC))
    assert (await queue.get_counts())["delayed"] + (await queue.get_counts())["waiting"] == 1
    runs = Runs()
    await make_worker(runs).__aenter__()  # closed by the fixture
    await wait_for(lambda: len(runs.jobs) >= 10)
    missed = [due for due in runs.dues if due < restart]
    assert runs.dues[0] == first
    if catch_up:  # every missed tick ran, one after the other
        assert runs.dues[:8] == [first + 100 * k for k in range(8)]
        assert len(missed) >= 7
    else:  # one run for the whole downtime, then the grid goes on from now
        assert missed == [first]
        assert runs.dues[1] > restart - 100
    assert all((due - first) % 100 == 0 for due in runs.dues)
    assert len(runs.dues) == len(set(runs.dues))


async def test_a_paused_queue_does_not_accumulate_runs(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    await queue.pause()
    await queue.upsert_scheduler("paused", every=0.05)
    runs = Runs()
    await make_worker(runs).__aenter__()  # closed by the fixture
    await asyncio.sleep(0.6)
    assert runs.jobs == []
    assert len(await _scheduled_jobs(queue)) == 1
    await queue.resume()
    await wait_for(lambda: len(runs.jobs) >= 3)
    assert len(runs.dues) == len(set(runs.dues))


# ----- cron: the ticks, computed with an injected clock


def _local(ticks: list[int]) -> list[str]:
    return [datetime.fromtimestamp(t / 1000, PARIS).strftime("%m-%d %H:%M %Z") for t in ticks]


def test_cron_daily_across_spring_forward() -> None:
    # 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day; it runs at
    # 03:00, right after the jump (Debian cron's rule), once.
    ticks = cron_ticks("30 2 * * *", "Europe/Paris", datetime(2026, 3, 27, 12, tzinfo=UTC), 4)
    assert _local(ticks) == [
        "03-28 02:30 CET",
        "03-29 03:00 CEST",
        "03-30 02:30 CEST",
        "03-31 02:30 CEST",
    ]


def test_cron_daily_across_fall_back() -> None:
    # 2026-10-25 03:00 CEST goes back to 02:00 CET: 02:30 happens twice; it runs once.
    ticks = cron_ticks("30 2 * * *", "Europe/Paris", datetime(2026, 10, 23, 12, tzinfo=UTC), 4)
    assert _local(ticks) == [
        "10-24 02:30 CEST",
        "10-25 02:30 CEST",
        "10-26 02:30 CET",
        "10-27 02:30 CET",
    ]


def test_cron_hourly_across_both_transitions() -> None:
    # Hourly runs once per real hour: 23 local hours on the spring day, 25 in the fall.
    spring = cron_ticks("0 * * * *", "Europe/Paris", datetime(2026, 3, 28, 23, tzinfo=UTC), 24)
    assert _local(spring)[:3] == ["03-29 01:00 CET", "03-29 03:00 CEST", "03-29 04:00 CEST"]
    fall = cron_ticks("0 * * * *", "Europe/Paris", datetime(2026, 10, 24, 22, 30, tzinfo=UTC), 24)
    assert _local(fall)[:4] == [
        "10-25 01:00 CEST",
        "10-25 02:00 CEST",
        "10-25 02:00 CET",
        "10-25 03:00 CET",
    ]
    for ticks in (spring, fall):
        assert {b - a for a, b in itertools.pairwise(ticks)} == {3_600_000}


async def test_cron_scheduler_runs_and_refills_its_ticks(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    info = await queue.upsert_scheduler("minutely", cron="* * * * *", tz="Europe/Paris")
    assert info.cron == "* * * * *" and info.tz == "Europe/Paris" and info.every is None
    assert _ms(info.next_run_at) % 60_000 == 0
    key = queue.keys["schedulers"]
    config = orjson.loads(await raw.hget(key, "c:minutely"))
    assert len(config["ticks"]) >= TICKS - 2
    # Leave it 2 ticks, then run its pending run now: the worker that takes it refills.
    config["ticks"] = config["ticks"][:2]
    config["last"] = config["ticks"][-1]
    await raw.hset(key, "c:minutely", orjson.dumps(config))
    runs = Runs()
    await make_worker(runs).__aenter__()  # closed by the fixture
    await queue.promote_job(info.pending_job_id or "")
    await wait_for(lambda: len(runs.jobs) == 1)

    async def refilled() -> bool:
        ticks = orjson.loads(await raw.hget(key, "c:minutely"))["ticks"]
        return len(ticks) > REFILL_BELOW

    await wait_for(refilled)
    after = await queue.get_scheduler("minutely")
    assert after is not None and after.count == 2
    # The stored ticks follow the pending run's: the next run is the first of the two left,
    # and the refill carried on after the second, every minute.
    assert _ms(after.next_run_at) == config["ticks"][0]
    ticks = orjson.loads(await raw.hget(key, "c:minutely"))["ticks"]
    assert ticks[0] == config["ticks"][1]
    assert [b - a for a, b in itertools.pairwise(ticks)] == [60_000] * (len(ticks) - 1)


async def test_a_cron_scheduler_out_of_ticks_resumes_at_the_refill(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    info = await queue.upsert_scheduler("starved", cron="*/5 * * * *")
    key = queue.keys["schedulers"]
    config = orjson.loads(await raw.hget(key, "c:starved"))
    config["ticks"] = []
    config["last"] = _ms(info.next_run_at)
    await raw.hset(key, "c:starved", orjson.dumps(config))
    runs = Runs()
    await make_worker(runs).__aenter__()  # closed by the fixture
    await queue.promote_job(info.pending_job_id or "")
    await wait_for(lambda: len(runs.jobs) == 1)

    async def resumed() -> bool:
        current = await queue.get_scheduler("starved")
        return current is not None and current.pending_job_id is not None

    await wait_for(resumed)
    current = await queue.get_scheduler("starved")
    assert current is not None
    assert _ms(current.next_run_at) == _ms(info.next_run_at) + 300_000


# ----- bad input, reads, twins, events


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cron": "61 * * * *"},
        {"cron": "* * * *"},
        {"cron": "* * * * * *"},
        {"cron": "0 0 * * *", "tz": "Mars/Olympus"},
        {"cron": "0 0 * * *", "tz": ""},
        {"every": 1, "cron": "* * * * *"},
        {},
        {"every": 0},
        {"every": -1},
        {"every": "1s"},
        {"every": 1, "tz": "UTC"},
        {"every": 1, "start": datetime(2030, 1, 1)},
        {"every": 1, "start": _later(10), "end": _later(5)},
        {"every": 1, "limit": 0},
        {"every": 1, "catch_up": 1},
        {"every": 1, "options": JobOptions(job_id="fixed")},
        {"every": 1, "options": JobOptions(delay=3)},
    ],
)
async def test_bad_schedules_are_refused_and_write_nothing(
    queue: Queue, raw: redis.asyncio.Redis, kwargs: dict[str, Any]
) -> None:
    await queue.upsert_scheduler("kept", every=5)
    before = await _dump(raw, queue.name)
    with pytest.raises(InvalidScheduleError):
        await queue.upsert_scheduler("kept", **kwargs)
    with pytest.raises(InvalidScheduleError):
        await queue.upsert_scheduler("new", **kwargs)
    assert await _dump(raw, queue.name) == before


async def test_a_bad_job_name_is_refused_like_an_add(queue: Queue) -> None:
    with pytest.raises(InvalidOptionError):
        await queue.upsert_scheduler("x", every=1, name="{braces}")
    with pytest.raises(InvalidScheduleError):
        await queue.upsert_scheduler("{braces}", every=1)
    assert await queue.get_schedulers() == []


async def test_get_schedulers_fields(queue: Queue) -> None:
    start, end = _later(60), _later(30 * 86_400)
    options = JobOptions(priority=5, attempts=3)
    await queue.upsert_scheduler(
        "report", cron="0 8 * * 1", tz="Europe/Paris", name="weekly", data={"k": 1},
        options=options, limit=10, start=start, end=end, catch_up=True,
    )  # fmt: skip
    await queue.upsert_scheduler("poll", every=timedelta(seconds=30))
    found = {info.id: info for info in await queue.get_schedulers()}
    assert set(found) == {"report", "poll"}
    report = found["report"]
    assert isinstance(report, SchedulerInfo)
    assert (report.name, report.data, report.options) == ("weekly", {"k": 1}, options)
    assert (report.cron, report.tz, report.every) == ("0 8 * * 1", "Europe/Paris", None)
    assert (report.limit, report.catch_up, report.count) == (10, True, 1)
    assert report.start == datetime.fromtimestamp(_ms(start) / 1000, UTC)
    assert report.end == datetime.fromtimestamp(_ms(end) / 1000, UTC)
    assert report.next_run_at is not None
    local = report.next_run_at.astimezone(PARIS)
    assert (local.weekday(), local.hour, local.minute) == (0, 8, 0)
    poll = found["poll"]
    assert (poll.every, poll.cron, poll.tz, poll.limit, poll.catch_up) == (
        timedelta(seconds=30), None, "UTC", None, False,
    )  # fmt: skip
    assert poll.name == "poll" and poll.data is None
    job = await queue.get_job(report.pending_job_id or "")
    assert job is not None and job.options.priority == 5 and job.scheduler_id == "report"
    assert job.scheduled_for == report.next_run_at
    assert await queue.get_scheduler("missing") is None


def test_sync_queue_twins(queue_name: str, redis_url: str) -> None:
    with SyncQueue(queue_name, redis=redis_url) as queue:
        info = queue.upsert_scheduler("sync", every=60, data="x")
        assert info.every == timedelta(seconds=60) and info.data == "x"
        assert queue.get_scheduler("sync") == info
        assert queue.get_schedulers() == [info]
        with pytest.raises(InvalidScheduleError):
            queue.upsert_scheduler("sync", cron="nope")
        assert queue.remove_scheduler("sync") is True
        assert queue.get_scheduler("sync") is None
        assert queue.get_counts()["delayed"] == 0


async def test_events_of_schedulers(
    queue: Queue, raw: redis.asyncio.Redis, make_worker: Callable[..., Worker]
) -> None:
    await queue.upsert_scheduler("ev", every=0.1)
    runs = Runs()
    await make_worker(runs).__aenter__()  # closed by the fixture
    await wait_for(lambda: len(runs.jobs) >= 2)
    await queue.upsert_scheduler("ev", every=0.2)
    await queue.remove_scheduler("ev")
    entries = await raw.xrange(queue.keys["events"])
    events = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
    upserted = [e for e in events if e["event"] == "scheduler_upserted"]
    assert [e["replaced"] for e in upserted] == ["0", "1"]
    assert [e for e in events if e["event"] == "scheduler_removed"] == [
        {"event": "scheduler_removed", "scheduler": "ev"}
    ]
    scheduled = [e for e in events if e["event"] == "scheduled"]
    assert len(scheduled) >= 3
    for event in scheduled:
        assert event["scheduler"] == "ev" and event["id"] == f"sched:ev:{event['due']}"


async def test_obliterate_deletes_the_schedulers(queue: Queue, raw: redis.asyncio.Redis) -> None:
    await queue.upsert_scheduler("doomed", every=60)
    await queue.obliterate()
    assert await raw.exists(queue.keys["schedulers"]) == 0
    assert await queue.get_schedulers() == []


async def test_operator_hooks_see_scheduler_actions(queue_name: str, redis_url: str) -> None:
    seen: list[tuple[str, int | None, str | None]] = []

    class Record(Hook):
        @contextmanager
        def around_operation(self, event: OperationEvent) -> Iterator[None]:
            try:
                yield
            finally:
                error = type(event.error).__name__ if event.error else None
                seen.append((event.operation, event.count, error))

    async with Queue(queue_name, redis=redis_url, hooks=[Record()]) as queue:
        await queue.upsert_scheduler("hooked", every=60)
        await queue.get_schedulers()  # a read: no hook
        assert await queue.remove_scheduler("hooked") is True
        assert await queue.remove_scheduler("hooked") is False
    assert seen == [
        ("upsert_scheduler", 1, None),
        ("remove_scheduler", 1, None),
        ("remove_scheduler", 0, None),
    ]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    local = RedisCluster(masters=3)
    try:
        local.start()
        yield local
    finally:
        local.cleanup()


async def test_schedulers_on_redis_cluster(cluster: RedisCluster) -> None:
    nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
    client = AsyncRedisCluster(startup_nodes=nodes, decode_responses=False)
    runs = Runs()
    try:
        queue = Queue(f"cq-{uuid.uuid4().hex[:10]}", redis=client)
        # catch_up: on a loaded machine a run may start a tick late; every tick still runs.
        await queue.upsert_scheduler("every", every=0.1, limit=3, catch_up=True)
        await queue.upsert_scheduler("cron", cron="0 0 1 1 *", tz="Asia/Tokyo")
        async with Worker(queue.name, runs, redis=client, drain_delay=1.0):
            await wait_for(lambda: len(runs.jobs) == 3)
        assert [info.id for info in await queue.get_schedulers()] == ["cron", "every"]
        assert runs.dues == [runs.dues[0] + 100 * k for k in range(3)]
        assert await queue.remove_scheduler("cron") is True
        await queue.close()
    finally:
        await client.aclose()


async def test_changing_a_cron_expression_does_not_wait_for_the_old_run(queue: Queue) -> None:
    yearly = await queue.upsert_scheduler("report", cron="0 0 1 1 *")
    often = await queue.upsert_scheduler("report", cron="*/15 * * * *")
    assert often.next_run_at is not None and yearly.next_run_at is not None
    assert often.next_run_at - datetime.now(UTC) <= timedelta(minutes=15)
    assert often.count == 1 and (await queue.get_counts())["delayed"] == 1
    assert await queue.get_job(yearly.pending_job_id or "") is None
