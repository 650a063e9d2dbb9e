"""A thread pool of daemon threads for plain ``def`` processors.

``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit, so a
worker whose shutdown timed out would hang until every blocking job returned. Daemon
threads end with the process instead; their jobs are then recovered as stalled, exactly
as if the process had been killed. A thread starts whenever none is idle, so a job never
waits behind one that timed out and is still running.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DaemonThreadPool"]

_Item = tuple[
    asyncio.AbstractEventLoop, asyncio.Future[Any], contextvars.Context, Callable[[], Any]
]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class DaemonThreadPool:
    def __init__(self, name: str) -> None:
        self._name = name
        self._items: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in a thread with a copy of the caller's contextvars (trace context)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._idle == 0:
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1
        self._items.put((loop, future, contextvars.copy_context(), fn))
        return await future

    def _serve(self) -> None:
        while True:
            item = self._items.get()
            if item is None:
                return
            loop, future, context, fn = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = context.run(fn)
            except BaseException as exc:  # handed to the awaiting task, never lost here
                error = exc
            with self._lock:
                self._idle += 1
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future, result, error)

    def shutdown(self) -> None:
        """Let idle threads exit; busy ones exit when their job returns."""
        for _ in self._threads:
            self._items.put(None)
