"""The cancellations a worker delivered to its processors' tasks, and their undoing.

``queue.cancel()`` stops an async processor by cancelling its task. A processor may lose
that cancellation without meaning to: redis-py's asyncio client, for one, can swallow a
task's cancellation that lands mid-command (redis/redis-py#2028, #2551), and the job then
runs on to its natural end. A worker hears a pending request again at each lock renewal
(extend_locks.lua), so a task still in its processor a renewal interval after the last
delivery gets the cancellation again. The interval leaves a processor that caught the
cancellation on purpose time to clean up before it is cancelled once more.

When the processor ends, ``undo`` takes back every cancellation delivered here
(``Task.uncancel``), so the slot goes on to settle the attempt; a cancellation that
remains came from elsewhere (a forced shutdown), which then wins.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["TaskCancels"]


@dataclass(slots=True)
class _Delivered:
    task: asyncio.Task[Any]
    times: int
    last: float  # time.monotonic() of the last delivery


class TaskCancels:
    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s  # the least time between two deliveries to one task
        self._delivered: dict[str, _Delivered] = {}

    def deliver(self, job_id: str, task: asyncio.Task[Any]) -> None:
        """Cancel ``task``, the one running ``job_id``'s processor."""
        self._delivered[job_id] = _Delivered(task, 1, time.monotonic())
        task.cancel()

    def again(self, job_id: str) -> bool:
        """Cancel ``job_id``'s task once more if it is still in its processor at least an
        interval after the last delivery; True when it was cancelled again."""
        delivered = self._delivered.get(job_id)
        now = time.monotonic()
        if delivered is None or now - delivered.last < self._interval_s:
            return False
        delivered.times += 1
        delivered.last = now
        delivered.task.cancel()
        return True

    def undo(self, job_id: str) -> bool:
        """The processor of ``job_id`` ended: take back the cancellations delivered to its
        task. False when the task is still being cancelled for another reason."""
        delivered = self._delivered.pop(job_id, None)
        if delivered is None:
            return True
        remaining = 0
        for _ in range(delivered.times):
            remaining = delivered.task.uncancel()
        return remaining == 0
