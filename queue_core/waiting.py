"""Waiting for a job to finish, on the events stream rather than by polling.

A wait starts with one read-only script (job_status.lua) that returns, in one instant,
the job's state, result and error and the events stream's last id: a finished job answers
at once; for any other, the wait reads the stream after that id, so that no transition
falls between the look and the wait. ``JobWatch`` decides, without I/O, what one wait
makes of a status and of the entries it sees; the async ``ResultWaiter`` (one per
``Queue``) and ``wait_blocking`` (``SyncQueue``) drive it.

One ``ResultWaiter`` serves every wait of a ``Queue``: a checker task runs job_status for
new waits in batches, and a reader task follows the stream (XREAD BLOCK, one connection)
and resolves the waits by job id, so that a thousand waits cost one connection. The
reader stops when no one waits, after its current read. Entries trimmed before the reader
read them (a gap), and bulk removals that name no job (``drain``, ``clean``), send the
waits back to a status check rather than leave them waiting forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from queue_core.connection import AsyncClient, SyncClient, redis_errors, socket_timeout
from queue_core.errors import (
    DependencyFailedError,
    EventsDisabledError,
    InvalidOptionError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    QueueError,
)
from queue_core.events import (
    DEFAULT_BLOCK_S,
    Entry,
    EventReader,
    StreamCursor,
    StreamId,
    entries_of,
    stream_id,
)
from queue_core.keys import QueueKeys
from queue_core.log import get_logger
from queue_core.options import to_ms, to_seconds
from queue_core.scripts import load_script
from queue_core.serializer import Serializer

__all__ = [
    "JOB_STATUS",
    "RECHECK",
    "JobWatch",
    "Outcome",
    "ResultWaiter",
    "Status",
    "check_wait",
    "parse_status",
    "read_entry",
    "wait_blocking",
]

JOB_STATUS = load_script("job_status")

_BATCH: Final = 500  # job ids per job_status call
_READ_COUNT: Final = 1000  # entries per read
# Events that may end jobs without naming them: the waits check their jobs again.
_BULK_EVENTS: Final = frozenset({b"drained", b"cleaned"})
_CANCELLED: Final = "JobCancelledError"

_log = get_logger("queue_core.events")

Kind = Literal["completed", "large", "failed", "cancelled", "missing", "lost"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended, as a status check or an event told: ``completed`` (``value``: the
    serialized return value), ``failed`` and ``cancelled`` (``reason``, ``error_type``),
    ``missing`` (no such job, or removed); ``large``: completed with a value too large for
    the stream, to be read from the results; ``lost``: completed, its result not kept."""

    kind: Kind
    value: bytes | None = None
    reason: str = ""
    error_type: str = ""

    def result(self, job_id: str, queue: str, serializer: Serializer) -> Any:
        """The return value, or the error that says why there is none."""
        if self.kind == "completed":
            return None if self.value is None else serializer.loads(self.value)
        if self.kind == "cancelled":
            raise JobCancelledError(job_id, self.reason)
        if self.kind == "failed":
            if self.error_type == "DependencyFailedError":
                raise DependencyFailedError(job_id, self.reason)
            raise JobFailedError(job_id, self.reason, self.error_type)
        if self.kind == "missing":
            raise JobNotFoundError(f"job {job_id!r} does not exist in queue {queue!r}")
        assert self.kind == "lost", self.kind
        raise QueueError(
            f"job {job_id!r} completed, but its result was not kept (its retention removed "
            "the job before the result, too large for the events stream, could be read)"
        )


class _Recheck:
    def __repr__(self) -> str:
        return "RECHECK"


RECHECK: Final = _Recheck()
"""A decision: look at the job's status again (a gap, a bulk removal, a large result)."""

Decision = Outcome | _Recheck | None


def _failure(error_type: str, reason: str) -> Outcome:
    kind: Kind = "cancelled" if error_type == _CANCELLED else "failed"
    return Outcome(kind, reason=reason, error_type=error_type)


def _stored_failure(raw: bytes | None) -> Outcome:
    try:
        failure = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        failure = None
    if not isinstance(failure, dict):  # not what a worker wrote: say what is there
        return _failure("", (raw or b"").decode(errors="replace"))
    return _failure(str(failure.get("type") or ""), str(failure.get("message") or ""))


def status_outcome(state: bytes, result: bytes | None, error: bytes | None) -> Outcome | None:
    """A job's outcome from its stored state, or None while it has not finished."""
    if state == b"completed":
        return Outcome("completed", result)
    if state == b"failed":
        return _stored_failure(error)
    if state == b"unknown":
        return Outcome("missing")
    return None


@dataclass(frozen=True, slots=True)
class Status:
    """A job_status reply: the stream's last id, whether events are on, and per job its
    outcome (None: not finished)."""

    position: str
    events_on: bool
    outcomes: list[Outcome | None]


def parse_status(reply: Any) -> Status:
    last_id, length, *jobs = reply
    return Status(
        last_id.decode(),
        int(length) != 0,
        [status_outcome(state, result, error) for state, result, error in jobs],
    )


def read_entry(fields: Mapping[bytes, bytes]) -> tuple[str | None, Outcome | _Recheck | None]:
    """What a stream entry means to waits: (job id, its outcome) for an event that ends
    a job; (None, RECHECK) for one that may end jobs without naming them; else (id, None)."""
    event = fields.get(b"event")
    if event in _BULK_EVENTS:
        return None, RECHECK
    raw_id = fields.get(b"id")
    job_id = None if raw_id is None else raw_id.decode()
    if event == b"completed":
        if fields.get(b"large") is not None:
            return job_id, Outcome("large")
        return job_id, Outcome("completed", fields.get(b"value"))
    if event == b"failed":
        error_type = fields.get(b"type", b"").decode(errors="replace")
        return job_id, _failure(error_type, fields.get(b"reason", b"").decode(errors="replace"))
    if event == b"cancelled":
        return job_id, _failure(_CANCELLED, fields.get(b"reason", b"").decode(errors="replace"))
    if event == b"removed":
        return job_id, Outcome("missing")
    return job_id, None


class JobWatch:
    """What one wait knows of its job: a status check gives a position; entries after it
    are weighed (earlier ones are already in the status). Entries that come while a check
    is under way are kept until its position is known."""

    __slots__ = ("early", "job_id", "large", "since")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.since: StreamId | None = None  # None: a status check is due or under way
        self.early: list[tuple[StreamId, Outcome | _Recheck]] = []
        self.large = False  # completed with a large value: the check reads the result

    def checked(self, position: str, outcome: Outcome | None) -> Decision:
        """The job's status as of ``position`` (the stream's last id then)."""
        if self.large:
            self.large = False
            if outcome is not None and outcome.kind == "completed":
                return outcome
            return Outcome("lost")
        if outcome is not None:
            return outcome
        self.since = stream_id(position)
        early, self.early = self.early, []
        decision: Decision = None
        for entry_id, seen in early:
            step = self.seen(entry_id, seen)
            if isinstance(step, Outcome):
                return step
            decision = decision or step
        return decision

    def seen(self, entry_id: StreamId, seen: Outcome | _Recheck) -> Decision:
        """An entry about this job (or about all jobs) at ``entry_id``."""
        if self.since is None:
            self.early.append((entry_id, seen))
            return None
        if entry_id <= self.since:
            return None  # the status check already saw it
        if isinstance(seen, Outcome) and seen.kind != "large":
            return seen
        self.since = None
        self.large = self.large or seen is not RECHECK
        return RECHECK

    def feed(self, gap: StreamId | None, entries: Sequence[Entry]) -> Decision:
        """A batch read for this wait alone: the first outcome, else RECHECK if any."""
        decision = None if gap is None else self.seen(gap, RECHECK)
        for entry_id, fields in entries:
            job_id, seen = read_entry(fields)
            if seen is not None and (job_id is None or job_id == self.job_id):
                step = self.seen(stream_id(entry_id), seen)
                if isinstance(step, Outcome):
                    return step
                decision = decision or step
        return decision


def check_wait(job_id: object, timeout: object) -> float | None:
    """Validate the arguments of ``wait_until_finished``; the timeout in seconds."""
    if not isinstance(job_id, str) or not job_id:
        raise InvalidOptionError(f"job_id must be a non-empty str, not {job_id!r}")
    return None if timeout is None else to_seconds(timeout, "timeout")


def _events_off(queue: str) -> EventsDisabledError:
    return EventsDisabledError(
        f"queue {queue!r} records no events, and waiting for a job reads them: turn them "
        "on with queue.set_events_max_length(None) (or a length)"
    )


class _Wait(JobWatch):
    """A wait of ``ResultWaiter``: its watch, its future, and its timeout's state. The
    timeout ends the wait only once the first status check answered, so that a finished
    job's result is returned even with a timeout of 0."""

    __slots__ = ("expired", "future", "looked", "seconds")

    def __init__(self, job_id: str, future: asyncio.Future[Outcome], seconds: float | None):
        super().__init__(job_id)
        self.future = future
        self.seconds = seconds
        self.looked = False  # the first status check answered
        self.expired = False  # the timeout passed before that

    def time_out(self) -> None:
        if not self.looked:
            self.expired = True
        elif not self.future.done():
            self.future.set_exception(
                TimeoutError(f"job {self.job_id!r} did not finish within {self.seconds} s")
            )


StatusCall = Callable[[list[str]], Awaitable[Any]]


class ResultWaiter:
    """Every ``wait_until_finished`` of one ``Queue``: batched status checks, and one
    reader of the events stream that resolves the waits by job id."""

    def __init__(
        self,
        status: StatusCall,
        client: AsyncClient,
        keys: QueueKeys,
        serializer: Serializer,
        timeout: float | None,
    ) -> None:
        self._status = status
        self._client = client
        self._keys = keys
        self._serializer = serializer
        self._timeout = timeout
        self._waits: dict[str, list[_Wait]] = {}
        self._unchecked: dict[_Wait, None] = {}  # insertion-ordered set
        self._checker: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def wait(self, job_id: str, seconds: float | None) -> Any:
        """The job's return value, or the error that says why there is none; past
        ``seconds`` (None: no limit), ``TimeoutError``."""
        if self._closed:
            raise QueueError("the queue is closed")
        loop = asyncio.get_running_loop()
        wait = _Wait(job_id, loop.create_future(), seconds)
        self._waits.setdefault(job_id, []).append(wait)
        self._recheck(wait)
        timer = None if seconds is None else loop.call_later(seconds, wait.time_out)
        try:
            outcome = await wait.future
        finally:
            if timer is not None:
                timer.cancel()
            self._discard(wait)
        return outcome.result(job_id, self._keys.queue, self._serializer)

    async def close(self) -> None:
        self._closed = True
        tasks = [task for task in (self._checker, self._reader) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_all(QueueError("the queue was closed while waiting for the job"))

    # ----- bookkeeping

    def _discard(self, wait: _Wait) -> None:
        self._unchecked.pop(wait, None)
        waits = self._waits.get(wait.job_id)
        if waits is not None:
            waits.remove(wait)
            if not waits:
                del self._waits[wait.job_id]

    def _recheck(self, wait: _Wait) -> None:
        self._unchecked[wait] = None
        if self._checker is None:
            self._checker = asyncio.create_task(self._check_loop())

    def _decide(self, wait: _Wait, decision: Decision) -> None:
        if isinstance(decision, Outcome):
            wait.future.set_result(decision)
        elif decision is RECHECK:
            self._recheck(wait)

    def _fail(self, waits: Sequence[_Wait], exc: BaseException) -> None:
        for wait in waits:
            if not wait.future.done():
                wait.future.set_exception(exc)

    def _fail_all(self, exc: BaseException) -> None:
        self._fail(self._pending(), exc)

    # ----- status checks

    async def _check_loop(self) -> None:
        try:
            while self._unchecked:
                batch = list(self._unchecked)[:_BATCH]
                for wait in batch:
                    del self._unchecked[wait]
                try:
                    status = parse_status(await self._status([wait.job_id for wait in batch]))
                except Exception as exc:  # a typed error from the call: the callers get it
                    self._fail(batch, exc)
                    continue
                if not status.events_on:
                    self._fail(batch, _events_off(self._keys.queue))
                    continue
                for wait, outcome in zip(batch, status.outcomes, strict=True):
                    if not wait.future.done():
                        self._decide(wait, wait.checked(status.position, outcome))
                    if not wait.looked:
                        wait.looked = True
                        if wait.expired:
                            wait.time_out()
                watching = any(w.since is not None and not w.future.done() for w in batch)
                if self._reader is None and watching:
                    self._reader = asyncio.create_task(self._read_loop(status.position))
        finally:
            self._checker = None

    # ----- the reader

    async def _read_loop(self, position: str) -> None:
        reader = EventReader(
            self._client,
            self._keys,
            position,
            block=DEFAULT_BLOCK_S,
            count=_READ_COUNT,
            timeout=self._timeout,
        )
        try:
            while self._waits:
                gap, entries = await reader.read()
                if gap is not None:
                    for wait in self._pending():
                        self._decide(wait, wait.seen(gap, RECHECK))
                for entry_id, fields in entries:
                    self._dispatch(stream_id(entry_id), fields)
        except Exception as exc:  # not a Redis fault (those are retried): end the waits
            _log.error("events_reader_failed", queue=self._keys.queue, error=repr(exc))
            self._fail_all(exc)
        finally:
            self._reader = None

    def _dispatch(self, entry_id: StreamId, fields: Mapping[bytes, bytes]) -> None:
        job_id, seen = read_entry(fields)
        if seen is None:
            return
        waits = self._pending() if job_id is None else self._pending(job_id)
        for wait in waits:
            self._decide(wait, wait.seen(entry_id, seen))

    def _pending(self, job_id: str | None = None) -> list[_Wait]:
        """The waits not ended yet (of ``job_id``, or all)."""
        groups = self._waits.values() if job_id is None else [self._waits.get(job_id, [])]
        return [wait for waits in groups for wait in waits if not wait.future.done()]


def wait_blocking(
    job_id: str,
    timeout: float | None,
    *,
    status: Callable[[list[str]], Any],
    client: SyncClient,
    keys: QueueKeys,
    serializer: Serializer,
) -> Any:
    """The blocking twin of ``ResultWaiter.wait``, for one job: a status check, then XREAD
    BLOCK on ``client`` in a loop bounded by ``timeout``. Redis faults raise typed errors
    (``status`` types its own)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    limit = socket_timeout(client)
    block = DEFAULT_BLOCK_S if limit is None else min(DEFAULT_BLOCK_S, limit / 2)
    watch = JobWatch(job_id)
    cursor: StreamCursor | None = None
    decision: Decision = RECHECK
    while not isinstance(decision, Outcome):
        if decision is RECHECK:
            checked = parse_status(status([job_id]))
            if not checked.events_on:
                raise _events_off(keys.queue)
            cursor = cursor or StreamCursor(checked.position)
            decision = watch.checked(checked.position, checked.outcomes[0])
            continue
        assert cursor is not None
        remaining = block if deadline is None else min(block, deadline - time.monotonic())
        if remaining <= 0:
            raise TimeoutError(f"job {job_id!r} did not finish within {timeout} s")
        with redis_errors("wait_until_finished"):
            batch = _read_sync(client, keys["events"], cursor, remaining)
        decision = watch.feed(*batch)
    return decision.result(job_id, keys.queue, serializer)


def _read_sync(
    client: SyncClient, key: str, cursor: StreamCursor, block: float
) -> tuple[StreamId | None, list[Entry]]:
    first: Any = client.xrange(key, count=1)
    gap = cursor.check(first[0][0] if first else None)
    wait_ms = None if gap is not None else to_ms(block)  # after a gap, look again at once
    reply = client.xread({key: cursor.position}, count=_READ_COUNT, block=wait_ms)
    entries = entries_of(reply)
    cursor.advance(entries)
    return gap, entries
