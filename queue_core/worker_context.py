"""What the parts of a worker share: its identity, its client and keys, its jobs in
flight, its lifecycle state and its Redis retry policy.

A ``Worker`` (worker.py) is assembled from parts that each own one loop or one step:
``Fetcher`` (fetching.py), ``JobRunner`` (attempts.py), ``LockRenewer`` and
``StalledRecovery`` (locks.py), ``Heartbeat`` (registry.py). They talk through this
context, never to each other's private state.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import Any, Final, TypeVar

from queue_core import outbox, schedulers
from queue_core.commands import Fetched, FetchSettings, Settled
from queue_core.connection import AsyncClient
from queue_core.flows import Dependency
from queue_core.hooks import Around, HookRegistry, InternalEvent, QuarantineEvent, notify
from queue_core.job import Job, JobBackend
from queue_core.keys import QueueKeys
from queue_core.log import get_logger
from queue_core.queue import Queue
from queue_core.scripts import CommandPipeline, LuaScript, load_script, run_script
from queue_core.serializer import Serializer
from queue_core.supervision import RedisRetry, Supervisor

__all__ = ["WorkerContext"]

F = TypeVar("F", Fetched, Settled)

_NO_HOOK: Final = nullcontext()
_RELEASE = load_script("release_orphans")
# A fetch whose reply was lost may still run in Redis a little later (a frozen server that
# thaws, a connection's last commands): its jobs are looked for twice, then left to
# stalled recovery.
_RELEASE_AFTER_S: Final = (1.0, 5.0)

_log = get_logger("queue_core.worker")


class WorkerContext:
    def __init__(
        self,
        *,
        queue: Queue,
        worker_id: str,
        client: AsyncClient,
        concurrency: int,
        fetch_settings: FetchSettings,
        pipeline: CommandPipeline | None,
        redis_timeout: float | None,
    ) -> None:
        self.queue = queue  # job operations a processor calls (progress, logs)
        self.name = queue.name
        self.id = worker_id
        self.keys: QueueKeys = queue.keys
        self.hooks: HookRegistry = queue.hooks
        self.serializer: Serializer = queue.serializer
        self.client = client
        self.concurrency = concurrency
        self.fetch_settings = fetch_settings
        self.pipeline = pipeline
        self.redis = RedisRetry(client, self.name, worker_id, redis_timeout)
        self.server_address: str | None = None
        self.server_port: int | None = None
        self.backend: JobBackend | None = None  # what a running job calls: the Worker

        self.state = "new"  # new -> starting -> running -> closing -> closed
        self.running: dict[str, Job] = {}  # jobs whose attempt runs here, by id
        self.held: set[str] = set()  # jobs received from a fetch and not finished yet
        self._call_ids: Iterator[int] = itertools.count(1)
        self._lost_calls: dict[int, int] = {}  # fetch call -> passes left to release it
        self.stopping = asyncio.Event()
        self.hold_until = 0.0  # loop time until which fetching holds (rate limits)
        self.background: set[asyncio.Task[Any]] = set()
        self.supervisors: list[Supervisor] = []
        self.background_errors = self.supervisor("background")
        self._delivering = False  # an outbox delivery runs (outbox.py)
        self._deliver_again = False  # ... and another settle wrote messages meanwhile

    def supervisor(self, loop: str) -> Supervisor:
        """A supervisor for one of the worker's loops; ``healthy()`` asks them all."""
        supervisor = Supervisor(loop, self.name, self.id, self.hooks)
        self.supervisors.append(supervisor)
        return supervisor

    def can_fetch(self) -> bool:
        # The clock only once a hold was ever set: get_running_loop() is a getpid()
        # system call on Python 3.11.
        return self.state == "running" and (
            self.hold_until == 0.0 or asyncio.get_running_loop().time() >= self.hold_until
        )

    def internal(self, operation: Any) -> AbstractContextManager[object]:
        """Wrap one of the worker's own Redis calls in the ``around_internal`` hooks."""
        hooks = self.hooks.snapshot().around_internal
        if not hooks:
            return _NO_HOOK
        return Around(hooks, InternalEvent(self.name, self.id, operation))

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless the worker starts closing; returns False if it did."""
        if self.stopping.is_set():
            return False
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return False
        return True

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a background task; what it raises is reported, never lost."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.spawn(self.background_errors.failed(task.exception()))  # type: ignore[arg-type]

    async def fetching_call(
        self,
        operation: str,
        script: LuaScript,
        head: list[Any],
        count: int,
        parse: Callable[[Any], F],
        *,
        give_up: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> F:
        """Run a script that fetches up to ``count`` jobs (move_to_active, a settle),
        retrying Redis faults. The jobs it hands over are ``held`` from the moment the reply
        is read. If a try of it failed, Redis may have run that try and taken jobs whose
        reply is lost: those are released soon after (release_orphans)."""
        call_id: int = next(self._call_ids)
        args = [*head, *self.fetch_settings.args(count, call_id)]
        faulted = False

        def fault() -> None:
            nonlocal faulted
            faulted = True

        try:
            reply = await self.redis.call(
                operation,
                lambda: run_script(self.client, script, self.keys, args, self.pipeline),
                give_up=give_up,
                bounded=self.pipeline is None,
                on_fault=fault,
                sleep=sleep,
            )
            result = parse(reply)
            fetched = result if isinstance(result, Fetched) else result.fetched
            for job_id, _, record in fetched.jobs:
                self.held.add(job_id)
                scheduler_id = schedulers.scheduled_record(record)
                if scheduler_id is not None:
                    self.spawn(self._refill_ticks(scheduler_id))
            return result
        finally:
            if faulted and count > 0:
                self._release_later(call_id)

    def _release_later(self, call: int) -> None:
        if not self._lost_calls:
            self.spawn(self._release_orphans())
        self._lost_calls[call] = len(_RELEASE_AFTER_S)

    async def _release_orphans(self) -> None:
        for pause in _RELEASE_AFTER_S:
            await asyncio.sleep(pause)
            calls = list(self._lost_calls)
            prefixes = [self.fetch_settings.call_prefix(call) + ":" for call in calls]
            args = [len(prefixes), *prefixes, *self.held]
            try:
                async with asyncio.timeout(self.redis.timeout):
                    released = await run_script(self.client, _RELEASE, self.keys, args)
            except Exception as exc:  # Redis still away: the next pass, or stalled recovery
                _log.warning("orphan_release_failed", queue=self.name, error=repr(exc))
                continue
            for call in calls:
                self._lost_calls[call] -= 1
                if self._lost_calls[call] <= 0:
                    del self._lost_calls[call]
            if released:
                _log.info(
                    "orphans_released",
                    queue=self.name,
                    worker_id=self.id,
                    jobs=[job_id.decode() for job_id in released],
                    hint="fetched by calls whose reply was lost; back in wait at once",
                )
        if self._lost_calls:  # new losses meanwhile
            self.spawn(self._release_orphans())

    async def _refill_ticks(self, scheduler_id: str) -> None:
        """This worker took a scheduler's run: a cron scheduler short of precomputed ticks
        gets more (schedulers.py), off the fetch's path. A failure is retried by the
        scheduler's next run, 8 runs before it could run out."""
        try:
            async with asyncio.timeout(self.redis.timeout):
                check = schedulers.refill_check(scheduler_id)
                reply = await run_script(self.client, check.script, self.keys, check.args)
                refill = check.parse(reply, None)
                if refill is not None:
                    write = schedulers.refill_ticks(scheduler_id, refill)
                    await run_script(self.client, write.script, self.keys, write.args)
        except Exception as exc:
            _log.warning(
                "scheduler_refill_failed", queue=self.name, scheduler=scheduler_id, error=repr(exc)
            )

    # ----- flows: the outbox (outbox.py) and a parent's dependencies

    def deliver_outbox(self) -> None:
        """Deliver the queue's outbox in the background, soon: one delivery at a time,
        which runs again if more settles asked meanwhile."""
        if self._delivering:
            self._deliver_again = True
            return
        self._delivering = True
        self.spawn(self._deliver())

    async def _deliver(self, min_age_ms: int = 0) -> None:
        try:
            while True:
                self._deliver_again = False
                try:
                    async with asyncio.timeout(self.redis.timeout):
                        await outbox.run_async(
                            self.client, self.keys.prefix, outbox.deliver(self.name, min_age_ms)
                        )
                except Exception as exc:  # the sweep delivers it later
                    _log.warning("outbox_delivery_failed", queue=self.name, error=repr(exc))
                    return
                if not self._deliver_again:
                    return
        finally:
            self._delivering = False

    async def sweep_outbox(self) -> None:
        """Every few seconds, deliver the messages that waited too long: their writer died
        (or lost Redis) before delivering them."""
        while await self.sleep(outbox.SWEEP_INTERVAL_S):
            if not self._delivering:
                self._delivering = True
                await self._deliver(outbox.SWEEP_MIN_AGE_MS)

    async def read_dependencies(self, job: Job) -> list[Dependency] | None:
        """A parent's dependencies as its attempt starts; None if Redis failed to say."""
        try:
            async with asyncio.timeout(self.redis.timeout):
                return await self.queue.get_dependencies(job)
        except Exception as exc:
            _log.warning(
                "dependencies_read_failed", queue=self.name, job_id=job.id, error=repr(exc)
            )
            return None

    async def report_quarantined(self, quarantined: list[tuple[str, str]]) -> None:
        """Corrupt jobs a script moved to failed: log them and tell the hooks."""
        for job_id, reason in quarantined:
            _log.error(
                "job_quarantined",
                job_id=job_id,
                queue=self.name,
                worker_id=self.id,
                reason=reason,
                hint="the job is in the failed set with CorruptJobError; its raw record "
                "is kept (job.corrupt_record)",
            )
        hooks = self.hooks.snapshot().on_quarantined
        if hooks:
            await notify(hooks, QuarantineEvent(self.name, self.id, tuple(quarantined)))
