"""Lifecycle hooks: the seam for instrumentation (queue_otel) and for users.

Subclass ``Hook`` and override what you need. The "around" hooks return a context manager
(or ``None``) that wraps an operation: ``around_enqueue`` wraps an add (it may write
entries into each job's ``headers``), ``around_process`` wraps one processing attempt,
from the call of the processor to the settling of the attempt in Redis, and
``around_internal`` wraps the worker's own bookkeeping calls to Redis (fetching, idle
waiting, lock renewal, stalled checks), so that instrumentation can keep them out of traces.
Their "after" part always runs: the operation's outcome and error are set on the event
first, and the context manager is exited normally, even when the operation failed or was
cancelled.

The ``on_*`` notifications run after the fact; they may be plain functions or coroutine
functions. Hooks run inline, so keep them quick.

An exception raised by a hook is logged and never breaks the job or the enqueue. With
no hook registered, the hot path only compares one integer.

Register a hook for one queue or worker (``worker.hooks.add(hook)``) or for every queue
and worker in the process (``register_hook(hook)``), which is what instrumentation uses.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from queue_core.log import get_logger

if TYPE_CHECKING:
    from queue_core.job import Job, JobState
    from queue_core.options import JobOptions

__all__ = [
    "EnqueueEvent",
    "EnqueuedJob",
    "Hook",
    "HookRegistry",
    "InternalEvent",
    "JobEvent",
    "OperationEvent",
    "Outcome",
    "ProcessEvent",
    "QuarantineEvent",
    "RateLimitEvent",
    "StalledEvent",
    "WorkerErrorEvent",
    "WorkerEvent",
    "acting_as",
    "register_hook",
    "unregister_hook",
]

_log = get_logger("queue_core.hooks")
# Who acts (``acting_as``): read into each OperationEvent as it is made.
_ACTOR: ContextVar[str | None] = ContextVar("queue_core_actor", default=None)

Outcome = Literal[
    "completed",  # the job succeeded
    "failed",  # the attempt failed and the job went to the failed set
    "retry",  # the attempt failed and a retry is scheduled
    "delayed",  # the processor re-scheduled the job (DelayedError, move_to_delayed)
    "rate_limited",  # the processor hit a rate limit (RateLimitError); the job waits
    "lock_lost",  # the worker lost the job's lock; the job runs (or ran) elsewhere
    "interrupted",  # cancelled at shutdown; stalled recovery will run it again
    "cancelled",  # cancelled by queue.cancel(): failed for good with JobCancelledError
]


@dataclass(slots=True)
class EnqueuedJob:
    """One job of an enqueue, as hooks see it. Write trace context into ``headers``."""

    name: str
    data: Any
    options: JobOptions
    headers: dict[str, str] = field(default_factory=dict)
    # Set once the add returned:
    job_id: str | None = None
    duplicate: bool = False  # an existing job held its job_id or dedup key: that job's id
    state: JobState | None = None


@dataclass(slots=True)
class EnqueueEvent:
    queue: str
    jobs: list[EnqueuedJob]
    bulk: bool
    server_address: str | None = None
    server_port: int | None = None
    # Set before the "after" part runs when the add raised; nothing was written then.
    error: BaseException | None = None


@dataclass(slots=True)
class ProcessEvent:
    job: Job
    queue: str
    worker_id: str
    server_address: str | None = None
    server_port: int | None = None
    # Set before the "after" part runs:
    outcome: Outcome | None = None
    error: BaseException | None = None
    # Seconds until the job runs again (retry, delayed, rate_limited).
    delay: float | None = None


@dataclass(slots=True)
class InternalEvent:
    """A call to Redis that is bookkeeping, not a job's work: a worker's fetching, idle
    waiting, lock renewal and stalled checks, and a queue's first connection."""

    queue: str
    worker_id: str | None
    operation: Literal["connect", "fetch", "wait", "wake", "renew_locks", "recover_stalled"]
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A job completed, failed for good, was scheduled for a retry, delayed or progressed."""

    queue: str
    job: Job
    worker_id: str | None = None
    error: BaseException | None = None
    delay: float | None = None  # retry / delay: seconds until the job runs again
    until: datetime | None = None  # retry / delay: when it becomes ready


@dataclass(slots=True)
class OperationEvent:
    """An operator's action on a queue (``Queue``/``SyncQueue`` methods): ``operation``
    names it: ``pause``, ``resume``, ``retry``, ``promote``, ``remove``, ``update_data``,
    ``cancel``, ``retry_jobs``, ``drain``, ``clean``, ``obliterate`` and the ``set_*``
    settings (reads such as ``get_config`` are not actions). A bulk action made of chunks
    (``retry_jobs``, ``drain``, ``clean``, ``obliterate``) is one event per chunk.

    For an action on one job, ``job_id`` names it and, once the call returned, ``headers``
    holds that job's headers (its trace context: instrumentation links to the job's trace
    from there). For ``upsert_scheduler``, hooks may write ``headers`` on entry: they are
    stored in the scheduler's runs, as ``around_enqueue`` hooks write an add's. ``count``
    is how many jobs the action changed. ``error`` is set when the action raised; nothing
    was changed then. ``actor`` names who acted, when the caller said so with
    ``acting_as`` (the job browser passes its signed-in user).
    """

    queue: str
    operation: str
    job_id: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    actor: str | None = field(default_factory=_ACTOR.get)
    # Set before the "after" part runs:
    headers: Mapping[str, str] = field(default_factory=dict)
    count: int | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class StalledEvent:
    """Stalled recovery ran: ``requeued`` went back to wait, ``failed`` stalled too often."""

    queue: str
    worker_id: str
    requeued: tuple[str, ...]
    failed: tuple[Job, ...]


@dataclass(frozen=True, slots=True)
class RateLimitEvent:
    queue: str
    worker_id: str
    delay: float  # seconds the worker holds back
    manual: bool  # True for worker.rate_limit() / RateLimitError, False for the limiter


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    queue: str
    worker_id: str
    concurrency: int


@dataclass(frozen=True, slots=True)
class WorkerErrorEvent:
    """An unexpected error in one of a worker's own loops, which goes on after a backoff.

    ``loop`` names it: ``fetch``, ``renew_locks``, ``recover_stalled``, ``settle`` (a job's
    outcome could not be recorded; the job is left to stalled recovery) or ``background``.
    ``failures`` counts the loop's consecutive failures; from three on, the worker reports
    itself unhealthy (``worker.healthy()``) until a round succeeds.
    """

    queue: str
    worker_id: str
    loop: str
    error: BaseException
    failures: int


@dataclass(frozen=True, slots=True)
class QuarantineEvent:
    """A worker met jobs whose stored data cannot be read and moved them to the failed
    set with a ``CorruptJobError`` (their raw record is kept): ``(job id, reason)`` pairs."""

    queue: str
    worker_id: str
    jobs: tuple[tuple[str, str], ...]


AroundHook = Callable[[Any], AbstractContextManager[object] | None]
Notification = Callable[[Any], Awaitable[None] | None]


class Hook:
    """Base class of hooks. Every method is optional; the defaults do nothing."""

    def around_enqueue(self, event: EnqueueEvent) -> AbstractContextManager[object] | None:
        """Wraps an add or bulk add, before the jobs are encoded: write ``headers`` here."""
        return None

    def around_process(self, event: ProcessEvent) -> AbstractContextManager[object] | None:
        """Wraps one attempt, from the processor call to the settle in Redis."""
        return None

    def around_internal(self, event: InternalEvent) -> AbstractContextManager[object] | None:
        """Wraps a worker's bookkeeping call to Redis, and a queue's first connection."""
        return None

    def around_operation(self, event: OperationEvent) -> AbstractContextManager[object] | None:
        """Wraps an operator's action (pause, retry, cancel, remove, clean, ...)."""
        return None

    def on_completed(self, event: JobEvent) -> Awaitable[None] | None:
        """A job succeeded; ``event.job.return_value`` holds its result."""
        return None

    def on_failed(self, event: JobEvent) -> Awaitable[None] | None:
        """A job failed for good (no attempt left, or unrecoverable); ``event.error``."""
        return None

    def on_cancelled(self, event: JobEvent) -> Awaitable[None] | None:
        """A running job was cancelled (``queue.cancel``) and failed for good with
        ``JobCancelledError`` (``event.error``)."""
        return None

    def on_retry_scheduled(self, event: JobEvent) -> Awaitable[None] | None:
        """An attempt failed and a retry runs in ``event.delay`` seconds."""
        return None

    def on_delayed(self, event: JobEvent) -> Awaitable[None] | None:
        """The processor re-scheduled its job, or hit a rate limit; ready ``event.until``."""
        return None

    def on_progress(self, event: JobEvent) -> Awaitable[None] | None:
        """A job stored progress (``event.job.progress``)."""
        return None

    def on_stalled(self, event: StalledEvent) -> Awaitable[None] | None:
        """Stalled recovery put jobs of dead workers back, or failed them."""
        return None

    def on_rate_limited(self, event: RateLimitEvent) -> Awaitable[None] | None:
        """The worker holds back fetching for ``event.delay`` seconds."""
        return None

    def on_worker_started(self, event: WorkerEvent) -> Awaitable[None] | None:
        """A worker connected and starts fetching."""
        return None

    def on_worker_stopped(self, event: WorkerEvent) -> Awaitable[None] | None:
        """A worker stopped (its running jobs finished or were left to stalled recovery)."""
        return None

    def on_worker_error(self, event: WorkerErrorEvent) -> Awaitable[None] | None:
        """One of the worker's loops met an unexpected error; it goes on after a backoff."""
        return None

    def on_quarantined(self, event: QuarantineEvent) -> Awaitable[None] | None:
        """Corrupt jobs were moved to the failed set with ``CorruptJobError``."""
        return None


_AROUND = ("around_enqueue", "around_process", "around_internal", "around_operation")
_NOTIFY = (
    "on_completed",
    "on_failed",
    "on_cancelled",
    "on_retry_scheduled",
    "on_delayed",
    "on_progress",
    "on_stalled",
    "on_rate_limited",
    "on_worker_started",
    "on_worker_stopped",
    "on_worker_error",
    "on_quarantined",
)


class HookSet:
    """The hooks that apply at one moment: per event, the methods a hook overrides."""

    __slots__ = _AROUND + _NOTIFY

    around_enqueue: tuple[AroundHook, ...]
    around_process: tuple[AroundHook, ...]
    around_internal: tuple[AroundHook, ...]
    around_operation: tuple[AroundHook, ...]
    on_completed: tuple[Notification, ...]
    on_failed: tuple[Notification, ...]
    on_cancelled: tuple[Notification, ...]
    on_retry_scheduled: tuple[Notification, ...]
    on_delayed: tuple[Notification, ...]
    on_progress: tuple[Notification, ...]
    on_stalled: tuple[Notification, ...]
    on_rate_limited: tuple[Notification, ...]
    on_worker_started: tuple[Notification, ...]
    on_worker_stopped: tuple[Notification, ...]
    on_worker_error: tuple[Notification, ...]
    on_quarantined: tuple[Notification, ...]

    def __init__(self, hooks: list[Hook]) -> None:
        for name in _AROUND + _NOTIFY:
            base = getattr(Hook, name)
            bound = tuple(getattr(h, name) for h in hooks if getattr(type(h), name) is not base)
            setattr(self, name, bound)


class HookRegistry:
    """Hooks of one queue or worker, plus those of its parent (the process-wide registry)."""

    _generation: ClassVar[int] = 0

    def __init__(self, parent: HookRegistry | None = None) -> None:
        self._parent = parent
        self._hooks: list[Hook] = []
        self._snapshot = HookSet([])
        self._snapshot_generation = -1

    def add(self, hook: Hook) -> None:
        if not isinstance(hook, Hook):
            raise TypeError(f"hooks must subclass queue_core.Hook, got {type(hook).__name__}")
        if hook not in self._hooks:
            self._hooks.append(hook)
            HookRegistry._generation += 1

    def remove(self, hook: Hook) -> None:
        if hook in self._hooks:
            self._hooks.remove(hook)
            HookRegistry._generation += 1

    def all(self) -> list[Hook]:
        inherited = self._parent.all() if self._parent is not None else []
        return inherited + [h for h in self._hooks if h not in inherited]

    def snapshot(self) -> HookSet:
        if self._snapshot_generation != HookRegistry._generation:
            self._snapshot = HookSet(self.all())
            self._snapshot_generation = HookRegistry._generation
        return self._snapshot


GLOBAL_HOOKS = HookRegistry()


def register_hook(hook: Hook) -> None:
    """Apply ``hook`` to every queue and worker in this process, existing or future."""
    GLOBAL_HOOKS.add(hook)


def unregister_hook(hook: Hook) -> None:
    """Stop applying a hook given to ``register_hook``."""
    GLOBAL_HOOKS.remove(hook)


def _hook_name(fn: Callable[..., object]) -> str:
    owner = getattr(fn, "__self__", None)
    return f"{type(owner).__name__}.{fn.__name__}" if owner is not None else repr(fn)


class Around:
    """Enters the around-hooks of an event, and always exits them without an exception.

    The wrapped code reports its result on the event (``error``, ``outcome``); the
    hooks' "after" parts then run as a normal exit. An exception raised by a hook is
    logged and that hook is skipped; the wrapped operation never sees it.
    """

    __slots__ = ("_entered", "_event", "_factories")

    def __init__(self, factories: tuple[AroundHook, ...], event: Any) -> None:
        self._factories = factories
        self._event = event
        self._entered: list[tuple[AroundHook, AbstractContextManager[object]]] = []

    def __enter__(self) -> None:
        for factory in self._factories:
            try:
                manager = factory(self._event)
                if manager is None:
                    continue
                manager.__enter__()
            except Exception:
                _log.exception("hook failed on entry", hook=_hook_name(factory))
                continue
            self._entered.append((factory, manager))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and getattr(self._event, "error", None) is None:
            self._event.error = exc
        for factory, manager in reversed(self._entered):
            try:
                manager.__exit__(None, None, None)
            except Exception:
                _log.exception("hook failed on exit", hook=_hook_name(factory))


async def notify(hooks: tuple[Notification, ...], event: Any) -> None:
    """Call each notification hook; await it if it is a coroutine; log what it raises."""
    for hook in hooks:
        try:
            result = hook(event)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            _log.exception("hook failed", hook=_hook_name(hook))


@contextmanager
def acting_as(actor: str | None) -> Iterator[None]:
    """Operator actions inside the block name ``actor`` (``OperationEvent.actor``), so
    hooks can record who retried, cancelled or paused."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)
