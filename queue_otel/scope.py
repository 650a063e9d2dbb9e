"""The context manager the hot hooks return: their "after" part as one bound call.

queue_core enters an around-hook's manager right after the hook returns it, so the hooks
do their "before" part when called and hand back only what runs after. A generator made
by ``contextlib.contextmanager`` costs several microseconds per use on a worker's path,
twice per job per hook; this costs one object and one call.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType

__all__ = ["After"]


class After(AbstractContextManager[None]):
    __slots__ = ("_after",)

    def __init__(self, after: Callable[[], None]) -> None:
        self._after = after

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._after()
