"""The worker command's target, ``MODULE:ATTRIBUTE``: importing it and turning it into
Workers.

Without ``--queue`` the attribute is a ``Worker``, a list or tuple of Workers, or a
factory: a callable taking no argument that returns (or, ``async``, resolves to) one of
those, or an async context manager that yields one (to open and close what the
processors share). The factory is called inside the event loop the workers run on.

With ``--queue`` the attribute is a processor (a callable taking the job) or a mapping
of job name to processor, and the command builds one ``Worker`` per queue from its flags.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal

from queue_core.worker import Worker

__all__ = ["BadTargetError", "Target", "TargetCodeError", "WorkerSettings", "load_target"]


class BadTargetError(Exception):
    """The target names nothing usable (exit 2): a typo, a missing attribute, the wrong kind."""


class TargetCodeError(Exception):
    """The target's own code raised: its module on import, or its factory (exit 7).

    ``details`` is the traceback of that code, without the command's own frames."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class WorkerSettings:
    """A processor target's Worker options, from the command's flags (None: the default)."""

    queues: tuple[str, ...]
    redis: str | None = None
    prefix: str | None = None
    concurrency: int | None = None
    pool: str | None = None
    pool_size: int | None = None
    lock_duration: float | None = None
    shutdown_timeout: float | None = None

    def options(self) -> dict[str, Any]:
        given = {
            "redis": self.redis,
            "prefix": self.prefix,
            "concurrency": self.concurrency,
            "pool": self.pool,
            "pool_size": self.pool_size,
            "lock_duration": self.lock_duration,
            "shutdown_timeout": self.shutdown_timeout,
        }
        return {name: value for name, value in given.items() if value is not None}


@dataclass
class Target:
    spec: str
    kind: Literal["workers", "factory", "processor"]
    value: Any
    settings: WorkerSettings | None = None

    async def build(self, stack: AsyncExitStack) -> list[Worker]:
        """The Workers to run; a factory's context manager is entered on ``stack``."""
        if self.kind == "workers":
            return _as_workers(self.value, self.spec)
        if self.kind == "processor":
            assert self.settings is not None
            return [
                Worker(queue, self.value, **self.settings.options())
                for queue in self.settings.queues
            ]
        result = await _call_user_code(self.spec, self.value)
        if isinstance(result, AbstractAsyncContextManager) and not isinstance(result, Worker):
            manager = result
            result = await _call_user_code(self.spec, lambda: stack.enter_async_context(manager))
        return _as_workers(result, f"{self.spec}()")


def load_target(spec: str, settings: WorkerSettings | None) -> Target:
    """Import ``spec`` and classify what it names; ``settings`` (given ``--queue``) makes
    it a processor target. Raises ``BadTargetError`` or ``TargetCodeError``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise BadTargetError(f"target {spec!r} is not MODULE:ATTRIBUTE (such as app.jobs:worker)")
    module = _import(module_name)
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise BadTargetError(f"{spec}: module {module_name!r} has no {attribute!r}") from None
    if settings is not None:
        return _processor_target(spec, value, settings)
    if isinstance(value, Worker) or _is_worker_list(value):
        return Target(spec, "workers", value)
    if callable(value):
        if not _accepts(value, 0):
            raise BadTargetError(
                f"{spec} takes arguments, so it is not a factory of Workers; if it is a "
                "processor, name its queue with --queue"
            )
        return Target(spec, "factory", value)
    raise BadTargetError(
        f"{spec} is of type {type(value).__name__}: expected a Worker, a list of Workers, a "
        "factory returning them, or (with --queue) a processor"
    )


def _processor_target(spec: str, value: Any, settings: WorkerSettings) -> Target:
    if isinstance(value, Worker) or _is_worker_list(value):
        raise BadTargetError(f"{spec} is a Worker, which names its own queue: drop --queue")
    if isinstance(value, Mapping):
        if not value or not all(isinstance(k, str) and callable(v) for k, v in value.items()):
            raise BadTargetError(
                f"{spec} is a mapping, but not of job names to processors (callables)"
            )
    elif not callable(value):
        raise BadTargetError(
            f"{spec} is of type {type(value).__name__}: with --queue, the target is a processor "
            "(a function of the job) or a mapping of job names to processors"
        )
    elif not _accepts(value, 1):
        raise BadTargetError(
            f"{spec} does not take the job as its argument, so it is not a processor; a "
            "factory of Workers runs without --queue"
        )
    return Target(spec, "processor", value, settings)


def _import(module_name: str) -> Any:
    # Run from a project's directory, `queue-core` (unlike `python -m`) does not have that
    # directory on sys.path: put it there, as uvicorn and celery do.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # The target's own module (or a package above it) missing is a typo; a module
        # that the target imports missing is the target's code failing.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise BadTargetError(f"no module named {exc.name!r} (from {cwd})") from None
        raise _code_error(f"cannot import {module_name}", exc) from None
    except Exception as exc:
        raise _code_error(f"cannot import {module_name}", exc) from None


async def _call_user_code(spec: str, fn: Callable[[], Any]) -> Any:
    try:
        result = fn()
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        raise _code_error(f"{spec}() raised", exc) from None
    return result


def _code_error(what: str, exc: BaseException) -> TargetCodeError:
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.dirname(__file__)
    # Leave out this command's frames and importlib's, so the traceback starts in the
    # user's code.
    keep = 0
    while keep < len(frames) and (
        frames[keep].filename.startswith(here)
        or frames[keep].filename.startswith("<frozen importlib")
        or "importlib" in frames[keep].filename.split(os.sep)
    ):
        keep += 1
    tb = exc.__traceback__
    for _ in range(keep):
        assert tb is not None
        tb = tb.tb_next
    details = "".join(traceback.format_exception(type(exc), exc, tb))
    return TargetCodeError(f"{what}: {type(exc).__name__}: {exc}", details)


def _accepts(fn: Any, count: int) -> bool:
    """Whether ``fn`` can be called with ``count`` positional arguments (True when its
    signature cannot be read: the call itself will tell)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True


def _is_worker_list(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(w, Worker) for w in value)
    )


def _as_workers(value: Any, what: str) -> list[Worker]:
    if isinstance(value, Worker):
        return [value]
    if _is_worker_list(value):
        return list(value)
    kind = "an empty list" if isinstance(value, list | tuple) and not value else None
    raise BadTargetError(
        f"{what} gave {kind or 'a value of type ' + type(value).__name__}: expected a Worker or a "
        "non-empty list of Workers"
    )
