"""What each operation sends to its script and how its reply is read, without any I/O.

The async ``Queue``, the blocking ``SyncQueue`` and the ``Worker`` all build their calls
here, so validation, encoding and decoding exist once; only the transport differs.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from queue_core.decoding import snapshot_to_job
from queue_core.envelope import decode_record, encode_envelope
from queue_core.errors import InvalidOptionError, PayloadTooLargeError
from queue_core.hooks import EnqueuedJob, EnqueueEvent
from queue_core.job import Job, JobBackend, JobState, ms_to_datetime
from queue_core.options import Dedup, JobOptions, check_name, to_ms
from queue_core.serializer import Serializer

__all__ = [
    "AddPlan",
    "FetchSettings",
    "Fetched",
    "JobSpec",
    "QueueStats",
    "Settled",
    "delay_args",
    "error_json",
    "parse_counts",
    "parse_fetch",
    "parse_settle",
    "parse_stats",
    "state_names",
]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of ``add_bulk``: a name, its data and its options (the queue's defaults if None)."""

    name: str
    data: Any = None
    options: JobOptions | None = None


def _retention_args(options: JobOptions) -> list[int]:
    out: list[int] = []
    for keep in (options.remove_on_complete, options.remove_on_fail):
        out.append(-1 if keep.count is None else keep.count)
        out.append(-1 if keep.age is None else to_ms(keep.age))
    return out


def _dedup_args(dedup: Dedup | None) -> list[Any]:
    if dedup is None:
        return ["", -1, 0, 0]
    ttl = -1 if dedup.ttl is None else to_ms(dedup.ttl)
    return [dedup.key, ttl, int(dedup.extend), int(dedup.replace)]


_CREATED = 1  # add.lua's status of a new job (0: a duplicate id, 2: a held dedup key)


class AddPlan:
    """One add or bulk add: hooks see ``event`` before ``args()`` encodes the jobs."""

    __slots__ = ("event",)

    def __init__(self, queue: str, specs: Iterable[tuple[str, Any, JobOptions]], bulk: bool):
        jobs = [
            EnqueuedJob(check_name(name, "job name"), data, options)
            for name, data, options in specs
        ]
        if not jobs:
            raise InvalidOptionError("add_bulk needs at least one job")
        self.event = EnqueueEvent(queue, jobs, bulk)

    def args(self, serializer: Serializer, max_payload_bytes: int) -> list[Any]:
        """Serialize every job; raises before anything is written if one is unfit."""
        args: list[Any] = [len(self.event.jobs)]
        for job in self.event.jobs:
            options = job.options
            envelope = encode_envelope(
                job.name, options.to_wire(), job.headers, serializer.dumps(job.data)
            )
            if len(envelope) > max_payload_bytes:
                raise PayloadTooLargeError(len(envelope), max_payload_bytes)
            args += [
                options.job_id or "",
                envelope,
                options.priority,
                int(options.lifo),
                to_ms(options.delay),
                *_retention_args(options),
                *_dedup_args(options.dedup),
            ]
        return args

    def result(
        self, reply: Sequence[Any], serializer: Serializer, backend: JobBackend | None
    ) -> list[Job]:
        """Read the script's reply into jobs, and fill the event. An add blocked by a job
        id or a dedup key returns the job that holds it, ``deduplicated``."""
        now = int(reply[0])
        enqueued_at = ms_to_datetime(now)
        assert enqueued_at is not None
        jobs: list[Job] = []
        for draft, item in zip(self.event.jobs, reply[1:], strict=True):
            job_id = item[0].decode()
            draft.job_id = job_id
            if int(item[1]) != _CREATED:
                draft.duplicate = True
                if item[2]:
                    job = snapshot_to_job(self.event.queue, job_id, item[2], serializer, backend)
                else:  # a dedup ttl outlives its job (removed by retention): only its id
                    job = Job(
                        id=job_id,
                        name=draft.name,
                        data=None,
                        queue_name=self.event.queue,
                        options=draft.options,
                        headers={},
                        state=JobState.UNKNOWN,
                        enqueued_at=enqueued_at,
                        _backend=backend,
                    )
                job.deduplicated = True
            else:
                state = JobState(item[2].decode())
                job = Job(
                    id=job_id,
                    name=draft.name,
                    data=draft.data,
                    queue_name=self.event.queue,
                    options=draft.options,
                    headers=dict(draft.headers),
                    state=state,
                    enqueued_at=enqueued_at,
                    delayed_until=(
                        ms_to_datetime(now + to_ms(draft.options.delay))
                        if state is JobState.DELAYED
                        else None
                    ),
                    _backend=backend,
                )
            draft.state = job.state
            jobs.append(job)
        return jobs


_STATES = tuple(s.value for s in JobState if s is not JobState.UNKNOWN)


def state_names(states: JobState | str | Iterable[JobState | str] | None) -> list[str]:
    if states is None:
        return list(_STATES)
    if isinstance(states, str):
        states = [states]
    names = [s.value if isinstance(s, JobState) else s for s in states]
    unknown = [n for n in names if n not in _STATES]
    if unknown:
        raise InvalidOptionError(f"unknown job state(s) {unknown}; use {list(_STATES)}")
    return names


def parse_counts(reply: Sequence[Any]) -> dict[str, int]:
    return dict(zip(_STATES, (int(n) for n in reply), strict=True))


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts per state and the age of the oldest waiting job, read at one instant.

    ``oldest_waiting_age`` is in seconds (``None`` when nothing waits): how long the job
    that has waited longest has been ready, by Redis's clock. With several priorities it
    looks at the longest-waiting job of each priority.
    """

    counts: dict[str, int]
    oldest_waiting_age: float | None
    measured_at: datetime


def parse_stats(reply: Sequence[Any]) -> QueueStats:
    values = [int(x) for x in reply]
    now, oldest = values[5], values[6]
    measured_at = ms_to_datetime(now)
    assert measured_at is not None
    return QueueStats(
        counts=dict(zip(_STATES, [*values[:5], values[7]], strict=True)),
        oldest_waiting_age=None if oldest < 0 else max(0.0, (now - oldest) / 1000),
        measured_at=measured_at,
    )


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """The fetch arguments shared by move_to_active and every settling script."""

    token_prefix: str
    lock_ms: int
    limit_max: int = 0
    limit_ms: int = 0

    def args(self, count: int, call: int) -> list[Any]:
        """ARGV of a fetch; ``call`` numbers it, so that the jobs it takes carry it in their
        lock token and can be released if its reply is lost (release_orphans.lua)."""
        prefix = self.call_prefix(call)
        return [count, prefix, self.lock_ms, self.limit_max, self.limit_ms]

    def call_prefix(self, call: int) -> str:
        return f"{self.token_prefix}~{call}"


# Not frozen, as Settled below: one of each is built per job, and a frozen dataclass's
# __init__ costs about a microsecond more (object.__setattr__ per field).
@dataclass(slots=True)
class Fetched:
    now_ms: int
    rate_limit_ms: int
    next_due_ms: int | None
    refused: int  # waiting jobs of a newer format, left for newer workers
    quarantined: list[tuple[str, str]]  # (id, reason) of corrupt jobs moved to failed
    jobs: list[tuple[str, bytes, bytes]]  # (id, envelope, record)


def parse_quarantined(flat: Sequence[bytes]) -> list[tuple[str, str]]:
    return [(flat[i].decode(), flat[i + 1].decode()) for i in range(0, len(flat), 2)]


def parse_fetch(reply: Sequence[Any]) -> Fetched:
    """The reply of move_to_active: {now, ttl, next_due, refused, quarantined, jobs...}."""
    return _fetched(reply, 0, 3)


def _fetched(reply: Sequence[Any], first: int, rest: int) -> Fetched:
    """The fetch part of a reply: now, ttl, next_due at ``first``..``first + 2``, then
    refused, quarantined and the jobs from ``rest`` on (the settle reply puts the
    settle's own fields between the two)."""
    due = int(reply[first + 2])
    quarantined = reply[rest + 1]
    return Fetched(
        int(reply[first]),
        int(reply[first + 1]),
        None if due < 0 else due,
        int(reply[rest]),
        parse_quarantined(quarantined) if quarantined else [],
        [(reply[i].decode(), reply[i + 1], reply[i + 2]) for i in range(rest + 2, len(reply), 3)],
    )


_MAX_STACK_CHARS = 16_000


def error_json(error: BaseException) -> str:
    """The stored form of a failed attempt's error (the ``errors`` hash)."""
    stack = "".join(traceback.format_exception(error))[-_MAX_STACK_CHARS:]
    # A lone surrogate (an undecodable file name, say) becomes "?": the scripts' cjson and
    # orjson both refuse it, and the whole error would be unreadable.
    fields = {"type": type(error).__name__, "message": str(error), "stack": stack}
    return json.dumps({k: v.encode(errors="replace").decode() for k, v in fields.items()})


def delay_args(
    due_ms: int, mode: str, *, counts: bool, error: str = "", front: bool = False, hold_ms: int = 0
) -> list[Any]:
    """move_to_delayed's ARGV 3-8 (see its header)."""
    return [due_ms, mode, int(counts), error, int(front), hold_ms]


# Status codes of the settling scripts (see move_to_completed.lua).
SETTLED = 1
LOCK_LOST = 0
ALREADY_SETTLED = 2
JOB_MISSING = -1
QUARANTINED = 3
CANCELLED = 4  # a cancel request was pending: failed as cancelled instead (cancel.lua)


@dataclass(slots=True)
class Settled:
    status: int
    due_ms: int  # move_to_delayed: when the job becomes ready
    record: dict[str, Any] | None  # the job's record as the script left it (if settled)
    fetched: Fetched


def parse_settle(reply: Sequence[Any]) -> Settled:
    """{status, now, ttl, next_due, due, record, refused, quarantined, jobs...}"""
    record = decode_record(reply[5]) if reply[5] else None
    return Settled(int(reply[0]), int(reply[4]), record, _fetched(reply, 1, 6))
