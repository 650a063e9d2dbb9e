"""A worker's script calls, pipelined: many commands in one write, replies read in order.

With several jobs in flight, their settle and fetch calls arrive a few at a time. Sending
each on its own costs a system call and a connection checkout apiece, more than Redis
spends running the script; waiting for one batch's replies before sending the next leaves
Redis idle while the worker handles those replies, and the worker idle while Redis runs
the next batch. So the pipeline keeps one connection, writes whatever calls were made
since its last write as one batch, and does not wait for replies before writing again: a
reader reads replies in order while later batches are on the wire, and hands them out in
two halves so that Redis and the worker work at the same time (see ``_read_loop``).
Nothing waits on purpose: a lone call goes out at once. Each script stays its own atomic
call; only the transport is shared, with one exception: calls that say they may share one
command (``SharedCall``: a script that takes several groups of arguments, such as a
worker's completions) and leave in the same write go as one command, whose reply holds
one reply per call. Redis then parses one command and sets the script up once for all of
them, rather than once each.

Deadline: a call with no reply ``timeout`` seconds after it was written (a frozen or
black-holed server) fails with ``redis.exceptions.TimeoutError``, with every other call on
the connection, and the connection is dropped. One timer per pipeline watches the oldest
call in flight, so the deadline costs the hot path no timer per call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["CommandPipeline", "SharedCall"]

# An idle pipeline gives its connection back to the pool after this long: a checkout
# tests a pooled connection and reconnects it if the server closed it meanwhile (Redis
# `timeout`, a proxy or a managed service dropping idle clients), which a connection
# held for good would only find out by failing a call.
IDLE_RELEASE_S = 2.0


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 us a call
class SharedCall:
    """A call that may go out as one command with others of its ``group`` written at the
    same time: ``pack`` makes the command from the arguments of one call or of several,
    concatenated in order; the reply to several is a list of one reply per call."""

    group: Hashable
    args: Sequence[Any]
    pack: Callable[[Sequence[Any]], bytes]


class CommandPipeline:
    def __init__(self, client: AsyncRedis, timeout: float | None = None) -> None:
        self._pool = client.connection_pool
        self._timeout = timeout
        self._pending: list[tuple[bytes | SharedCall, asyncio.Future[Any]]] = []
        # Written, reply not read yet: (the caller's future, when it was written).
        self._in_flight: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._read_from: AbstractConnection | None = None  # the reader's connection
        self._last_write = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._releasing: asyncio.Future[None] | None = None
        self._closed = False

    async def call(self, command: bytes | SharedCall) -> Any:
        """Send a packed command (or a call that may share one); return its reply (a
        ``ResponseError`` is raised)."""
        if self._closed:
            raise RedisConnectionError("the command pipeline is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_loop())
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._releasing is not None:
            await asyncio.gather(self._releasing, return_exceptions=True)
        for task in (self._writer, self._reader):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._writer, self._reader) if t is not None), return_exceptions=True
        )
        error = RedisConnectionError("the command pipeline is closed")
        await self._drop_connection(error)
        _fail((future for _, future in self._pending), error)
        self._pending = []

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Calls made during the same turn of the event loop leave together.
            if self._pending:
                batch, self._pending = self._pending, []
                await self._write(_merge(batch))

    async def _write(self, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        try:
            connection = self._connection
            if connection is None:
                # A frozen server accepts the TCP connection and never answers its handshake.
                async with asyncio.timeout(self._timeout):
                    connection = await self._ensure_connection()
        except BaseException as error:  # Redis unreachable: every caller hears of it
            if isinstance(error, TimeoutError):
                self._connection = None
                error = RedisTimeoutError(f"no connection to Redis within {self._timeout} s")
            _fail((future for _, future in batch), _as_exception(error))
            if not isinstance(error, Exception):
                raise
            return
        # Registered before the write, so that the reader never sees an unclaimed reply.
        now = asyncio.get_running_loop().time()
        self._in_flight.extend((future, now) for _, future in batch)
        self._last_write = now
        if self._timeout is not None and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_at(
                now + self._timeout, self._check_deadline
            )
        try:
            await connection.send_packed_command(
                [command for command, _ in batch], check_health=False
            )
        except BaseException as error:
            await self._drop_connection(_as_exception(error), connection)
            if not isinstance(error, Exception):
                raise
            return
        if self._reader is None or self._reader.done() or self._read_from is not connection:
            self._read_from = connection
            self._reader = asyncio.ensure_future(self._read_loop(connection))

    async def _read_loop(self, connection: AbstractConnection) -> None:
        # Redis answers a batch all at once, so left alone the worker would handle every
        # reply, send one batch, and wait while Redis runs it: the two take turns. Pausing
        # after half of what is due lets the first half's next calls leave (the writer
        # runs in that pause) while the second half is handled: Redis and the worker then
        # work at the same time (measured: no-op jobs at concurrency 10, +60%).
        handled = 0
        pause_after = 0
        try:
            while self._in_flight and connection is self._connection:
                if handled == 0:
                    pause_after = max(1, len(self._in_flight) // 2)
                try:
                    reply: Any = await connection.read_response()
                except ResponseError as error:  # a reply: the connection is still in step
                    reply = error
                future, _ = self._in_flight.popleft()
                if future.done():  # its caller was cancelled meanwhile
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
                handled += 1
                if handled >= pause_after:
                    handled = 0
                    await asyncio.sleep(0)
            if connection is self._connection and self._idle_timer is None:
                self._idle_timer = asyncio.get_running_loop().call_later(
                    IDLE_RELEASE_S, self._release_if_idle
                )
        except BaseException as error:
            await self._drop_connection(_as_exception(error), connection)
            if not isinstance(error, Exception):
                raise

    def _check_deadline(self) -> None:
        """The watchdog: fail everything in flight once the oldest call is overdue."""
        self._watchdog = None
        if not self._in_flight or self._timeout is None:
            return
        loop = asyncio.get_running_loop()
        overdue_at = self._in_flight[0][1] + self._timeout
        if loop.time() < overdue_at:
            self._watchdog = loop.call_at(overdue_at, self._check_deadline)
            return
        # Detached at once, before the reader's cancellation could fail the callers
        # with its own error instead of the timeout.
        connection = self._connection
        error = RedisTimeoutError(f"Redis did not answer within {self._timeout} s")
        if self._detach(error, connection) is None:
            return
        if self._reader is not None and self._read_from is connection:
            self._reader.cancel()  # it waits on the connection being dropped
        assert connection is not None
        self._releasing = asyncio.ensure_future(self._give_back(connection, broken=True))

    def _release_if_idle(self) -> None:
        self._idle_timer = None
        connection = self._connection
        if connection is None or self._in_flight or self._pending or self._closed:
            return  # busy again: the reader arms the timer when it next runs dry
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_write
        if idle < IDLE_RELEASE_S:
            self._idle_timer = loop.call_later(IDLE_RELEASE_S - idle, self._release_if_idle)
            return
        self._connection = None
        self._releasing = asyncio.ensure_future(self._pool.release(connection))

    async def _ensure_connection(self) -> AbstractConnection:
        if self._connection is None:
            self._connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        return self._connection

    async def _drop_connection(
        self, error: Exception, connection: AbstractConnection | None = None
    ) -> None:
        """The connection broke (or the pipeline closes): fail every call whose reply was
        still due, and give the connection back, disconnected if anything was in flight."""
        broken = bool(self._in_flight) or connection is not None
        current = self._detach(error, connection)
        if current is not None:
            await self._give_back(current, broken=broken)

    def _detach(
        self, error: Exception, connection: AbstractConnection | None
    ) -> AbstractConnection | None:
        """Stop using the connection (``connection``, if still the current one) and fail
        every call whose reply was still due; the connection to give back, or None when
        another task dropped it already."""
        current = self._connection
        if current is None or (connection is not None and connection is not current):
            return None
        self._connection = None
        _fail((future for future, _ in self._in_flight), error)
        self._in_flight.clear()
        return current

    async def _give_back(self, connection: AbstractConnection, *, broken: bool) -> None:
        if broken:  # its state is unknown: never reuse it
            await connection.disconnect(nowait=True)
        await self._pool.release(connection)


def _merge(
    batch: list[tuple[bytes | SharedCall, asyncio.Future[Any]]],
) -> list[tuple[bytes, asyncio.Future[Any]]]:
    """The commands to write: shared calls of one group become one command, in the place of
    the first of them (calls of different groups or jobs do not depend on each other's
    order; each group keeps its own)."""
    if len(batch) == 1:  # the common case of a quiet worker: nothing to share
        command, future = batch[0]
        return [(command if isinstance(command, bytes) else command.pack(command.args), future)]
    slots: list[tuple[bytes, asyncio.Future[Any]] | list[tuple[SharedCall, asyncio.Future[Any]]]]
    slots = []
    groups: dict[Hashable, list[tuple[SharedCall, asyncio.Future[Any]]]] = {}
    for command, future in batch:
        if isinstance(command, bytes):
            slots.append((command, future))
            continue
        members = groups.get(command.group)
        if members is None:
            members = groups[command.group] = []
            slots.append(members)
        members.append((command, future))
    if not groups:
        return slots  # type: ignore[return-value]  # no shared calls: all bytes
    merged: list[tuple[bytes, asyncio.Future[Any]]] = []
    for slot in slots:
        if isinstance(slot, tuple):
            merged.append(slot)
        else:
            half = (len(slot) + 1) // 2
            merged += _shared_command(slot[:half]) + _shared_command(slot[half:])
    return merged


def _shared_command(
    part: list[tuple[SharedCall, asyncio.Future[Any]]],
) -> list[tuple[bytes, asyncio.Future[Any]]]:
    """One command for ``part``'s calls (none for no calls; a plain one for a lone call)."""
    if len(part) < 2:
        return [(call.pack(call.args), future) for call, future in part]
    together = asyncio.get_running_loop().create_future()
    together.add_done_callback(partial(_share_out, [future for _, future in part]))
    return [(part[0][0].pack([arg for call, _ in part for arg in call.args]), together)]


def _share_out(futures: list[asyncio.Future[Any]], together: asyncio.Future[Any]) -> None:
    """Hand each caller its part of a shared command's reply (or its error). The command's
    own future is never cancelled: a broken connection or a deadline sets an error on it."""
    error = together.exception()
    replies = together.result() if error is None else None
    if error is None and (not isinstance(replies, list) or len(replies) != len(futures)):
        error = ResponseError(f"a shared call expected {len(futures)} replies: {replies!r}")
    for i, future in enumerate(futures):
        if future.done():  # its caller was cancelled meanwhile
            continue
        if error is not None:
            future.set_exception(error)
        else:
            assert replies is not None
            future.set_result(replies[i])


def _fail(futures: Any, error: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


def _as_exception(error: BaseException) -> Exception:
    """What the waiting callers see when the pipeline itself was cancelled."""
    if isinstance(error, Exception):
        return error
    return RedisConnectionError(f"the command pipeline stopped: {error!r}")
