"""Logging: structlog as a front end of the standard ``logging`` module.

queue_core's lines are records of stdlib loggers named ``queue_core.*`` (``queue_core.worker``,
``queue_core.flows``, ...; queue_otel's: ``queue_otel``), so the application's logging
configuration decides their level, format and destination. Nothing here runs on import:
no handler, no level, no ``structlog.configure``. A record's message reads
``event key=value ...``; each field is also an attribute of the record (``extra``), for
JSON formatters, Sentry or OpenTelemetry's logging handler. Inside a job the worker binds
``job_id``, ``queue``, ``job_name`` and ``attempt`` as context variables: every line
carries them.

``configure_logging()`` is the one-call set-up for an application that has none.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Literal, TextIO

import structlog

__all__ = [
    "QueueCoreLogger",
    "configure_logging",
    "get_logger",
    "register_log_processor",
    "unregister_log_processor",
]

LogFormat = Literal["auto", "json", "console"]

_plugins: list[structlog.typing.Processor] = []

# Field names that ``extra`` may not carry: LogRecord's own attributes (makeRecord refuses
# them). Such a field is passed as ``<name>_`` instead.
_RECORD_ATTRIBUTES = frozenset(
    [*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime"]
)
_NEEDS_QUOTES = re.compile(r"[\s\"'=]")


def register_log_processor(processor: structlog.typing.Processor) -> None:
    """Add a processor that every queue_core line runs through (and, with
    ``configure_logging``, the application's structlog lines too).

    Instrumentation uses it to add trace ids to every line without owning the logging
    set-up (queue_otel registers ``add_trace_context`` when it instruments). The
    processor sees the event dict before it becomes a ``logging`` record.
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


def _text(value: Any) -> str:
    if isinstance(value, str) and value and not _NEEDS_QUOTES.search(value):
        return value
    return repr(value)


def _to_record(
    logger: structlog.typing.WrappedLogger, method: str, event_dict: structlog.typing.EventDict
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The last processor: the arguments of ``logging.Logger.log``.

    The message is a %-template with the values as arguments, so the text reads
    ``job_attempt_failed error='...' job_id=12`` while the template stays the same from
    one job to the next (Sentry groups by it).
    """
    event = str(event_dict.pop("event", ""))
    positional = event_dict.pop("positional_args", ())
    if positional:
        event %= positional
    event_dict.pop("level", None)  # the record has its own
    kwargs: dict[str, Any] = {
        key: event_dict.pop(key) for key in ("exc_info", "stack_info") if key in event_dict
    }
    extra: dict[str, Any] = {"event": event}
    template, args = [event.replace("%", "%%")], []
    for key, value in event_dict.items():
        template.append(f"{key.replace('%', '%%')}=%s")
        args.append(_text(value))
        extra[f"{key}_" if key in _RECORD_ATTRIBUTES else key] = value
    kwargs["extra"] = extra
    if not args:
        return (event,), kwargs
    return (" ".join(template), *args), kwargs


# merge_contextvars: the job's context; add_log_level: the level, for registered
# processors (OTLP export reads it); _to_record drops it again.
_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    _run_plugins,
    _to_record,
]


class QueueCoreLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib ``BoundLogger`` for library code: a line below its logger's
    level costs one ``isEnabledFor`` call (cached by ``logging``) before any processor
    runs, and records name their caller in queue_core, not a structlog frame."""

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        if self._logger.isEnabledFor(logging.DEBUG):
            self._emit(logging.DEBUG, "debug", event, args, kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, "info", event, args, kw)

    def warning(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        if self._logger.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, "warning", event, args, kw)

    warn = warning

    def error(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        if self._logger.isEnabledFor(logging.ERROR):
            self._emit(logging.ERROR, "error", event, args, kw)

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        if self._logger.isEnabledFor(logging.ERROR):
            kw.setdefault("exc_info", True)
            self._emit(logging.ERROR, "exception", event, args, kw)

    def critical(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        if self._logger.isEnabledFor(logging.CRITICAL):
            self._emit(logging.CRITICAL, "critical", event, args, kw)

    fatal = critical

    def log(self, level: int, event: str | None = None, *args: Any, **kw: Any) -> None:
        if self._logger.isEnabledFor(level):
            self._emit(level, logging.getLevelName(level).lower(), event, args, kw)

    def _emit(
        self, level: int, method: str, event: str | None, args: tuple[Any, ...], kw: Any
    ) -> None:
        if args:
            kw["positional_args"] = args
        try:
            log_args, log_kwargs = self._process_event(method, event, kw)
        except structlog.DropEvent:
            return
        # stacklevel 3: the caller of debug(), info()...; 1 would be this method.
        self._logger.log(level, *log_args, stacklevel=3, **log_kwargs)


def get_logger(name: str) -> QueueCoreLogger:
    """A structlog logger whose lines go to the stdlib logger ``name``, through
    queue_core's processors (context variables, registered processors).

    For code that extends queue_core (hooks, instrumentation) and wants its lines to
    behave like queue_core's. It never reads structlog's global configuration, which
    belongs to the application.
    """
    # The wrapper built directly (what structlog.wrap_logger's proxy builds on first use):
    # no proxy hop per call, and nothing taken from the process-wide configuration.
    return QueueCoreLogger(logging.getLogger(name), _PROCESSORS, {})


def _record_fields(
    logger: structlog.typing.WrappedLogger, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """structlog's ExtraAdder, less ``message`` and ``asctime`` (which another handler's
    formatter may have set on the record first)."""
    record: logging.LogRecord = event_dict["_record"]
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES:
            event_dict[key] = value
    return event_dict


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``configure_logging`` puts on the root logger; the next call replaces it."""


def configure_logging(fmt: LogFormat | None = None, level: str | int | None = None) -> None:
    """Set up logging for an application that has no set-up of its own.

    One handler on the root logger (replacing the one an earlier call added) renders every
    ``logging`` record, queue_core's and other libraries', and structlog is configured
    for the application's own structlog lines, in the same format on stderr: ``fmt``
    defaults to ``$QUEUE_CORE_LOG_FORMAT``, else ``auto``: console output when stderr is a
    terminal, JSON otherwise. ``level`` (the root logger's, and structlog's) defaults to
    ``$QUEUE_CORE_LOG_LEVEL`` or INFO.
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
    json_lines = chosen == "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)

    # The application's structlog lines are rendered straight to stderr, not handed to
    # logging: OpenTelemetry's structlog instrumentation exports them, and its logging
    # handler, if also installed, would export them a second time.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            _run_plugins,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.dict_tracebacks if json_lines else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        # Not cached: a later structlog.configure (the application's own, or a test's
        # capture_logs) must reach the loggers modules made at import too.
        cache_logger_on_first_use=False,
    )

    # Records of queue_core's loggers carry their fields as attributes, the bare event
    # name included: _record_fields turns them back into the event dict they came from.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _record_fields,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            *([structlog.processors.dict_tracebacks] if json_lines else []),
            renderer,
        ],
    )
    handler = _Handler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(numeric)
