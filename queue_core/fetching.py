"""``Fetcher``: the worker's fetch loop. It fills free slots with ready jobs, holds back
while a rate limit holds, and, when nothing is ready, blocks in Redis on the queue's
marker (BZPOPMIN) until a producer or a due delayed job wakes it, rather than polling.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import timedelta
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from queue_core.attempts import JobRunner
from queue_core.commands import Fetched, parse_fetch
from queue_core.hooks import RateLimitEvent, notify
from queue_core.log import get_logger
from queue_core.options import to_ms, to_seconds
from queue_core.scripts import load_script, run_script
from queue_core.supervision import Backoff, is_redis_fault
from queue_core.worker_context import WorkerContext

__all__ = ["WATCHDOG_S", "Fetcher"]

_FETCH = load_script("move_to_active")
_RATE_LIMIT = load_script("rate_limit")

WATCHDOG_S: Final = 3.0  # a blocking call that overruns its timeout by this much is dead
_REFUSED_PAUSE_S: Final = 1.0  # only jobs of a newer format are ready: let newer workers run
_REFUSED_LOG_EVERY_S: Final = 60.0

_log = get_logger("queue_core.worker")


class Fetcher:
    def __init__(self, ctx: WorkerContext, runner: JobRunner, block_cap: float) -> None:
        self.ctx = ctx
        self.runner = runner
        self.block_cap = block_cap  # the longest blocking wait, in seconds
        self.errors = ctx.supervisor("fetch")
        self.blocking: asyncio.Future[Any] | None = None
        self._wait_backoff = Backoff()
        self._refused_logged_at = -_REFUSED_LOG_EVERY_S
        runner.on_hold = self.hold

    async def run(self) -> None:
        """Fetch until the worker stops running."""
        ctx, runner = self.ctx, self.runner
        loop = asyncio.get_running_loop()
        while ctx.state == "running":
            if len(runner.slots) >= ctx.concurrency:
                runner.slot_freed.clear()
                if len(runner.slots) >= ctx.concurrency and ctx.state == "running":
                    await runner.slot_freed.wait()
                continue
            hold = ctx.hold_until - loop.time()
            if hold > 0:
                await ctx.sleep(hold)
                continue
            await self.errors.guard(self._round, ctx.sleep)

    async def _round(self) -> None:
        ctx = self.ctx
        with ctx.internal("fetch"):
            fetched = await self._fetch(ctx.concurrency - len(self.runner.slots))
        if fetched is None:
            return  # closing while Redis is down
        for raw in fetched.jobs:
            self.runner.spawn(raw)
        if fetched.quarantined:
            await ctx.report_quarantined(fetched.quarantined)
        if fetched.refused:
            self._report_refused(fetched.refused)
        if fetched.jobs:
            return
        if fetched.rate_limit_ms > 0:
            await self.hold(fetched.rate_limit_ms, False)
            return
        if fetched.refused:
            await ctx.sleep(_REFUSED_PAUSE_S)
        with ctx.internal("wait"):
            await self._wait_for_work(fetched)

    async def _fetch(self, count: int) -> Fetched | None:
        ctx = self.ctx
        try:
            return await ctx.fetching_call(
                "fetch",
                _FETCH,
                [],
                count,
                parse_fetch,
                give_up=ctx.stopping.is_set,
                sleep=ctx.sleep,  # a close ends the backoff while Redis is away
            )
        except Exception as exc:
            if ctx.stopping.is_set() and is_redis_fault(exc, ctx.client):
                return None
            raise

    def _report_refused(self, refused: int) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._refused_logged_at >= _REFUSED_LOG_EVERY_S:
            self._refused_logged_at = now
            _log.warning(
                "jobs_need_newer_worker",
                queue=self.ctx.name,
                worker_id=self.ctx.id,
                waiting=refused,
                hint="these jobs were written by a newer queue_core; workers of that version "
                "run them (see Rolling upgrades in the README)",
            )

    async def _wait_for_work(self, fetched: Fetched) -> None:
        """Block on the marker until a producer (or a due delayed job) wakes this worker."""
        ctx = self.ctx
        if ctx.state != "running":
            # close() began during the fetch and found no blocking wait to cancel, so none
            # may start: no await from here until self.blocking is set.
            return
        timeout = self.block_cap
        poke: asyncio.TimerHandle | None = None
        if fetched.next_due_ms is not None:
            due_in = max(0.001, (fetched.next_due_ms - fetched.now_ms) / 1000)
            if due_in < timeout:
                # An idle Redis ends short blocking timeouts up to ~100 ms late, so a
                # local timer pokes the marker when the delayed job falls due.
                timeout = due_in + 0.25
                poke = asyncio.get_running_loop().call_later(due_in, self._poke_marker)
        blocking = asyncio.ensure_future(self._block(timeout))
        self.blocking = blocking
        try:
            done, _ = await asyncio.wait({blocking}, timeout=timeout + WATCHDOG_S)
            if not done:
                blocking.cancel()
                _log.warning(
                    "redis_blocking_call_stuck",
                    queue=ctx.name,
                    worker_id=ctx.id,
                    hint="the connection is dropped and opened again",
                )
                return
            if blocking.cancelled():
                return
            try:
                blocking.result()
                ctx.redis.contact()
                self._wait_backoff.reset()
            except Exception as exc:
                if not is_redis_fault(exc, ctx.client):
                    raise
                ctx.redis.fault()
                delay = self._wait_backoff.next()
                _log.warning(
                    "redis_unavailable",
                    operation="wait",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                    queue=ctx.name,
                    worker_id=ctx.id,
                )
                await ctx.sleep(delay)
        finally:
            self.blocking = None
            if poke is not None:
                poke.cancel()

    async def _block(self, block_s: float) -> object:
        """BZPOPMIN on the marker. Through a cluster client, on the queue's node itself:
        the client's own path treats a blocking call's quiet as a node failure, retries it
        and re-reads the slot map for every queue it serves; a redirect after a failover
        is a Redis fault here, and the next fetch through the client finds the new node."""
        client, marker = self.ctx.client, self.ctx.keys["marker"]
        if isinstance(client, AsyncRedisCluster):
            node = client.get_node_from_key(marker)
            if node is None:  # no slot map yet: the client finds the node itself
                return await client.bzpopmin(marker, block_s)
            return await node.execute_command("BZPOPMIN", marker, block_s)
        return await client.bzpopmin(marker, block_s)

    def cancel_wait(self) -> None:
        if self.blocking is not None:
            self.blocking.cancel()

    def _poke_marker(self) -> None:
        ctx = self.ctx

        async def poke() -> None:
            with suppress(Exception):  # best effort: the blocking wait times out anyway
                async with asyncio.timeout(ctx.redis.timeout):
                    await ctx.client.zadd(ctx.keys["marker"], {"0": 0})

        with ctx.internal("wake"):  # the task copies this context
            ctx.spawn(poke())

    async def hold(self, ms: int, manual: bool) -> None:
        """Hold back fetching for ``ms`` (a rate limit), and tell the hooks."""
        ctx = self.ctx
        until = asyncio.get_running_loop().time() + ms / 1000
        if until <= ctx.hold_until:
            return
        ctx.hold_until = until
        _log.info(
            "rate_limited", queue=ctx.name, worker_id=ctx.id, delay_s=ms / 1000, manual=manual
        )
        hooks = ctx.hooks.snapshot().on_rate_limited
        if hooks:
            await notify(hooks, RateLimitEvent(ctx.name, ctx.id, ms / 1000, manual))

    async def rate_limit(self, seconds: float | timedelta) -> None:
        """Hold every worker of the queue for ``seconds`` (for an upstream's 429)."""
        ctx = self.ctx
        ms = to_ms(to_seconds(seconds, "rate_limit", allow_zero=False))
        ttl = await ctx.redis.call(
            "rate_limit", lambda: run_script(ctx.client, _RATE_LIMIT, ctx.keys, [ms])
        )
        await self.hold(max(int(ttl), ms), True)
