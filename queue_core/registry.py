"""The registry of live workers: each worker's ``Heartbeat`` announces it, and
``queue.get_workers()`` lists the workers whose last beat has not expired.

An entry lives for ``EXPIRY_BEATS`` heartbeat intervals, so a worker that was killed
(no goodbye) leaves the list within that time, while one slow beat does not drop a live
worker. A worker that closes gracefully removes its entry itself.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import orjson

from queue_core.admin import Operation
from queue_core.hooks import OperationEvent
from queue_core.job import ms_to_datetime
from queue_core.log import get_logger
from queue_core.options import to_ms
from queue_core.scripts import load_script, run_script
from queue_core.supervision import is_redis_fault

if TYPE_CHECKING:
    from queue_core.worker_context import WorkerContext

__all__ = ["EXPIRY_BEATS", "Heartbeat", "WorkerInfo", "get_workers"]

EXPIRY_BEATS: Final = 3
_REMOVE_TIMEOUT_S: Final = 2.0  # a goodbye must not hold up a shutdown for long

_HEARTBEAT = load_script("heartbeat")
_GET_WORKERS = load_script("get_workers")

_log = get_logger("queue_core.worker")


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker as its last heartbeat described it.

    ``started_at`` is when the worker started (its host's clock), ``last_heartbeat`` when
    it last beat (Redis's clock). ``running_job_ids`` are the jobs it ran at that beat.
    """

    id: str
    host: str
    pid: int
    queue: str
    concurrency: int
    started_at: datetime
    last_heartbeat: datetime
    running_job_ids: tuple[str, ...]


def _parse_info(raw: bytes) -> WorkerInfo | None:
    try:
        info = orjson.loads(raw)
        started, beat = ms_to_datetime(info["started"]), ms_to_datetime(info["beat"])
        assert started is not None
        assert beat is not None
        return WorkerInfo(
            id=str(info["id"]),
            host=str(info["host"]),
            pid=int(info["pid"]),
            queue=str(info["queue"]),
            concurrency=int(info["concurrency"]),
            started_at=started,
            last_heartbeat=beat,
            running_job_ids=tuple(str(job_id) for job_id in info["jobs"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # not written by a worker (a manual edit): left out of the list


def _parse_workers(reply: Any, event: OperationEvent | None) -> list[WorkerInfo]:
    workers = [info for info in map(_parse_info, reply[2::2]) if info is not None]
    workers.sort(key=lambda info: (info.started_at, info.id))
    if event is not None:
        event.count = len(workers)
    return workers


def get_workers() -> Operation[list[WorkerInfo]]:
    return Operation("get_workers", _GET_WORKERS, [], _parse_workers, action=False)


class Heartbeat:
    """Announces the worker now and every ``interval`` until the worker stops, then
    removes its entry (best effort: if that fails, the entry expires)."""

    def __init__(self, ctx: WorkerContext, interval: float) -> None:
        self.ctx = ctx
        self.interval = interval
        self.errors = ctx.supervisor("heartbeat")
        self._static = {
            "id": ctx.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queue": ctx.name,
            "concurrency": ctx.concurrency,
            "started": int(time.time() * 1000),
        }

    async def run(self) -> None:
        """Beat until cancelled: it goes on while running jobs finish at shutdown, and the
        worker cancels it once they have."""
        try:
            while True:
                await self.errors.guard(self._beat, asyncio.sleep)
                await asyncio.sleep(self.interval)
        except asyncio.CancelledError:
            await self._remove()
            raise

    async def _beat(self) -> None:
        ctx = self.ctx
        info = orjson.dumps({**self._static, "jobs": list(ctx.running)})
        args = [ctx.id, "beat", to_ms(self.interval * EXPIRY_BEATS), info]
        try:
            with ctx.internal("heartbeat"):
                async with asyncio.timeout(ctx.redis.timeout):
                    await run_script(ctx.client, _HEARTBEAT, ctx.keys, args)
        except Exception as exc:
            if not is_redis_fault(exc, ctx.client):
                raise
            # The entry outlives two missed beats; the next one is due in one interval.
            _log.warning("heartbeat_failed", error=f"{type(exc).__name__}: {exc}",
                         queue=ctx.name, worker_id=ctx.id)  # fmt: skip
            return
        ctx.redis.contact()

    async def _remove(self) -> None:
        ctx = self.ctx
        timeout = min(ctx.redis.timeout or _REMOVE_TIMEOUT_S, _REMOVE_TIMEOUT_S)
        try:
            with ctx.internal("heartbeat"):
                async with asyncio.timeout(timeout):
                    await run_script(ctx.client, _HEARTBEAT, ctx.keys, [ctx.id, "remove"])
        except Exception as exc:  # the entry expires on its own
            _log.info("worker_unregister_failed", error=f"{type(exc).__name__}: {exc}",
                      queue=ctx.name, worker_id=ctx.id)  # fmt: skip
