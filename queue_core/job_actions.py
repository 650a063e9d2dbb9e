"""What an operator's actions on jobs send and how their replies are read, without I/O.

A one-job action (retry, promote, remove, update_data) is one ``Operation`` carrying its
``job_id``. A bulk action (retry_jobs, drain, clean, obliterate) is done in chunks, one
script call of at most ``CHUNK`` jobs each, so that no call holds Redis for long: it is a
generator of chunk ``Operation``s that is sent each chunk's result and returns the total
(``Queue``/``SyncQueue._operate_steps`` drive it). Each chunk is an operation of its own
for the ``around_operation`` hooks, its ``count`` the jobs that chunk changed. Every
argument is checked when the action is built, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from queue_core.admin import JobReply, Operation, job_reply
from queue_core.errors import (
    InvalidOptionError,
    JobStateError,
    PayloadTooLargeError,
    QueueBusyError,
)
from queue_core.hooks import OperationEvent
from queue_core.options import MAX_ID_LENGTH, Duration, check_int, check_name, to_ms, to_seconds
from queue_core.scripts import LuaScript, load_script
from queue_core.serializer import Serializer

__all__ = [
    "CHUNK",
    "CLEANABLE_STATES",
    "Steps",
    "clean",
    "drain",
    "obliterate",
    "promote",
    "remove",
    "retry",
    "retry_jobs",
    "update_data",
]

T = TypeVar("T")

Steps = Generator[Operation[Any], Any, T]
"""A bulk action: yields the next chunk's operation, is sent its result, returns the total."""

CHUNK: Final = 1000  # jobs per script call: a few milliseconds of Redis time
CLEANABLE_STATES: Final = ("completed", "failed", "waiting", "delayed")
RETRYABLE_STATES: Final = ("failed", "completed")
_MAX_LIMIT: Final = 2**53

_RETRY = load_script("retry_job")
_RETRY_JOBS = load_script("retry_jobs")
_PROMOTE = load_script("promote_job")
_REMOVE = load_script("remove_job")
_UPDATE_DATA = load_script("update_data")
_DRAIN = load_script("drain")
_CLEAN = load_script("clean")
_OBLITERATE = load_script("obliterate")

_TOO_LARGE = 3  # update_data's status for an envelope above the cap


# ----- one job


def _check_id(job_id: object) -> str:
    """Any id a job can have: generated (digits) or given (``check_job_id``'s rules)."""
    if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_ID_LENGTH:
        raise InvalidOptionError(f"a job id is a string of 1 to {MAX_ID_LENGTH} characters")
    return job_id


def _one_job(
    name: str, script: LuaScript, job_id: object, queue: str, extra: list[Any]
) -> Operation[JobReply]:
    """A one-job action whose script replies {status, state, header, refusal}
    (includes/job_action.lua): ``refusal`` says why it refused when the state alone does
    not."""
    checked = _check_id(job_id)
    parse_reply = job_reply(name, checked, queue)

    def parse(reply: Any, event: OperationEvent | None) -> JobReply:
        try:
            return parse_reply(reply, event)
        except JobStateError as exc:
            if len(reply) < 4 or not reply[3]:
                raise
            message = f"cannot {name} job {checked!r}: {reply[3].decode()}"
            raise JobStateError(checked, exc.state, name, message) from None

    return Operation(name, script, [checked, *extra], parse, checked)


def retry(job_id: str, queue: str) -> Operation[JobReply]:
    return _one_job("retry", _RETRY, job_id, queue, [])


def promote(job_id: str, queue: str) -> Operation[JobReply]:
    return _one_job("promote", _PROMOTE, job_id, queue, [])


def remove(job_id: str, queue: str) -> Operation[JobReply]:
    return _one_job("remove", _REMOVE, job_id, queue, [])


def update_data(
    job_id: str, data: Any, queue: str, serializer: Serializer, max_payload_bytes: int
) -> Operation[JobReply]:
    """Serialized here, as an add does (``SerializationError``, ``PayloadTooLargeError``
    before anything is sent); the script checks the whole new envelope against the cap,
    since only it knows the header the envelope keeps."""
    checked = _check_id(job_id)
    payload = serializer.dumps(data)
    if len(payload) > max_payload_bytes:  # the envelope can only be larger
        raise PayloadTooLargeError(len(payload), max_payload_bytes)
    operation = _one_job("update_data", _UPDATE_DATA, checked, queue, [payload, max_payload_bytes])
    parse_reply = operation.parse

    def parse(reply: Any, event: OperationEvent | None) -> JobReply:
        if int(reply[0]) == _TOO_LARGE:
            raise PayloadTooLargeError(int(reply[3]), max_payload_bytes)
        return parse_reply(reply, event)

    operation.parse = parse
    return operation


# ----- bulk actions


def _check_limit(limit: object) -> int:
    return _MAX_LIMIT if limit is None else check_int(limit, "limit", 1, _MAX_LIMIT)


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def _counted(count: int, event: OperationEvent | None) -> None:
    if event is not None:
        event.count = count


@dataclass(frozen=True, slots=True)
class _RetryChunk:
    retried: int
    skipped: int
    scanned: int
    cutoff: int


def _parse_retry_chunk(reply: Any, event: OperationEvent | None) -> _RetryChunk:
    chunk = _RetryChunk(*(int(value) for value in reply))
    _counted(chunk.retried, event)
    return chunk


def retry_jobs(
    state: str,
    name: str | None,
    limit: int | None,
    on_progress: Callable[[int], object] | None,
) -> Steps[int]:
    """Retry the jobs of ``state`` (failed or completed), those named ``name`` if given,
    at most ``limit``, in chunks; ``on_progress(retried_so_far)`` after each chunk."""
    if state not in RETRYABLE_STATES:
        raise InvalidOptionError(f"retry_jobs takes state 'failed' or 'completed', not {state!r}")
    if name is not None:
        check_name(name, "job name")
    most = _check_limit(limit)
    if on_progress is not None and not callable(on_progress):
        raise InvalidOptionError("on_progress must be a callable taking the count so far")
    return _retry_steps(str(state), name or "", most, on_progress)


def _retry_steps(
    state: str, name: str, most: int, on_progress: Callable[[int], object] | None
) -> Steps[int]:
    retried, start, cutoff = 0, 0, ""
    while retried < most:
        size = min(CHUNK, most - retried)
        args = [state, name, size, start, cutoff]
        chunk: _RetryChunk = yield Operation("retry_jobs", _RETRY_JOBS, args, _parse_retry_chunk)
        retried += chunk.retried
        start += chunk.skipped
        cutoff = str(chunk.cutoff)
        if on_progress is not None:
            on_progress(retried)
        if chunk.scanned < size:
            break
    return retried


def _parse_drain_chunk(reply: Any, event: OperationEvent | None) -> int:
    _counted(int(reply), event)
    return int(reply)


def drain(include_delayed: bool) -> Steps[int]:
    _check_bool(include_delayed, "include_delayed")
    return _drain_steps(include_delayed)


def _drain_steps(include_delayed: bool) -> Steps[int]:
    total = 0
    while True:
        args = [CHUNK, int(include_delayed)]
        removed: int = yield Operation("drain", _DRAIN, args, _parse_drain_chunk)
        total += removed
        if removed < CHUNK:
            return total


@dataclass(frozen=True, slots=True)
class _CleanChunk:
    cutoff: int
    scanned: int
    kept: int
    removed: list[str]


def _parse_clean_chunk(reply: Any, event: OperationEvent | None) -> _CleanChunk:
    chunk = _CleanChunk(
        int(reply[0]), int(reply[1]), int(reply[2]), [raw.decode() for raw in reply[3:]]
    )
    _counted(len(chunk.removed), event)
    return chunk


def clean(state: str, grace: Duration, limit: int | None) -> Steps[list[str]]:
    if state == "active":
        raise InvalidOptionError("active jobs cannot be cleaned: cancel or remove them one by one")
    if state not in CLEANABLE_STATES:
        raise InvalidOptionError(f"clean takes a state among {CLEANABLE_STATES}, not {state!r}")
    grace_ms = to_ms(to_seconds(grace, "grace"))
    return _clean_steps(str(state), grace_ms, _check_limit(limit))


def _clean_steps(state: str, grace_ms: int, most: int) -> Steps[list[str]]:
    removed: list[str] = []
    start, cutoff = 0, ""
    while len(removed) < most:
        size = min(CHUNK, most - len(removed))
        args = [state, grace_ms, cutoff, size, start]
        chunk: _CleanChunk = yield Operation("clean", _CLEAN, args, _parse_clean_chunk)
        removed += chunk.removed
        start += chunk.kept
        cutoff = str(chunk.cutoff)
        if chunk.scanned < size:
            break
    return removed


@dataclass(frozen=True, slots=True)
class _ObliterateChunk:
    done: bool
    removed: int


def obliterate(queue: str, force: bool) -> Steps[int]:
    _check_bool(force, "force")
    return _obliterate_steps(queue, force)


def _obliterate_steps(queue: str, force: bool) -> Steps[int]:
    def parse(reply: Any, event: OperationEvent | None) -> _ObliterateChunk:
        status, count = int(reply[0]), int(reply[1])
        if status < 0:
            raise QueueBusyError(queue, count)
        _counted(count, event)
        return _ObliterateChunk(status == 1, count)

    total = 0
    while True:
        chunk: _ObliterateChunk = yield Operation(
            "obliterate", _OBLITERATE, [int(force), CHUNK], parse
        )
        total += chunk.removed
        if chunk.done:
            return total
