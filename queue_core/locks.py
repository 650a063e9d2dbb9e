"""Locks of running jobs: ``LockRenewer`` keeps this worker's locks alive, and
``StalledRecovery`` puts back the jobs of workers that died (their locks expired).

A lock is a token in the job's record plus a deadline (its score in ``active``). A
healthy job's lock is renewed every ``lock_duration / 2``, so only a job whose worker
stopped renewing (killed, frozen, cut off) is ever recovered, however long it runs. Each
renewal also reports the held jobs whose cancel was requested (``queue.cancel``): the
second way a cancel reaches the worker, should its pub/sub message have been lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Final

from queue_core.commands import parse_quarantined
from queue_core.decoding import snapshot_to_job
from queue_core.hooks import StalledEvent, notify
from queue_core.job import Job
from queue_core.log import get_logger
from queue_core.options import to_ms
from queue_core.scripts import load_script, run_script
from queue_core.supervision import is_redis_fault
from queue_core.worker_context import WorkerContext

__all__ = ["LockRenewer", "StalledRecovery"]

_EXTEND = load_script("extend_locks")
_RECOVER = load_script("recover_stalled")
_GET_JOB = load_script("get_job")
_RECOVER_BATCH: Final = 1000

_log = get_logger("queue_core.worker")


class LockRenewer:
    def __init__(
        self,
        ctx: WorkerContext,
        lock_duration: float,
        on_cancel: Callable[[str], None] = lambda job_id: None,
    ) -> None:
        self.ctx = ctx
        self.lock_duration = lock_duration
        self.on_cancel = on_cancel  # a held job's cancel was requested (JobRunner.cancel)
        self.errors = ctx.supervisor("renew_locks")

    async def run(self) -> None:
        """Renew every lock_duration / 2, sooner after a failed renewal; until cancelled."""
        interval = self.lock_duration / 2
        while True:  # cancelled at shutdown, once no job runs any more
            await asyncio.sleep(interval)
            renewed = await self.errors.guard(self._round, asyncio.sleep)
            interval = self.lock_duration / 2 if renewed else min(1.0, self.lock_duration / 4)

    async def _round(self) -> bool:
        ctx = self.ctx
        if not ctx.running:
            return True
        sent = {job_id: job._token or "" for job_id, job in ctx.running.items()}
        args: list[Any] = [to_ms(self.lock_duration)]
        for pair in sent.items():
            args.extend(pair)
        try:
            with ctx.internal("renew_locks"):
                async with asyncio.timeout(ctx.redis.timeout):
                    reply = await run_script(ctx.client, _EXTEND, ctx.keys, args)
        except Exception as exc:
            if not is_redis_fault(exc, ctx.client):
                raise
            _log.warning(
                "lock_renewal_failed", error=f"{type(exc).__name__}: {exc}", jobs=len(sent)
            )
            return False
        ctx.redis.contact()
        lost, quarantined, cancel = reply[0], reply[1], reply[2]
        for raw_id in lost:
            job_id = raw_id.decode()
            job = ctx.running.get(job_id)
            if job is None or job._token != sent[job_id]:
                continue  # settled while the renewal was in flight: not lost
            _log.warning(
                "job_lock_lost",
                job_id=job_id,
                queue=ctx.name,
                hint="the job ran longer than lock_duration without renewal and was "
                "recovered as stalled; its current attempt will be discarded",
            )
        if quarantined:
            await ctx.report_quarantined(parse_quarantined(quarantined))
        for raw_id in cancel:
            self.on_cancel(raw_id.decode())
        return True


class StalledRecovery:
    def __init__(self, ctx: WorkerContext, interval: float, max_stalled_count: int) -> None:
        self.ctx = ctx
        self.interval = interval
        self.max_stalled_count = max_stalled_count
        self.errors = ctx.supervisor("recover_stalled")

    async def run(self) -> None:
        """Look for expired locks now and every ``interval``, until the worker stops."""
        while True:
            await self.errors.guard(self._round, self.ctx.sleep)
            if not await self.ctx.sleep(self.interval):
                return

    async def _round(self) -> None:
        ctx = self.ctx
        try:
            with ctx.internal("recover_stalled"):
                async with asyncio.timeout(ctx.redis.timeout):
                    reply = await run_script(
                        ctx.client, _RECOVER, ctx.keys, [self.max_stalled_count, _RECOVER_BATCH]
                    )
        except Exception as exc:
            if not is_redis_fault(exc, ctx.client):
                raise
            _log.warning(
                "stalled_check_failed", error=f"{type(exc).__name__}: {exc}", queue=ctx.name
            )
            return
        ctx.redis.contact()
        if reply[2]:
            await ctx.report_quarantined(parse_quarantined(reply[2]))
        await self._report(reply)

    async def _report(self, reply: list[Any]) -> None:
        ctx = self.ctx
        requeued = tuple(x.decode() for x in reply[0])
        failed_ids = [x.decode() for x in reply[1]]
        if failed_ids or reply[3]:
            ctx.deliver_outbox()  # jobs ended for good: flow children tell their parents
        if reply[3]:
            _log.info(
                "stalled_jobs_cancelled",
                queue=ctx.name,
                worker_id=ctx.id,
                jobs=[x.decode() for x in reply[3]],
                hint="their cancel was requested: failed as cancelled, not run again",
            )
        if not requeued and not failed_ids:
            return
        _log.warning(
            "stalled_jobs_recovered",
            queue=ctx.name,
            worker_id=ctx.id,
            requeued=list(requeued),
            failed=failed_ids,
        )
        hooks = ctx.hooks.snapshot().on_stalled
        if not hooks:
            return
        failed: list[Job] = []
        for job_id in failed_ids:
            with suppress(Exception):  # a job that cannot be read is left out of the event
                async with asyncio.timeout(ctx.redis.timeout):
                    snapshot = await run_script(ctx.client, _GET_JOB, ctx.keys, [job_id])
                if snapshot is not None:
                    failed.append(
                        snapshot_to_job(ctx.name, job_id, snapshot, ctx.serializer, ctx.backend)
                    )
        await notify(hooks, StalledEvent(ctx.name, ctx.id, requeued, tuple(failed)))
