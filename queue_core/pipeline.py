"""A worker's script calls, pipelined: many commands in one write, replies read in order.

With several jobs in flight, their settle calls arrive while earlier ones are still on the
wire. Sending each on its own costs a system call and a connection checkout apiece, more
than Redis spends running the script. Here, calls queue up while a batch is in flight and
leave together as the next batch: one write, one checkout, replies read in order. Nothing
waits on purpose: an idle pipeline sends a call at once, so a lone call has the latency of
a direct one. Each script stays its own atomic call; only the transport is shared.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["CommandPipeline"]


class CommandPipeline:
    def __init__(self, client: AsyncRedis) -> None:
        self._pool = client.connection_pool
        self._pending: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def call(self, command: bytes) -> Any:
        """Send a packed command; return its reply (a ``ResponseError`` is raised)."""
        if self._closed:
            raise RedisConnectionError("the command pipeline is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail(self._pending, RedisConnectionError("the command pipeline is closed"))
        self._pending = []

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)

    async def _send(self, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        try:
            connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except BaseException as error:  # Redis unreachable: every caller hears of it
            self._fail(batch, _as_exception(error))
            if not isinstance(error, Exception):
                raise
            return
        try:
            await connection.send_packed_command([command for command, _ in batch])
            for _, future in batch:
                try:
                    reply = await connection.read_response()
                except ResponseError as error:  # a reply: the connection is still in step
                    if not future.done():
                        future.set_exception(error)
                    continue
                if not future.done():  # its caller may have been cancelled meanwhile
                    future.set_result(reply)
        except BaseException as error:
            await connection.disconnect(nowait=True)
            self._fail(batch, _as_exception(error))
            if not isinstance(error, Exception):
                raise
        finally:
            await self._pool.release(connection)

    @staticmethod
    def _fail(batch: list[tuple[bytes, asyncio.Future[Any]]], error: Exception) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(error)


def _as_exception(error: BaseException) -> Exception:
    """What the waiting callers see when the pipeline itself was cancelled."""
    if isinstance(error, Exception):
        return error
    return RedisConnectionError(f"the command pipeline stopped: {error!r}")
