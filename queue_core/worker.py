"""``Worker``: runs the jobs of one queue.

One fetch loop fills up to ``concurrency`` slots; each slot runs a job, settles it and
takes the next job from the same script call, so a busy worker spends one round trip
per job. An idle worker blocks in Redis (BZPOPMIN on the queue's marker) rather than
polling. A lock renewal loop keeps the locks of running jobs alive, and a stalled-job
loop puts back the jobs of workers that died.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext, suppress
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Final, Self

import structlog
from redis.asyncio import Redis as AsyncRedis

from queue_core.commands import (
    ALREADY_SETTLED,
    SETTLED,
    Fetched,
    FetchSettings,
    Settled,
    parse_fetch,
    parse_settle,
    snapshot_to_job,
)
from queue_core.connection import (
    TRANSIENT_ERRORS,
    AsyncClient,
    check_decoding,
    check_server,
    create_async_client,
    server_address,
    socket_timeout,
)
from queue_core.envelope import decode_record
from queue_core.errors import (
    DelayedError,
    InvalidOptionError,
    JobTimeoutError,
    LockLostError,
    QueueError,
    RateLimitError,
    SerializationError,
    UnrecoverableError,
)
from queue_core.hooks import (
    Around,
    Hook,
    HookSet,
    InternalEvent,
    JobEvent,
    ProcessEvent,
    RateLimitEvent,
    StalledEvent,
    WorkerEvent,
    notify,
)
from queue_core.job import Job, JobState, job_from_wire, ms_to_datetime
from queue_core.keys import QueueKeys
from queue_core.options import RateLimit, check_int, to_ms, to_seconds
from queue_core.queue import DEFAULT_MAX_LOG_LINES, Queue
from queue_core.retry import BackoffStrategy, retry_delay
from queue_core.scripts import CommandPipeline, can_pipeline, load_script, preload, run_script
from queue_core.serializer import Serializer
from queue_core.threads import DaemonThreadPool

__all__ = ["Processor", "Worker"]

Processor = Callable[[Job], Awaitable[Any]] | Callable[[Job], Any]
"""``async def process(job) -> result`` or a plain ``def`` (run in a thread)."""

_FETCH = load_script("move_to_active")
_COMPLETE = load_script("move_to_completed")
_FAIL = load_script("move_to_failed")
_DELAY = load_script("move_to_delayed")
_EXTEND = load_script("extend_locks")
_RECOVER = load_script("recover_stalled")
_RATE_LIMIT = load_script("rate_limit")
_GET_JOB = load_script("get_job")

_NO_HOOK: Final = nullcontext()
_WATCHDOG_S: Final = 3.0  # a blocking call that overruns its timeout by this much is dead
_MAX_STACK_CHARS: Final = 16_000
_RECOVER_BATCH: Final = 1000

_log = structlog.get_logger("queue_core.worker")


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _error_json(error: BaseException) -> str:
    stack = "".join(traceback.format_exception(error))[-_MAX_STACK_CHARS:]
    return json.dumps({"type": type(error).__name__, "message": str(error), "stack": stack})


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Backoff:
    """Exponential reconnect delays with jitter: 0.1 s doubling up to 5 s."""

    def __init__(self) -> None:
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return float(min(5.0, 0.1 * 2 ** (self.failures - 1)) * (0.5 + random.random() / 2))

    def reset(self) -> int:
        failures, self.failures = self.failures, 0
        return failures


class Worker:
    """Process the jobs of ``queue_name`` with ``processor``.

    ``processor`` is an ``async def`` or a plain ``def`` (run in a thread), or a mapping
    from job name to processor. Its return value is stored as the job's result (it must
    suit the serializer, JSON by default). Raise ``UnrecoverableError`` to fail at once,
    ``DelayedError`` to re-schedule, ``RateLimitError`` when an upstream throttles you.

    Locks: each running job holds a lock that expires after ``lock_duration`` unless
    renewed, which this worker does every ``lock_duration / 2``. Every
    ``stalled_interval``, expired locks are found and their jobs put back in wait, at
    most ``max_stalled_count`` times per job before it fails.

    ``await worker.run()`` runs until SIGTERM/SIGINT or ``close()``; ``async with worker:``
    runs it in the background. Shutdown stops fetching and lets running jobs finish within
    ``shutdown_timeout``; jobs still running then are left to stalled recovery.
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
        limiter: RateLimit | None = None,
        backoff_strategies: Mapping[str, BackoffStrategy] | None = None,
        shutdown_timeout: float | timedelta = 30.0,
        drain_delay: float | timedelta = 5.0,
        serializer: Serializer | None = None,
        hooks: tuple[Hook, ...] | list[Hook] = (),
        worker_id: str | None = None,
        max_log_lines: int = DEFAULT_MAX_LOG_LINES,
    ) -> None:
        self._processors = self._check_processors(processor)
        self.concurrency = check_int(concurrency, "concurrency", 1, 100_000)
        self.lock_duration = to_seconds(lock_duration, "lock_duration", allow_zero=False)
        self.stalled_interval = to_seconds(stalled_interval, "stalled_interval", allow_zero=False)
        self.max_stalled_count = check_int(max_stalled_count, "max_stalled_count", 0, 1_000_000)
        if limiter is not None and not isinstance(limiter, RateLimit):
            raise InvalidOptionError("limiter must be a RateLimit")
        self.limiter = limiter
        self.backoff_strategies = dict(backoff_strategies or {})
        self.shutdown_timeout = to_seconds(shutdown_timeout, "shutdown_timeout")
        self.drain_delay = to_seconds(drain_delay, "drain_delay", allow_zero=False)
        self.id = worker_id or _default_worker_id()

        self._owns_client = redis is None or isinstance(redis, str)
        self.client: AsyncClient = (
            create_async_client(redis) if redis is None or isinstance(redis, str) else redis
        )
        check_decoding(self.client)
        # The queue does the job operations a processor calls (progress, logs); it shares
        # this worker's client and hooks.
        self._queue = Queue(
            queue_name,
            redis=self.client,
            prefix=prefix,
            serializer=serializer,
            max_log_lines=max_log_lines,
            hooks=hooks,
        )
        self.name = self._queue.name
        self.keys: QueueKeys = self._queue.keys
        self.hooks = self._queue.hooks
        self.serializer = self._queue.serializer
        self.server_address, self.server_port = server_address(self.client)
        self._fetch_settings = FetchSettings(
            token_prefix=self.id,
            lock_ms=to_ms(self.lock_duration),
            limit_max=limiter.max if limiter else 0,
            limit_ms=to_ms(limiter.duration) if limiter else 0,
        )
        timeout = socket_timeout(self.client)
        # A blocking call must return before the socket times out.
        self._block_cap = (
            self.drain_delay if timeout is None else min(self.drain_delay, timeout / 2)
        )
        self._threads = DaemonThreadPool(f"queue_core-{self.name}")
        # Fetch and settle calls share writes when jobs run concurrently (see pipeline.py).
        self._pipeline = (
            CommandPipeline(self.client)
            if isinstance(self.client, AsyncRedis) and can_pipeline(self.client)
            else None
        )

        self._slots: set[asyncio.Task[None]] = set()
        self._running: dict[str, Job] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._wakeup = asyncio.Event()  # a slot freed up, or the worker is closing
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()  # stop waiting for running jobs
        self._ready = asyncio.Event()  # started, or failed to start
        self._stopped = asyncio.Event()
        self._blocking: asyncio.Future[Any] | None = None
        self._main: asyncio.Task[None] | None = None
        self._state = "new"  # new -> starting -> running -> closing -> closed
        self._hold_until = 0.0
        self._redis_backoff = _Backoff()
        self.last_contact: float | None = None  # time.monotonic() of the last Redis reply

    @staticmethod
    def _check_processors(
        processor: Processor | Mapping[str, Processor],
    ) -> dict[str | None, tuple[Callable[[Job], Any], bool]]:
        items: list[tuple[str | None, Any]]
        if isinstance(processor, Mapping):
            items = list(processor.items())
            if not items:
                raise InvalidOptionError("the processor mapping is empty")
        else:
            items = [(None, processor)]
        table: dict[str | None, tuple[Callable[[Job], Any], bool]] = {}
        for name, fn in items:
            if not callable(fn):
                raise InvalidOptionError(f"processor for {name!r} is not callable")
            table[name] = (fn, _is_async(fn))
        return table

    # ----------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def active_jobs(self) -> int:
        return len(self._running)

    def healthy(self, max_silence: float | None = None) -> bool:
        """Running and heard from Redis recently (an idle worker hears every drain_delay).

        Use it for liveness probes: a worker whose connection silently died turns
        unhealthy instead of looking idle forever.
        """
        if not self.running or self.last_contact is None:
            return False
        limit = max_silence if max_silence is not None else self._block_cap + _WATCHDOG_S + 5.0
        return time.monotonic() - self.last_contact <= limit

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
        if self._state != "new":
            raise QueueError("a Worker runs once; create a new one")
        self._state = "starting"
        installed = self._install_signal_handlers() if handle_signals else []
        try:
            await self._start()
            await self._fetch_loop()
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
        elif self._state != "closed":
            await self._stopped.wait()

    def request_close(self, *, force: bool = False) -> None:
        """Begin a graceful shutdown without waiting for it (safe from signal handlers)."""
        if self._state == "new":
            self._state = "closed"
            return
        if self._state in ("starting", "running"):
            self._state = "closing"
            _log.info(
                "worker_closing", queue=self.name, worker_id=self.id, running=self.active_jobs
            )
        if force:
            self._force.set()
        self._stopping.set()
        self._wakeup.set()
        if self._blocking is not None:
            self._blocking.cancel()

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
        force = self._state == "closing"  # a second signal means "now"
        _log.info("worker_signal", signal=signal.Signals(sig).name, force=force, worker_id=self.id)
        self.request_close(force=force)

    async def _start(self) -> None:
        async def connect() -> None:
            await check_server(self.client)
            await preload(self.client)

        with self._internal("connect"):
            await self._with_redis("connect", connect)
        self.server_address, self.server_port = server_address(self.client, self.keys["wait"])
        if self._stopping.is_set():
            return  # closed while connecting
        self._state = "running"
        self._ready.set()
        self._spawn_background(self._renew_loop())
        self._spawn_background(self._stalled_loop())
        _log.info(
            "worker_started",
            queue=self.name,
            worker_id=self.id,
            concurrency=self.concurrency,
            server=self.server_address,
        )
        hooks = self.hooks.snapshot().on_worker_started
        if hooks:
            await notify(hooks, WorkerEvent(self.name, self.id, self.concurrency))

    async def _shutdown(self) -> None:
        if not self._background and not self._slots:  # never started
            self._state = "closed"
            await self._close_client()
            return
        self._state = "closing"
        await self._wait_for_slots()
        if self._slots:
            _log.warning(
                "worker_shutdown_timeout",
                queue=self.name,
                worker_id=self.id,
                left_to_stalled_recovery=sorted(self._running),
            )
            pending = set(self._slots)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(self._background)
        self._threads.shutdown()
        if self._pipeline is not None:
            await self._pipeline.close()
        self._state = "closed"
        hooks = self.hooks.snapshot().on_worker_stopped
        if hooks:
            await notify(hooks, WorkerEvent(self.name, self.id, self.concurrency))
        _log.info("worker_stopped", queue=self.name, worker_id=self.id)
        await self._close_client()

    async def _wait_for_slots(self) -> None:
        """Wait until running jobs finish, ``shutdown_timeout`` passes, or a force."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        forced = asyncio.ensure_future(self._force.wait())
        try:
            while self._slots and not self._force.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                await asyncio.wait(
                    {*self._slots, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            forced.cancel()

    async def _close_client(self) -> None:
        if self._owns_client:
            with suppress(Exception):
                await self.client.aclose()

    def _spawn_background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _internal(self, operation: Any) -> AbstractContextManager[object]:
        """Wrap one of the worker's own Redis calls in the ``around_internal`` hooks."""
        hooks = self.hooks.snapshot().around_internal
        if not hooks:
            return _NO_HOOK
        return Around(hooks, InternalEvent(self.name, self.id, operation))

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the worker starts closing; returns False if it did."""
        if self._stopping.is_set():
            return False
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return False
        return True

    # ------------------------------------------------------------------- Redis faults

    async def _with_redis(self, operation: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call``, retrying transient Redis faults with backoff until it succeeds."""
        while True:
            try:
                result = await call()
            except TRANSIENT_ERRORS as exc:
                delay = self._redis_backoff.next()
                _log.warning(
                    "redis_unavailable",
                    operation=operation,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                    queue=self.name,
                    worker_id=self.id,
                )
                if self._stopping.is_set() and operation in (
                    "connect",
                    "fetch",
                ):
                    raise
                await asyncio.sleep(delay)
                continue
            self.last_contact = time.monotonic()
            failures = self._redis_backoff.reset()
            if failures:
                _log.info(
                    "redis_reconnected",
                    operation=operation,
                    failed_attempts=failures,
                    queue=self.name,
                    worker_id=self.id,
                )
            return result

    # ------------------------------------------------------------------- fetching

    async def _fetch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._state == "running":
            if len(self._slots) >= self.concurrency:
                self._wakeup.clear()
                if len(self._slots) >= self.concurrency and self._state == "running":
                    await self._wakeup.wait()
                continue
            hold = self._hold_until - loop.time()
            if hold > 0:
                await self._sleep(hold)
                continue
            try:
                with self._internal("fetch"):
                    fetched = await self._with_redis(
                        "fetch", lambda: self._fetch(self.concurrency - len(self._slots))
                    )
            except TRANSIENT_ERRORS:
                break  # closing while Redis is down
            for raw in fetched.jobs:
                self._spawn_slot(raw)
            if fetched.jobs:
                continue
            if fetched.rate_limit_ms > 0:
                await self._hold(fetched.rate_limit_ms, manual=False)
                continue
            with self._internal("wait"):
                await self._wait_for_work(fetched)

    async def _fetch(self, count: int) -> Fetched:
        args = self._fetch_settings.args(count)
        return parse_fetch(await run_script(self.client, _FETCH, self.keys, args, self._pipeline))

    async def _wait_for_work(self, fetched: Fetched) -> None:
        """Block on the marker until a producer (or a due delayed job) wakes this worker."""
        timeout = self._block_cap
        poke: asyncio.TimerHandle | None = None
        if fetched.next_due_ms is not None:
            due_in = max(0.001, (fetched.next_due_ms - fetched.now_ms) / 1000)
            if due_in < timeout:
                # An idle Redis ends short blocking timeouts up to ~100 ms late, so a
                # local timer pokes the marker when the delayed job falls due.
                timeout = due_in + 0.25
                poke = asyncio.get_running_loop().call_later(due_in, self._poke_marker)
        blocking = asyncio.ensure_future(self.client.bzpopmin(self.keys["marker"], timeout))
        self._blocking = blocking
        try:
            done, _ = await asyncio.wait({blocking}, timeout=timeout + _WATCHDOG_S)
            if not done:
                blocking.cancel()
                _log.warning(
                    "redis_blocking_call_stuck",
                    queue=self.name,
                    worker_id=self.id,
                    hint="the connection is dropped and opened again",
                )
                return
            if blocking.cancelled():
                return
            try:
                blocking.result()
                self.last_contact = time.monotonic()
            except TRANSIENT_ERRORS as exc:
                delay = self._redis_backoff.next()
                _log.warning(
                    "redis_unavailable",
                    operation="wait",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                    queue=self.name,
                    worker_id=self.id,
                )
                await self._sleep(delay)
        finally:
            self._blocking = None
            if poke is not None:
                poke.cancel()

    def _poke_marker(self) -> None:
        async def poke() -> None:
            with suppress(*TRANSIENT_ERRORS):
                await self.client.zadd(self.keys["marker"], {"0": 0})

        with self._internal("wake"):  # the task copies this context
            self._spawn_background(poke())

    async def _hold(self, ms: int, *, manual: bool) -> None:
        """Hold back fetching for ``ms`` (a rate limit), and tell the hooks."""
        loop = asyncio.get_running_loop()
        until = loop.time() + ms / 1000
        if until <= self._hold_until:
            return
        self._hold_until = until
        _log.info(
            "rate_limited", queue=self.name, worker_id=self.id, delay_s=ms / 1000, manual=manual
        )
        hooks = self.hooks.snapshot().on_rate_limited
        if hooks:
            await notify(hooks, RateLimitEvent(self.name, self.id, ms / 1000, manual))

    async def rate_limit(self, seconds: float | timedelta) -> None:
        """Hold every worker of this queue for ``seconds`` (for an upstream's 429)."""
        ms = to_ms(to_seconds(seconds, "rate_limit", allow_zero=False))
        ttl = await self._with_redis(
            "rate_limit", lambda: run_script(self.client, _RATE_LIMIT, self.keys, [ms])
        )
        await self._hold(max(int(ttl), ms), manual=True)

    # ------------------------------------------------------------------- processing

    def _spawn_slot(self, raw: tuple[str, bytes, bytes]) -> None:
        task = asyncio.create_task(self._slot(raw))
        self._slots.add(task)
        task.add_done_callback(self._slot_done)

    def _slot_done(self, task: asyncio.Task[None]) -> None:
        self._slots.discard(task)
        self._wakeup.set()
        if not task.cancelled() and task.exception() is not None:
            _log.error("worker_slot_crashed", exc_info=task.exception(), worker_id=self.id)

    def _can_fetch_next(self) -> bool:
        return self._state == "running" and asyncio.get_running_loop().time() >= self._hold_until

    async def _slot(self, raw: tuple[str, bytes, bytes] | None) -> None:
        """Run jobs one after the other: each settle call hands back the next job."""
        while raw is not None:
            raw = await self._process(raw)

    async def _process(self, raw: tuple[str, bytes, bytes]) -> tuple[str, bytes, bytes] | None:
        job_id, envelope, raw_record = raw
        record = decode_record(raw_record)
        token = record.get("tok")
        try:
            job = job_from_wire(
                self.name,
                job_id,
                envelope,
                record,
                self.serializer,
                state=JobState.ACTIVE,
                backend=self,
            )
        except SerializationError as exc:
            # A job that cannot be decoded can never run: fail it for good.
            _log.error("job_undecodable", job_id=job_id, queue=self.name, error=str(exc))
            settled = await self._settle(_FAIL, job_id, token, [_error_json(exc)])
            return self._next(settled)
        self._running[job.id] = job
        try:
            return await self._attempt(job)
        finally:
            self._running.pop(job.id, None)

    async def _attempt(self, job: Job) -> tuple[str, bytes, bytes] | None:
        hooks = self.hooks.snapshot()
        tokens = structlog.contextvars.bind_contextvars(
            job_id=job.id, queue=self.name, job_name=job.name, attempt=job.attempts_started
        )
        try:
            if not hooks.around_process:
                return await self._run_and_settle(job, hooks, None)
            event = ProcessEvent(job, self.name, self.id, self.server_address, self.server_port)
            with Around(hooks.around_process, event):
                return await self._run_and_settle(job, hooks, event)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def _call_processor(self, job: Job) -> Any:
        entry = self._processors.get(job.name) or self._processors.get(None)
        if entry is None:
            raise UnrecoverableError(f"this worker has no processor for job name {job.name!r}")
        fn, is_async = entry
        timeout = job.options.timeout
        if timeout is None:
            result = await fn(job) if is_async else await self._threads.run(lambda: fn(job))
        else:
            try:
                async with asyncio.timeout(timeout) as scope:
                    if is_async:
                        result = await fn(job)
                    else:
                        result = await self._threads.run(lambda: fn(job))
            except TimeoutError as exc:
                if scope.expired():
                    raise JobTimeoutError(
                        f"attempt {job.attempts_started} ran longer than its {timeout} s timeout"
                    ) from exc
                raise
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _run_and_settle(
        self, job: Job, hooks: HookSet, event: ProcessEvent | None
    ) -> tuple[str, bytes, bytes] | None:
        error: BaseException | None = None
        try:
            result = await self._call_processor(job)
            payload = self.serializer.dumps(result)
        except asyncio.CancelledError:
            if event is not None:
                event.outcome = "interrupted"
            raise
        except Exception as exc:
            error = exc
        if event is not None:
            event.error = error

        if job._moved:  # job.move_to_delayed() already settled this attempt
            if event is not None:
                event.outcome = "delayed"
            return None
        if error is None:
            job.return_value = result
            settled = await self._settle(_COMPLETE, job.id, job._token, [payload])
            return await self._after_settle(job, settled, "completed", hooks, event)
        if isinstance(error, DelayedError):
            return await self._delay(job, error.delay, hooks, event)
        if isinstance(error, RateLimitError):
            return await self._rate_limited(job, error, hooks, event)
        return await self._fail_or_retry(job, error, hooks, event)

    async def _fail_or_retry(
        self, job: Job, error: BaseException, hooks: HookSet, event: ProcessEvent | None
    ) -> tuple[str, bytes, bytes] | None:
        delay: float | None = None
        if not isinstance(error, UnrecoverableError | SerializationError):
            try:
                delay = retry_delay(job, error, self.backoff_strategies)
            except Exception as exc:
                _log.error("backoff_failed", error=str(exc), job_id=job.id, queue=self.name)
        job.failed_reason, job.error_type = str(error), type(error).__name__
        if delay is None:
            _log.error(
                "job_failed",
                error=f"{type(error).__name__}: {error}",
                attempts_made=job.attempts_made + 1,
            )
            settled = await self._settle(_FAIL, job.id, job._token, [_error_json(error)])
            return await self._after_settle(job, settled, "failed", hooks, event, error=error)
        _log.warning(
            "job_attempt_failed",
            error=f"{type(error).__name__}: {error}",
            retry_in=round(delay, 3),
            attempts_made=job.attempts_made + 1,
        )
        args = [to_ms(delay), "rel", 1, _error_json(error), 0, 0]
        settled = await self._settle(_DELAY, job.id, job._token, args)
        return await self._after_settle(job, settled, "retry", hooks, event, error=error)

    async def _delay(
        self,
        job: Job,
        when: float | timedelta | datetime,
        hooks: HookSet,
        event: ProcessEvent | None,
        *,
        fetch: bool = True,
    ) -> tuple[str, bytes, bytes] | None:
        if isinstance(when, datetime):
            due, mode = round(when.timestamp() * 1000), "abs"
        else:
            due, mode = to_ms(to_seconds(when, "delay")), "rel"
        args = [due, mode, 0, "", 0, 0]
        settled = await self._settle(_DELAY, job.id, job._token, args, fetch=fetch)
        return await self._after_settle(job, settled, "delayed", hooks, event)

    async def _rate_limited(
        self, job: Job, error: RateLimitError, hooks: HookSet, event: ProcessEvent | None
    ) -> tuple[str, bytes, bytes] | None:
        ms = to_ms(to_seconds(error.seconds, "RateLimitError seconds", allow_zero=False))
        # No fetch: the hold set by this very call would only be reported a second time.
        args = [ms, "rel", 0, "", 1, ms]
        settled = await self._settle(_DELAY, job.id, job._token, args, fetch=False)
        await self._hold(ms, manual=True)
        return await self._after_settle(job, settled, "rate_limited", hooks, event)

    async def _settle(
        self,
        script: Any,
        job_id: str,
        token: str | None,
        args: list[Any],
        *,
        fetch: bool = True,
    ) -> Settled:
        """Run a settling script, retrying through Redis faults: the lock token makes a
        retried call safe (it reports the attempt as already settled)."""
        count = 1 if fetch and self._can_fetch_next() else 0
        full = [job_id, token or "", *args, *self._fetch_settings.args(count)]

        async def call() -> Settled:
            reply = await run_script(self.client, script, self.keys, full, self._pipeline)
            return parse_settle(reply)

        return await self._with_redis("settle", call)  # type: ignore[no-any-return]

    async def _after_settle(
        self,
        job: Job,
        settled: Settled,
        outcome: str,
        hooks: HookSet,
        event: ProcessEvent | None,
        *,
        error: BaseException | None = None,
    ) -> tuple[str, bytes, bytes] | None:
        if settled.status in (SETTLED, ALREADY_SETTLED):
            self._running.pop(job.id, None)  # no lock to renew any more, even during hooks
            await self._record_outcome(job, settled, outcome, hooks, event=event, error=error)
        else:
            lost = LockLostError(
                f"job {job.id} was taken over (stalled recovery) or removed before it settled; "
                "this attempt's outcome is discarded"
            )
            _log.warning("job_lock_lost", job_id=job.id, queue=self.name, outcome=outcome)
            if event is not None:
                event.outcome, event.error = "lock_lost", event.error or lost
        if settled.fetched.rate_limit_ms > 0:
            await self._hold(settled.fetched.rate_limit_ms, manual=False)
        return self._next(settled)

    def _next(self, settled: Settled) -> tuple[str, bytes, bytes] | None:
        jobs = settled.fetched.jobs
        for extra in jobs[1:]:  # never more than one today; kept safe if that changes
            self._spawn_slot(extra)
        return jobs[0] if jobs else None

    async def _record_outcome(
        self,
        job: Job,
        settled: Settled,
        outcome: str,
        hooks: HookSet,
        *,
        event: ProcessEvent | None,
        error: BaseException | None,
    ) -> None:
        now = ms_to_datetime(settled.fetched.now_ms)
        delay: float | None = None
        until: datetime | None = None
        if outcome in ("completed", "failed"):
            job.attempts_made += 1
            job.finished_at = now
            job.state = JobState.COMPLETED if outcome == "completed" else JobState.FAILED
        else:
            job.attempts_made += outcome == "retry"
            job.state = JobState.DELAYED
            until = ms_to_datetime(settled.extra)
            job.delayed_until = until
            delay = max(0.0, (settled.extra - settled.fetched.now_ms) / 1000)
        if event is not None:
            event.outcome = outcome  # type: ignore[assignment]
            event.delay = delay
        notifications = {
            "completed": hooks.on_completed,
            "failed": hooks.on_failed,
            "retry": hooks.on_retry_scheduled,
            "delayed": hooks.on_delayed,
            "rate_limited": hooks.on_delayed,
        }[outcome]
        if notifications:
            await notify(
                notifications, JobEvent(self.name, job, self.id, error, delay=delay, until=until)
            )

    # ---------------------------------------------------- JobBackend (for processors)

    async def update_progress(self, job: Job, progress: Any) -> None:
        await self._queue.update_progress(job, progress, worker_id=self.id)

    async def add_log(self, job: Job, line: str) -> int:
        return await self._queue.add_log(job, line)

    async def get_logs(self, job: Job) -> list[str]:
        return await self._queue.get_logs(job)

    async def refresh(self, job: Job) -> Job:
        return await self._queue.refresh(job)

    async def move_to_delayed(self, job: Job, when: float | timedelta | datetime) -> None:
        if job.id not in self._running or job._moved:
            raise QueueError("move_to_delayed is only for a running job, once per attempt")
        settled_next = await self._delay(job, when, self.hooks.snapshot(), None, fetch=False)
        assert settled_next is None
        if job.state is not JobState.DELAYED:
            raise LockLostError(f"job {job.id} lost its lock before it could be delayed")

    # ------------------------------------------------------------ locks and stalls

    async def _renew_loop(self) -> None:
        interval = self.lock_duration / 2
        lock_ms = to_ms(self.lock_duration)
        while True:  # cancelled at shutdown, once no job runs any more
            await asyncio.sleep(interval)
            if not self._running:
                continue
            sent = {job_id: job._token or "" for job_id, job in self._running.items()}
            args: list[Any] = [lock_ms]
            for pair in sent.items():
                args.extend(pair)
            try:
                with self._internal("renew_locks"):
                    lost = await run_script(self.client, _EXTEND, self.keys, args)
            except TRANSIENT_ERRORS as exc:
                _log.warning("lock_renewal_failed", error=str(exc), jobs=len(sent))
                interval = min(1.0, self.lock_duration / 4)  # try again soon
                continue
            interval = self.lock_duration / 2
            self.last_contact = time.monotonic()
            for raw_id in lost:
                job_id = raw_id.decode()
                job = self._running.get(job_id)
                if job is None or job._token != sent[job_id]:
                    continue  # settled while the renewal was in flight: not lost
                _log.warning(
                    "job_lock_lost",
                    job_id=job_id,
                    queue=self.name,
                    hint="the job ran longer than lock_duration without renewal and was "
                    "recovered as stalled; its current attempt will be discarded",
                )

    async def _stalled_loop(self) -> None:
        while True:
            try:
                with self._internal("recover_stalled"):
                    reply = await run_script(
                        self.client, _RECOVER, self.keys, [self.max_stalled_count, _RECOVER_BATCH]
                    )
            except TRANSIENT_ERRORS as exc:
                _log.warning("stalled_check_failed", error=str(exc), queue=self.name)
            else:
                self.last_contact = time.monotonic()
                await self._report_stalled(reply)
            if not await self._sleep(self.stalled_interval):
                return

    async def _report_stalled(self, reply: list[Any]) -> None:
        requeued = tuple(x.decode() for x in reply[0])
        failed_ids = [x.decode() for x in reply[1]]
        if not requeued and not failed_ids:
            return
        _log.warning(
            "stalled_jobs_recovered",
            queue=self.name,
            worker_id=self.id,
            requeued=list(requeued),
            failed=failed_ids,
        )
        hooks = self.hooks.snapshot().on_stalled
        if not hooks:
            return
        failed: list[Job] = []
        for job_id in failed_ids:
            with suppress(*TRANSIENT_ERRORS, SerializationError):
                snapshot = await run_script(self.client, _GET_JOB, self.keys, [job_id])
                if snapshot is not None:
                    failed.append(
                        snapshot_to_job(self.name, job_id, snapshot, self.serializer, self)
                    )
        await notify(hooks, StalledEvent(self.name, self.id, requeued, tuple(failed)))
