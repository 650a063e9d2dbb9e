"""Reading a queue's job events: ``QueueEvents``, and the stream reading it shares with
``wait_until_finished``.

Every transition script appends an entry to the queue's ``events`` stream inside the
transition itself (scripts/includes/events.lua): ``{event: name, id: job id, ...}``, so a
reader sees each transition once and in order. A reader follows the stream with XREAD
BLOCK from a position (the id of the last entry it read): nothing falls between two reads,
and after a Redis fault it reads again from that position, so nothing comes twice.

The stream is capped (``MAXLEN ~``, ``queue.set_events_max_length``): a reader that falls
further behind than the cap loses entries. Before each read it looks at the stream's first
entry; one newer than its position means entries it had not read were trimmed (a gap), as
does a stream that vanished (deleted, or Redis restarted without its data). It logs a
warning and goes on from the oldest entry left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from queue_core.connection import (
    DEFAULT_REDIS_TIMEOUT,
    AsyncClient,
    byte_client,
    create_async_client,
    redis_errors,
    socket_timeout,
    to_deadline,
)
from queue_core.errors import InvalidOptionError
from queue_core.keys import QueueKeys
from queue_core.log import get_logger
from queue_core.options import check_int, to_ms, to_seconds
from queue_core.scripts import load_script, run_script
from queue_core.supervision import Backoff, is_redis_fault

__all__ = [
    "ZERO_ID",
    "EventReader",
    "QueueEvent",
    "QueueEvents",
    "StreamCursor",
    "StreamId",
    "entries_of",
    "stream_id",
]

T = TypeVar("T")

StreamId = tuple[int, int]
"""A stream entry id, ``<ms>-<seq>``, as a pair of ints (ids compare as such, not as text)."""

ZERO_ID: Final = "0-0"  # a position before every entry: read the stream from its start
_END: Final[StreamId] = (2**64, 0)  # after every entry
DEFAULT_BLOCK_S: Final = 5.0
DEFAULT_COUNT: Final = 500
# A blocking read that overruns its block by this much is stuck (a peer that vanished):
# the connection is dropped and the read made again (as the worker's fetch does).
_WATCHDOG_S: Final = 3.0

_JOB_STATUS = load_script("job_status")

_log = get_logger("queue_core.events")

Entry = tuple[bytes, Mapping[bytes, bytes]]


def stream_id(value: str | bytes) -> StreamId:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _check_start(last_id: object) -> str | None:
    """A reader's first position: None for "$" (the stream's end, read at start)."""
    if last_id == "$":
        return None
    if isinstance(last_id, str):
        ms, dash, seq = last_id.partition("-")
        if ms.isdigit() and (not dash or seq.isdigit()):
            return f"{int(ms)}-{int(seq or 0)}"
    raise InvalidOptionError(f"last_id must be '$' or a stream id such as '0-0', not {last_id!r}")


def entries_of(reply: Any) -> list[Entry]:
    """The entries of an XREAD reply on one stream (RESP2 list or RESP3 map), or []."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (item[1] for item in reply)
    return [(entry_id, fields) for entries in streams for entry_id, fields in entries]


@dataclass(frozen=True, slots=True)
class QueueEvent:
    """One entry of a queue's events stream.

    ``id`` is the entry's stream id (give it as ``last_id`` to read on from there),
    ``event`` its name (added, waiting, active, progress, completed, failed,
    retry_scheduled, delayed, stalled, removed, cancelled, paused, resumed, drained,
    cleaned, scheduled (a scheduler's run made: ``scheduler``, ``due``), scheduler_upserted
    and scheduler_removed (``scheduler``), dependency (a flow child's outcome reached its
    parent ``id``: ``child``, ``outcome``); an ``added`` flow job has ``state``
    waiting_children when it is a parent and ``parent`` when it is a child, and a parent
    whose children are done emits ``waiting`` with ``from`` waiting_children...),
    ``job_id`` the job it is about (None for queue-wide events), ``fields`` the other
    fields, such as ``reason`` and ``type`` of a failure, ``attempts``, ``due`` (epoch
    ms), ``data`` (progress, JSON) or ``value`` (a completed job's serialized return
    value; ``large=1`` instead when it was above 16 KiB).
    ``timestamp`` is when the entry was added (from its id).

    Fields are decoded as UTF-8 with ``surrogateescape``, so that ``raw(name)`` gives back
    the exact bytes of a value that is not text (a binary serializer's result).
    """

    id: str
    event: str
    job_id: str | None
    fields: Mapping[str, str] = field(hash=False)  # a dict: events hash by the rest
    timestamp: datetime

    @classmethod
    def from_entry(cls, entry_id: bytes, fields: Mapping[bytes, bytes]) -> QueueEvent:
        decoded = {
            key.decode(errors="surrogateescape"): value.decode(errors="surrogateescape")
            for key, value in fields.items()
        }
        text = entry_id.decode()
        return cls(
            id=text,
            event=decoded.pop("event", ""),
            job_id=decoded.pop("id", None),
            fields=decoded,
            timestamp=datetime.fromtimestamp(stream_id(text)[0] / 1000, tz=UTC),
        )

    def raw(self, name: str) -> bytes | None:
        """A field's bytes as stored, or None."""
        value = self.fields.get(name)
        return None if value is None else value.encode(errors="surrogateescape")


class StreamCursor:
    """A reader's position in the stream and the gaps it found (no I/O)."""

    __slots__ = ("_gone", "_reported", "missed_gaps", "position")

    def __init__(self, position: str) -> None:
        self.position = position
        self.missed_gaps = 0
        self._gone = False
        self._reported: str | None = None  # the position of the last gap reported

    def check(self, first_id: bytes | None) -> StreamId | None:
        """Given the stream's first entry id (None: no stream), the id from which the
        stream goes on if entries after the position were lost, else None. A gap is
        reported once, however often the read after it is retried."""
        if first_id is None:
            if self.position == ZERO_ID or self._gone:
                return None
            # Deleted, or lost in a restart: what comes now is a new stream, read whole.
            self._gone = True
            self.missed_gaps += 1
            self.position = ZERO_ID
            return _END
        self._gone = False
        first = stream_id(first_id)
        if self.position in (ZERO_ID, self._reported) or first <= stream_id(self.position):
            return None
        # The entry at the position was trimmed, and maybe some after it. (When only that
        # entry went, this reports a gap that lost nothing; the reader was that far behind.)
        self._reported = self.position
        self.missed_gaps += 1
        return first

    def advance(self, entries: Sequence[Entry]) -> None:
        if entries:
            self.position = entries[-1][0].decode()


class EventReader:
    """Follows one queue's events stream in order: XREAD BLOCK in batches from the cursor's
    position. Redis faults are retried with backoff from the last entry read; other errors
    are raised, typed (``redis_errors``). With a cluster client, the blocking read goes to
    the queue's node itself, as the worker's blocking wait does (fetching.py)."""

    def __init__(
        self,
        client: AsyncClient,
        keys: QueueKeys,
        position: str | None,
        *,
        block: float,
        count: int,
        timeout: float | None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.key = keys["events"]
        self.cursor = StreamCursor(position or ZERO_ID)
        self.started = position is not None
        timeout_s = socket_timeout(client)
        # A blocking read must return before the client's socket times out.
        self.block = block if timeout_s is None else min(block, timeout_s / 2)
        self.count = count
        self.timeout = timeout
        self.events_length: int | None = None  # the queue's setting, when read at start
        self._gap: StreamId | None = None  # found by a read that then failed: told later

    async def start(self) -> None:
        """Read the stream's end, the position "now" (with retries)."""
        if not self.started:
            await self._retrying("read events position", self._start)

    async def read(self) -> tuple[StreamId | None, list[Entry]]:
        """The next batch of entries (empty when none came within ``block``), and the id
        the stream goes on from if a gap came before them."""
        await self.start()
        return await self._retrying("read events", self._read)

    async def _start(self) -> None:
        async with asyncio.timeout(self.timeout):
            reply = await run_script(self.client, _JOB_STATUS, self.keys, [])
        self.cursor.position = reply[0].decode()
        self.events_length = int(reply[1])
        self.started = True

    async def _read(self) -> tuple[StreamId | None, list[Entry]]:
        client = self.client
        async with asyncio.timeout(self.timeout):
            first = await client.execute_command("XRANGE", self.key, "-", "+", "COUNT", 1)
        self._gap = self.cursor.check(first[0][0] if first else None) or self._gap
        target: Any = client
        if isinstance(client, AsyncRedisCluster):
            target = client.get_node_from_key(self.key) or client
        # After a gap, read without blocking: whoever reads hears of it at once.
        block = () if self._gap is not None else ("BLOCK", to_ms(self.block))
        async with asyncio.timeout(self.block + _WATCHDOG_S):
            reply = await target.execute_command(
                "XREAD", "COUNT", self.count, *block, "STREAMS", self.key, self.cursor.position
            )
        entries = entries_of(reply)
        self.cursor.advance(entries)
        gap, self._gap = self._gap, None
        if gap is not None:
            _log.warning(
                "events_missed",
                queue=self.keys.queue,
                stream_gone=gap == _END,
                resumed_at=self.cursor.position if entries else None,
                hint="the reader fell behind the events stream's cap and entries it had not "
                "read were trimmed (or the stream was deleted); see set_events_max_length",
            )
        return gap, entries

    async def _retrying(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        backoff = Backoff()
        while True:
            try:
                result = await call()
            except Exception as exc:
                if not is_redis_fault(exc, self.client):
                    with redis_errors(operation, self.timeout):
                        raise
                delay = backoff.next()
                _log.warning(
                    "redis_unavailable",
                    operation=operation,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                    queue=self.keys.queue,
                )
                await asyncio.sleep(delay)
                continue
            failures = backoff.reset()
            if failures:
                _log.info("redis_reconnected", failed_attempts=failures, queue=self.keys.queue)
            return result


class QueueEvents:
    """The job events of ``queue_name``, from any process, as an async iterator::

        async with QueueEvents("emails") as events:
            async for event in events:
                print(event.event, event.job_id, event.fields)

    ``last_id`` is where to start: ``"$"`` (default) for the events that come after the
    reader starts (``async with`` or the first read), or a stream id (a ``QueueEvent.id``
    saved earlier, ``"0-0"`` for the oldest kept) for those after it. Events come in the
    order of the transitions, each once; through Redis faults the reader reconnects (with
    backoff) and goes on from the last event it read.

    ``redis`` is a URL or a ``redis.asyncio.Redis`` / ``RedisCluster`` client (a client
    passed in is not closed by ``close()``; one with ``decode_responses=True`` is used
    through a byte twin, as ``Queue`` does); a blocking read holds one of its connections,
    and while Redis is away (at start too) the reader retries. ``block`` is how long one
    read waits in Redis
    (shorter than a client's socket timeout), ``count`` the most events one read takes.

    The stream keeps about ``queue.set_events_max_length`` events (10,000 by default): a
    reader further behind loses the oldest ones. It logs ``events_missed`` and counts it
    in ``missed_gaps``. ``last_id`` is the id of the last event delivered.
    """

    def __init__(
        self,
        queue_name: str,
        *,
        redis: str | AsyncClient | None = None,
        prefix: str = "qc",
        last_id: str = "$",
        block: float | timedelta = DEFAULT_BLOCK_S,
        count: int = DEFAULT_COUNT,
        redis_timeout: float | timedelta | None = DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        self.keys = QueueKeys(queue_name, prefix)
        self.name = queue_name
        start = _check_start(last_id)
        block_s = to_seconds(block, "block", allow_zero=False)
        check_int(count, "count", 1, 100_000)
        timeout = to_deadline(redis_timeout)
        if redis is None or isinstance(redis, str):
            self.client: AsyncClient = create_async_client(redis)
            self._owns_client = True
        else:  # a decoding client's byte twin is ours to close
            self.client, self._owns_client = byte_client(redis)
        self._reader = EventReader(
            self.client, self.keys, start, block=block_s, count=count, timeout=timeout
        )
        self.last_id: str | None = start
        self._buffer: deque[QueueEvent] = deque()
        self._reading: asyncio.Future[tuple[StreamId | None, list[Entry]]] | None = None
        self._closed = False

    @property
    def missed_gaps(self) -> int:
        """How many times entries this reader had not read were trimmed from the stream."""
        return self._reader.cursor.missed_gaps

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Fix the starting position ("$": the stream's end now). The first read does it
        otherwise."""
        if self._reader.started:
            return
        await self._reader.start()
        self.last_id = self._reader.cursor.position
        if self._reader.events_length == 0:
            _log.warning(
                "events_off",
                queue=self.name,
                hint="this queue records no events: queue.set_events_max_length(None) "
                "turns them on",
            )

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> QueueEvent:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            await self.start()
            # A task of its own, so that close() from another task ends the blocking read.
            reading = self._reading = asyncio.ensure_future(self._reader.read())
            try:
                _, entries = await reading
            except asyncio.CancelledError:
                if self._closed_by_close():
                    raise StopAsyncIteration from None
                raise
            finally:
                self._reading = None
            self._buffer.extend(QueueEvent.from_entry(i, fields) for i, fields in entries)
        event = self._buffer.popleft()
        self.last_id = event.id
        return event

    def _closed_by_close(self) -> bool:
        """The read was cancelled by close(), not this task by its owner."""
        task = asyncio.current_task()
        return self._closed and (task is None or not task.cancelling())

    async def close(self) -> None:
        """Stop reading (a read in progress ends at once) and close the client if it was
        made here. Iteration then stops."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        if self._reading is not None:
            self._reading.cancel()
        if self._owns_client:
            await self.client.aclose()

    aclose = close
