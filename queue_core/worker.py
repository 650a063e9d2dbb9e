"""``Worker``: runs the jobs of one queue.

A worker is assembled from parts that each own one loop or one step, sharing a
``WorkerContext`` (worker_context.py): the ``Fetcher`` fills up to ``concurrency`` slots
and blocks in Redis when idle (fetching.py); the ``JobRunner``'s slots run, settle and
report each job, taking the next job from the same script call (attempts.py); the
``LockRenewer`` and ``StalledRecovery`` keep locks alive and put back the jobs of dead
workers (locks.py); the ``Heartbeat`` keeps it in the queue's worker registry
(registry.py); the ``CancelListener`` hears ``queue.cancel()`` requests for the jobs it
runs (cancellation.py). Each loop runs under a ``Supervisor`` (supervision.py): Redis faults
are retried, anything else is reported and the loop goes on. This module holds the
worker's options and its lifecycle: start, signals, health and shutdown.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import pickle
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Final, Literal, Self

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from queue_core.attempts import JobRunner, Processors
from queue_core.cancellation import CancelListener
from queue_core.commands import FetchSettings
from queue_core.connection import (
    DEFAULT_REDIS_TIMEOUT,
    REDIRECT_ERRORS,
    AsyncClient,
    byte_client,
    check_server,
    create_async_client,
    server_address,
    socket_timeout,
    to_deadline,
)
from queue_core.envelope import FORMAT_VERSION
from queue_core.errors import (
    ClusterClientRequiredError,
    InvalidOptionError,
    JobCancelledError,
    LockLostError,
    QueueError,
    RedisTimeoutError,
    RedisUnavailableError,
)
from queue_core.fetching import WATCHDOG_S, Fetcher
from queue_core.flows import Dependency
from queue_core.hooks import Hook, WorkerEvent, notify
from queue_core.job import Job, JobState
from queue_core.keys import QueueKeys
from queue_core.locks import LockRenewer, StalledRecovery
from queue_core.log import get_logger
from queue_core.options import RateLimit, check_int, to_ms, to_seconds
from queue_core.pool_child import ProcessPoolJob
from queue_core.process_pool import ProcessPool
from queue_core.queue import DEFAULT_MAX_LOG_LINES, Queue
from queue_core.registry import Heartbeat
from queue_core.retry import BackoffStrategy
from queue_core.scripts import CommandPipeline, can_pipeline, load_script, preload, run_script
from queue_core.serializer import Serializer
from queue_core.supervision import is_redis_fault
from queue_core.worker_context import WorkerContext

__all__ = ["Processor", "Worker"]

Processor = Callable[[Job], Awaitable[Any]] | Callable[[Job], Any] | Callable[[ProcessPoolJob], Any]
"""``async def process(job) -> result`` or a plain ``def`` (run in a thread, or in a child
process with ``Worker(pool="process")``, where the job is a ``ProcessPoolJob``)."""

_GET_COUNTS = load_script("get_counts")

# How long run() waits for Redis at start. Longer than a call's deadline: a Redis that
# restarts with the worker may take seconds to load its data. A running worker waits
# for Redis as long as it takes.
DEFAULT_START_TIMEOUT: Final = 30.0
_CLOSED: Final = object()  # what _connect returns when close() came first


class _CredentialsRefusedError(Exception):
    """Redis refused the worker's credentials at start: no retry can help."""


_SUBSCRIBE_WAIT_S = 2.0  # the longest a starting worker waits for its cancel subscription

_log = get_logger("queue_core.worker")


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Process the jobs of ``queue_name`` with ``processor``.

    ``processor`` is an ``async def`` or a plain ``def`` (run in a thread), or a mapping
    from job name to processor. Its return value is stored as the job's result (it must
    suit the serializer, JSON by default). Raise ``UnrecoverableError`` to fail at once,
    ``DelayedError`` to re-schedule, ``RateLimitError`` when an upstream throttles you.

    CPU-bound work: with ``pool="process"``, plain ``def`` processors run in up to
    ``pool_size`` child processes (default: ``concurrency``), one job per child at a time;
    ``async`` ones stay on the event loop. They must be importable (module-level), and
    the job's data and return value travel pickled. A child that dies fails (or retries)
    only its job, with ``ProcessCrashedError``; a job's timeout or cancel kills its
    child; the next job gets a new one. The job there is a ``ProcessPoolJob``.

    Locks: each running job holds a lock that expires after ``lock_duration`` unless
    renewed, which this worker does every ``lock_duration / 2``. Every
    ``stalled_interval``, expired locks are found and their jobs put back in wait, at
    most ``max_stalled_count`` times per job before it fails.

    Registry: the worker beats every ``heartbeat_interval`` (``queue.get_workers()``
    lists it); killed, it leaves the list within three intervals.

    ``await worker.run()`` runs until SIGTERM/SIGINT or ``close()``; ``async with worker:``
    runs it in the background. Shutdown stops fetching and lets running jobs finish within
    ``shutdown_timeout``; jobs still running then are left to stalled recovery.

    ``redis_timeout`` (seconds, default 5) bounds each of the worker's Redis calls; a
    call past it counts as a Redis fault and is retried, so a frozen server stalls the
    worker only until it answers again.

    Redis outages: a running worker rides them out, retrying each call with backoff until
    Redis answers (``healthy()`` turns false if it lasts). At start, ``run()`` (and ``async
    with``) waits for Redis up to ``start_timeout`` (seconds, default 30; ``None``: until it
    answers), then raises ``RedisUnavailableError`` (``RedisTimeoutError`` if Redis took the
    connection but never answered); credentials Redis refuses raise it at once. Redis
    reaches the caller of ``run()`` only as a ``QueueError``: those two,
    ``ClusterClientRequiredError``, or a plain ``QueueError`` for any other refusal at start
    (an ACL forbidding a command), with redis-py's error as its cause. ``close()`` does not
    wait out a connection attempt, a retry's backoff or the idle blocking wait.

    ``redis``: a URL or a ``redis.asyncio.Redis`` / ``RedisCluster``. A client created
    with ``decode_responses=True`` is not used as is (job payloads are bytes): the worker
    opens one with the same settings that does not decode, and closes it at shutdown. A
    client passed in is never closed by the worker.
    """

    def __init__(
        self,
        queue_name: str,
        processor: Processor | Mapping[str, Processor],
        *,
        redis: str | AsyncClient | None = None,
        prefix: str = "qc",
        concurrency: int = 1,
        lock_duration: float | timedelta = 30.0,
        stalled_interval: float | timedelta = 30.0,
        max_stalled_count: int = 1,
        heartbeat_interval: float | timedelta = 5.0,
        limiter: RateLimit | None = None,
        backoff_strategies: Mapping[str, BackoffStrategy] | None = None,
        shutdown_timeout: float | timedelta = 30.0,
        drain_delay: float | timedelta = 5.0,
        serializer: Serializer | None = None,
        hooks: tuple[Hook, ...] | list[Hook] = (),
        worker_id: str | None = None,
        max_log_lines: int = DEFAULT_MAX_LOG_LINES,
        redis_timeout: float | timedelta | None = DEFAULT_REDIS_TIMEOUT,
        start_timeout: float | timedelta | None = DEFAULT_START_TIMEOUT,
        pool: Literal["thread", "process"] = "thread",
        pool_size: int | None = None,
    ) -> None:
        processors = self._check_processors(processor)
        self.concurrency = check_int(concurrency, "concurrency", 1, 100_000)
        self.lock_duration = to_seconds(lock_duration, "lock_duration", allow_zero=False)
        self.stalled_interval = to_seconds(stalled_interval, "stalled_interval", allow_zero=False)
        self.max_stalled_count = check_int(max_stalled_count, "max_stalled_count", 0, 1_000_000)
        self.heartbeat_interval = to_seconds(
            heartbeat_interval, "heartbeat_interval", allow_zero=False
        )
        if limiter is not None and not isinstance(limiter, RateLimit):
            raise InvalidOptionError("limiter must be a RateLimit")
        self.limiter = limiter
        self.backoff_strategies = dict(backoff_strategies or {})
        self.shutdown_timeout = to_seconds(shutdown_timeout, "shutdown_timeout")
        self.drain_delay = to_seconds(drain_delay, "drain_delay", allow_zero=False)
        self.redis_timeout = to_deadline(redis_timeout)
        self.start_timeout = (
            None
            if start_timeout is None
            else to_seconds(start_timeout, "start_timeout", allow_zero=False)
        )
        self.id = worker_id or _default_worker_id()
        self.pool = pool
        self.pool_size = self._check_pool(processors, pool, pool_size, self.concurrency)

        if redis is None or isinstance(redis, str):
            self.client: AsyncClient = create_async_client(redis)
            self._owns_client = True
        else:  # a decoding client's byte twin is the worker's to close
            self.client, self._owns_client = byte_client(redis)
        # The queue does the job operations a processor calls (progress, logs); it shares
        # this worker's client and hooks.
        queue = Queue(
            queue_name,
            redis=self.client,
            prefix=prefix,
            serializer=serializer,
            max_log_lines=max_log_lines,
            hooks=hooks,
            redis_timeout=self.redis_timeout,
        )
        self._queue = queue
        self.name = queue.name
        self.keys: QueueKeys = queue.keys
        self.hooks = queue.hooks
        self.serializer = queue.serializer
        timeout = socket_timeout(self.client)
        # A blocking call must return before the socket times out.
        block_cap = self.drain_delay if timeout is None else min(self.drain_delay, timeout / 2)
        # Fetch and settle calls share writes when jobs run concurrently (see pipeline.py).
        pipeline = (
            CommandPipeline(self.client, self.redis_timeout)
            if isinstance(self.client, AsyncRedis) and can_pipeline(self.client)
            else None
        )
        self._ctx = ctx = WorkerContext(
            queue=queue,
            worker_id=self.id,
            client=self.client,
            concurrency=self.concurrency,
            fetch_settings=FetchSettings(
                token_prefix=self.id,
                lock_ms=to_ms(self.lock_duration),
                limit_max=limiter.max if limiter else 0,
                limit_ms=to_ms(limiter.duration) if limiter else 0,
            ),
            pipeline=pipeline,
            redis_timeout=self.redis_timeout,
        )
        ctx.backend = self
        ctx.server_address, ctx.server_port = server_address(self.client)
        process_pool = (
            None
            if self.pool_size is None
            else ProcessPool(self.pool_size, f"queue_core-{self.name}")
        )
        self._runner = JobRunner(ctx, processors, self.backoff_strategies, process_pool)
        self._fetcher = Fetcher(ctx, self._runner, block_cap)
        self._renewer = LockRenewer(ctx, self.lock_duration, self._runner.cancel)
        self._canceller = CancelListener(ctx, self._runner.cancel)
        self._recovery = StalledRecovery(ctx, self.stalled_interval, self.max_stalled_count)
        self._heartbeat = Heartbeat(ctx, self.heartbeat_interval)
        self._force = asyncio.Event()  # stop waiting for running jobs
        self._ready = asyncio.Event()  # started, or failed to start
        self._stopped = asyncio.Event()
        self._main: asyncio.Task[None] | None = None

    @staticmethod
    def _check_processors(processor: Processor | Mapping[str, Processor]) -> Processors:
        items: list[tuple[str | None, Any]]
        if isinstance(processor, Mapping):
            items = list(processor.items())
            if not items:
                raise InvalidOptionError("the processor mapping is empty")
        else:
            items = [(None, processor)]
        table: Processors = {}
        for name, fn in items:
            if not callable(fn):
                raise InvalidOptionError(f"processor for {name!r} is not callable")
            table[name] = (fn, _is_async(fn))
        return table

    @staticmethod
    def _check_pool(
        processors: Processors, pool: str, pool_size: int | None, concurrency: int
    ) -> int | None:
        """The process pool's size (None: no process pool)."""
        if pool not in ("thread", "process"):
            raise InvalidOptionError(f"pool must be 'thread' or 'process', not {pool!r}")
        if pool == "thread":
            if pool_size is not None:
                raise InvalidOptionError("pool_size is for pool='process'")
            return None
        for name, (fn, is_async) in processors.items():
            if is_async:
                continue
            try:  # pickled by reference: the child imports it by name
                pickle.dumps(fn)
            except Exception as exc:
                raise InvalidOptionError(
                    f"processor for {name!r} cannot run in a child process: it must be "
                    f"importable, e.g. a module-level function ({exc})"
                ) from exc
        return concurrency if pool_size is None else check_int(pool_size, "pool_size", 1, 10_000)

    # ----- state and health

    @property
    def running(self) -> bool:
        return self._ctx.state == "running"

    @property
    def active_jobs(self) -> int:
        return len(self._ctx.running)

    @property
    def server_address(self) -> str | None:
        return self._ctx.server_address

    @property
    def server_port(self) -> int | None:
        return self._ctx.server_port

    @property
    def last_contact(self) -> float | None:
        """``time.monotonic()`` of the last reply from Redis."""
        return self._ctx.redis.last_contact

    def healthy(self, max_silence: float | None = None) -> bool:
        """Running, heard from Redis recently (an idle worker hears every drain_delay),
        and none of its loops failing again and again.

        Use it for liveness probes: a worker whose connection silently died, or whose
        loops keep meeting errors, turns unhealthy instead of looking idle forever.
        """
        last_contact = self.last_contact
        if not self.running or last_contact is None:
            return False
        if not all(supervisor.healthy for supervisor in self._ctx.supervisors):
            return False
        limit = max_silence
        if limit is None:
            limit = self._fetcher.block_cap + WATCHDOG_S + 5.0 + (self.redis_timeout or 0.0)
        return time.monotonic() - last_contact <= limit

    # ----- lifecycle

    async def __aenter__(self) -> Self:
        self._main = asyncio.create_task(self.run(handle_signals=False))
        await self._ready.wait()
        if self._main.done():
            await self._main  # raises the startup error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until ``close()`` (or SIGTERM/SIGINT when ``handle_signals``)."""
        ctx = self._ctx
        if ctx.state != "new":
            raise QueueError("a Worker runs once; create a new one")
        ctx.state = "starting"
        installed = self._install_signal_handlers() if handle_signals else []
        try:
            await self._start()
            await self._fetcher.run()
        finally:
            try:
                await self._shutdown()
            finally:
                loop = asyncio.get_running_loop()
                for sig in installed:
                    loop.remove_signal_handler(sig)
                self._ready.set()
                self._stopped.set()

    async def close(self, *, force: bool = False) -> None:
        """Stop fetching, let running jobs finish (within ``shutdown_timeout``), and return
        once the worker has stopped. ``force=True`` interrupts running jobs at once."""
        self.request_close(force=force)
        if self._main is not None and self._main is not asyncio.current_task():
            with suppress(asyncio.CancelledError):
                await self._main
        elif self._ctx.state != "closed":
            await self._stopped.wait()

    def request_close(self, *, force: bool = False) -> None:
        """Begin a graceful shutdown without waiting for it (safe from signal handlers)."""
        ctx = self._ctx
        if ctx.state == "new":
            ctx.state = "closed"
            return
        if ctx.state in ("starting", "running"):
            ctx.state = "closing"
            _log.info(
                "worker_closing", queue=self.name, worker_id=self.id, running=self.active_jobs
            )
        if force:
            self._force.set()
        ctx.stopping.set()
        self._runner.slot_freed.set()
        self._fetcher.cancel_wait()

    def _install_signal_handlers(self) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
            installed.append(sig)
        return installed

    def _on_signal(self, sig: int) -> None:
        force = self._ctx.state == "closing"  # a second signal means "now"
        _log.info("worker_signal", signal=signal.Signals(sig).name, force=force, worker_id=self.id)
        self.request_close(force=force)

    async def _start(self) -> None:
        ctx = self._ctx

        async def connect() -> Any:
            if isinstance(self.client, AsyncRedisCluster):
                # The slot map first: before it, commands go to a random node, and its
                # MOVED replies make redis-py close connections other calls are using.
                await self.client.initialize()
            await check_server(self.client)
            await preload(self.client)
            # A first read of the queue's keys: a plain client to the wrong Cluster node
            # hears MOVED here, at start, rather than on every fetch.
            await run_script(self.client, _GET_COUNTS, self.keys, [])
            return await self.client.hget(self.keys["meta"], "fmt")

        try:
            with ctx.internal("connect"):
                stored_format = await self._connect(connect)
        except REDIRECT_ERRORS as exc:
            raise ClusterClientRequiredError(
                f"queue {self.name!r} lives on another Redis Cluster node ({exc}); pass a "
                "redis.asyncio.cluster.RedisCluster client as redis="
            ) from exc
        if stored_format is _CLOSED:
            return  # closed while connecting
        if stored_format is not None and int(stored_format) > FORMAT_VERSION:
            _log.warning(
                "queue_format_newer",
                queue=self.name,
                worker_id=self.id,
                queue_format=int(stored_format),
                worker_format=FORMAT_VERSION,
                hint="a newer queue_core enqueued jobs here; this worker leaves those jobs "
                "to workers of that version (see Rolling upgrades in the README)",
            )
        ctx.server_address, ctx.server_port = server_address(self.client, self.keys["wait"])
        # A cancel published before the subscription would reach a job only with its next
        # lock renewal (half the lock duration): the worker is not started until it
        # listens, but does not wait long on a Redis that refuses pub/sub (renewal still
        # reports cancels then).
        ctx.spawn(self._canceller.run())
        with suppress(TimeoutError):
            await asyncio.wait_for(self._canceller.subscribed.wait(), _SUBSCRIBE_WAIT_S)
        if ctx.stopping.is_set():
            return  # closed while connecting
        ctx.state = "running"
        self._ready.set()
        ctx.spawn(self._renewer.run())
        ctx.spawn(self._recovery.run())
        ctx.spawn(self._heartbeat.run())
        ctx.spawn(ctx.sweep_outbox())
        _log.info(
            "worker_started",
            queue=self.name,
            worker_id=self.id,
            concurrency=self.concurrency,
            server=ctx.server_address,
        )
        hooks = self.hooks.snapshot().on_worker_started
        if hooks:
            await notify(hooks, WorkerEvent(self.name, self.id, self.concurrency))

    async def _connect(self, connect: Callable[[], Awaitable[Any]]) -> Any:
        """``connect()``, its Redis faults retried for up to ``start_timeout``; ``_CLOSED``
        as soon as ``close()`` is requested (an attempt in flight is cancelled)."""
        ctx = self._ctx
        loop = asyncio.get_running_loop()
        limit = self.start_timeout
        deadline = None if limit is None else loop.time() + limit

        def give_up() -> bool:
            return ctx.stopping.is_set() or (deadline is not None and loop.time() >= deadline)

        async def sleep(seconds: float) -> bool:
            if deadline is not None:
                seconds = min(seconds, deadline - loop.time())
            return await ctx.sleep(seconds)

        async def attempt() -> Any:
            try:
                async with asyncio.timeout_at(deadline):  # a frozen Redis, no redis_timeout
                    return await connect()
            except AuthenticationError as exc:
                raise _CredentialsRefusedError(str(exc)) from exc  # not a fault: no retry

        trying = asyncio.ensure_future(
            ctx.redis.call("connect", attempt, give_up=give_up, sleep=sleep)
        )
        closing = asyncio.ensure_future(ctx.stopping.wait())
        try:
            await asyncio.wait({trying, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not trying.done():
                trying.cancel()
                await asyncio.wait({trying})
        if trying.cancelled():
            return _CLOSED
        exc = trying.exception()
        if exc is None:
            return trying.result()
        host, port = server_address(self.client)
        where = f"{host}:{port}" if port is not None else str(host)
        if isinstance(exc, _CredentialsRefusedError):
            raise RedisUnavailableError(
                f"worker {self.id} cannot start: Redis at {where} refused its credentials "
                f"({exc.__cause__})"
            ) from exc.__cause__
        if is_redis_fault(exc, self.client):
            if ctx.stopping.is_set():
                return _CLOSED
            if isinstance(exc, RedisPyTimeoutError | TimeoutError):
                raise RedisTimeoutError(
                    f"worker {self.id} cannot start: Redis at {where} did not answer within "
                    f"start_timeout ({limit} s): {str(exc) or type(exc).__name__}"
                ) from exc
            raise RedisUnavailableError(
                f"worker {self.id} cannot start: no connection to Redis at {where} within "
                f"start_timeout ({limit} s): {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(exc, RedisError | RedisClusterException) and not isinstance(
            exc, REDIRECT_ERRORS
        ):
            raise QueueError(
                f"worker {self.id} cannot start on queue {self.name!r}: Redis answered "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        raise exc

    async def _shutdown(self) -> None:
        ctx, runner = self._ctx, self._runner
        if not ctx.background and not runner.slots:  # never started
            ctx.state = "closed"
            await self._close_client()
            return
        ctx.state = "closing"
        await self._wait_for_slots()
        if runner.slots:
            _log.warning(
                "worker_shutdown_timeout",
                queue=self.name,
                worker_id=self.id,
                left_to_stalled_recovery=sorted(ctx.running),
            )
            pending = set(runner.slots)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
        for task in list(ctx.background):
            task.cancel()
        if ctx.background:
            await asyncio.wait(ctx.background)
        runner.threads.shutdown()
        if runner.pool is not None:
            await runner.pool.close()
        if ctx.pipeline is not None:
            await ctx.pipeline.close()
        ctx.state = "closed"
        hooks = self.hooks.snapshot().on_worker_stopped
        if hooks:
            await notify(hooks, WorkerEvent(self.name, self.id, self.concurrency))
        _log.info("worker_stopped", queue=self.name, worker_id=self.id)
        await self._close_client()

    async def _wait_for_slots(self) -> None:
        """Wait until running jobs finish, ``shutdown_timeout`` passes, or a force."""
        slots = self._runner.slots
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        forced = asyncio.ensure_future(self._force.wait())
        try:
            while slots and not self._force.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                await asyncio.wait(
                    {*slots, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            forced.cancel()

    async def _close_client(self) -> None:
        with suppress(Exception):  # ends the waits of processors (wait_until_finished)
            await self._queue.close()
        if self._owns_client:
            with suppress(Exception):
                await self.client.aclose()

    async def rate_limit(self, seconds: float | timedelta) -> None:
        """Hold every worker of this queue for ``seconds`` (for an upstream's 429)."""
        await self._fetcher.rate_limit(seconds)

    # ----- JobBackend: what a running job calls

    async def update_progress(self, job: Job, progress: Any) -> None:
        await self._queue.update_progress(job, progress, worker_id=self.id)

    async def add_log(self, job: Job, line: str) -> int:
        return await self._queue.add_log(job, line)

    async def get_logs(self, job: Job) -> list[str]:
        return await self._queue.get_logs(job)

    async def refresh(self, job: Job) -> Job:
        return await self._queue.refresh(job)

    async def retry_job(self, job_id: str) -> None:
        await self._queue.retry_job(job_id)

    async def promote_job(self, job_id: str) -> None:
        await self._queue.promote_job(job_id)

    async def remove_job(self, job_id: str) -> None:
        await self._queue.remove_job(job_id)

    async def update_job_data(self, job_id: str, data: Any) -> None:
        await self._queue.update_job_data(job_id, data)

    async def get_dependencies(self, job: Job) -> list[Dependency]:
        return await self._queue.get_dependencies(job)

    async def wait_until_finished(
        self,
        job_id: str,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109 - the whole wait's bound
    ) -> Any:
        return await self._queue.wait_until_finished(job_id, timeout)

    async def move_to_delayed(self, job: Job, when: float | timedelta | datetime) -> None:
        if job.id not in self._ctx.running or job._moved:
            raise QueueError("move_to_delayed is only for a running job, once per attempt")
        settled_next = await self._runner.delay(job, when, self.hooks.snapshot(), None, fetch=False)
        assert settled_next is None
        if job.state is JobState.FAILED:  # a cancel was pending: failed as cancelled
            job._moved = True  # settled all the same: the runner records nothing more
            raise JobCancelledError(job.id, job.failed_reason or "")
        if job.state is not JobState.DELAYED:
            raise LockLostError(f"job {job.id} lost its lock before it could be delayed")
