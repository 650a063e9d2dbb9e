"""Keeping a worker's loops alive: retrying Redis faults, and surviving everything else.

Two kinds of trouble reach a worker's loops. Redis faults (a restart, a dropped
connection, a failover, a frozen server past its deadline, a full Redis) are expected:
``RedisRetry`` retries the call with backoff until Redis answers, logging
``redis_unavailable`` and ``redis_reconnected``. Anything else (a script error on a
damaged key, a bug) is unexpected: ``Supervisor`` logs it with its context, tells the
``on_worker_error`` hooks, backs off and lets the loop go on, and a loop that keeps
failing makes the worker report itself unhealthy. No task dies unobserved.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from queue_core.connection import REDIRECT_ERRORS, TRANSIENT_ERRORS
from queue_core.hooks import HookRegistry, WorkerErrorEvent, notify
from queue_core.log import get_logger

__all__ = ["UNHEALTHY_AFTER", "Backoff", "RedisRetry", "Supervisor", "is_redis_fault"]

T = TypeVar("T")

UNHEALTHY_AFTER: Final = 3  # consecutive failures of one loop

_log = get_logger("queue_core.worker")


class Backoff:
    """Exponential delays with jitter: 0.1 s doubling up to ``cap`` seconds."""

    def __init__(self, cap: float = 5.0) -> None:
        self.failures = 0
        self.cap = cap

    def next(self) -> float:
        self.failures += 1
        base = min(self.cap, 0.1 * 2 ** min(self.failures - 1, 16))
        return float(base * (0.5 + random.random() / 2))

    def reset(self) -> int:
        failures, self.failures = self.failures, 0
        return failures


def is_redis_fault(exc: BaseException, client: Any) -> bool:
    """True for a fault of Redis or of the connection, after which the same call may
    succeed: the transient errors, a deadline that passed, and, through a cluster client,
    whatever redis-py raises while a node is torn down during a failover (a redirect, an
    ``AttributeError`` from a connection closed under it, a ``RedisClusterException``: no
    node reachable, a slot not covered). A ``ResponseError`` that is not transient is a
    real answer (a script error) and is not retried."""
    if isinstance(exc, (*TRANSIENT_ERRORS, TimeoutError)):
        return True
    if not isinstance(client, AsyncRedisCluster):
        return False
    if isinstance(exc, REDIRECT_ERRORS):
        return True
    if isinstance(exc, ResponseError):
        return False
    return isinstance(
        exc,
        RedisError | RedisClusterException | AttributeError | IndexError | KeyError | TypeError,
    )


class RedisRetry:
    """Runs a worker's Redis calls, retrying Redis faults with backoff until they succeed.

    Every call made through it is idempotent (a settle carries its lock token), so a retry
    whose first try reached Redis is harmless. ``last_contact`` is when Redis last answered.
    """

    def __init__(self, client: Any, queue: str, worker_id: str, timeout: float | None) -> None:
        self.client = client
        self.queue = queue
        self.worker_id = worker_id
        self.timeout = timeout
        self.failures = 0  # faults since Redis last answered, for the reconnect log
        self.last_contact: float | None = None  # time.monotonic() of the last reply

    async def call(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        give_up: Callable[[], bool] = lambda: False,
        bounded: bool = True,
        on_fault: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> T:
        """``call()`` until it succeeds; ``give_up()`` is asked after each fault and again
        after the backoff (the fault is raised when it says so). ``bounded``: apply the
        deadline here (calls through the command pipeline have the pipeline's own).
        ``on_fault`` hears of each fault. ``sleep`` waits out the backoff: one that ends
        early when the caller gives up (``WorkerContext.sleep``) lets a close end the wait.

        Each call backs off on its own: five slots meeting one fault each must not push
        the next retry of all of them out to seconds (measured in a Cluster failover)."""
        backoff: Backoff | None = None  # made at the first fault: most calls meet none
        while True:
            try:
                if bounded:
                    async with asyncio.timeout(self.timeout):
                        result = await call()
                else:
                    result = await call()
            except Exception as exc:
                if not is_redis_fault(exc, self.client):
                    raise
                if on_fault is not None:
                    on_fault()
                self.fault()
                if backoff is None:
                    backoff = Backoff()
                delay = backoff.next()
                _log.warning(
                    "redis_unavailable",
                    operation=operation,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                    queue=self.queue,
                    worker_id=self.worker_id,
                )
                if give_up():
                    raise
                await sleep(delay)
                if give_up():
                    raise
                continue
            self.contact()
            return result

    def fault(self) -> None:
        """A call met a Redis fault (``contact`` logs the reconnection once it answers)."""
        self.failures += 1

    def contact(self) -> None:
        self.last_contact = time.monotonic()
        failures, self.failures = self.failures, 0
        if failures:
            _log.info(
                "redis_reconnected",
                failed_attempts=failures,
                queue=self.queue,
                worker_id=self.worker_id,
            )


class Supervisor:
    """Guards the rounds of one of a worker's loops against unexpected errors."""

    def __init__(self, loop: str, queue: str, worker_id: str, hooks: HookRegistry) -> None:
        self.loop = loop
        self.queue = queue
        self.worker_id = worker_id
        self.hooks = hooks
        self.failures = 0
        self._backoff = Backoff(cap=10.0)

    @property
    def healthy(self) -> bool:
        return self.failures < UNHEALTHY_AFTER

    async def guard(
        self, round_: Callable[[], Awaitable[T]], sleep: Callable[[float], Awaitable[Any]]
    ) -> T | None:
        """Run one round. On an unexpected error: log it, tell the hooks, back off with
        ``sleep`` and return None; the caller's loop goes on."""
        try:
            result = await round_()
        except Exception as exc:
            await self.failed(exc)
            await sleep(self._backoff.next())
            return None
        self.succeeded()
        return result

    def succeeded(self) -> None:
        """A round of the loop went through: it counts as healthy again."""
        if self.failures:
            _log.info("worker_loop_recovered", loop=self.loop, queue=self.queue,
                      worker_id=self.worker_id, after_failures=self.failures)  # fmt: skip
        self.failures = 0
        self._backoff.reset()

    async def failed(self, exc: BaseException) -> None:
        """Report an unexpected error of this loop (logged with its traceback, hooks told)."""
        self.failures += 1
        _log.error(
            "worker_loop_failed",
            loop=self.loop,
            queue=self.queue,
            worker_id=self.worker_id,
            failures=self.failures,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )
        hooks = self.hooks.snapshot().on_worker_error
        if hooks:
            await notify(
                hooks, WorkerErrorEvent(self.queue, self.worker_id, self.loop, exc, self.failures)
            )
