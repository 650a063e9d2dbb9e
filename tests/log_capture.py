"""queue_core's log lines in tests, the way ``structlog.testing.capture_logs`` gives
structlog's.

queue_core and queue_otel log to stdlib loggers (``queue_core.*``, ``queue_otel``), which
structlog's ``capture_logs`` does not see. ``capture_logs`` here yields one list with both:
the application's structlog lines (through structlog's own) and queue_core's records as
dicts of the same shape (``event``, ``log_level`` and the fields; ``exc_info``: the
exception), every level included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

__all__ = ["capture_logs", "restored_logging"]

LOGGERS = ("queue_core", "queue_otel")
_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


class _Capture(logging.Handler):
    def __init__(self, entries: list[EventDict], processors: Iterable[Processor]) -> None:
        super().__init__()
        self.entries, self.processors = entries, tuple(processors)

    def emit(self, record: logging.LogRecord) -> None:
        entry: Any = {k: v for k, v in vars(record).items() if k not in _RECORD_KEYS}
        entry.setdefault("event", record.getMessage())
        entry["log_level"] = record.levelname.lower()
        if record.exc_info:
            entry["exc_info"] = record.exc_info[1]
        for processor in self.processors:
            entry = processor(None, entry["log_level"], entry)
        self.entries.append(entry)


@contextmanager
def capture_logs(processors: Iterable[Processor] = ()) -> Iterator[list[EventDict]]:
    with structlog.testing.capture_logs(processors) as entries:
        handler = _Capture(entries, processors)
        loggers = [logging.getLogger(name) for name in LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)
        try:
            yield entries
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(handler)
                logger.setLevel(level)


@contextmanager
def restored_logging() -> Iterator[None]:
    """Undo, on exit, what ``configure_logging`` did in this process: the root logger's
    handlers and level, and structlog's configuration."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
