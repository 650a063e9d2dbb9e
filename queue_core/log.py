"""structlog set-up: JSON lines in production, readable colours in a terminal.

Libraries should not configure logging on import, so nothing here runs by itself: call
``configure_logging()`` once in a worker or demo process. Inside a job, the worker binds
``job_id``, ``queue``, ``job_name`` and ``attempt`` as context variables, so every line a
processor logs through structlog carries them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

__all__ = ["configure_logging", "register_log_processor", "unregister_log_processor"]

LogFormat = Literal["auto", "json", "console"]

_plugins: list[structlog.typing.Processor] = []


def register_log_processor(processor: structlog.typing.Processor) -> None:
    """Add a processor to the chain ``configure_logging`` builds, before or after it runs.

    Instrumentation uses it to add trace ids to every line without owning the logging
    set-up (queue_otel registers ``add_trace_context`` when it instruments).
    """
    if processor not in _plugins:
        _plugins.append(processor)


def unregister_log_processor(processor: structlog.typing.Processor) -> None:
    """Remove a processor added with ``register_log_processor``."""
    if processor in _plugins:
        _plugins.remove(processor)


def _run_plugins(
    logger: structlog.typing.WrappedLogger, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    for processor in tuple(_plugins):
        result = processor(logger, method, event_dict)
        if isinstance(result, dict):
            event_dict = result
    return event_dict


def configure_logging(fmt: LogFormat | None = None, level: str | int | None = None) -> None:
    """Configure structlog for this process.

    ``fmt`` defaults to ``$QUEUE_CORE_LOG_FORMAT``, else ``auto``: console output when
    stderr is a terminal, JSON otherwise. ``level`` defaults to ``$QUEUE_CORE_LOG_LEVEL``
    or INFO.
    """
    chosen = fmt or os.environ.get("QUEUE_CORE_LOG_FORMAT", "auto")
    if chosen not in ("auto", "json", "console"):
        raise ValueError(f"log format must be auto, json or console, not {chosen!r}")
    if chosen == "auto":
        chosen = "console" if sys.stderr.isatty() else "json"
    raw_level = level if level is not None else os.environ.get("QUEUE_CORE_LOG_LEVEL", "INFO")
    numeric = logging.getLevelName(raw_level.upper()) if isinstance(raw_level, str) else raw_level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {raw_level!r}")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if chosen == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _run_plugins,  # after the timestamp: exported records keep the event's time
            structlog.processors.StackInfoRenderer(),
            structlog.processors.dict_tracebacks
            if chosen == "json"
            else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # Not cached: a later structlog.configure (the application's own, or a test's
        # capture_logs) must reach queue_core's module-level loggers too. A worker logs
        # nothing per successful job, so the lookup per line costs nothing that matters.
        cache_logger_on_first_use=False,
    )
