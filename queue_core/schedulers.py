"""Job schedulers: recurring jobs that the workers drive, with no scheduler process.

The model (BullMQ's job schedulers, adapted):

- A scheduler's config is JSON in the queue's ``schedulers`` hash, field ``c:<id>``:
  ``every`` (ms) and ``anchor`` (the grid ``anchor + k * every``), or ``cron``, ``tz`` and
  ``ticks`` (its next due times in ms, computed here in Python with cronsim: DST follows
  the zone, Debian cron's way) and ``last`` (the latest tick computed); ``start``, ``end``,
  ``limit`` (ms, ms, runs), ``count`` (runs made), ``catch_up``, ``rec`` (record fields
  of the runs' options: priority, lifo, retention) and ``pending``, the id of its next
  run. The runs' envelope is built once, at upsert, in field ``e:<id>``.
- The next run always exists as ONE job ``sched:<id>:<due ms>``, delayed until due, whose
  record carries ``sch`` (the scheduler) and ``due``. When a worker takes it, the fetch
  script makes the run after it, atomically (includes/scheduler.lua). Hence: exactly one
  job per tick across workers, processes and restarts (ids are deterministic and only the
  pending run makes a next one); a worker killed after its fetch does not stop the
  schedule (its run is recovered as stalled, the next one exists already); a paused queue
  holds the one pending run and nothing piles up.
- After the run due at ``due`` is taken, the next one is the first tick strictly after
  now (``catch_up=False``, the default: after a downtime of many periods it runs once,
  not once per missed tick), or the tick right after ``due`` (``catch_up=True``: every
  missed tick runs, one after another). None past ``end``, none beyond ``limit`` runs.
- A cron scheduler short of ticks (fewer than ``REFILL_BELOW``) is refilled by the worker
  that took its run, after its fetch (``refill_ticks``, idempotent: it applies only if
  ``last`` has not moved). One that ran out waits ``starved`` and resumes at the refill.
- ``upsert_scheduler`` replaces a config atomically (a new scheduler's first run is its
  first tick at or after now, or ``start``). A pending run still delayed is withdrawn and
  the new config makes its first tick at or after the earlier of now and that run's due
  time: changing a schedule makes no extra run and skips none. An ``every`` grid without
  ``start`` keeps its anchor when upserted again with the same period (an app that
  upserts its schedules at each start keeps its ticks); a new period is anchored at the
  withdrawn run's due time (the next run keeps its time, the new period follows). A
  pending run already waiting or running is left to run once and makes no next run; the
  new config then starts at its first tick strictly after now. ``count``
  carries over (``limit`` counts every run of the scheduler id; remove it to restart).
- ``remove_scheduler`` deletes the config and its pending run if it has not started.
  Removing, cancelling, draining or cleaning the pending run itself by job id stops the
  scheduler (no run is left to make the next one) until it is upserted again, which makes
  a new pending run: use ``remove_scheduler`` to stop one.
- Events: ``scheduled`` (``id``, ``scheduler``, ``due``) when a run is made,
  ``scheduler_upserted`` (``scheduler``, ``replaced``) and ``scheduler_removed``.
- Datetimes must be timezone-aware (a naive one is refused: its zone would be a guess).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from cronsim import CronSim, CronSimError

from queue_core.admin import Operation
from queue_core.commands import AddPlan
from queue_core.envelope import decode_envelope
from queue_core.errors import InvalidOptionError, InvalidScheduleError
from queue_core.hooks import OperationEvent
from queue_core.job import ms_to_datetime
from queue_core.options import JobOptions, check_int, check_name
from queue_core.scripts import load_script
from queue_core.serializer import Serializer

__all__ = [
    "REFILL_BELOW",
    "TICKS",
    "Refill",
    "SchedulerInfo",
    "cron_ticks",
    "get_schedulers",
    "refill_check",
    "refill_ticks",
    "remove_scheduler",
    "scheduled_record",
    "upsert_scheduler",
]

_UPSERT = load_script("upsert_scheduler")
_REMOVE = load_script("remove_scheduler")
_GET = load_script("get_schedulers")
_REFILL = load_script("refill_ticks")

TICKS: Final = 32  # cron ticks computed ahead, at upsert and at each refill
REFILL_BELOW: Final = 8
_CLOCK_MARGIN_MS: Final = 60_000  # ticks start this far back: Redis's clock may lag ours
_MAX_LIMIT: Final = 2**50


@dataclass(frozen=True, slots=True)
class SchedulerInfo:
    """A job scheduler as stored. ``count`` is the runs made so far (the pending one
    included); ``next_run_at`` / ``pending_job_id`` are its pending run's due time and id
    (None when it will make no more runs: ``end`` or ``limit`` reached)."""

    id: str
    name: str
    data: Any
    options: JobOptions
    every: timedelta | None
    cron: str | None
    tz: str
    start: datetime | None
    end: datetime | None
    limit: int | None
    catch_up: bool
    count: int
    next_run_at: datetime | None
    pending_job_id: str | None


def cron_ticks(expression: str, tz: str, after: datetime, count: int = TICKS) -> list[int]:
    """The next ``count`` due times (ms) of ``expression`` in zone ``tz``, strictly after
    ``after``. A pure function: the DST tests inject ``after``."""
    zone = _zone(tz)
    try:
        it = CronSim(expression, after.astimezone(zone))
        ticks = []
        for _ in range(count):
            ticks.append(round(next(it).timestamp() * 1000))
    except (CronSimError, StopIteration) as exc:
        raise InvalidScheduleError(f"invalid cron expression {expression!r}: {exc}") from exc
    return ticks


def _zone(tz: object) -> ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise InvalidScheduleError(f"tz must be an IANA zone name, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidScheduleError(f"unknown time zone {tz!r}") from exc


def _ms(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidScheduleError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidScheduleError(f"{what} must be timezone-aware, got {value!r}")
    return round(value.timestamp() * 1000)


def _every_ms(every: object) -> int:
    if isinstance(every, timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, int | float) and not isinstance(every, bool):
        seconds = float(every)
    else:
        raise InvalidScheduleError(
            f"every must be seconds or a timedelta, not {type(every).__name__}"
        )
    ms = round(seconds * 1000)
    if not ms > 0 or ms > _MAX_LIMIT:
        raise InvalidScheduleError(f"every must be at least 1 ms, got {every!r}")
    return ms


def _record_fields(args: Sequence[Any]) -> dict[str, int]:
    """The record fields of an add's options, from AddPlan's ARGV (see add.lua)."""
    priority, lifo = args[3], args[4]
    fields: dict[str, int] = {}
    if priority:
        fields["p"] = priority
    if lifo:
        fields["lifo"] = 1
    for field, value in zip(("rcn", "rca", "rfn", "rfa"), args[6:10], strict=True):
        if value >= 0:
            fields[field] = value
    return fields


def _bounds(
    start: datetime | None, end: datetime | None, limit: int | None, catch_up: bool
) -> dict[str, Any]:
    if not isinstance(catch_up, bool):
        raise InvalidScheduleError(f"catch_up must be a bool, not {type(catch_up).__name__}")
    start_ms, end_ms = _ms(start, "start"), _ms(end, "end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise InvalidScheduleError(f"end ({end}) must be after start ({start})")
    config: dict[str, Any] = {"catch_up": catch_up}
    if limit is not None:
        try:
            config["limit"] = check_int(limit, "limit", 1, _MAX_LIMIT)
        except InvalidOptionError as exc:
            raise InvalidScheduleError(str(exc)) from exc
    if start_ms is not None:
        config["start"] = start_ms
    if end_ms is not None:
        config["end"] = end_ms
    return config


def _cron_config(
    cron: object, tz: str | None, start_ms: int | None, now: datetime
) -> dict[str, Any]:
    if not isinstance(cron, str) or len(cron.split()) != 5:
        raise InvalidScheduleError(f"cron must be a 5-field expression, got {cron!r}")
    zone = "UTC" if tz is None else tz
    after = now.timestamp() * 1000 - _CLOCK_MARGIN_MS
    if start_ms is not None:
        after = max(after, start_ms - 1)
    ticks = cron_ticks(cron, zone, datetime.fromtimestamp(after / 1000, UTC))
    return {"cron": cron, "tz": zone, "ticks": ticks, "last": ticks[-1]}


def upsert_scheduler(
    queue: str,
    scheduler_id: str,
    *,
    every: float | timedelta | None,
    cron: str | None,
    tz: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int | None,
    name: str | None,
    data: Any,
    options: JobOptions,
    catch_up: bool,
    serializer: Serializer,
    max_payload_bytes: int,
    now: datetime | None = None,
) -> Operation[SchedulerInfo]:
    """Validate and encode a scheduler; raises ``InvalidScheduleError`` (or the add's own
    errors for its name, data and options) before anything is written."""
    try:
        check_name(scheduler_id, "scheduler id")
    except InvalidOptionError as exc:
        raise InvalidScheduleError(str(exc)) from exc
    if (every is None) == (cron is None):
        raise InvalidScheduleError("give exactly one of every (a period) and cron")
    if not isinstance(options, JobOptions):
        raise InvalidScheduleError(f"options must be a JobOptions, not {type(options).__name__}")
    if options.job_id is not None or options.delay or options.dedup is not None:
        raise InvalidScheduleError("a scheduler's runs take no job_id, delay or dedup")
    config = _bounds(start, end, limit, catch_up)
    start_ms = config.get("start")
    if every is not None:
        if tz is not None:
            raise InvalidScheduleError("tz applies to cron schedules only")
        config["every"] = _every_ms(every)
    else:
        config.update(_cron_config(cron, tz, start_ms, now or datetime.now(UTC)))
    job_name = scheduler_id if name is None else name
    plan = AddPlan(queue, [(job_name, data, options)], bulk=False)
    args = plan.args(serializer, max_payload_bytes)
    config["rec"] = _record_fields(args)

    def parse(reply: Any, event: OperationEvent | None) -> SchedulerInfo:
        if event is not None:
            event.count = 1
        return _info(scheduler_id, reply[0], reply[1], serializer)

    def with_headers(headers: Mapping[str, str]) -> list[Any]:
        """The call again, its runs' envelope carrying the headers hooks wrote on entry
        (the upsert's trace context: each run links to it)."""
        plan.event.jobs[0].headers.update(headers)
        envelope = plan.args(serializer, max_payload_bytes)[2]
        return [scheduler_id, orjson.dumps(config), envelope]

    return Operation(
        "upsert_scheduler",
        _UPSERT,
        [scheduler_id, orjson.dumps(config), args[2]],
        parse,
        rebuild=with_headers,
    )


def _info(scheduler_id: str, raw: bytes, envelope: bytes, serializer: Serializer) -> SchedulerInfo:
    config = orjson.loads(raw)
    env = decode_envelope(envelope)
    pending = config.get("pending")
    due = int(pending.rsplit(":", 1)[1]) if pending else None
    every = config.get("every")
    return SchedulerInfo(
        id=scheduler_id,
        name=env.name,
        data=serializer.loads(env.payload),
        options=JobOptions.from_wire(env.options),
        every=None if every is None else timedelta(milliseconds=every),
        cron=config.get("cron"),
        tz=config.get("tz", "UTC"),
        start=ms_to_datetime(config.get("start")),
        end=ms_to_datetime(config.get("end")),
        limit=config.get("limit"),
        catch_up=bool(config.get("catch_up")),
        count=int(config.get("count", 0)),
        next_run_at=ms_to_datetime(due),
        pending_job_id=pending,
    )


def get_schedulers(
    scheduler_id: str | None, serializer: Serializer
) -> Operation[list[SchedulerInfo]]:
    """One scheduler (a list of at most one), or all of them (``scheduler_id`` None), by
    id."""

    def parse(reply: Any, event: OperationEvent | None) -> list[SchedulerInfo]:
        found = [
            _info(reply[i].decode(), reply[i + 1], reply[i + 2], serializer)
            for i in range(0, len(reply), 3)
        ]
        return sorted(found, key=lambda info: info.id)

    return Operation("get_schedulers", _GET, [scheduler_id or ""], parse, action=False)


def remove_scheduler(scheduler_id: str) -> Operation[bool]:
    def parse(reply: Any, event: OperationEvent | None) -> bool:
        removed = int(reply) == 1
        if event is not None:
            event.count = int(removed)
        return removed

    return Operation("remove_scheduler", _REMOVE, [scheduler_id], parse)


@dataclass(frozen=True, slots=True)
class Refill:
    """The ticks to append to a cron scheduler running short, computed after ``last``."""

    last: int
    ticks: list[int]


def refill_check(scheduler_id: str) -> Operation[Refill | None]:
    """Read a scheduler whose run a worker took: the ticks to add if it runs short."""

    def parse(reply: Any, event: OperationEvent | None) -> Refill | None:
        if not reply:
            return None  # removed meanwhile
        config = orjson.loads(reply[1])
        ticks = config.get("ticks") or []  # Lua's cjson writes an empty list as {}
        if "cron" not in config or len(ticks) >= REFILL_BELOW:
            return None
        last = int(config["last"])
        after = datetime.fromtimestamp(last / 1000, UTC)
        return Refill(last, cron_ticks(config["cron"], config["tz"], after))

    return Operation("get_schedulers", _GET, [scheduler_id], parse, action=False)


def refill_ticks(scheduler_id: str, refill: Refill) -> Operation[bool]:
    return Operation(
        "refill_ticks",
        _REFILL,
        [scheduler_id, refill.last, *refill.ticks],
        lambda reply, event: int(reply) == 1,
        action=False,
    )


def scheduled_record(record: bytes) -> str | None:
    """The scheduler of a fetched job's record, or None; a byte search first, so that the
    jobs of no scheduler cost one ``in`` test."""
    if b'"sch":' not in record:
        return None
    scheduler = orjson.loads(record).get("sch")
    return scheduler if isinstance(scheduler, str) else None
