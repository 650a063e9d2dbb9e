"""The one decoder of stored jobs: what the scripts return becomes a ``Job``, or a typed
error that names what is wrong with it.

The worker, ``get_job``, ``get_jobs`` and the producer's duplicate path all come here.
A job that cannot be read raises ``CorruptJobError`` (with every reason found and the raw
values) or ``UnsupportedFormatError`` (a newer queue_core's job); in ``lenient`` mode, for
listings, it comes back as a ``Job`` with ``read_error`` set and whatever could be read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from queue_core.envelope import (
    FORMAT_VERSION,
    Envelope,
    MalformedError,
    NewerFormatError,
    check_record,
    decode_envelope,
)
from queue_core.errors import CorruptJobError, UnsupportedFormatError
from queue_core.job import AttemptError, Job, JobBackend, JobRef, JobState, ms_to_datetime
from queue_core.options import JobOptions
from queue_core.serializer import Serializer

__all__ = ["job_from_wire", "snapshot_to_job"]

_EPOCH = datetime.fromtimestamp(0, tz=UTC)


def job_from_wire(
    queue_name: str,
    job_id: str,
    envelope: bytes | None,
    record: bytes | dict[str, Any] | None,
    serializer: Serializer,
    *,
    state: JobState,
    score: bytes | None = None,
    result: bytes | None = None,
    error: bytes | None = None,
    progress: bytes | None = None,
    corrupt: bytes | None = None,
    backend: JobBackend | None = None,
    lenient: bool = False,
) -> Job:
    """Build a ``Job`` from stored parts. ``record`` is a dict when a script has just
    checked it (a worker's fetch); raw bytes are checked here by the scripts' rules."""
    if isinstance(record, dict) and envelope is not None and state is JobState.ACTIVE:
        try:  # a worker's fetch, read at once; on any problem, part by part below
            return _fetched_job(queue_name, job_id, envelope, record, serializer, backend=backend)
        except Exception:  # noqa: S110 - the careful path names what is wrong
            pass
    parts = _Parts(envelope, record)
    # Every part is read on its own, so that one bad part does not hide the others and
    # a listing can still show what is readable.
    env = parts.read("envelope", parts.envelope)
    rec = parts.read("record", parts.record)
    job = Job(
        id=job_id,
        name=env.name if env else "",
        data=None if env is None else parts.read("data", lambda: serializer.loads(env.payload)),
        queue_name=queue_name,
        options=(env and parts.read("options", lambda: JobOptions.from_wire(env.options)))
        or JobOptions(),
        headers=env.headers if env else {},
        state=state,
        enqueued_at=ms_to_datetime(rec["ts"]) if rec else _EPOCH,  # type: ignore[arg-type]
        _backend=backend,
        **(_record_fields(rec) if rec else {}),
    )
    if state is JobState.DELAYED and score:
        job.delayed_until = ms_to_datetime(float(score))
    if progress:
        job.progress = parts.read("progress", lambda: orjson.loads(progress))
    if result is not None:
        job.return_value = parts.read("result", lambda: serializer.loads(result))
    if error:
        failure = parts.read("error", lambda: _failure(error))
        if failure:
            job.failed_reason = failure.get("message")
            job.error_type = failure.get("type")
            job.stacktrace = failure.get("stack") or None
            job.errors = _attempt_errors(failure)
    job.corrupt_record = corrupt
    if parts.newer is not None:
        unsupported = UnsupportedFormatError(job_id, parts.newer, FORMAT_VERSION)
        if not lenient:
            raise unsupported
        job.read_error = unsupported
    elif parts.reasons:
        raw = {"envelope": envelope, "record": record if isinstance(record, bytes) else None}
        corrupt_error = CorruptJobError(job_id, parts.reasons, raw)
        if not lenient:
            raise corrupt_error
        job.read_error = corrupt_error
    return job


def _fetched_job(
    queue_name: str,
    job_id: str,
    envelope: bytes,
    record: dict[str, Any],
    serializer: Serializer,
    *,
    backend: JobBackend | None,
) -> Job:
    """The hot path of a worker: a job just fetched (active; no result, error or
    progress to read), every part sound."""
    env = decode_envelope(envelope)
    enqueued_at = ms_to_datetime(record["ts"])
    assert enqueued_at is not None
    return Job(
        id=job_id,
        name=env.name,
        data=serializer.loads(env.payload),
        queue_name=queue_name,
        options=JobOptions.from_wire(env.options),
        headers=env.headers,
        state=JobState.ACTIVE,
        enqueued_at=enqueued_at,
        _backend=backend,
        **_record_fields(record),
    )


def _record_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The ``Job`` fields a record holds, besides the enqueue time."""
    return {
        "attempts_started": record.get("ats", 0),
        "attempts_made": record.get("atm", 0),
        "stalled_count": record.get("stc", 0),
        "manual_retries": record.get("rtr", 0),
        "started_at": ms_to_datetime(record.get("pon")),
        "finished_at": ms_to_datetime(record.get("fon")),
        "ready_at": ms_to_datetime(record.get("rdy")),
        "scheduler_id": record.get("sch"),
        "scheduled_for": ms_to_datetime(record.get("due")),
        "parent": _parent(record.get("par")),
        "_token": record.get("tok"),
    }


def _parent(raw: str | None) -> JobRef | None:
    if raw is None:
        return None
    try:
        return JobRef.from_wire(raw)
    except ValueError:  # only these scripts write it; a broken one is ignored, not fatal
        return None


def snapshot_to_job(
    queue: str,
    job_id: str,
    snapshot: Any,
    serializer: Serializer,
    backend: JobBackend | None,
    *,
    lenient: bool = False,
) -> Job:
    """A job from a ``read_job`` snapshot (scripts/includes/read_job.lua)."""
    envelope, record, state, score, result, error, progress, corrupt = snapshot
    return job_from_wire(
        queue,
        job_id,
        envelope,
        record,
        serializer,
        state=JobState(state.decode()),
        score=score,
        result=result,
        error=error,
        progress=progress,
        corrupt=corrupt,
        backend=backend,
        lenient=lenient,
    )


def _failure(raw: bytes) -> dict[str, Any]:
    """A job's errors (scripts/includes/error_history.lua): the latest failure's error
    with the earlier ones in ``prev``, or ``prev`` alone once the job completed or was
    retried; older versions stored the latest error alone, without ``a``, ``t``, ``prev``."""
    failure = orjson.loads(raw)
    _check_error(failure)
    prev = failure.get("prev", [])
    if not isinstance(prev, list):
        raise MalformedError("its error history is not a list")
    for entry in prev:
        _check_error(entry)
    return failure  # type: ignore[no-any-return]


def _check_error(error: Any) -> None:
    if not isinstance(error, dict) or not all(
        isinstance(error.get(k, ""), str) for k in ("type", "message", "stack")
    ):
        raise MalformedError("not an object of strings type, message and stack")
    attempt, at = error.get("a"), error.get("t")
    if not (attempt is None or _is_int(attempt)) or not (at is None or _is_number(at)):
        raise MalformedError("its error's attempt or time is not a number")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _attempt_errors(failure: dict[str, Any]) -> list[AttemptError]:
    """Oldest first; the stored value itself is the latest error unless it is the
    history alone (no type nor message: the job completed or was retried since)."""
    entries = [*failure.get("prev", [])]
    if "type" in failure or "message" in failure:
        entries.append(failure)
    return [
        AttemptError(
            attempt=entry.get("a"),
            type=entry.get("type") or None,
            message=entry.get("message") or "",
            stack=entry.get("stack") or None,
            failed_at=ms_to_datetime(entry.get("t")),
        )
        for entry in entries
    ]


class _Parts:
    """Decodes each stored part once, and collects why a part could not be read."""

    __slots__ = ("_envelope", "_record", "newer", "reasons")

    def __init__(self, envelope: bytes | None, record: bytes | dict[str, Any] | None) -> None:
        self._envelope = envelope
        self._record = record
        self.newer: object = None
        self.reasons: list[str] = []

    def envelope(self) -> Envelope:
        if self._envelope is None:
            raise MalformedError("its envelope is missing")
        return decode_envelope(self._envelope)

    def record(self) -> dict[str, Any]:
        if isinstance(self._record, dict):
            return self._record
        if self._record is None:
            raise MalformedError("its record is missing")
        return check_record(self._record)

    def read(self, what: str, decode: Callable[[], Any]) -> Any:
        """``decode()``, or None (noting why) when the stored data cannot be read."""
        try:
            return decode()
        except NewerFormatError as exc:
            self.newer = exc.version
        except MalformedError as exc:
            if str(exc) not in self.reasons:
                self.reasons.append(str(exc))
        except Exception as exc:  # a wrong shape anywhere below: options, data, result
            self.reasons.append(f"its {what} cannot be read: {type(exc).__name__}: {exc}")
        return None
