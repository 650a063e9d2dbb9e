"""The instrumentation's own CPU, measured where it is spent rather than by difference.

Two runs of the same workload, off and on, differ by the instrumentation's cost plus the
machine's drift; on a shared 2-core machine that drift (30-70% between rounds) is larger
than the 0.01 ms this project aims at. So ``bench/otel_overhead.py`` also reads:

- ``HookClock``: the calling thread's CPU clock around every call into the hooks that
  queue_otel registered (the around-hooks' entry and exit, the notifications). That is the
  instrumentation's cost on the job's own path: span and metric work, propagation.
- ``ExportThreads``: the CPU clocks of the SDK's export threads (batch span processor,
  periodic metric reader), the work moved off the job's path.

What neither sees is the cost the hooks cause in queue_core itself (the trace headers
carried in each job's envelope); the difference of the two runs keeps that in view.
Each clock read is a system call (0.2 to 0.6 us, by machine), and a clocked hook's
figure holds about one read per call plus the wrappers': about 5 us per job on a 2-core
machine for a hook called four times per job. ``empty_like`` gives hooks that do nothing
but are called as queue_otel's are; clocked the same way in the same run, they measure
that floor, which ``bench/otel_overhead.py`` takes off the hooks' figures (and shows).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from queue_core import Hook

__all__ = ["ExportThreads", "HookClock", "empty_like"]

_AROUND = ("around_enqueue", "around_process", "around_internal", "around_operation")


class _TimedManager:
    __slots__ = ("_inner", "_key", "_spent")

    def __init__(self, inner: AbstractContextManager[object], spent: Counter[str], key: str):
        self._inner, self._spent, self._key = inner, spent, key

    def __enter__(self) -> object:
        started = time.thread_time_ns()
        try:
            return self._inner.__enter__()
        finally:
            self._spent[self._key] += time.thread_time_ns() - started

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        started = time.thread_time_ns()
        try:
            return self._inner.__exit__(exc_type, exc, tb)
        finally:
            self._spent[self._key] += time.thread_time_ns() - started


class HookClock:
    """Wraps the methods each hook overrides, on the hook object itself (the registry
    binds them per instance), and adds up the CPU they spend, per hook class.

    ``close()`` (or leaving the ``with`` block) takes the wrappers off again. It must
    run before the same hook object is clocked again: queue_otel keeps one metrics hook
    per meter across instrument() calls, and wrappers left on it would nest, each layer
    counting the CPU of those inside it (a hook's cost counted once per earlier round).
    A hook that is still wrapped is refused rather than counted twice."""

    def __init__(self, hooks: list[Hook]) -> None:
        self.spent: Counter[str] = Counter()
        self._wrapped: list[tuple[Hook, str]] = []
        for hook in hooks:
            names = _overridden(type(hook))
            if any(vars(hook).get(name) is not None for name in names):
                self.close()
                raise RuntimeError(f"{type(hook).__name__} is clocked already: close() first")
            for name in names:
                method = getattr(hook, name)
                key = type(hook).__name__
                wrap = self._around if name in _AROUND else self._notification
                setattr(hook, name, wrap(method, key))
                self._wrapped.append((hook, name))

    def close(self) -> None:
        """Take the wrappers off: each hook's methods are its class's again."""
        for hook, name in self._wrapped:
            delattr(hook, name)
        self._wrapped = []

    def __enter__(self) -> HookClock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _around(self, factory: Callable[[Any], Any], key: str) -> Callable[[Any], Any]:
        spent = self.spent

        def timed(event: Any) -> Any:
            started = time.thread_time_ns()
            manager = factory(event)
            spent[key] += time.thread_time_ns() - started
            return None if manager is None else _TimedManager(manager, spent, key)

        return timed

    def _notification(self, method: Callable[[Any], Any], key: str) -> Callable[[Any], Any]:
        spent = self.spent

        def timed(event: Any) -> Any:
            started = time.thread_time_ns()
            try:
                return method(event)
            finally:
                spent[key] += time.thread_time_ns() - started

        return timed

    def take(self) -> dict[str, int]:
        """The nanoseconds spent per hook class since the last call."""
        taken = dict(self.spent)
        self.spent.clear()
        return taken


class _Nothing:
    """What an empty around-hook returns: a context manager that does nothing (a new one
    per call, as queue_otel's hooks make one)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


def _around_nothing(self: Hook, event: Any) -> _Nothing:
    return _Nothing()


def _nothing(self: Hook, event: Any) -> None:
    return None


def empty_like(classes: list[type[Hook]]) -> list[Hook]:
    """For each hook class, a hook that overrides the same methods with ones that do
    nothing, its class named alike (HookClock counts per class name): the clock's own
    cost."""
    empty: list[Hook] = []
    for cls in classes:
        methods = {
            name: _around_nothing if name in _AROUND else _nothing for name in _overridden(cls)
        }
        empty.append(type(cls.__name__, (Hook,), methods)())
    return empty


def _overridden(own: type[Hook]) -> list[str]:
    """The hook methods a hook class overrides (the registry skips the others)."""
    return [
        name
        for name in dir(Hook)
        if name.startswith(("around_", "on_")) and getattr(own, name) is not getattr(Hook, name)
    ]


class ExportThreads:
    """CPU of the OpenTelemetry SDK's own threads (their names start with ``Otel``)."""

    def __init__(self) -> None:
        self._last: dict[int, int] = {}

    def _now(self) -> dict[int, int]:
        clocks: dict[int, int] = {}
        for thread in threading.enumerate():
            if thread.name.startswith("Otel") and thread.ident is not None:
                try:
                    clock = time.pthread_getcpuclockid(thread.ident)
                    clocks[thread.ident] = time.clock_gettime_ns(clock)
                except OSError:  # the thread ended meanwhile
                    continue
        return clocks

    def take(self) -> int:
        """Nanoseconds the SDK's threads spent since the last call."""
        now = self._now()
        spent = sum(value - self._last.get(ident, 0) for ident, value in now.items())
        self._last = now
        return spent
